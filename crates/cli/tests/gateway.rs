//! `mlops gateway` as a user runs it: the binary in front of two small
//! upstreams started here (each names itself in `x-upstream`), requests
//! over plain TCP on loopback, the admin API's `/metrics`, the signals
//! that stop it, and the arguments it refuses. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Longest wait for the gateway to start or to exit.
const PATIENCE: Duration = Duration::from_secs(20);

/// An upstream: answers every request `200`, `x-upstream: NAME`, body
/// NAME; `/slow` first says so on `arrived` and waits 500 ms. Its threads
/// live as long as the test process.
struct Upstream {
    addr: SocketAddr,
    arrived: mpsc::Receiver<()>,
}

impl Upstream {
    fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tell, arrived) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tell = tell.clone();
                thread::spawn(move || serve_connection(name, stream, &tell));
            }
        });
        Self { addr, arrived }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// HTTP/1.1 keep-alive, bodyless requests (the gateway forwards GETs).
fn serve_connection(name: &str, stream: TcpStream, tell: &mpsc::Sender<()>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        if request_line.split(' ').nth(1) == Some("/slow") {
            let _ = tell.send(());
            thread::sleep(Duration::from_millis(500));
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A response: status, headers (lowercased names), body.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One request on its own connection (`Connection: close`).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    stream
        .write_all(format!("{head}\r\n{body}").as_bytes())
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], "")
}

/// `mlops gateway ARGS` started in `cwd`, up and listening.
struct Running {
    child: Child,
    /// What it printed on stdout before listening.
    stdout: String,
    proxy: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Running {
    fn start(args: &[&str], cwd: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlops"))
            .arg("gateway")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let wants_admin = args.contains(&"--admin");
        let mut stdout = String::new();
        let (mut proxy, mut admin) = (None, None);
        while proxy.is_none() || (wants_admin && admin.is_none()) {
            let Ok(line) = lines.recv_timeout(PATIENCE) else {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "the gateway did not print where it listens; stdout:\n{stdout}stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            };
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(rest) = line.strip_prefix("proxying http://") {
                proxy = Some(rest.split(' ').next().unwrap().parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("admin API on http://") {
                admin = Some(rest.split_once(": ").unwrap().0.parse().unwrap());
            }
        }
        Self {
            child,
            stdout,
            proxy: proxy.unwrap(),
            admin,
        }
    }

    /// Send `signal`, wait for the exit: the exit code and stderr.
    fn stop(mut self, signal: Signal) -> (i32, String) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let code = wait_for_exit(&mut self.child);
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (code, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave a gateway behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exit code, within [`PATIENCE`] (else the child is killed and the
/// test fails).
fn wait_for_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed by a signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running {PATIENCE:?} after it was asked to stop");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample `series` (name and labels, exactly) in
/// Prometheus text.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn balances_over_upstreams_and_counts_them_in_metrics() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cwd = tempfile::tempdir().unwrap();
    let token_file = cwd.path().join("secrets/gateway.token");
    let gw = Running::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &a.url(),
            "--upstream",
            &b.url(),
            "--admin",
            "127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        cwd.path(),
    );

    let mut served = BTreeMap::new();
    for _ in 0..40 {
        let r = get(gw.proxy, "/predict");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get("x-upstream"), Some(&r.body));
        *served.entry(r.body).or_insert(0u64) += 1;
    }
    // Sequential requests tie on outstanding requests, and ties are broken
    // at random: fewer than 5 of 40 on one side is a 1-in-10^7 event.
    assert!(
        served.get("a") >= Some(&5) && served.get("b") >= Some(&5),
        "{served:?}"
    );

    let admin = gw.admin.unwrap();
    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    let m = &metrics.body;
    assert_eq!(
        sample(
            m,
            r#"mlops_gateway_requests_total{variant="stable",code="2xx"}"#
        ),
        Some(40),
        "{m}"
    );
    for (upstream, name) in [(&a, "a"), (&b, "b")] {
        let series = format!(
            r#"mlops_gateway_replica_requests_total{{variant="stable",replica="{}",code="2xx"}}"#,
            upstream.url()
        );
        assert_eq!(sample(m, &series), served.get(name).copied(), "{m}");
    }

    // The token is in the file named on stdout, private, and printed nowhere.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        gw.stdout.contains(&*token_file.to_string_lossy()),
        "{}",
        gw.stdout
    );
    assert!(!gw.stdout.contains(token));
    // ... and it is what changes the config.
    let config = get(admin, "/config").body;
    assert_eq!(request(admin, "PUT", "/config", &[], &config).status, 401);
    let bearer = format!("Bearer {token}");
    let put = request(
        admin,
        "PUT",
        "/config",
        &[("authorization", &bearer)],
        &config,
    );
    assert_eq!(put.status, 200, "{}", put.body);

    let (code, stderr) = gw.stop(Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(token));
}

#[test]
fn sigint_lets_a_request_in_flight_finish_then_exits_130() {
    let upstream = Upstream::start("a");
    let cwd = tempfile::tempdir().unwrap();
    let gw = Running::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
            "--admin",
            "127.0.0.1:0",
        ],
        cwd.path(),
    );
    // No --token-file: the token goes under the current directory.
    let token_file = cwd.path().join(".mlops/release/admin.token");
    assert!(token_file.is_file());
    assert!(
        gw.stdout.contains(".mlops/release/admin.token"),
        "{}",
        gw.stdout
    );

    let proxy = gw.proxy;
    let slow = thread::spawn(move || get(proxy, "/slow"));
    upstream
        .arrived
        .recv_timeout(PATIENCE)
        .expect("the slow request reached the upstream");
    let (code, stderr) = gw.stop(Signal::SIGINT);
    let reply = slow.join().unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "a"));
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(
        TcpStream::connect(proxy).is_err(),
        "still listening after exit"
    );
}

/// `mlops gateway ARGS` exits 2 at once, its stderr's first line
/// containing `expected`.
fn check_refused(args: &[&str], expected: &str) {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlops"))
        .arg("gateway")
        .args(args)
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_for_exit(&mut child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 2, "for {args:?}: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(expected),
        "for {args:?}, expected {expected:?} in the first line of:\n{stderr}"
    );
    assert!(output.stdout.is_empty(), "for {args:?}: printed on stdout");
}

#[test]
fn bad_arguments_exit_2_saying_what_and_where() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let up = "http://127.0.0.1:9";
    let listen = ["--listen", "127.0.0.1:0"];
    fn with<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        ["--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(rest.iter().copied())
            .collect()
    }

    check_refused(
        &with(&["--upstream", "ftp://127.0.0.1:21"]),
        r#"error: --upstream: invalid gateway config: variant "stable": replica "ftp://127.0.0.1:21": only http:// upstreams are supported"#,
    );
    check_refused(
        &with(&["--upstream", "http://exa mple"]),
        r#"replica "http://exa mple": not a URL"#,
    );
    check_refused(
        &with(&["--upstream", "http://127.0.0.1:9/v1"]),
        "a replica URL takes no path or query",
    );
    check_refused(
        &listen,
        "error: the following required arguments were not provided",
    );
    check_refused(
        &["--listen", "localhost", "--upstream", up],
        "error: invalid value 'localhost' for '--listen <ADDR>'",
    );
    check_refused(
        &with(&["--upstream", up, "--admin", "0.0.0.0:0"]),
        "error: --admin: the admin listener must be on a loopback address, not 0.0.0.0:0",
    );
    check_refused(
        &["--listen", &taken, "--upstream", up],
        &format!("error: --listen: cannot listen on {taken}: "),
    );
    check_refused(
        &with(&["--upstream", up, "--admin", &taken]),
        &format!("error: --admin: cannot listen on {taken}: "),
    );
}
