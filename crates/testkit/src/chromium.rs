//! Headless Chromium (Debian's `chromium`) loading a self-contained HTML
//! page: its screenshot, its console messages and every resource it asked
//! for. The pages mlops writes (the assessment report, the monitoring
//! dashboard) have no scripts and load nothing: any console message or
//! request is a defect.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What Chromium reported while loading a page.
#[derive(Debug)]
pub struct PageLoad {
    /// Console messages. Chromium 156 logs each at INFO, without its level,
    /// as `…:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)`; a
    /// page without script has none, so any is an error.
    pub console: Vec<String>,
    /// Resources the page asked for besides itself: a self-contained page
    /// asks for none, and a missing file is also a failed load.
    pub requests: Vec<String>,
    /// `file://` resources that do not exist: failed loads.
    pub failed: Vec<String>,
    /// The screenshot.
    pub png: Vec<u8>,
}

impl PageLoad {
    /// Everything that went wrong: console messages, resources loaded,
    /// failed loads.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .console
            .iter()
            .map(|c| format!("console: {c}"))
            .collect();
        out.extend(
            self.requests
                .iter()
                .map(|r| format!("loads a resource: {r}")),
        );
        out.extend(self.failed.iter().map(|r| format!("failed to load: {r}")));
        out
    }
}

/// How long Chromium may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's Chromium; panics, saying how to install it, when missing.
pub fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "chromium is not installed: HTML pages are checked in headless Chromium; \
         install it with `apt-get install chromium` (CI does)"
    );
}

/// Loads `page` in headless Chromium at `width`×`height`, writes a screenshot
/// to `png`, and collects what went wrong from Chromium's log: console
/// messages (`--enable-logging=stderr`), and every subresource request the
/// page's renderer started (`renderer_url_loader_throttle` at verbosity 2
/// logs `WillStartRequest : Skipping: <url> : <kind>` for each).
pub fn load(page: &Path, png: &Path, (width, height): (u32, u32)) -> PageLoad {
    let chromium = chromium();
    let scratch = tempfile::tempdir().unwrap();
    let profile = scratch.path().join("profile");
    let log = scratch.path().join("chromium.log");
    let page_url = format!("file://{}", page.display());
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--vmodule=renderer_url_loader_throttle=2",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", png.display()),
            &page_url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "chromium did not finish within {CHROMIUM_TIMEOUT:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");

    let mut load = PageLoad {
        console: Vec::new(),
        requests: Vec::new(),
        failed: Vec::new(),
        png: std::fs::read(png).unwrap_or_default(),
    };
    for line in stderr.lines() {
        if let Some((_, message)) = line.split_once(":CONSOLE") {
            let message = message.split_once("] ").map_or(message, |(_, m)| m);
            // Chromium's own pages (chrome://…) may log too; they are not ours.
            let source = message.rsplit_once(", source: ").map(|(_, s)| s);
            if source.is_some_and(is_internal) {
                continue;
            }
            load.console.push(message.to_owned());
        } else if let Some((_, request)) = line.split_once("WillStartRequest : ") {
            // `Skipping: <url> : <kind>` or `<url> : <kind>`.
            let request = request.trim_start_matches("Skipping: ");
            let url = request.split(" : ").next().unwrap_or(request).trim();
            if is_internal(url) || url == page_url {
                continue;
            }
            if let Some(path) = url.strip_prefix("file://")
                && !Path::new(path).exists()
            {
                load.failed.push(url.to_owned());
            }
            load.requests.push(url.to_owned());
        }
    }
    load
}

/// Chromium's own pages and extensions, which load and log without the
/// report's doing.
fn is_internal(url: &str) -> bool {
    [
        "chrome:",
        "chrome-untrusted:",
        "devtools:",
        "chrome-extension:",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

/// The width and height a PNG declares (its IHDR chunk).
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}
