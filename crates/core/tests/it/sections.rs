//! Sections stage crates own: compiled once, handed to the kinds that read
//! them, part of those steps' definitions (so caching and gating follow an
//! edit of what a kind read, and ignore edits that compile to the same
//! value), and a stage's own settings beside its steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mlops_core::manifest::{Diagnostic, Manifest};
use mlops_core::{
    CompiledSection, EvidenceKind, ExecError, Executor, KindParams, KindRegistry, ManifestSection,
    RegistryError, RunOptions, Selection, Stage, StepAction, StepContext, StepFailure, StepKind,
    StepStatus,
};

/// `[limits] max = { name = number }`, compiled into a sorted map.
struct LimitsSection {
    compiled: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsWire {
    max: BTreeMap<String, f64>,
}

#[derive(serde::Serialize)]
struct Limits {
    max: BTreeMap<String, f64>,
}

impl ManifestSection for LimitsSection {
    fn name(&self) -> &'static str {
        "limits"
    }
    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>> {
        self.compiled.fetch_add(1, Ordering::SeqCst);
        let max = match table {
            None => BTreeMap::new(),
            Some(t) => t.deserialize::<LimitsWire>().map_err(|d| vec![d])?.max,
        };
        Ok(CompiledSection::new(Limits { max }))
    }
}

/// The settings of stage `release`: `[release] service = "..."`.
struct ReleaseSettings;

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Release {
    service: Option<String>,
}

impl ManifestSection for ReleaseSettings {
    fn name(&self) -> &'static str {
        "release"
    }
    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>> {
        let release = match table {
            None => Release { service: None },
            Some(t) => t.deserialize::<Release>().map_err(|d| vec![d])?,
        };
        Ok(CompiledSection::new(release))
    }
    fn json_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": { "service": { "type": "string" } },
            "additionalProperties": false
        })
    }
}

/// `kind = "limit"`, `with = { name = "..." }`: reads `[limits.max.NAME]`
/// when compiled and records the value it was compiled with.
struct LimitKind;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    name: String,
    #[allow(dead_code)]
    note: Option<String>,
}

impl StepKind for LimitKind {
    fn name(&self) -> &'static str {
        "limit"
    }
    fn stage(&self) -> Option<Stage> {
        None
    }
    fn summary(&self) -> &'static str {
        "test kind reading [limits]"
    }
    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let p: LimitParams = params.deserialize().map_err(|d| vec![d])?;
        let limits = params
            .section::<Limits>("limits", &["max", &p.name])
            .ok_or_else(|| vec![Diagnostic::new("no [limits]", Some(params.span()))])?;
        let value = limits.max.get(&p.name).copied();
        let release = params
            .section::<Release>("release", &[])
            .and_then(|r| r.service.clone());
        Ok(Arc::new(move |ctx: StepContext| {
            let release = release.clone();
            async move {
                ctx.record(
                    "limit",
                    &serde_json::json!({ "value": value, "release": release }),
                );
                Ok::<(), StepFailure>(())
            }
        }))
    }
}

fn summarize(e: &mlops_core::Evidence) -> Option<String> {
    Some(format!("limit {}", e.body["value"]))
}

fn registry(compiled: Arc<AtomicUsize>) -> KindRegistry {
    let mut r = KindRegistry::new();
    r.register_section(Arc::new(LimitsSection { compiled }))
        .unwrap();
    r.register_stage_settings(Stage::Release, Arc::new(ReleaseSettings))
        .unwrap();
    r.register(Arc::new(LimitKind)).unwrap();
    r.register_evidence(EvidenceKind {
        name: "limit",
        stage: Stage::Ci,
        summarize,
    })
    .unwrap();
    r
}

const MANIFEST: &str = r#"
[project]
name = "p"

[limits]
max = { a = 1.0, b = 2.0 }

[iac.steps.build]
run = "true"

[ci.steps.check]
kind = "limit"
with = { name = "a" }
inputs = ["data.txt"]

[cd.steps.ship]
run = "true"
"#;

fn parse(source: &str, registry: &KindRegistry) -> Result<Manifest, String> {
    Manifest::parse(PathBuf::from("mlops.toml"), source.to_owned(), registry)
        .map_err(|d| d.to_string())
}

fn fingerprint(source: &str) -> String {
    let m = parse(source, &registry(Arc::default())).unwrap();
    m.pipeline
        .steps()
        .iter()
        .find(|s| s.name == "check")
        .unwrap()
        .fingerprint()
}

#[test]
fn a_section_compiles_once_whatever_reads_it() {
    let count = Arc::new(AtomicUsize::new(0));
    let source =
        format!("{MANIFEST}\n[ci.steps.check2]\nkind = \"limit\"\nwith = {{ name = \"b\" }}\n");
    let m = parse(&source, &registry(count.clone())).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let limits = m.section::<Limits>("limits").expect("compiled [limits]");
    assert_eq!(limits.max["b"], 2.0);
    let check = m
        .pipeline
        .steps()
        .iter()
        .find(|s| s.name == "check")
        .unwrap();
    let sections: Vec<&str> = check.reads.iter().map(|r| r.section.as_str()).collect();
    assert_eq!(sections, ["[limits.max.a]", "[release]"]);
}

#[test]
fn the_part_a_kind_reads_is_part_of_its_definition() {
    let base = fingerprint(MANIFEST);
    // The part read changed: another definition.
    let edited = MANIFEST.replace("a = 1.0", "a = 1.5");
    assert_ne!(fingerprint(&edited), base);
    // Another part of the same section: the same definition.
    let other = MANIFEST.replace("b = 2.0", "b = 3.0");
    assert_eq!(fingerprint(&other), base);
    // A comment, another key order, another spelling of the same value.
    let same = MANIFEST.replace(
        "max = { a = 1.0, b = 2.0 }",
        "# the bars\nmax = { b = 2.0, a = 1.00 } # same values",
    );
    assert_eq!(fingerprint(&same), base);
    // The order of keys in `with`.
    let with = MANIFEST.replace(
        "with = { name = \"a\" }",
        "with = { name = \"a\", note = \"x\" }",
    );
    let reordered = MANIFEST.replace(
        "with = { name = \"a\" }",
        "with = { note = \"x\", name = \"a\" }",
    );
    assert_ne!(with, reordered);
    assert_eq!(fingerprint(&with), fingerprint(&reordered));
    assert_ne!(fingerprint(&with), base);
    // A stage's settings the kind reads.
    let settings = MANIFEST.replace(
        "[cd.steps.ship]",
        "[release]\nservice = \"iris\"\n[release.steps.go]\nrun = \"true\"\n\n[cd.steps.ship]",
    );
    assert_ne!(fingerprint(&settings), base);
}

#[test]
fn stage_settings_live_beside_the_stage_steps() {
    let source = format!(
        "{MANIFEST}\n[release]\ndescription = \"canary\"\nservice = \"iris\"\n\n[release.steps.go]\nkind = \"limit\"\nwith = {{ name = \"b\" }}\n"
    );
    let m = parse(&source, &registry(Arc::default())).unwrap();
    let release = m.section::<Release>("release").unwrap();
    assert_eq!(release.service.as_deref(), Some("iris"));
    assert!(m.pipeline.steps().iter().any(|s| s.name == "go"));

    // A bad key in the settings is reported where it is, with the steps'
    // errors.
    let bad = source.replace("service = \"iris\"", "servise = \"iris\"");
    let err = parse(&bad, &registry(Arc::default())).unwrap_err();
    assert!(err.contains("unknown field `servise`"), "{err}");
    assert!(err.contains("servise = \"iris\""), "{err}");

    // Without registered settings, the stage's table holds only
    // `description` and `steps`.
    let mut plain = KindRegistry::new();
    plain.register(Arc::new(LimitKind)).unwrap();
    plain
        .register_section(Arc::new(LimitsSection {
            compiled: Arc::default(),
        }))
        .unwrap();
    let err = parse(&source, &plain).unwrap_err();
    assert!(
        err.contains("unknown key `service` in stage `release`"),
        "{err}"
    );
}

#[test]
fn registration_refuses_names_that_would_hide_a_table() {
    let mut r = registry(Arc::default());
    let named = |name: &'static str| -> Arc<dyn ManifestSection> {
        struct Named(&'static str);
        impl ManifestSection for Named {
            fn name(&self) -> &'static str {
                self.0
            }
            fn compile(
                &self,
                _: Option<&KindParams<'_>>,
            ) -> Result<CompiledSection, Vec<Diagnostic>> {
                Ok(CompiledSection::new(()))
            }
        }
        Arc::new(Named(name))
    };
    for reserved in ["release", "ci", "project"] {
        assert!(
            matches!(
                r.register_section(named(reserved)),
                Err(RegistryError::Reserved { .. })
            ),
            "{reserved}"
        );
    }
    assert_eq!(
        r.register_section(named("limits")).err(),
        Some(RegistryError::Duplicate {
            what: "section",
            name: "limits".to_owned()
        })
    );
    assert!(matches!(
        r.register_stage_settings(Stage::Apm, named("release")),
        Err(RegistryError::Reserved { .. })
    ));
    assert!(matches!(
        r.register_stage_settings(Stage::Release, named("release")),
        Err(RegistryError::Duplicate { .. })
    ));
    assert!(matches!(
        r.register(Arc::new(LimitKind)),
        Err(RegistryError::Duplicate { what: "kind", .. })
    ));
    assert!(matches!(
        r.register_evidence(EvidenceKind {
            name: "limit",
            stage: Stage::Ci,
            summarize,
        }),
        Err(RegistryError::Duplicate { .. })
    ));
    // What was registered is untouched by the refusals.
    let e = mlops_core::Evidence {
        kind: "limit".to_owned(),
        body: serde_json::json!({ "value": 1.0 }),
        from_run: None,
    };
    assert_eq!(r.summarize(&e).as_deref(), Some("limit 1.0"));
}

async fn run(dir: &Path, selection: Selection) -> Result<mlops_core::RunReport, ExecError> {
    let m = Manifest::load(dir, &registry(Arc::default())).unwrap();
    Executor::new(dir)?
        .run(
            &m.pipeline,
            RunOptions {
                selection,
                ..RunOptions::default()
            },
        )
        .await
}

fn status(report: &mlops_core::RunReport, step: &str) -> StepStatus {
    report.step(step).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_and_gating_follow_an_edit_of_what_a_kind_read() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| std::fs::write(dir.path().join("mlops.toml"), text).unwrap();
    std::fs::write(dir.path().join("data.txt"), "rows").unwrap();
    write(MANIFEST);
    let first = run(dir.path(), Selection::All).await.unwrap();
    assert_eq!(status(&first, "check"), StepStatus::Passed);
    let again = run(dir.path(), Selection::All).await.unwrap();
    assert_eq!(status(&again, "check"), StepStatus::Cached);

    // An edit that compiles to the same values: still cached, and the
    // evidence still opens stage 3.
    write(&MANIFEST.replace(
        "max = { a = 1.0, b = 2.0 }",
        "max = { b = 2.0, a = 1.0 } # reordered",
    ));
    let same = run(dir.path(), Selection::All).await.unwrap();
    assert_eq!(status(&same, "check"), StepStatus::Cached);
    run(dir.path(), Selection::Stage(Stage::Cd)).await.unwrap();
    // An edit of another part: still cached.
    write(&MANIFEST.replace("b = 2.0", "b = 9.0"));
    let other = run(dir.path(), Selection::All).await.unwrap();
    assert_eq!(status(&other, "check"), StepStatus::Cached);

    // An edit of the part it read: stage 3 alone is refused, naming the
    // step and the part; a plain run reruns the step.
    write(&MANIFEST.replace("a = 1.0", "a = 0.5"));
    let refused = run(dir.path(), Selection::Stage(Stage::Cd))
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, ExecError::Refused { ref step, .. } if step == "check"),
        "{message}"
    );
    assert!(
        message.contains("`[limits.max.a]` changed since its evidence in run"),
        "{message}"
    );
    let refused_from = run(dir.path(), Selection::From(Stage::Cd))
        .await
        .unwrap_err();
    assert!(
        refused_from.to_string().contains("`[limits.max.a]`"),
        "{refused_from}"
    );
    let rerun = run(dir.path(), Selection::All).await.unwrap();
    assert_eq!(status(&rerun, "check"), StepStatus::Passed);
    let ledger = mlops_core::Ledger::open(dir.path()).unwrap();
    let recorded = ledger.run(rerun.run_id).unwrap().unwrap();
    let check = recorded.steps.iter().find(|s| s.name == "check").unwrap();
    assert_eq!(check.evidence[0].body["value"], 0.5);
    // Now stage 3 stands on current evidence again.
    run(dir.path(), Selection::Stage(Stage::Cd)).await.unwrap();

    // Evidence recorded by an mlops that kept no reads (a ledger from
    // before schema 5): the refusal does not claim what changed.
    let db = rusqlite::Connection::open(dir.path().join(".mlops/ledger.db")).unwrap();
    db.execute("UPDATE step_definitions SET reads = NULL", [])
        .unwrap();
    drop(db);
    write(&MANIFEST.replace("a = 1.0", "a = 0.25"));
    let refused = run(dir.path(), Selection::Stage(Stage::Cd))
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("recorded by an older mlops"), "{message}");
    assert!(!message.contains("changed since its evidence"), "{message}");
}

#[test]
fn the_schema_has_the_stage_settings_beside_steps() {
    let schema = mlops_core::manifest::wire::json_schema_with(&registry(Arc::default()));
    let release = &schema["properties"]["release"];
    assert_eq!(
        release["properties"]["service"]["type"], "string",
        "{release:#}"
    );
    assert!(release["properties"].get("steps").is_some(), "{release:#}");
    assert!(
        release["properties"].get("description").is_some(),
        "{release:#}"
    );
    assert_eq!(release["additionalProperties"], false, "{release:#}");
    // Other stages keep the plain stage table; the section is top-level.
    assert!(
        schema["$defs"]["StageWire"]["properties"]
            .get("service")
            .is_none(),
        "{schema:#}"
    );
    assert!(schema["properties"].get("limits").is_some());
}
