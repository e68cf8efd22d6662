//! A test Azure Communication Services Email endpoint and a test App Service managed-identity
//! endpoint, on one loopback port. Included with `#[path]` by the tests of the `acs` transport.
//!
//! - `GET /msi/token?api-version=2019-08-01&resource=…`: the App Service identity endpoint as
//!   azure_identity calls it (`X-IDENTITY-HEADER` must be the configured secret); answers a token
//!   (`expires_on` a string of Unix seconds, as App Service sends it).
//! - `POST /emails:send?api-version=2023-03-31`: checks `Authorization: Bearer <that token>` and the
//!   request's shape (ACS Email REST, `EmailMessage`), then answers as scripted: each try takes the
//!   next scripted status (429 or 503 with `Retry-After`), and once the script is used up, 202 with
//!   `Operation-Location` and the operation's id (`Operation-Id` when the client sent one).
//! - `GET /emails/operations/{id}?api-version=…`: `Running` (with `Retry-After: 1`) for the first
//!   polls, then `Succeeded`.
//!
//! Every request is recorded for the test to inspect.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The secret the identity endpoint expects in `X-IDENTITY-HEADER`.
pub const IDENTITY_HEADER: &str = "test-identity-header-secret";
/// The token it hands out.
pub const TOKEN: &str = "test-entra-token-for-communication";
/// The resource azure_identity asks a token for (the scope without `/.default`).
pub const RESOURCE: &str = "https://communication.azure.com/";

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET` or `POST`.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// `Operation-Id`, if sent.
    pub operation_id: Option<String>,
    /// `X-IDENTITY-HEADER`, if sent.
    pub identity_header: Option<String>,
    /// The JSON body, if any.
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    /// Statuses (and `Retry-After` seconds) for the next send tries.
    script: VecDeque<(u16, u64)>,
    /// Polls answered `Running` before `Succeeded`.
    running_polls: u32,
    /// Polls so far per operation.
    polls: std::collections::HashMap<String, u32>,
    seen: Vec<Seen>,
    /// Shape problems found in send requests.
    problems: Vec<String>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running endpoint.
pub struct AcsEndpoint {
    addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AcsEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AcsEndpoint {
    /// Binds `127.0.0.1:0`; send tries answer `script` first, operations run for `running_polls`
    /// polls.
    pub async fn start(script: &[(u16, u64)], running_polls: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            script: script.iter().copied().collect(),
            running_polls,
            ..Shared::default()
        }));
        let state = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&state), addr, request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, shared, server }
    }

    /// The ACS endpoint (`JwtRefreshToken__Email__Acs__Endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The identity endpoint (`IDENTITY_ENDPOINT`).
    pub fn identity_endpoint(&self) -> String {
        format!("http://{}/msi/token", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared).seen.clone()
    }

    /// Shape problems of send requests so far.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.shared).problems.clone()
    }

    /// Operations that reached `Succeeded` in a poll.
    pub fn succeeded(&self) -> Vec<String> {
        let shared = lock(&self.shared);
        shared.polls.iter().filter(|(_, n)| **n > shared.running_polls).map(|(id, _)| id.clone()).collect()
    }
}

fn json_response(status: u16, body: &Value, headers: &[(&'static str, String)]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(CONTENT_TYPE, "application/json".parse().unwrap());
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

/// What is wrong with a send request's body (ACS `EmailMessage`), if anything.
fn shape_problems(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    if !text("/senderAddress").is_some_and(|s| s.contains('@')) {
        problems.push("senderAddress is missing".to_string());
    }
    if !text("/recipients/to/0/address").is_some_and(|s| s.contains('@')) {
        problems.push("recipients.to[0].address is missing".to_string());
    }
    if text("/content/subject").is_none_or(|s| s.is_empty()) {
        problems.push("content.subject is missing".to_string());
    }
    if !text("/content/plainText").is_some_and(|s| s.contains("Code: ") || !s.is_empty()) {
        problems.push("content.plainText is missing".to_string());
    }
    if !text("/content/html").is_some_and(|s| s.contains("<html")) {
        problems.push("content.html is missing".to_string());
    }
    problems
}

async fn answer(
    shared: Arc<Mutex<Shared>>,
    addr: std::net::SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (authorization, operation_id, identity_header) =
        (header("authorization"), header("operation-id"), header("x-identity-header"));
    let bytes = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let bearer_ok = authorization.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let mut state = lock(&shared);
    let (status, response) = if method == Method::GET && path == "/msi/token" {
        let resource_ok =
            query.contains("api-version=2019-08-01") && query.contains(&format!("resource={}", urlencode(RESOURCE)));
        if identity_header.as_deref() != Some(IDENTITY_HEADER) || !resource_ok {
            (401, json_response(401, &json!({"error": "invalid identity request", "query": query}), &[]))
        } else {
            #[allow(clippy::disallowed_methods)]
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let token = json!({
                "access_token": TOKEN,
                "expires_on": (now + 3600).to_string(),
                "resource": RESOURCE,
                "token_type": "Bearer",
            });
            (200, json_response(200, &token, &[]))
        }
    } else if method == Method::POST && path == "/emails:send" && query.contains("api-version=") {
        if !bearer_ok {
            (401, json_response(401, &json!({"error": {"code": "Unauthorized"}}), &[]))
        } else {
            let problems = shape_problems(&body);
            if !problems.is_empty() {
                state.problems.extend(problems);
                (400, json_response(400, &json!({"error": {"code": "BadRequest"}}), &[]))
            } else if let Some((status, after)) = state.script.pop_front() {
                let body =
                    json!({"error": {"code": if status == 429 { "TooManyRequests" } else { "ServiceUnavailable" }}});
                (status, json_response(status, &body, &[("retry-after", after.to_string())]))
            } else {
                let id = operation_id.clone().unwrap_or_else(|| "generated-operation".into());
                let location = format!("http://{addr}/emails/operations/{id}?api-version=2023-03-31");
                let headers = [("operation-location", location), ("retry-after", "1".to_string())];
                (202, json_response(202, &json!({"id": id, "status": "Running"}), &headers))
            }
        }
    } else if method == Method::GET && path.starts_with("/emails/operations/") {
        if !bearer_ok {
            (401, json_response(401, &json!({"error": {"code": "Unauthorized"}}), &[]))
        } else {
            let id = path.trim_start_matches("/emails/operations/").to_string();
            let running = state.running_polls;
            let polls = state.polls.entry(id.clone()).or_insert(0);
            *polls += 1;
            if *polls <= running {
                (200, json_response(200, &json!({"id": id, "status": "Running"}), &[("retry-after", "1".into())]))
            } else {
                (200, json_response(200, &json!({"id": id, "status": "Succeeded"}), &[]))
            }
        }
    } else {
        (404, json_response(404, &json!({"error": {"code": "NotFound"}}), &[]))
    };
    state.seen.push(Seen {
        method: method.to_string(),
        uri,
        authorization,
        operation_id,
        identity_header,
        body,
        status,
    });
    Ok(response)
}

/// Percent-encodes what a URL query needs encoded in the resource (`:` and `/`).
fn urlencode(value: &str) -> String {
    value.replace(':', "%3A").replace('/', "%2F")
}
