//! A small HTTP/1.1 client for talking to the model server over loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{self, Error, Result};
use crate::fsutil;

/// Default time allowed for one request, including connecting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response with its body fully read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body parsed as JSON, or an error quoting the start of the body.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|err| {
            let text = String::from_utf8_lossy(&self.body);
            let preview: String = text.chars().take(80).collect();
            Error::new(format!("response is not valid json ({err}): {preview}"))
        })
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP client bound to one `127.0.0.1:<port>` server.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    timeout: Duration,
}

impl HttpClient {
    /// A client for `127.0.0.1:port` with [`DEFAULT_TIMEOUT`].
    pub fn new(port: u16) -> Self {
        Self::with_timeout(port, DEFAULT_TIMEOUT)
    }

    /// A client for `127.0.0.1:port` with a per-request timeout.
    pub fn with_timeout(port: u16, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            timeout,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a GET request.
    pub async fn get(&self, path: &str) -> Result<HttpResponse> {
        self.send(Method::GET, path, None).await
    }

    /// Sends a POST request with a JSON body.
    pub async fn post_json(&self, path: &str, body: impl Into<Bytes>) -> Result<HttpResponse> {
        self.send(Method::POST, path, Some(body.into())).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<HttpResponse> {
        let url = self.url(path);
        let what = format!("{method} {url}");
        let mut builder = Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| Error::new(format!("{what}: cannot build request: {err}")))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|err| {
                if err.is_connect() {
                    format!(
                        "cannot connect to {} ({}); is the server running?",
                        self.addr,
                        innermost_reason(&err)
                    )
                } else {
                    error::chain(&err)
                }
            })?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| error::chain(&err))?
                .to_bytes();
            Ok::<_, String>(HttpResponse {
                status,
                content_type,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => Err(Error::new(format!("{what} failed: {reason}"))),
            Err(_) => Err(Error::new(format!(
                "{what} timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

/// The message of the innermost source of an error, lowercase and without
/// the `(os error N)` suffix, e.g. `connection refused`.
fn innermost_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    match current.downcast_ref::<std::io::Error>() {
        Some(io) => fsutil::io_reason(io),
        None => error::lowercase_first(&current.to_string()),
    }
}

/// Reads the server port written by `iris serve --port-file`.
pub fn read_port_file(path: &Path) -> Result<u16> {
    let text = fsutil::read_string(path, "port file").map_err(|err| {
        if path.exists() {
            err
        } else {
            Error::new(format!(
                "port file {} not found; is the server running? (start it with 'iris serve --background ...')",
                path.display()
            ))
        }
    })?;
    let trimmed = text.trim();
    match trimmed.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Error::new(format!(
            "port file {} does not contain a port number: '{}'",
            path.display(),
            trimmed.chars().take(20).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_file_errors() {
        let err = read_port_file(Path::new("no/such/iris.port")).unwrap_err();
        assert!(
            err.message()
                .starts_with("port file no/such/iris.port not found"),
            "{}",
            err.message()
        );
    }
}
