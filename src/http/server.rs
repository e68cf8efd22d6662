//! The HTTP/1.1 server: hyper directly, one task per connection. Each request is read (with a
//! size-limited body) into an [`ApiRequest`] and answered by [`Api::handle`], in forwarding mode
//! (`/api/<function>`) or invocation mode (`POST /<function>`). `GET /` answers the host's
//! readiness probe.
//!
//! Every connection has two deadlines: a client that started a request must finish its headers
//! within the header-read timeout, and a keep-alive connection with no request is closed after the
//! idle timeout. A client that goes away is logged at DEBUG: it is the client's business.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Function, MAX_BODY_BYTES, Mode, invocation};
use crate::settings::Http;

/// Limit for a whole invocation payload (the inner body is held to [`MAX_BODY_BYTES`] separately).
const MAX_INVOCATION_BYTES: usize = 256 * 1024;
pub(crate) const ROUTE_PREFIX: &str = "api";
/// How long in-flight requests may finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// Why a body was not read.
enum Unread {
    /// Larger than the limit (reading stopped there).
    TooLarge,
    /// Not complete within the body-read timeout.
    TooSlow,
    /// The connection failed.
    Broken,
}

/// Reads at most `limit` bytes within `deadline` (the whole body, however it trickles in).
async fn read_body(headers: &HeaderMap, body: Incoming, limit: usize, deadline: Duration) -> Result<Vec<u8>, Unread> {
    match tokio::time::timeout(deadline, read_limited(headers, body, limit)).await {
        Err(_) => Err(Unread::TooSlow),
        Ok(Err(_)) => Err(Unread::Broken),
        Ok(Ok(None)) => Err(Unread::TooLarge),
        Ok(Ok(Some(body))) => Ok(body),
    }
}

/// Reads at most `limit` bytes; `None` when the body is larger (reading stops there).
async fn read_limited(headers: &HeaderMap, mut body: Incoming, limit: usize) -> Result<Option<Vec<u8>>, hyper::Error> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

fn to_http(response: ApiResponse) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(response.body)));
    *r.status_mut() = response.status;
    *r.headers_mut() = response.headers;
    r
}

fn invocation_response(response: &ApiResponse) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(invocation::wrap(response))));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn unreadable() -> ApiError {
    ApiError::InvalidRequest("the request body could not be read".into())
}

/// A 408 that also closes the connection: the rest of a slow body would be read as a request.
fn too_slow(method: &Method, function: Option<Function>, mode: Mode) -> Response<Body> {
    let response = Api::reject(method, function, mode, ApiError::BodyTimeout);
    let mut r = if mode == Mode::Invocation { invocation_response(&response) } else { to_http(response) };
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answers one request.
async fn dispatch(api: &Api, req: Request<Incoming>, peer: SocketAddr, limits: &Http) -> Response<Body> {
    let body_deadline = Duration::from_millis(limits.body_read_timeout_ms);
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let invocation_id = headers.get("x-azure-functions-invocationid").and_then(|v| v.to_str().ok()).map(str::to_string);
    match segments.as_slice() {
        [""] if method == Method::GET || method == Method::HEAD => {
            api.note_request();
            let mut ok = ApiResponse::json(StatusCode::OK, &serde_json::json!({ "status": "ready" }));
            ok.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            to_http(ok)
        }
        [""] => to_http(Api::reject(&method, None, Mode::Forwarded, ApiError::MethodNotAllowed("GET, HEAD".into()))),
        [prefix, name, rest @ ..]
            if prefix.eq_ignore_ascii_case(ROUTE_PREFIX)
                && (rest.len() <= 1
                    || (rest.len() == 2 && Function::from_name(name).is_some_and(Function::takes_path))) =>
        {
            // `/api/.well-known/<document>` names a discovery function; no other function lives there.
            let (function, rest) = match (name.eq_ignore_ascii_case(super::WELL_KNOWN), rest.first()) {
                (true, Some(doc)) => (Function::from_name(doc).filter(|f| f.is_well_known()), &[][..]),
                (true, None) => (None, rest),
                (false, _) => (Function::from_name(name).filter(|f| !f.is_well_known()), rest),
            };
            let param = match rest.first() {
                None => None,
                Some(raw) if function.and_then(Function::parameter).is_some() && !raw.is_empty() => {
                    // A path parameter (`mfa/totp/verify`) keeps its slashes; each segment decoded.
                    Some(rest.iter().map(|segment| percent_decode(segment)).collect::<Vec<_>>().join("/"))
                }
                Some(_) => {
                    let e = ApiError::NotFound("no such route; functions are served under /api/");
                    return to_http(Api::reject(&method, function, Mode::Forwarded, e));
                }
            };
            let (body, body_too_large) = match read_body(&headers, body, MAX_BODY_BYTES, body_deadline).await {
                Ok(b) => (b, false),
                Err(Unread::TooLarge) => (Vec::new(), true),
                Err(Unread::TooSlow) => return too_slow(&method, function, Mode::Forwarded),
                Err(Unread::Broken) => {
                    return to_http(Api::reject(&method, function, Mode::Forwarded, unreadable()));
                }
            };
            let client = super::client_address(&headers, limits.trusted_proxy_hops, Some(peer.ip()));
            let req = ApiRequest {
                method,
                function,
                headers,
                body,
                body_too_large,
                mode: Mode::Forwarded,
                invocation_id,
                peer: Some(peer.ip()),
                client,
                param,
                query,
            };
            to_http(api.handle(req).await)
        }
        [name] if method == Method::POST && Function::from_name(name).is_some() => {
            let request = match read_body(&headers, body, MAX_INVOCATION_BYTES, body_deadline).await {
                Ok(payload) => invocation::parse(
                    Function::from_name(name),
                    &payload,
                    invocation_id,
                    Some(peer.ip()),
                    limits.trusted_proxy_hops,
                ),
                Err(Unread::TooLarge) => Err(ApiError::PayloadTooLarge),
                Err(Unread::TooSlow) => return too_slow(&method, Function::from_name(name), Mode::Invocation),
                Err(Unread::Broken) => Err(unreadable()),
            };
            let response = match request {
                Ok(req) => api.handle(req).await,
                Err(e) => Api::reject(&method, Function::from_name(name), Mode::Invocation, e),
            };
            invocation_response(&response)
        }
        _ => {
            let e = ApiError::NotFound("no such route; functions are served under /api/");
            to_http(Api::reject(&method, None, Mode::Forwarded, e))
        }
    }
}

/// Decodes `%XX` escapes of a path segment (invalid escapes are kept as they are).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while let Some(&byte) = bytes.get(i) {
        match (byte, bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a connection is doing, for its two deadlines. Times are milliseconds since `epoch`.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Bytes of a request that has not reached the service yet have arrived.
    reading: AtomicBool,
    /// When those bytes started arriving.
    reading_since: AtomicU64,
    /// When the connection last became idle (start, or the last response).
    idle_since: AtomicU64,
    /// Set to close the connection when it is idle (to make room under the connection cap).
    evicted: AtomicBool,
    /// Wakes the connection's deadline loop when its state changed (a request began arriving,
    /// ended, or the connection was evicted), so the right deadline is armed at once.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            reading_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 && !self.reading.swap(true, Ordering::SeqCst) {
            self.reading_since.store(self.now(), Ordering::SeqCst);
            // The idle deadline was armed; the header deadline (usually shorter) applies now.
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.reading.store(false, Ordering::SeqCst);
    }

    fn request_done(&self) {
        self.idle_since.store(self.now(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Idle: no request being answered and none arriving.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && !self.reading.load(Ordering::SeqCst)
    }

    /// When it last became idle, comparable across connections.
    fn idle_at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since.load(Ordering::SeqCst))
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// `Err(reason)` once a deadline passed, else how long until the next one could.
    fn check(&self, limits: &Http) -> Result<Duration, &'static str> {
        if self.evicted.load(Ordering::SeqCst) && self.is_idle() {
            return Err("closed to make room under the connection cap");
        }
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(Duration::from_millis(limits.header_read_timeout_ms.min(limits.idle_timeout_ms)));
        }
        let now = self.now();
        let (since, limit, reason) = if self.reading.load(Ordering::SeqCst) {
            (self.reading_since.load(Ordering::SeqCst), limits.header_read_timeout_ms, "header read timeout")
        } else {
            (self.idle_since.load(Ordering::SeqCst), limits.idle_timeout_ms, "idle timeout")
        };
        let elapsed = now.saturating_sub(since);
        if elapsed >= limit { Err(reason) } else { Ok(Duration::from_millis(limit - elapsed)) }
    }
}

/// A socket that tells its [`Activity`] when request bytes arrive.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The open connections, for the connection cap: each is registered while its task runs.
#[derive(Debug, Default)]
struct Connections {
    next_id: AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Activity>>>,
}

/// Removes a connection from [`Connections`] when its task ends, however it ends.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock() {
            open.remove(&self.id);
        }
    }
}

/// Room for a new connection: under the cap, or once the longest-idle one is told to close.
enum Admission {
    Admitted,
    /// Every open connection is busy.
    Full,
}

impl Connections {
    fn admit(&self, max: usize) -> Admission {
        let Ok(open) = self.open.lock() else { return Admission::Admitted };
        let closing = open.values().filter(|a| a.evicted.load(Ordering::SeqCst)).count();
        if open.len().saturating_sub(closing) < max {
            return Admission::Admitted;
        }
        let idle =
            open.values().filter(|a| a.is_idle() && !a.evicted.load(Ordering::SeqCst)).min_by_key(|a| a.idle_at());
        match idle {
            Some(oldest) => {
                oldest.evict();
                Admission::Admitted
            }
            None => Admission::Full,
        }
    }

    fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, activity);
        }
        Registered { connections: Arc::clone(self), id }
    }
}

/// The answer to a connection over the cap, written without hyper: the connection is closed
/// right after it.
const FULL_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
Cache-Control: no-store\r\nConnection: close\r\nContent-Length: 97\r\n\r\n\
{\"error\":\"temporarily_unavailable\",\"error_description\":\"too many connections; try again shortly\"}";

async fn connection(
    api: Api,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Http,
    watcher: hyper_util::server::graceful::Watcher,
    activity: Arc<Activity>,
    _registered: Registered,
) {
    let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&activity) });
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (api, activity) = (api.clone(), Arc::clone(&service_activity));
        activity.request_started();
        async move {
            let response = dispatch(&api, req, peer, &limits).await;
            activity.request_done();
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(watcher.watch(conn));
    loop {
        let wait = match activity.check(&limits) {
            Ok(wait) => wait,
            Err(reason) => {
                tracing::debug!(%peer, reason, "connection closed");
                return;
            }
        };
        tokio::select! {
            done = &mut conn => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(wait) => {}
            () = activity.changed.notified() => {}
        }
    }
}

/// Serves `api` on `listener` until `shutdown` completes, then lets requests in flight finish
/// (for at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    limits: Http,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Connections::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if let Admission::Full = connections.admit(limits.max_connections) {
                        // Busy connections only: refuse this one at once rather than queue it.
                        let _ = stream.try_write(FULL_RESPONSE);
                        tracing::debug!(%peer, "connection refused: every connection is busy");
                        continue;
                    }
                    let activity = Arc::new(Activity::new());
                    let registered = connections.register(Arc::clone(&activity));
                    tokio::spawn(connection(api.clone(), stream, peer, limits, graceful.watcher(), activity, registered));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the drain timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_answer_is_well_formed_json_of_its_declared_length() {
        let text = std::str::from_utf8(FULL_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let declared: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        assert_eq!(declared, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "temporarily_unavailable");
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let connections = Arc::new(Connections::default());
        let busy = Arc::new(Activity::new());
        busy.request_started();
        let _busy = connections.register(Arc::clone(&busy));
        assert!(matches!(connections.admit(1), Admission::Full), "only a busy connection is open");
        let idle = Arc::new(Activity::new());
        let _idle = connections.register(Arc::clone(&idle));
        assert!(matches!(connections.admit(2), Admission::Admitted));
        assert!(idle.evicted.load(Ordering::SeqCst), "the idle one is told to close");
        assert!(!busy.evicted.load(Ordering::SeqCst));
        assert!(
            idle.check(&crate::settings::Http {
                header_read_timeout_ms: 1_000,
                idle_timeout_ms: 1_000,
                body_read_timeout_ms: 1_000,
                max_connections: 2,
                trusted_proxy_hops: 1,
            })
            .is_err()
        );
    }
}
