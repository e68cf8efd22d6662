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
const ROUTE_PREFIX: &str = "api";
/// How long in-flight requests may finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

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

/// Answers one request.
async fn dispatch(api: &Api, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
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
        [prefix, name, rest @ ..] if prefix.eq_ignore_ascii_case(ROUTE_PREFIX) && rest.len() <= 1 => {
            let function = Function::from_name(name);
            let param = match rest.first() {
                None => None,
                Some(raw) if function.and_then(Function::parameter).is_some() && !raw.is_empty() => {
                    Some(percent_decode(raw))
                }
                Some(_) => {
                    let e = ApiError::NotFound("no such route; functions are served under /api/");
                    return to_http(Api::reject(&method, function, Mode::Forwarded, e));
                }
            };
            let (body, body_too_large) = match read_limited(&headers, body, MAX_BODY_BYTES).await {
                Ok(Some(b)) => (b, false),
                Ok(None) => (Vec::new(), true),
                Err(_) => {
                    return to_http(Api::reject(&method, Function::from_name(name), Mode::Forwarded, unreadable()));
                }
            };
            let req = ApiRequest {
                method,
                function,
                headers,
                body,
                body_too_large,
                mode: Mode::Forwarded,
                invocation_id,
                peer: Some(peer.ip()),
                param,
                query,
            };
            to_http(api.handle(req).await)
        }
        [name] if method == Method::POST && Function::from_name(name).is_some() => {
            let request = match read_limited(&headers, body, MAX_INVOCATION_BYTES).await {
                Ok(Some(payload)) => {
                    invocation::parse(Function::from_name(name), &payload, invocation_id, Some(peer.ip()))
                }
                Ok(None) => Err(ApiError::PayloadTooLarge),
                Err(_) => Err(unreadable()),
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
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            reading_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 && !self.reading.swap(true, Ordering::SeqCst) {
            self.reading_since.store(self.now(), Ordering::SeqCst);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.reading.store(false, Ordering::SeqCst);
    }

    fn request_done(&self) {
        self.idle_since.store(self.now(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// `Err(reason)` once a deadline passed, else how long until the next one could.
    fn check(&self, limits: &Http) -> Result<Duration, &'static str> {
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

async fn connection(
    api: Api,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Http,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&activity) });
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (api, activity) = (api.clone(), Arc::clone(&service_activity));
        activity.request_started();
        async move {
            let response = dispatch(&api, req, peer).await;
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
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(api.clone(), stream, peer, limits, graceful.watcher()));
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
