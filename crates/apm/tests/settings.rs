//! `[apm]` compiled through a whole manifest: defaults, SLOs, and every
//! mistake reported with its place.

use std::path::PathBuf;
use std::time::Duration;

use mlops_apm::settings::{ApmSettings, Objective};
use mlops_core::{KindRegistry, Manifest};

fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    mlops_iac::register(&mut r).expect("stage 1 registers");
    mlops_ci::register(&mut r).expect("stage 2 registers");
    mlops_cd::register(&mut r).expect("stage 3 registers");
    mlops_release::register(&mut r).expect("stage 4 registers");
    mlops_apm::register(&mut r).expect("stage 5 registers");
    r
}

fn compile(apm: &str) -> Result<std::sync::Arc<ApmSettings>, String> {
    let mut source = String::from("[project]\nname = \"p\"\n");
    for stage in ["iac", "ci", "cd", "release", "apm"] {
        source.push_str(&format!("\n[{stage}.steps.{stage}-s]\nrun = \"true\"\n"));
    }
    source.push_str(apm);
    Manifest::parse(PathBuf::from("/tmp/p/mlops.toml"), source, &registry())
        .map(|m| m.section::<ApmSettings>("apm").expect("[apm] compiled"))
        .map_err(|d| d.to_string())
}

#[test]
fn no_apm_table_gives_the_defaults() {
    let s = compile("").unwrap();
    assert_eq!(*s, ApmSettings::default());
    assert_eq!(s.period, Duration::from_secs(30 * 86_400));
    assert_eq!(s.hold, Duration::from_secs(60));
}

#[test]
fn slos_compile() {
    let s = compile(
        r#"[apm]
period = "6h"
min-requests = 5
webhook = "http://127.0.0.1:9/hook"
webhook-token-env = "HOOK_TOKEN"

[apm.slo.availability]
objective = "availability"
target = 0.999

[apm.slo.fast]
objective = "latency"
threshold = "250ms"
target = 0.99
variant = "stable"
"#,
    )
    .unwrap();
    assert_eq!(s.period, Duration::from_secs(6 * 3600));
    // One minute scaled by 6h / 30d.
    assert_eq!(s.hold, Duration::from_millis(500));
    assert_eq!(s.min_requests, 5);
    assert_eq!(s.slos["availability"].objective, Objective::Availability);
    assert_eq!(
        s.slos["fast"].objective,
        Objective::Latency {
            threshold: Duration::from_millis(250)
        }
    );
    assert_eq!(s.slos["fast"].variant.as_deref(), Some("stable"));
    assert_eq!(
        s.webhook.as_ref().unwrap().token_env.as_deref(),
        Some("HOOK_TOKEN")
    );
}

#[test]
fn every_mistake_is_reported_with_its_place() {
    let e = compile(
        r#"[apm]
period = "soon"
webhook = "ftp://x"

[apm.slo.a]
objective = "latency"
target = 1.5

[apm.slo.b]
objective = "availability"
threshold = "1s"
target = 0.9

[apm.slo.c]
objective = "speed"
target = 0.9
"#,
    )
    .unwrap_err();
    for expected in [
        "invalid duration `soon` for `period`",
        "`webhook` must be an http:// URL",
        "`target` of SLO `a` must be between 0 and 1, not 1.5",
        "SLO `a`: a latency objective needs a `threshold`",
        "SLO `b`: an availability objective has no `threshold`",
        "SLO `c`: unknown objective `speed`",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    // Places: the file and a line.
    assert!(e.contains("mlops.toml:"), "{e}");
}

/// A webhook the collector could not reach, or whose URL would put a
/// credential in logs, is refused before anything runs.
#[test]
fn undeliverable_or_leaky_webhooks_are_refused() {
    let e = compile("[apm]\nwebhook = \"https://hooks.example/x?key=s3cret\"\n").unwrap_err();
    assert!(e.contains("plain http only"), "{e}");
    let e = compile("[apm]\nwebhook = \"http://user:s3cret@127.0.0.1:9/h\"\n").unwrap_err();
    assert!(e.contains("webhook-token-env"), "{e}");
    let s = compile("[apm]\nwebhook = \"http://127.0.0.1:9/h?key=s3cret\"\n").unwrap();
    assert_eq!(
        s.webhook.as_ref().unwrap().redacted(),
        "http://127.0.0.1:9/h?…"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let e = compile("[apm]\nperiodd = \"1h\"\n").unwrap_err();
    assert!(e.contains("periodd"), "{e}");
}
