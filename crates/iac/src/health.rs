//! HTTP health checks over loopback: `GET path` must answer 2xx in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Checks `http://127.0.0.1:{port}{path}`: `Ok` with the status on 2xx,
/// `Err` with what went wrong otherwise.
pub async fn check(port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    match tokio::time::timeout(timeout, get(port, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "GET {path} on 127.0.0.1:{port}: no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn get(port: u16, path: &str) -> Result<u16, String> {
    let what = |e: &dyn std::fmt::Display| format!("GET {path} on 127.0.0.1:{port}: {e}");
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| what(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| what(&e))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| what(&e))?;
    let response = sender.send_request(request).await.map_err(|e| what(&e))?;
    let status = response.status();
    // Drain the body so the server sees a clean close.
    let _ = response.into_body().collect().await;
    driver.abort();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("GET {path} on 127.0.0.1:{port}: status {status}"))
    }
}

/// Sends one request to `http://127.0.0.1:{port}{path}` with an optional
/// JSON body; returns the status and the body, whatever the status.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    json: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let what = |e: &dyn std::fmt::Display| format!("{method} {path} on 127.0.0.1:{port}: {e}");
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| what(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| what(&e))?;
        let driver = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .header(hyper::header::CONNECTION, "close");
        if json.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let body = http_body_util::Full::new(Bytes::from(json.clone().unwrap_or_default()));
        let request = request.body(body).map_err(|e| what(&e))?;
        let response = sender.send_request(request).await.map_err(|e| what(&e))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| what(&e))?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(what(&format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}
