//! `mlops gateway`: the release gateway as an ad-hoc reverse proxy, as
//! handy as `caddy reverse-proxy` — one variant, `stable`, balanced over
//! the `--upstream`s, with the admin API (`/metrics`…) on a loopback
//! `--admin` address, until SIGINT or SIGTERM.
//!
//! It owns the arguments, where the admin token file lives, what is
//! printed, and the graceful stop. The proxy, its admin API and the token
//! itself are `mlops_release::gateway`'s.

use std::fs;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mlops_core::ledger::STATE_DIR;
use mlops_release::gateway::{
    AdminToken, Config, Gateway, GatewayError, TOKEN_FILE, ensure_token_file,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{Failure, exit, fail};

/// How long a stop waits for requests in flight (the gateway's default
/// upstream timeout: no proxied request legitimately takes longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `mlops gateway` arguments.
#[derive(Args)]
pub(crate) struct GatewayArgs {
    /// Address to proxy on, e.g. 127.0.0.1:8080 (port 0: any free port; the
    /// one bound is printed)
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// An upstream's base URL, http://HOST:PORT; repeat it to balance over
    /// several (fewest requests outstanding first)
    #[arg(long = "upstream", value_name = "URL", required = true)]
    upstreams: Vec<String>,
    /// Loopback address for the admin API: GET /metrics (Prometheus),
    /// /snapshot, /config; PUT /config with the bearer token
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin token file, created (mode 0600) when missing [default:
    /// .mlops/release/admin.token under the current directory]
    #[arg(long, value_name = "PATH", requires = "admin")]
    token_file: Option<PathBuf>,
}

pub(crate) fn run(args: GatewayArgs) -> Result<u8, Failure> {
    // Everything a user can get wrong is checked before anything is bound
    // or written.
    let gateway = Gateway::new(Config::single(args.upstreams.iter().cloned()))
        .map_err(|e| fail(exit::INVALID, anyhow::Error::new(e).context("--upstream")))?;
    if let Some(admin) = args.admin
        && !admin.ip().is_loopback()
    {
        return Err(fail(
            exit::INVALID,
            anyhow::Error::new(GatewayError::AdminNotLoopback(admin)).context("--admin"),
        ));
    }
    let admin = match args.admin {
        Some(addr) => {
            let (token, path) = admin_token(args.token_file.as_deref())?;
            Some((addr, token, path))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(gateway, args.listen, args.upstreams.len(), admin))
}

/// Proxy until a signal, then stop gracefully; the exit code says which
/// signal (SIGTERM: 0, SIGINT: 130 as for any Ctrl-C).
async fn serve(
    gateway: Gateway,
    listen: SocketAddr,
    upstreams: usize,
    admin: Option<(SocketAddr, AdminToken, PathBuf)>,
) -> Result<u8, Failure> {
    // Handlers first: a signal that arrives once the address is printed
    // must stop the gateway gracefully, not kill it.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let proxy = gateway
        .bind(listen)
        .await
        .map_err(|e| bind_failure(e, "--listen"))?;
    let admin = match admin {
        Some((addr, token, path)) => {
            let handle = gateway
                .serve_admin(addr, token)
                .await
                .map_err(|e| bind_failure(e, "--admin"))?;
            Some((handle, path))
        }
        None => None,
    };

    let mut out = io::stdout().lock();
    let plural = if upstreams == 1 { "" } else { "s" };
    writeln!(
        out,
        "proxying http://{} to {upstreams} upstream{plural} (Ctrl-C to stop)",
        proxy.local_addr()
    )?;
    if let Some((handle, path)) = &admin {
        writeln!(
            out,
            "admin API on http://{}: GET /metrics, /snapshot, /config; PUT /config needs the \
             bearer token in {}",
            handle.local_addr(),
            path.display()
        )?;
    }
    drop(out);

    let code = tokio::select! {
        _ = interrupt.recv() => exit::CANCELLED,
        _ = terminate.recv() => exit::OK,
    };
    eprintln!("stopping: finishing requests in flight (signal again to stop now)");
    proxy.shutdown().await;
    if let Some((handle, _)) = admin {
        handle.shutdown().await;
    }
    // The connections still open hold the rest of the gateway; once they
    // close, its upstream connection pool goes too, and no task is left.
    drop(gateway);
    let runtime = tokio::runtime::Handle::current();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let drained = async {
        while runtime.metrics().num_alive_tasks() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = drained => {
            if runtime.metrics().num_alive_tasks() > 0 {
                eprintln!(
                    "stopped waiting after {}s: closing the connections still open",
                    DRAIN_TIMEOUT.as_secs()
                );
            }
        }
        _ = interrupt.recv() => eprintln!("stopping now: closing the connections still open"),
        _ = terminate.recv() => eprintln!("stopping now: closing the connections still open"),
    }
    Ok(code)
}

/// A listener that cannot be bound is a bad argument (the port is taken,
/// or the address is not this machine's); anything else is the engine's.
fn bind_failure(e: GatewayError, flag: &str) -> Failure {
    let code = match e {
        GatewayError::Bind { .. } | GatewayError::AdminNotLoopback(_) => exit::INVALID,
        _ => exit::ENGINE,
    };
    fail(code, anyhow::Error::new(e).context(flag.to_owned()))
}

/// The admin token and the file it is in: `file`, or the default under
/// the current directory's `.mlops/release/`.
fn admin_token(file: Option<&Path>) -> Result<(AdminToken, PathBuf), Failure> {
    let (token, path) = match file {
        None => {
            let dir = Path::new(STATE_DIR).join("release");
            let token = ensure_token_file(&dir).map_err(token_failure)?;
            (token, dir.join(TOKEN_FILE))
        }
        Some(file) => (token_at(file).map_err(token_failure)?, file.to_owned()),
    };
    Ok((token, std::path::absolute(&path).unwrap_or(path)))
}

/// A token file that others can read or that holds no token is the user's
/// to fix; failing to read or write one is the engine's.
pub(crate) fn token_failure(e: GatewayError) -> Failure {
    let code = match &e {
        GatewayError::Token { source, .. }
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData
            ) =>
        {
            exit::INVALID
        }
        _ => exit::ENGINE,
    };
    fail(code, anyhow::Error::new(e).context("--token-file"))
}

/// The token in `file`, created when missing, whatever the file's name.
///
/// The library makes and checks tokens only as `DIR/admin.token` (the one
/// place a token is parsed and validated), so the file is reached through
/// a hard link of that name in a private directory next to it: an existing
/// file is linked in and read there; a new token is made there and linked
/// out, which fails rather than overwrites if another process made `file`
/// in the meantime (and then that one's token is read).
pub(crate) fn token_at(file: &Path) -> Result<AdminToken, GatewayError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| GatewayError::Token { path, source }
    };
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| err(file)(io::Error::other("not a file name")))?;
    fs::create_dir_all(&parent).map_err(err(&parent))?;
    let scratch = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    fs::create_dir(&scratch).map_err(err(&scratch))?;
    let linked = scratch.join(TOKEN_FILE);
    let result = (|| {
        match fs::hard_link(file, &linked) {
            Ok(()) => return ensure_token_file(&scratch),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(file)(e)),
        }
        let token = ensure_token_file(&scratch)?;
        match fs::hard_link(&linked, file) {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&linked).map_err(err(&linked))?;
                fs::hard_link(file, &linked).map_err(err(file))?;
                ensure_token_file(&scratch)
            }
            Err(e) => Err(err(file)(e)),
        }
    })();
    let _ = fs::remove_dir_all(&scratch);
    // Errors name the file the user gave, not the scratch link.
    result.map_err(|e| match e {
        GatewayError::Token { source, .. } => GatewayError::Token {
            path: file.to_owned(),
            source,
        },
        other => other,
    })
}
