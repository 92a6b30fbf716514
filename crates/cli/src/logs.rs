//! `mlops logs`: the release environment's logs, searched
//! (`mlops_apm::logs`): every instance's log and the gateway's prediction
//! log, by service, variant, time, status, request id and text.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use mlops_apm::logs::{LogQuery, collect};
use mlops_core::{LedgerHandle, Stage};
use mlops_iac::{InfraSpec, ProviderKind, Scope};
use mlops_release::service::{GatewayProgram, GatewayService};
use mlops_release::settings::ReleaseSettings;

use crate::{Failure, exit, fail};

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// Only this service's lines (its gateway's and collector's too); repeat
    /// for more
    #[arg(long = "service")]
    services: Vec<String>,
    /// Only lines of this variant (`stable`, `canary`)
    #[arg(long)]
    variant: Option<String>,
    /// Only lines from this long ago on (lines without a time are left out)
    #[arg(long)]
    since: Option<String>,
    /// Only this status (`503`) or class (`5xx`)
    #[arg(long)]
    status: Option<String>,
    /// Only lines of this request id (the gateway's `x-request-id`)
    #[arg(long)]
    request_id: Option<String>,
    /// Only lines containing this text
    #[arg(long)]
    grep: Option<String>,
    /// The last N lines of each log
    #[arg(long, default_value_t = 2000)]
    lines: usize,
    /// Keep printing new lines until Ctrl-C
    #[arg(long)]
    follow: bool,
    /// Project directory
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// The environment (default: `[release] environment`)
    #[arg(long = "env")]
    environment: Option<String>,
    /// The provider (default: `[infra] provider`)
    #[arg(long, value_parser = ["local", "docker"])]
    provider: Option<String>,
}

pub(crate) fn run(a: &LogsArgs) -> Result<u8, Failure> {
    let manifest = crate::load(&a.path)?;
    let release = manifest
        .section::<ReleaseSettings>(Stage::Release.name())
        .map(|s| (*s).clone())
        .unwrap_or_default();
    let spec = InfraSpec::from_manifest(&manifest);
    let kind: ProviderKind = match &a.provider {
        Some(p) => p
            .parse()
            .map_err(|e: String| fail(exit::INVALID, anyhow::anyhow!(e)))?,
        None => spec.provider,
    };
    let since_ms = match &a.since {
        Some(s) => {
            let d = humantime::parse_duration(s).map_err(|e| {
                fail(
                    exit::INVALID,
                    anyhow::anyhow!(
                        "invalid duration `{s}` for --since: {e} (write \"90s\", \"15m\", \"1h\")"
                    ),
                )
            })?;
            Some(mlops_core::ledger::now_ms() - d.as_millis() as i64)
        }
        None => None,
    };
    if let Some(s) = &a.status {
        let ok = s.strip_suffix("xx").map_or_else(
            || s.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)),
            |c| c.parse::<u8>().is_ok_and(|c| (1..=5).contains(&c)),
        );
        if !ok {
            return Err(fail(
                exit::INVALID,
                anyhow::anyhow!("invalid --status `{s}`: write a status (503) or a class (5xx)"),
            ));
        }
    }
    let query = LogQuery {
        services: a.services.clone(),
        variant: a.variant.clone(),
        since_ms,
        status: a.status.clone(),
        request_id: a.request_id.clone(),
        grep: a.grep.clone(),
    };
    let root = std::fs::canonicalize(&manifest.root).unwrap_or(manifest.root.clone());
    let scope = Scope {
        project: manifest.project.name.clone(),
        environment: a
            .environment
            .clone()
            .unwrap_or_else(|| release.environment.clone()),
        root: root.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let provider = mlops_iac::kinds::provider_for(kind, &crate::infra::supervisor())
            .await
            .map_err(|e| fail(exit::RUN_FAILED, e))?;
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mlops"));
        let gateway_state = release.service.as_ref().map(|s| {
            GatewayService::new(
                &scope,
                provider.as_ref(),
                LedgerHandle::for_project(root.clone()),
                s,
                GatewayProgram::mlops(&program),
            )
            .state_dir()
        });
        let mut seen: HashSet<u64> = HashSet::new();
        let mut out = io::stdout().lock();
        let mut found = 0usize;
        loop {
            let all = collect(provider.as_ref(), &scope, gateway_state.as_deref(), a.lines)
                .await
                .map_err(|e| fail(exit::RUN_FAILED, e))?;
            for line in all.iter().filter(|l| query.matches(l)) {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&line.source, &line.text).hash(&mut h);
                if !seen.insert(h.finish()) {
                    continue;
                }
                found += 1;
                writeln!(out, "{:<28} {}", line.source, line.text)?;
            }
            out.flush()?;
            if !a.follow {
                break;
            }
            // Bounded: forget the oldest lines' marks past a limit (a line
            // repeated after that is printed again).
            if seen.len() > 200_000 {
                seen.clear();
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok(if found == 0 && !a.follow {
            eprintln!("no log line matches in `{}`", scope.environment);
            exit::RUN_FAILED
        } else {
            exit::OK
        })
    })
}
