//! `iris smoke`: functional checks against a running server over HTTP.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::{FlagSpec, Flags};
use crate::client::{self, HttpClient, HttpResponse};
use crate::error::{Error, Result};
use crate::{fsutil, oip};

const INFER_PATH: &str = "/v2/models/iris/infer";

/// Options of `iris smoke`.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// Port file written by `iris serve`.
    pub port_file: PathBuf,
    /// Optional JSON file of inference cases replacing the built-in ones.
    pub requests: Option<PathBuf>,
}

impl SmokeOptions {
    const FLAGS: &[FlagSpec] = &[FlagSpec::value("port-file"), FlagSpec::value("requests")];

    /// Parses the flags of `iris smoke`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("smoke", Self::FLAGS, args)?;
        Ok(Self {
            port_file: flags.required_path("port-file")?,
            requests: flags.path("requests"),
        })
    }
}

/// One inference request and what the server should answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// Request body, sent as is.
    pub request: Value,
    /// Expected HTTP status (200 unless told otherwise).
    pub expected_status: u16,
    /// Expected labels, in row order (for status 200).
    pub expected_labels: Vec<String>,
}

fn single(id: &str, datatype: &str, row: [f64; 4]) -> Value {
    json!({
        "id": id,
        "inputs": [{"name": oip::INPUT_NAME, "shape": [1, 4], "datatype": datatype, "data": row}],
    })
}

/// Built-in cases: one textbook flower per class and a nested batch.
pub fn default_cases() -> Vec<Case> {
    let case = |name: &str, request: Value, labels: &[&str]| Case {
        name: name.to_owned(),
        request,
        expected_status: 200,
        expected_labels: labels.iter().map(|l| (*l).to_owned()).collect(),
    };
    vec![
        case(
            "setosa",
            single("smoke-setosa", "FP32", [5.1, 3.5, 1.4, 0.2]),
            &["setosa"],
        ),
        case(
            "versicolor",
            single("smoke-versicolor", "FP64", [7.0, 3.2, 4.7, 1.4]),
            &["versicolor"],
        ),
        case(
            "virginica",
            single("smoke-virginica", "FP32", [6.3, 3.3, 6.0, 2.5]),
            &["virginica"],
        ),
        case(
            "nested batch of 3",
            json!({"inputs": [{
                "name": oip::INPUT_NAME,
                "shape": [3, 4],
                "datatype": "FP32",
                "data": [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]],
            }]}),
            &["setosa", "versicolor", "virginica"],
        ),
    ]
}

/// Parses a requests file: a JSON array of
/// `{"name"?, "request": {...}, "expected_labels"?: [...], "expected_status"?: 200}`.
pub fn parse_cases(text: &str, source: &str) -> Result<Vec<Case>> {
    let value: Value = serde_json::from_str(text)
        .map_err(|err| Error::new(format!("cannot parse requests file {source}: {err}")))?;
    let Value::Array(items) = value else {
        return Err(Error::new(format!(
            "requests file {source} must contain a json array of cases"
        )));
    };
    if items.is_empty() {
        return Err(Error::new(format!("requests file {source} has no cases")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at =
                |msg: &str| Error::new(format!("requests file {source}: case {}: {msg}", i + 1));
            let request = item
                .get("request")
                .filter(|r| r.is_object())
                .ok_or_else(|| at("missing 'request' object"))?;
            let name = match item.get("name") {
                None => format!("case {}", i + 1),
                Some(Value::String(name)) => name.clone(),
                Some(_) => return Err(at("'name' must be a string")),
            };
            let expected_status = match item.get("expected_status") {
                None => 200,
                Some(status) => status
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| at("'expected_status' must be an http status code"))?,
            };
            let expected_labels = match item.get("expected_labels") {
                None if expected_status != 200 => Vec::new(),
                None => {
                    return Err(at(
                        "'expected_labels' is required when the expected status is 200",
                    ));
                }
                Some(Value::Array(labels)) => labels
                    .iter()
                    .map(|l| {
                        l.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| at("'expected_labels' must hold strings"))
                    })
                    .collect::<Result<_>>()?,
                Some(_) => return Err(at("'expected_labels' must be an array of strings")),
            };
            Ok(Case {
                name,
                request: request.clone(),
                expected_status,
                expected_labels,
            })
        })
        .collect()
}

/// Collects check results and prints them as they come.
#[derive(Debug, Default)]
struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    fn record(&mut self, name: &str, outcome: std::result::Result<String, String>) {
        match outcome {
            Ok(detail) => {
                println!("  ok    {name}: {detail}");
                self.passed += 1;
            }
            Err(reason) => {
                println!("  FAIL  {name}: {reason}");
                self.failed.push(format!("{name}: {reason}"));
            }
        }
    }
}

type Check = std::result::Result<String, String>;

fn expect_status(response: &HttpResponse, status: u16) -> std::result::Result<(), String> {
    if response.status == status {
        Ok(())
    } else {
        let body: String = response.text().chars().take(200).collect();
        Err(format!(
            "expected status {status}, got {}: {body}",
            response.status
        ))
    }
}

fn json_of(response: &HttpResponse) -> std::result::Result<Value, String> {
    response.json().map_err(|err| err.to_string())
}

async fn check_get(client: &HttpClient, path: &str, key: &str, expected: Value) -> Check {
    let response = client.get(path).await.map_err(|err| err.to_string())?;
    expect_status(&response, 200)?;
    let body = json_of(&response)?;
    if body.get(key) == Some(&expected) {
        Ok(format!("200 {body}"))
    } else {
        Err(format!("expected \"{key}\": {expected}, got {body}"))
    }
}

/// Checks the metadata document; returns the served version.
async fn check_metadata(client: &HttpClient) -> std::result::Result<String, String> {
    let response = client
        .get("/v2/models/iris")
        .await
        .map_err(|err| err.to_string())?;
    expect_status(&response, 200)?;
    let meta = json_of(&response)?;
    if meta["name"] != oip::MODEL_NAME {
        return Err(format!(
            "expected name '{}', got {}",
            oip::MODEL_NAME,
            meta["name"]
        ));
    }
    let version = meta["versions"]
        .get(0)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "'versions' must be a non-empty array of strings, got {}",
                meta["versions"]
            )
        })?;
    if !meta["platform"].is_string() {
        return Err("'platform' is missing".to_owned());
    }
    let input = &meta["inputs"][0];
    if input["name"] != oip::INPUT_NAME
        || input["datatype"] != "FP32"
        || input["shape"] != json!([-1, 4])
    {
        return Err(format!("unexpected input description {input}"));
    }
    let outputs: Vec<&str> = meta["outputs"]
        .as_array()
        .map(|outs| outs.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    for name in [oip::LABEL_OUTPUT, oip::PROBABILITIES_OUTPUT] {
        if !outputs.contains(&name) {
            return Err(format!(
                "output '{name}' is not described (found {outputs:?})"
            ));
        }
    }
    Ok(version.to_owned())
}

/// Validates a 200 inference response against the case; returns the labels.
pub fn check_infer_response(
    body: &Value,
    case: &Case,
    version: Option<&str>,
) -> std::result::Result<Vec<String>, String> {
    if body["model_name"] != oip::MODEL_NAME {
        return Err(format!(
            "model_name is {}, expected '{}'",
            body["model_name"],
            oip::MODEL_NAME
        ));
    }
    let served = body["model_version"]
        .as_str()
        .ok_or("model_version is missing")?;
    if let Some(version) = version
        && served != version
    {
        return Err(format!(
            "model_version '{served}' differs from the metadata version '{version}'"
        ));
    }
    if let Some(id) = case.request.get("id")
        && body.get("id") != Some(id)
    {
        return Err(format!(
            "id {id} was not echoed (got {})",
            body.get("id").unwrap_or(&Value::Null)
        ));
    }
    let outputs = body["outputs"]
        .as_array()
        .ok_or("'outputs' is not an array")?;
    let find = |name: &str| {
        outputs
            .iter()
            .find(|o| o["name"] == name)
            .ok_or_else(|| format!("output '{name}' is missing"))
    };
    let n = case.expected_labels.len();

    let label = find(oip::LABEL_OUTPUT)?;
    let labels: Vec<String> = label["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if label["datatype"] != "BYTES" || label["shape"] != json!([n]) || labels.len() != n {
        return Err(format!(
            "'label' should be BYTES with shape [{n}] and {n} strings, got datatype {} shape {} and {} strings",
            label["datatype"],
            label["shape"],
            labels.len()
        ));
    }

    let probs = find(oip::PROBABILITIES_OUTPUT)?;
    let values: Vec<f64> = probs["data"]
        .as_array()
        .map(|data| data.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let k = probs["shape"][1].as_u64().unwrap_or(0) as usize;
    if probs["datatype"] != "FP32"
        || probs["shape"][0] != json!(n)
        || k == 0
        || values.len() != n * k
    {
        return Err(format!(
            "'probabilities' should be FP32 with shape [{n}, K] and {n}*K numbers, got datatype {} shape {} and {} numbers",
            probs["datatype"],
            probs["shape"],
            values.len()
        ));
    }
    for (row, chunk) in values.chunks(k).enumerate() {
        let sum: f64 = chunk.iter().sum();
        if chunk.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
            return Err(format!(
                "probabilities of row {row} are not a distribution: {chunk:?}"
            ));
        }
    }
    if labels != case.expected_labels {
        return Err(format!(
            "expected labels {:?}, got {labels:?}",
            case.expected_labels
        ));
    }
    Ok(labels)
}

async fn check_case(client: &HttpClient, case: &Case, version: Option<&str>) -> Check {
    let response = client
        .post_json(INFER_PATH, case.request.to_string())
        .await
        .map_err(|err| err.to_string())?;
    expect_status(&response, case.expected_status)?;
    let body = json_of(&response)?;
    if case.expected_status != 200 {
        return match body["error"].as_str() {
            Some(message) => Ok(format!("{} {{\"error\": \"{message}\"}}", response.status)),
            None => Err(format!("error response lacks an \"error\" string: {body}")),
        };
    }
    let labels = check_infer_response(&body, case, version)?;
    Ok(format!("200 {labels:?}"))
}

async fn check_raw_bad_json(client: &HttpClient) -> Check {
    let response = client
        .post_json(INFER_PATH, "{\"inputs\": [")
        .await
        .map_err(|err| err.to_string())?;
    expect_status(&response, 400)?;
    let body = json_of(&response)?;
    body["error"]
        .as_str()
        .map(|m| format!("400 {{\"error\": \"{m}\"}}"))
        .ok_or_else(|| format!("error response lacks an \"error\" string: {body}"))
}

/// Runs `iris smoke`.
pub async fn run(args: &[String]) -> Result<()> {
    let options = SmokeOptions::from_args(args)?;
    let cases = match &options.requests {
        Some(path) => parse_cases(
            &fsutil::read_string(path, "requests file")?,
            &path.display().to_string(),
        )?,
        None => default_cases(),
    };
    let port = client::read_port_file(&options.port_file)?;
    let client = HttpClient::new(port);
    println!("smoke: checking {}", client.url(""));

    // Without a server every check would fail the same way: say so once.
    if let Err(err) = client.get("/health").await {
        return Err(err.context("smoke"));
    }
    let mut report = Report::default();
    report.record(
        "GET /health",
        check_get(&client, "/health", "status", json!("ok")).await,
    );
    report.record(
        "GET /v2/health/live",
        check_get(&client, "/v2/health/live", "live", json!(true)).await,
    );
    report.record(
        "GET /v2/health/ready",
        check_get(&client, "/v2/health/ready", "ready", json!(true)).await,
    );
    let version = check_metadata(&client).await;
    report.record(
        "GET /v2/models/iris",
        version.clone().map(|v| format!("200 version {v}")),
    );
    let version = version.ok();
    for case in &cases {
        let outcome = check_case(&client, case, version.as_deref()).await;
        report.record(&format!("infer {}", case.name), outcome);
    }
    let wrong_shape = Case {
        name: "malformed (3 values for shape [1, 4])".to_owned(),
        request: json!({"inputs": [{"name": oip::INPUT_NAME, "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4]}]}),
        expected_status: 400,
        expected_labels: Vec::new(),
    };
    report.record(
        &format!("infer {}", wrong_shape.name),
        check_case(&client, &wrong_shape, None).await,
    );
    report.record(
        "infer malformed (invalid json)",
        check_raw_bad_json(&client).await,
    );

    let total = report.passed + report.failed.len();
    if report.failed.is_empty() {
        println!("smoke: all {total} checks passed");
        Ok(())
    } else {
        Err(Error::new(format!(
            "smoke: {} of {total} checks failed:\n  {}",
            report.failed.len(),
            report.failed.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_files() {
        let text = r#"[
            {"name": "one", "request": {"inputs": []}, "expected_labels": ["setosa"]},
            {"request": {"inputs": []}, "expected_status": 400}
        ]"#;
        let cases = parse_cases(text, "r.json").unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[1].name, "case 2");
        assert_eq!(cases[1].expected_status, 400);
        let err = parse_cases(r#"[{"request": {}}]"#, "r.json").unwrap_err();
        assert_eq!(
            err.message(),
            "requests file r.json: case 1: 'expected_labels' is required when the expected status is 200"
        );
        assert!(
            parse_cases("{}", "r.json")
                .unwrap_err()
                .message()
                .contains("json array")
        );
        assert!(
            parse_cases("[{}]", "r.json")
                .unwrap_err()
                .message()
                .contains("missing 'request'")
        );
    }

    #[test]
    fn bundled_requests_file_is_valid() {
        let cases = parse_cases(
            include_str!("../data/smoke-requests.json"),
            "smoke-requests.json",
        )
        .unwrap();
        assert!(cases.len() >= 3);
    }

    #[test]
    fn validates_response_shapes() {
        let case = &default_cases()[0];
        let good = json!({
            "model_name": "iris", "model_version": "v1", "id": "smoke-setosa",
            "outputs": [
                {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]},
                {"name": "probabilities", "shape": [1, 3], "datatype": "FP32", "data": [0.98, 0.015, 0.005]},
            ],
        });
        assert_eq!(
            check_infer_response(&good, case, Some("v1")).unwrap(),
            ["setosa"]
        );
        assert!(
            check_infer_response(&good, case, Some("v2"))
                .unwrap_err()
                .contains("differs")
        );
        let mut bad = good.clone();
        bad["outputs"][1]["data"] = json!([0.98, 0.015]);
        assert!(
            check_infer_response(&bad, case, None)
                .unwrap_err()
                .contains("'probabilities' should be")
        );
        let mut bad = good.clone();
        bad["outputs"][0]["shape"] = json!([2]);
        assert!(
            check_infer_response(&bad, case, None)
                .unwrap_err()
                .contains("'label' should be")
        );
        let mut bad = good;
        bad["outputs"][0]["data"] = json!(["virginica"]);
        assert!(
            check_infer_response(&bad, case, None)
                .unwrap_err()
                .contains("expected labels")
        );
    }
}
