//! Open Inference Protocol (KServe v2) request parsing and response building.
//!
//! Only the REST/JSON flavour is implemented, for one model with one input
//! tensor (`input-0`, shape `[N, features]`) and two outputs (`label` and
//! `probabilities`).

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::model::Model;

/// Name under which the model is served.
pub const MODEL_NAME: &str = "iris";
/// Name of the single input tensor.
pub const INPUT_NAME: &str = "input-0";
/// Output tensor holding the predicted class names.
pub const LABEL_OUTPUT: &str = "label";
/// Output tensor holding the class probabilities.
pub const PROBABILITIES_OUTPUT: &str = "probabilities";
/// Platform string reported in the model metadata.
pub const PLATFORM: &str = "rust-softmax";

/// A validated inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// Client-chosen request id, echoed in the response.
    pub id: Option<String>,
    /// Feature rows, each exactly as wide as the model input.
    pub rows: Vec<Vec<f64>>,
    /// Requested outputs; `None` means all.
    pub outputs: Option<Vec<String>>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(message)
}

/// Parses and validates an inference request body for a model with `n_features` inputs.
///
/// `data` may be flat (row-major) or nested to match `shape`; `datatype` may
/// be `FP32` or `FP64`. Every value must be a finite JSON number (and, for
/// FP32, representable as a finite 32-bit float).
pub fn parse_infer_request(body: &[u8], n_features: usize) -> Result<InferRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| bad(format!("request body is not valid json: {err}")))?;
    let Value::Object(request) = value else {
        return Err(bad("request body must be a json object"));
    };
    let id = match request.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => return Err(bad("'id' must be a string")),
    };
    let inputs = match request.get("inputs") {
        Some(Value::Array(inputs)) => inputs,
        Some(_) => return Err(bad("'inputs' must be an array")),
        None => return Err(bad("missing 'inputs'")),
    };
    let [input] = inputs.as_slice() else {
        return Err(bad(format!(
            "expected exactly 1 input tensor ('{INPUT_NAME}'), got {}",
            inputs.len()
        )));
    };
    let rows = parse_input_tensor(input, n_features)?;
    let outputs = parse_requested_outputs(&request)?;
    Ok(InferRequest { id, rows, outputs })
}

fn parse_input_tensor(input: &Value, n_features: usize) -> Result<Vec<Vec<f64>>> {
    let Value::Object(input) = input else {
        return Err(bad("each input must be a json object"));
    };
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("input is missing its 'name'"))?;
    if name != INPUT_NAME {
        return Err(bad(format!(
            "unknown input '{name}'; this model has one input named '{INPUT_NAME}'"
        )));
    }
    let datatype = input
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("input '{name}' is missing its 'datatype'")))?;
    let fp32 = match datatype {
        "FP32" => true,
        "FP64" => false,
        other => {
            return Err(bad(format!(
                "input '{name}': unsupported datatype '{other}' (use FP32 or FP64)"
            )));
        }
    };
    let shape = parse_shape(input.get("shape"), name)?;
    let [n_rows, width] = shape.as_slice() else {
        return Err(bad(format!(
            "input '{name}': shape must be [N, {n_features}], got {shape:?}"
        )));
    };
    if *width != n_features {
        return Err(bad(format!(
            "input '{name}': shape must be [N, {n_features}], got {shape:?}"
        )));
    }
    if *n_rows == 0 {
        return Err(bad(format!(
            "input '{name}': batch is empty (shape {shape:?})"
        )));
    }
    let data = input
        .get("data")
        .ok_or_else(|| bad(format!("input '{name}' is missing its 'data'")))?;
    let mut flat = Vec::new();
    flatten(data, &shape, 0, fp32, &mut flat)
        .map_err(|err| err.context(format!("input '{name}'")))?;
    Ok(flat.chunks(n_features).map(<[f64]>::to_vec).collect())
}

fn parse_shape(shape: Option<&Value>, name: &str) -> Result<Vec<usize>> {
    let Some(Value::Array(dims)) = shape else {
        return Err(bad(format!("input '{name}' is missing its 'shape' array")));
    };
    dims.iter()
        .map(|dim| {
            dim.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "input '{name}': shape dimensions must be non-negative integers, got {}",
                        short(dim)
                    ))
                })
        })
        .collect()
}

/// Appends the numbers of `data` to `out`, checking that the nesting matches `shape`.
///
/// At nesting depth `d`, an array of arrays must have `shape[d]` elements; an
/// array of numbers must hold `shape[d] * shape[d+1] * ...` values.
fn flatten(
    data: &Value,
    shape: &[usize],
    depth: usize,
    fp32: bool,
    out: &mut Vec<f64>,
) -> Result<()> {
    let Value::Array(items) = data else {
        return Err(bad("'data' must be an array"));
    };
    let expected = shape[depth..]
        .iter()
        .try_fold(1usize, |acc, dim| acc.checked_mul(*dim))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    if items.first().is_some_and(Value::is_array) {
        if depth + 1 >= shape.len() {
            return Err(bad("'data' is nested deeper than its shape"));
        }
        if items.len() != shape[depth] {
            return Err(bad(format!(
                "'data' has {} elements at depth {depth} but shape {shape:?} needs {}",
                items.len(),
                shape[depth]
            )));
        }
        for item in items {
            flatten(item, shape, depth + 1, fp32, out)?;
        }
        return Ok(());
    }
    if items.len() != expected {
        let found = if depth == 0 {
            format!("has {} values", items.len())
        } else {
            format!("has a row of {} values", items.len())
        };
        return Err(bad(format!(
            "'data' {found} but shape {shape:?} needs {expected}"
        )));
    }
    for item in items {
        let Some(number) = item.as_f64() else {
            return Err(bad(format!(
                "'data' must contain only numbers, found {}",
                short(item)
            )));
        };
        let finite = if fp32 {
            (number as f32).is_finite()
        } else {
            number.is_finite()
        };
        if !finite {
            return Err(bad(format!(
                "value {number} is not a finite {} number",
                if fp32 { "FP32" } else { "FP64" }
            )));
        }
        out.push(if fp32 {
            f64::from(number as f32)
        } else {
            number
        });
    }
    Ok(())
}

/// A JSON value rendered for an error message, cut to a readable length.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn parse_requested_outputs(request: &Map<String, Value>) -> Result<Option<Vec<String>>> {
    let Some(outputs) = request.get("outputs") else {
        return Ok(None);
    };
    let Value::Array(outputs) = outputs else {
        return Err(bad("'outputs' must be an array"));
    };
    let mut names = Vec::new();
    for output in outputs {
        let name = output
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("each requested output needs a 'name'"))?;
        if name != LABEL_OUTPUT && name != PROBABILITIES_OUTPUT {
            return Err(bad(format!(
                "unknown output '{name}'; available outputs are '{LABEL_OUTPUT}' and '{PROBABILITIES_OUTPUT}'"
            )));
        }
        names.push(name.to_owned());
    }
    Ok(Some(names))
}

/// Runs the model on a request and builds the OIP response body.
pub fn infer(model: &Model, version: &str, request: &InferRequest) -> (Value, Vec<String>) {
    let probabilities: Vec<Vec<f64>> = request
        .rows
        .iter()
        .map(|row| model.predict_proba(row))
        .collect();
    let labels: Vec<String> = probabilities
        .iter()
        .map(|p| model.classes[crate::model::argmax(p)].clone())
        .collect();
    let n = request.rows.len();
    let wanted = |name: &str| {
        request
            .outputs
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    };
    let mut outputs = Vec::new();
    if wanted(LABEL_OUTPUT) {
        outputs.push(json!({
            "name": LABEL_OUTPUT,
            "shape": [n],
            "datatype": "BYTES",
            "data": labels,
        }));
    }
    if wanted(PROBABILITIES_OUTPUT) {
        let flat: Vec<f64> = probabilities
            .iter()
            .flatten()
            .map(|p| fp32_value(*p))
            .collect();
        outputs.push(json!({
            "name": PROBABILITIES_OUTPUT,
            "shape": [n, model.classes.len()],
            "datatype": "FP32",
            "data": flat,
        }));
    }
    let mut body = Map::new();
    body.insert("model_name".into(), json!(MODEL_NAME));
    body.insert("model_version".into(), json!(version));
    if let Some(id) = &request.id {
        body.insert("id".into(), json!(id));
    }
    body.insert("outputs".into(), Value::Array(outputs));
    (Value::Object(body), labels)
}

/// Rounds to FP32 precision, returned as the f64 that prints like the f32
/// (`0.99756235` rather than `0.9975623488426208`).
fn fp32_value(value: f64) -> f64 {
    let single = value as f32;
    single.to_string().parse().unwrap_or(f64::from(single))
}

/// The model metadata document (`GET /v2/models/iris`).
pub fn model_metadata(model: &Model, version: &str) -> Value {
    json!({
        "name": MODEL_NAME,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, model.n_features()]}],
        "outputs": [
            {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, model.classes.len()]},
        ],
        "parameters": {"feature_names": model.feature_names, "classes": model.classes},
    })
}

/// The OIP error body: `{"error": "..."}`.
pub fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<InferRequest> {
        parse_infer_request(body.to_string().as_bytes(), 4)
    }

    fn request(shape: Value, data: Value) -> Value {
        json!({"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP32", "data": data}]})
    }

    fn message(body: Value) -> String {
        parse(body).unwrap_err().message().to_owned()
    }

    fn tiny_model() -> Model {
        use crate::model::{MODEL_FORMAT, Scaler, TrainingInfo};
        Model {
            format: MODEL_FORMAT.to_owned(),
            feature_names: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            classes: vec!["neg".into(), "pos".into()],
            scaler: Scaler {
                mean: vec![0.0; 4],
                std: vec![1.0; 4],
            },
            weights: vec![vec![0.0; 4], vec![1.0, 0.0, 0.0, 0.0]],
            bias: vec![0.0, 0.0],
            training: TrainingInfo {
                algorithm: "test".into(),
                seed: 0,
                test_fraction: 0.2,
                epochs: 1,
                learning_rate: 0.1,
                l2: 0.0,
                final_loss: 0.0,
                n_train: 0,
                n_test: 0,
                data_file: "test".into(),
                data_fnv1a64: "0".into(),
            },
        }
    }

    #[test]
    fn builds_oip_responses() {
        let model = tiny_model();
        let request = parse(json!({
            "id": "r1",
            "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [[-1, 0, 0, 0], [1, 0, 0, 0]]}],
        }))
        .unwrap();
        let (body, labels) = infer(&model, "v1", &request);
        assert_eq!(labels, ["neg", "pos"]);
        assert_eq!(
            body,
            json!({
                "model_name": "iris",
                "model_version": "v1",
                "id": "r1",
                "outputs": [
                    {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["neg", "pos"]},
                    {"name": "probabilities", "shape": [2, 2], "datatype": "FP32",
                     "data": [0.7310586, 0.26894143, 0.26894143, 0.7310586]},
                ],
            })
        );
        let only_labels = InferRequest {
            outputs: Some(vec!["label".into()]),
            ..request
        };
        let (body, _) = infer(&model, "v1", &only_labels);
        assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
        let meta = model_metadata(&model, "v1");
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
        assert_eq!(meta["outputs"][1]["shape"], json!([-1, 2]));
    }

    #[test]
    fn accepts_flat_and_nested_data() {
        let flat = parse(request(
            json!([2, 4]),
            json!([5.1, 3.5, 1.4, 0.2, 6.3, 3.3, 6.0, 2.5]),
        ))
        .unwrap();
        let nested = parse(request(
            json!([2, 4]),
            json!([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]),
        ))
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.rows.len(), 2);
        assert_eq!(flat.rows[1][3], f64::from(2.5f32));
        assert_eq!(flat.id, None);
        assert_eq!(flat.outputs, None);
    }

    #[test]
    fn keeps_id_datatype_and_outputs() {
        let body = json!({
            "id": "abc",
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [0.1, 2, 3, 4]}],
            "outputs": [{"name": "label"}],
        });
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.id.as_deref(), Some("abc"));
        assert_eq!(parsed.rows, vec![vec![0.1, 2.0, 3.0, 4.0]]);
        assert_eq!(parsed.outputs, Some(vec!["label".to_owned()]));
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert_eq!(
            message(request(json!([1, 4]), json!([1, 2, 3]))),
            "input 'input-0': 'data' has 3 values but shape [1, 4] needs 4"
        );
        assert_eq!(
            message(request(json!([1, 3]), json!([1, 2, 3]))),
            "input 'input-0': shape must be [N, 4], got [1, 3]"
        );
        assert_eq!(
            message(request(json!([4]), json!([1, 2, 3, 4]))),
            "input 'input-0': shape must be [N, 4], got [4]"
        );
        assert_eq!(
            message(request(json!([0, 4]), json!([]))),
            "input 'input-0': batch is empty (shape [0, 4])"
        );
        assert_eq!(
            message(request(json!([2, 4]), json!([[1, 2, 3, 4]]))),
            "input 'input-0': 'data' has 1 elements at depth 0 but shape [2, 4] needs 2"
        );
        assert_eq!(
            message(request(json!([2, 4]), json!([[1, 2, 3, 4], [1, 2, 3]]))),
            "input 'input-0': 'data' has a row of 3 values but shape [2, 4] needs 4"
        );
        assert_eq!(
            message(request(json!([1, 4]), json!([[[1, 2, 3, 4]]]))),
            "input 'input-0': 'data' is nested deeper than its shape"
        );
        assert_eq!(
            message(request(
                json!([18446744073709551615u64, 4]),
                json!([1, 2, 3, 4])
            )),
            "input 'input-0': shape [18446744073709551615, 4] is too large"
        );
        assert_eq!(
            message(request(json!([1, -4]), json!([1, 2, 3, 4]))),
            "input 'input-0': shape dimensions must be non-negative integers, got -4"
        );
    }

    #[test]
    fn rejects_bad_values_and_fields() {
        assert!(
            message(request(json!([1, 4]), json!([1, "NaN", 3, 4])))
                .contains("only numbers, found \"NaN\"")
        );
        assert!(
            message(request(json!([1, 4]), json!([1, null, 3, 4])))
                .contains("only numbers, found null")
        );
        assert!(
            message(request(json!([1, 4]), json!([1, 1e39, 3, 4])))
                .contains("not a finite FP32 number")
        );
        assert!(
            parse_infer_request(b"{\"inputs\": [", 4)
                .unwrap_err()
                .message()
                .starts_with("request body is not valid json")
        );
        assert!(
            parse_infer_request(b"[1, NaN]", 4)
                .unwrap_err()
                .message()
                .starts_with("request body is not valid json")
        );
        assert_eq!(message(json!([1])), "request body must be a json object");
        assert_eq!(message(json!({})), "missing 'inputs'");
        assert_eq!(
            message(json!({"inputs": []})),
            "expected exactly 1 input tensor ('input-0'), got 0"
        );
        assert_eq!(
            message(json!({"id": 3, "inputs": []})),
            "'id' must be a string"
        );
        let wrong_name = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
        assert!(message(wrong_name).contains("unknown input 'x'"));
        let wrong_type = json!({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 4]}]});
        assert!(message(wrong_type).contains("unsupported datatype 'INT8'"));
        let mut unknown_output = request(json!([1, 4]), json!([1, 2, 3, 4]));
        unknown_output["outputs"] = json!([{"name": "logits"}]);
        assert!(message(unknown_output).contains("unknown output 'logits'"));
    }
}
