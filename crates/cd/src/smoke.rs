//! The `smoke` kind: sample requests from a file go to every replica of a
//! deployed service, and each answer is checked: the status code, and for
//! Open Inference Protocol v2 endpoints the response shape (every output
//! has a name, a datatype, a shape, and as many data values as the shape
//! says), plus expected output values.
//!
//! The file is a JSON array of cases:
//!
//! ```json
//! [{"name": "one row", "method": "POST", "path": "/v2/models/iris/infer",
//!   "body": {"inputs": [...]},
//!   "expect": {"status": 200, "oip": true, "outputs": {"label": ["setosa"]}}}]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, relative_path_problem};
use mlops_core::{KindParams, Stage, StepAction, StepContext, StepFailure, StepKind};
use mlops_iac::StepInfra;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `smoke` kind.
pub struct SmokeKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SmokeWire {
    service: toml::Spanned<String>,
    requests: toml::Spanned<String>,
    environment: Option<String>,
    provider: Option<toml::Spanned<String>>,
    timeout: Option<toml::Spanned<String>>,
}

#[derive(Clone)]
struct Smoke {
    service: String,
    requests: PathBuf,
    environment: String,
    timeout: Duration,
}

/// One case of the requests file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What it checks.
    pub name: String,
    /// `GET` (default) or `POST`.
    #[serde(default = "get")]
    pub method: String,
    /// The path, starting with `/`.
    pub path: String,
    /// A JSON body.
    pub body: Option<Value>,
    /// What the answer must be.
    #[serde(default)]
    pub expect: Expect,
}

fn get() -> String {
    "GET".to_owned()
}

/// What an answer must be.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status code (default 200).
    pub status: Option<u16>,
    /// Whether the body must be an OIP v2 inference response.
    #[serde(default)]
    pub oip: bool,
    /// Expected data of named outputs.
    pub outputs: Option<serde_json::Map<String, Value>>,
}

#[derive(Serialize)]
struct CaseResult {
    name: String,
    endpoint: String,
    status: Option<u16>,
    passed: bool,
    problem: Option<String>,
    millis: u64,
}

#[derive(Serialize)]
struct SmokeEvidence {
    service: String,
    environment: String,
    endpoints: Vec<String>,
    cases: usize,
    failed: usize,
    results: Vec<CaseResult>,
}

impl StepKind for SmokeKind {
    fn name(&self) -> &'static str {
        "smoke"
    }

    fn stage(&self) -> Option<Stage> {
        Some(Stage::Cd)
    }

    fn summary(&self) -> &'static str {
        "sends sample requests to every replica of a deployed service and checks status codes and response shapes (OIP v2)"
    }

    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let wire: SmokeWire = params.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        if let Some(d) = relative_path_problem("requests", &wire.requests, "the step's directory") {
            errors.push(d);
        }
        let provider =
            mlops_iac::kinds::provider_param(wire.provider.as_ref()).unwrap_or_else(|d| {
                errors.push(d);
                None
            });
        let timeout = match &wire.timeout {
            None => Duration::from_secs(5),
            Some(t) => mlops_core::manifest::parse_duration("timeout", t).unwrap_or_else(|d| {
                errors.push(d);
                Duration::from_secs(5)
            }),
        };
        let infra = StepInfra::read_service(params, &wire.service, provider, &mut errors);
        let infra = match infra {
            Some(infra) if errors.is_empty() => infra,
            _ => return Err(errors),
        };
        let smoke = Smoke {
            service: wire.service.into_inner(),
            requests: PathBuf::from(wire.requests.into_inner()),
            environment: wire.environment.unwrap_or_else(|| "staging".to_owned()),
            timeout,
        };
        Ok(Arc::new(move |ctx: StepContext| {
            let smoke = smoke.clone();
            let infra = infra.clone();
            async move { run(&ctx, &infra, &smoke).await }
        }))
    }
}

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

async fn run(ctx: &StepContext, infra: &StepInfra, s: &Smoke) -> Result<(), StepFailure> {
    let file = ctx.cwd.join(&s.requests);
    let text = tokio::fs::read_to_string(&file).await.map_err(|e| {
        failure(format!(
            "cannot read the smoke requests {}: {e}",
            file.display()
        ))
    })?;
    let cases: Vec<Case> = serde_json::from_str(&text).map_err(|e| {
        failure(format!(
            "{} is not a JSON array of smoke cases: {e}",
            file.display()
        ))
    })?;
    if cases.is_empty() {
        return Err(failure(format!("{} holds no smoke cases", file.display())));
    }
    for c in &cases {
        if !c.path.starts_with('/')
            || !matches!(
                c.method.as_str(),
                "GET" | "POST" | "PUT" | "DELETE" | "HEAD"
            )
        {
            return Err(failure(format!(
                "{}: case `{}` needs a path starting with `/` and a method GET, POST, PUT, DELETE or HEAD",
                file.display(),
                c.name
            )));
        }
    }
    let (kind, provider, scope) = infra.target(ctx, &s.environment).await.map_err(failure)?;
    let instances = provider.observe(&scope).await.map_err(failure)?;
    // The service's own instance, not one a controller (a release's
    // canary) runs beside it.
    let Some(instance) = instances
        .iter()
        .filter(|i| i.service == s.service && i.owner.is_none())
        .max_by_key(|i| i.is_healthy())
    else {
        return Err(failure(format!(
            "service `{}` does not run in {kind} `{}`: deploy it first",
            s.service, s.environment
        )));
    };
    let endpoints = instance.endpoints();
    if endpoints.is_empty() {
        return Err(failure(format!(
            "service `{}` has no reachable replica",
            s.service
        )));
    }
    let mut results = Vec::new();
    for endpoint in &endpoints {
        let Some(port) = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        for case in &cases {
            let body = case.body.as_ref().map(|b| b.to_string().into_bytes());
            let started = std::time::Instant::now();
            let answer =
                mlops_iac::health::send(port, &case.method, &case.path, body, s.timeout).await;
            let millis = started.elapsed().as_millis() as u64;
            let (status, problem) = match answer {
                Err(e) => (None, Some(e)),
                Ok((status, body)) => (Some(status), check(case, status, &body).err()),
            };
            let passed = problem.is_none();
            ctx.log(format!(
                "{} {endpoint} {} {} -> {}{}",
                if passed { "ok  " } else { "FAIL" },
                case.method,
                case.path,
                status.map_or("no answer".to_owned(), |s| s.to_string()),
                problem
                    .as_deref()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default()
            ));
            results.push(CaseResult {
                name: case.name.clone(),
                endpoint: endpoint.clone(),
                status,
                passed,
                problem,
                millis,
            });
        }
    }
    let failed: Vec<&CaseResult> = results.iter().filter(|r| !r.passed).collect();
    let message = (!failed.is_empty()).then(|| {
        let lines: Vec<String> = failed
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "`{}` at {}: {}",
                    r.name,
                    r.endpoint,
                    r.problem.as_deref().unwrap_or("")
                )
            })
            .collect();
        format!(
            "{} of {} smoke checks failed: {}",
            failed.len(),
            results.len(),
            lines.join("; ")
        )
    });
    ctx.record(
        crate::evidence::SMOKE,
        &SmokeEvidence {
            service: s.service.clone(),
            environment: s.environment.clone(),
            endpoints,
            cases: results.len(),
            failed: failed.len(),
            results,
        },
    );
    match message {
        Some(m) => Err(StepFailure::new(m)),
        None => Ok(()),
    }
}

/// Checks one answer against a case's expectations.
pub fn check(case: &Case, status: u16, body: &[u8]) -> Result<(), String> {
    let want = case.expect.status.unwrap_or(200);
    if status != want {
        let text = String::from_utf8_lossy(body);
        let snippet: String = text.chars().take(200).collect();
        return Err(format!(
            "status {status}, expected {want} (body: {snippet})"
        ));
    }
    if !case.expect.oip && case.expect.outputs.is_none() {
        return Ok(());
    }
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    check_oip(&json)?;
    if let Some(expected) = &case.expect.outputs {
        let outputs = json["outputs"].as_array().cloned().unwrap_or_default();
        for (name, want) in expected {
            let Some(found) = outputs.iter().find(|o| o["name"] == name.as_str()) else {
                return Err(format!("no output `{name}` in the response"));
            };
            if &found["data"] != want {
                return Err(format!(
                    "output `{name}` is {}, expected {want}",
                    found["data"]
                ));
            }
        }
    }
    Ok(())
}

const DATATYPES: [&str; 13] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES",
];

/// Checks that a body is an Open Inference Protocol v2 inference response.
pub fn check_oip(json: &Value) -> Result<(), String> {
    let Some(obj) = json.as_object() else {
        return Err("the response is not a JSON object".into());
    };
    if !obj.get("model_name").is_some_and(Value::is_string) {
        return Err("OIP response without a string `model_name`".into());
    }
    let Some(outputs) = obj.get("outputs").and_then(Value::as_array) else {
        return Err("OIP response without an `outputs` array".into());
    };
    for (i, o) in outputs.iter().enumerate() {
        let name = o["name"]
            .as_str()
            .ok_or(format!("output {i} has no string `name`"))?;
        let datatype = o["datatype"]
            .as_str()
            .ok_or(format!("output `{name}` has no `datatype`"))?;
        if !DATATYPES.contains(&datatype) {
            return Err(format!(
                "output `{name}` has an unknown datatype `{datatype}`"
            ));
        }
        let shape: Vec<u64> = o["shape"]
            .as_array()
            .and_then(|s| s.iter().map(Value::as_u64).collect())
            .ok_or(format!(
                "output `{name}` has no shape of non-negative integers"
            ))?;
        let expected: u64 = shape.iter().product();
        let count = flat_len(&o["data"]).ok_or(format!("output `{name}` has no `data` array"))?;
        if count as u64 != expected {
            return Err(format!(
                "output `{name}` has {count} values but its shape {shape:?} says {expected}"
            ));
        }
    }
    Ok(())
}

fn flat_len(v: &Value) -> Option<usize> {
    let items = v.as_array()?;
    Some(
        items
            .iter()
            .map(|i| {
                if i.is_array() {
                    flat_len(i).unwrap_or(0)
                } else {
                    1
                }
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oip_shapes_are_checked() {
        let good = json!({"model_name": "m", "outputs": [{"name": "p", "datatype": "FP64", "shape": [2, 3], "data": [[1,2,3],[4,5,6]]}]});
        assert_eq!(check_oip(&good), Ok(()));
        let bad = json!({"model_name": "m", "outputs": [{"name": "p", "datatype": "FP64", "shape": [2, 3], "data": [1,2,3]}]});
        assert!(
            check_oip(&bad)
                .unwrap_err()
                .contains("3 values but its shape [2, 3] says 6")
        );
        assert!(
            check_oip(&json!({"outputs": []}))
                .unwrap_err()
                .contains("model_name")
        );
        let weird = json!({"model_name": "m", "outputs": [{"name": "p", "datatype": "FLOAT", "shape": [1], "data": [1]}]});
        assert!(check_oip(&weird).unwrap_err().contains("unknown datatype"));
    }

    #[test]
    fn status_and_values_are_checked() {
        let case: Case = serde_json::from_value(json!({"name": "c", "path": "/x", "expect": {"status": 200, "oip": true, "outputs": {"label": ["a"]}}})).unwrap();
        let body = json!({"model_name": "m", "outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["b"]}]}).to_string();
        assert!(
            check(&case, 200, body.as_bytes())
                .unwrap_err()
                .contains("output `label` is [\"b\"], expected [\"a\"]")
        );
        assert!(
            check(&case, 500, b"boom")
                .unwrap_err()
                .contains("status 500, expected 200")
        );
    }
}
