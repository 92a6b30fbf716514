//! The documentation of the report stays true to the code.

use std::path::Path;

fn docs(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file)
}

/// `docs/assess.schema.json` is the schema the code generates. Regenerate
/// with `MLOPS_UPDATE_SCHEMA=1 cargo nextest run -p mlops-assess schema`.
#[test]
fn the_documented_json_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&mlops_assess::report_schema()).unwrap() + "\n";
    let path = docs("assess.schema.json");
    if std::env::var_os("MLOPS_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let documented = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        documented == generated,
        "{} is out of date: rerun with MLOPS_UPDATE_SCHEMA=1",
        path.display()
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for field in [
        "stage_level",
        "microsoft_level",
        "ml_test_score",
        "findings",
    ] {
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == field),
            "{field} is not a required field"
        );
    }
}

/// Every signal and every ML Test Score test is explained in
/// `docs/assess.md`.
#[test]
fn every_signal_and_test_is_documented() {
    let text = std::fs::read_to_string(docs("assess.md")).unwrap();
    let schema = mlops_assess::report_schema();
    let signals = schema["$defs"]["Signal"]["oneOf"]
        .as_array()
        .or_else(|| schema["$defs"]["Signal"]["enum"].as_array())
        .unwrap()
        .iter()
        .flat_map(|v| {
            v.get("const")
                .or_else(|| v.get("enum").and_then(|e| e.get(0)))
                .or(Some(v))
                .and_then(|c| c.as_str())
        })
        .collect::<Vec<_>>();
    assert_eq!(signals.len(), 40, "{signals:?}");
    for s in signals {
        assert!(
            text.contains(&format!("| `{s}` |")),
            "{s} is not in the signal table"
        );
    }
    let facts = mlops_assess::score::Facts::new(&[]);
    let score = mlops_assess::score::ml_test_score(&facts);
    for t in score.sections.iter().flat_map(|s| &s.tests) {
        assert!(
            text.contains(&format!("| {} |", t.id)),
            "{} is not documented",
            t.id
        );
    }
}
