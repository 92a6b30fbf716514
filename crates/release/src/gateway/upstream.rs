//! Keep-alive HTTP/1.1 connections to one replica, driven by the request
//! that uses them.
//!
//! A connection is checked out of its replica's idle pool (or made), the
//! request and the response head go over it while the proxying task polls
//! both, and the response body carries the connection along: it polls it
//! for the body's bytes and puts it back in the pool at the body's end.
//! No task per connection and no channel hop between tasks: the request's
//! own task does the upstream I/O, as an nginx worker does. (hyper-util's
//! pooled client runs every connection in a task of its own, which costs a
//! cross-task wake-up, often a cross-thread one, per request and per body.)
//!
//! Idle connections are not polled while they wait: one the replica closed
//! is found closed when it is next checked out, and dropped. At most
//! [`MAX_IDLE`] wait per replica and proxy worker thread, none longer than
//! [`IDLE_TIMEOUT`]. Each worker thread (see [`set_worker`]) has idle
//! connections of its own, registered with its own runtime's reactor: a
//! connection is made, used and reused by one thread, as in an nginx
//! worker, and no wake-up crosses threads.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::HeaderValue;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::proxy::BoxError;

/// Idle connections kept per replica and worker thread.
pub(crate) const MAX_IDLE: usize = 64;
/// How long a connection may wait idle before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One HTTP/1.1 connection: the request side and the I/O state machine.
pub(crate) struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
}

impl Conn {
    /// Let the connection do what I/O it can; false once it is closed.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        match Pin::new(&mut self.driver).poll(cx) {
            Poll::Ready(_) => false,
            Poll::Pending => !self.sender.is_closed(),
        }
    }

    /// Send `req` and wait for the response head, driving the connection.
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut response = std::pin::pin!(self.sender.send_request(req));
        let mut closed: Option<Result<(), hyper::Error>> = None;
        poll_fn(|cx| {
            if closed.is_none()
                && let Poll::Ready(done) = Pin::new(&mut self.driver).poll(cx)
            {
                closed = Some(done);
            }
            match response.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(UpstreamError::Http)),
                // The connection ended and can answer nothing more.
                Poll::Pending => match closed.take() {
                    Some(Err(e)) => Poll::Ready(Err(UpstreamError::Http(e))),
                    Some(Ok(())) => Poll::Ready(Err(UpstreamError::Closed)),
                    None => Poll::Pending,
                },
            }
        })
        .await
    }
}

thread_local! {
    /// The proxy worker this thread is (`usize::MAX`: none).
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Mark this thread as proxy worker `index`: it uses its own idle
/// connections from then on.
pub(crate) fn set_worker(index: usize) {
    WORKER.set(index);
}

/// How many idle lists a pool has: one per core (the proxy's workers) and
/// one for every other thread.
fn pool_slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) + 1)
}

type Idle = Vec<(Conn, Instant)>;

/// A replica's idle connections, by worker thread, most recently used
/// last. (Uncontended locks: each list is one thread's but when the
/// replica leaves the config.)
pub(crate) struct Pool {
    idle: Box<[Mutex<Idle>]>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            idle: (0..pool_slots()).map(|_| Mutex::default()).collect(),
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self
            .idle
            .iter()
            .map(|i| i.lock().map_or(0, |i| i.len()))
            .sum();
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    /// The most recently used idle connection that is still open, else a
    /// new one to `uri`'s authority.
    pub(crate) async fn checkout(&self, uri: &Uri) -> Result<Conn, UpstreamError> {
        loop {
            let popped = self.lock().pop();
            let Some((mut conn, since)) = popped else {
                break;
            };
            if since.elapsed() > IDLE_TIMEOUT {
                // Older ones are older still.
                self.lock().clear();
                break;
            }
            if poll_fn(|cx| Poll::Ready(conn.poll_open(cx))).await && conn.sender.is_ready() {
                return Ok(conn);
            }
        }
        connect(uri).await
    }

    /// Keep `conn` for the next request, if there is room.
    fn put(&self, conn: Conn) {
        let mut idle = self.lock();
        // The oldest first: it goes when it has waited too long.
        if idle
            .first()
            .is_some_and(|(_, since)| since.elapsed() > IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Close every idle connection.
    pub(crate) fn clear(&self) {
        for idle in &self.idle {
            idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// This thread's idle list.
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        let slot = WORKER.get().min(self.idle.len() - 1);
        self.idle[slot].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `conn` back once its response is over: at once when it is ready
    /// for another request, else (rare: hyper has not seen the end yet) by
    /// a task that drives it there.
    fn release(self: &Arc<Self>, mut conn: Conn, cx: &mut Context<'_>) {
        if !conn.poll_open(cx) {
            return;
        }
        if conn.sender.is_ready() {
            self.put(conn);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let ready = poll_fn(|cx| {
                if !conn.poll_open(cx) {
                    return Poll::Ready(false);
                }
                match conn.sender.poll_ready(cx) {
                    Poll::Ready(r) => Poll::Ready(r.is_ok()),
                    Poll::Pending => Poll::Pending,
                }
            });
            if let Ok(true) = tokio::time::timeout(Duration::from_secs(5), ready).await {
                pool.put(conn);
            }
        });
    }
}

/// A new connection to `uri`'s authority (port 80 if none).
pub(crate) async fn connect(uri: &Uri) -> Result<Conn, UpstreamError> {
    let authority = uri
        .authority()
        .ok_or_else(|| UpstreamError::Connect(std::io::Error::other("no host")))?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => {
            return Err(UpstreamError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
    };
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    let (sender, driver) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)?;
    Ok(Conn { sender, driver })
}

/// The `Host` header for a replica: its authority.
pub(crate) fn host_header(uri: &Uri) -> Option<HeaderValue> {
    uri.authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

/// Why a request got no response from a replica.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be made: the request was never sent.
    Connect(std::io::Error),
    /// The connection failed (the request may have been sent).
    Http(hyper::Error),
    /// The connection closed before the response.
    Closed,
}

impl UpstreamError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(_) => f.write_str("cannot connect"),
            Self::Http(_) => f.write_str("connection failed"),
            Self::Closed => f.write_str("connection closed before the response"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Http(e) => Some(e),
            Self::Closed => None,
        }
    }
}

/// A replica's response body, carrying the connection it arrives on: it
/// drives the connection as it is read and returns it to the pool at its
/// end. Dropped before its end, it closes the connection.
pub(crate) struct UpstreamBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl UpstreamBody {
    /// `body`, arriving on `conn` from `pool`'s replica. A body already at
    /// its end (none, or `Content-Length: 0`) gives the connection back
    /// now: it may never be polled.
    pub(crate) async fn new(body: Incoming, conn: Conn, pool: Arc<Pool>) -> Self {
        let mut this = Self {
            body,
            conn: Some(conn),
            pool,
        };
        if this.body.is_end_stream() {
            poll_fn(|cx| {
                this.release(cx);
                Poll::Ready(())
            })
            .await;
        }
        this
    }

    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(conn, cx);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && !conn.poll_open(cx)
        {
            // Closed: what it read is still in the body.
            this.conn = None;
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
