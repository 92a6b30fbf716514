//! End-to-end tests over loopback: the real `iris` binary started in the
//! background (smoke, stop), and the
//! server's HTTP error handling exercised in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use iris::client::HttpClient;
use iris::data::Dataset;
use iris::model::Hyperparameters;
use iris::server::{self, ServerState};
use iris::train::{self, TrainOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IRIS: &str = env!("CARGO_BIN_EXE_iris");

fn data_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/iris.csv")
}

/// A fresh scratch directory for one test.
fn workdir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("iris-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn iris(dir: &Path, args: &[&str]) -> Output {
    Command::new(IRIS)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run iris")
}

/// Runs iris and returns its stdout, failing the test with its output if it fails.
fn iris_ok(dir: &Path, args: &[&str]) -> String {
    let output = iris(dir, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "iris {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Stops the background server even if the test fails half-way.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = iris(
            self.0,
            &["stop", "--pid-file", "run/iris.pid", "--grace", "2s"],
        );
    }
}

#[test]
fn background_server_passes_smoke_and_stops() {
    let dir = workdir("e2e");
    let data = data_file();
    let data = data.to_str().expect("utf-8 path");
    iris_ok(
        &dir,
        &[
            "train",
            "--data",
            data,
            "--model",
            "model.json",
            "--metrics",
            "metrics.json",
            "--epochs",
            "500",
        ],
    );

    let started = iris_ok(
        &dir,
        &[
            "serve",
            "--model",
            "model.json",
            "--background",
            "--pid-file",
            "run/iris.pid",
            "--port-file",
            "run/iris.port",
            "--max-lifetime",
            "120s",
        ],
    );
    let _guard = StopOnDrop(&dir);
    assert!(
        started.contains("is healthy at http://127.0.0.1:"),
        "{started}"
    );
    let pid: u32 = std::fs::read_to_string(dir.join("run/iris.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A second start must refuse while the first server runs.
    let again = iris(
        &dir,
        &[
            "serve",
            "--model",
            "model.json",
            "--background",
            "--pid-file",
            "run/iris.pid",
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let smoke = iris_ok(&dir, &["smoke", "--port-file", "run/iris.port"]);
    assert!(smoke.contains("all 10 checks passed"), "{smoke}");

    let stopped = iris_ok(&dir, &["stop", "--pid-file", "run/iris.pid"]);
    assert!(
        stopped.contains(&format!("server pid {pid} stopped")),
        "{stopped}"
    );
    assert!(!dir.join("run/iris.pid").exists());
    assert!(!dir.join("run/iris.port").exists());
    let log = std::fs::read_to_string(dir.join("run/iris.log")).unwrap();
    assert!(log.contains("received SIGTERM"), "{log}");

    // Once stopped: clients fail clearly, stopping again is harmless.
    let smoke = iris(&dir, &["smoke", "--port-file", "run/iris.port"]);
    assert_eq!(smoke.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&smoke.stderr).contains("port file run/iris.port not found"));
    let again = iris_ok(&dir, &["stop", "--pid-file", "run/iris.pid"]);
    assert!(again.contains("server was not running"), "{again}");
}

/// Sends raw bytes and returns the status code and body of the response.
async fn raw_request(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("server closed the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_handling_in_process() {
    let text = std::fs::read_to_string(data_file()).unwrap();
    let data = Dataset::parse_csv(&text, "iris.csv").unwrap();
    let options = TrainOptions {
        data: data_file(),
        model: PathBuf::from("unused"),
        metrics: PathBuf::from("unused"),
        seed: train::DEFAULT_SEED,
        test_fraction: train::DEFAULT_TEST_FRACTION,
        hyperparameters: Hyperparameters {
            epochs: 300,
            ..Hyperparameters::default()
        },
    };
    let (model, _) = train::train_model(&data, &options.data, text.as_bytes(), &options).unwrap();
    let state = Arc::new(ServerState::new(model, "test-version".to_owned()));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, state, async move {
        let _ = stop_rx.await;
        "test finished".to_owned()
    }));
    let client = HttpClient::new(port);
    let infer = "/v2/models/iris/infer";

    let ok = client
        .post_json(infer, json!({"id": "1", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}).to_string())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let body = ok.json().unwrap();
    assert_eq!(body["model_version"], "test-version");
    assert_eq!(body["outputs"][0]["data"], json!(["setosa"]));

    let bad_requests = [
        ("{", "not valid json"),
        ("[1, NaN]", "not valid json"),
        (
            r#"{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, "x", 4]}]}"#,
            "only numbers",
        ),
        (
            r#"{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
            "needs 8",
        ),
        (
            r#"{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 1e300, 4]}]}"#,
            "not a finite FP32",
        ),
    ];
    for (body, expected) in bad_requests {
        let response = client.post_json(infer, body).await.unwrap();
        assert_eq!(response.status, 400, "{body}");
        let error = response.json().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(expected), "{body}: {error}");
    }

    let not_found = client
        .post_json("/v2/models/cats/infer", "{}")
        .await
        .unwrap();
    assert_eq!(not_found.status, 404);
    assert!(
        not_found.json().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("model 'cats' not found")
    );
    let wrong_method = client.get(infer).await.unwrap();
    assert_eq!(wrong_method.status, 405);

    let too_big = format!(
        "POST {infer} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        server::MAX_BODY_BYTES + 1
    );
    let (status, body) = raw_request(port, &too_big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1 MiB"), "{body}");

    let metrics = client.get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type.as_deref(),
        Some(iris::prom::CONTENT_TYPE)
    );
    let text = metrics.text();
    assert!(
        text.contains("iris_requests_total{path=\"/v2/models/iris/infer\",code=\"400\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("iris_requests_total{path=\"other\",code=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("iris_predictions_total{label=\"setosa\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("iris_model_info{version=\"test-version\"} 1"),
        "{text}"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}
