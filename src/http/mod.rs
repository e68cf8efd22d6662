//! The HTTP edge. Both ways the Functions host can call a custom handler — forwarded HTTP requests
//! (`/api/<function>`) and invocation payloads (`POST /<function>`) — become one [`ApiRequest`],
//! answered by the same [`Api::handle`]; [`server`] adapts warp to it, [`invocation`] the payloads.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;

use crate::secret::Password;
use crate::service::{RevokeScope, TokenService};
use crate::users::{MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};

pub mod body;
pub mod error;
pub mod invocation;
pub mod server;

use body::Fields;
use error::ApiError;

/// Largest accepted request body (16 KiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest accepted token field (access tokens are the longest tokens clients send).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The functions this handler serves (one folder each, holding its `function.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `/api/token`: log in (POST), refresh (PATCH, the .NET package's route).
    Token,
    /// `/api/refresh`: refresh (POST).
    Refresh,
    /// `/api/revoke`: end sessions (POST, PATCH).
    Revoke,
    /// `/api/jwks`: public keys (GET).
    Jwks,
}

impl Function {
    /// The function named `name` (case-insensitive, as Functions routes are).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "token" => Some(Self::Token),
            "refresh" => Some(Self::Refresh),
            "revoke" => Some(Self::Revoke),
            "jwks" => Some(Self::Jwks),
            _ => None,
        }
    }

    /// The folder / function name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Refresh => "refresh",
            Self::Revoke => "revoke",
            Self::Jwks => "jwks",
        }
    }

    /// Methods the function accepts (the `Allow` header of a 405).
    pub fn allow(self) -> &'static str {
        match self {
            Self::Token | Self::Revoke => "POST, PATCH",
            Self::Refresh => "POST",
            Self::Jwks => "GET, HEAD",
        }
    }
}

/// How the host delivered the request (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `enableForwardingHttpRequest: true`.
    Forwarded,
    /// Invocation payload (`{"Data":{"req":…}}`).
    Invocation,
}

/// A request, whichever way it arrived.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Upper-case method.
    pub method: String,
    /// Target function, `None` when the path named none.
    pub function: Option<Function>,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (at most [`MAX_BODY_BYTES`] unless `body_too_large`).
    pub body: Vec<u8>,
    /// The body exceeded [`MAX_BODY_BYTES`] (and was not kept).
    pub body_too_large: bool,
    /// Delivery mode.
    pub mode: Mode,
    /// `X-Azure-Functions-InvocationId`, for log correlation.
    pub invocation_id: Option<String>,
    /// The TCP peer (the Functions host, or the client when run without it).
    pub peer: Option<IpAddr>,
}

impl ApiRequest {
    /// First value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The client's address key for lockout and logs (see [`client_address`]).
    pub fn client_address(&self) -> String {
        client_address(self.header("x-forwarded-for"), self.peer)
    }
}

/// The client address: the first entry of `X-Forwarded-For` as Azure's front end sets it (`ip`,
/// `ip:port`, `[v6]:port` or a bare IPv6 address), else the TCP peer, else `unknown`. IPv6 addresses
/// are keyed by their /64 network, which one client usually holds whole, so rotating addresses
/// inside it gains an attacker nothing.
pub fn client_address(forwarded_for: Option<&str>, peer: Option<IpAddr>) -> String {
    let first = forwarded_for.and_then(|v| v.split(',').next()).map(str::trim).unwrap_or_default();
    let parsed =
        first.parse::<IpAddr>().ok().or_else(|| first.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())).or(peer);
    match parsed {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".to_string(),
    }
}

/// A response, before it is written in either host mode.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: Vec<u8>,
    /// `ok` or the error code (for logs).
    pub outcome: &'static str,
    /// A finer reason (for logs).
    pub reason: Option<&'static str>,
}

impl ApiResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self { status, headers: vec![("Content-Type", "application/json".into())], body, outcome: "ok", reason: None }
    }

    fn no_store(mut self) -> Self {
        self.headers.push(("Cache-Control", "no-store".into()));
        self.headers.push(("Pragma", "no-cache".into()));
        self
    }
}

/// The application: routes requests to the token service.
#[derive(Debug, Clone)]
pub struct Api {
    service: Arc<TokenService>,
}

impl Api {
    /// An API over `service`.
    pub fn new(service: Arc<TokenService>) -> Self {
        Self { service }
    }

    /// Handles one request in a span carrying its function, invocation id (as the host sent it),
    /// and the user and session once known, and logs its outcome and latency.
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        let span = tracing::info_span!(
            "request",
            function = req.function.map_or("none", Function::name),
            invocation_id = req.invocation_id.as_deref(),
            user_id = tracing::field::Empty,
            session_id = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let result = self.route(&req).await;
            Self::finish(&req.method, req.function, req.mode, result, started)
        }
        .instrument(span)
        .await
    }

    /// Answers a request that could not even be read (e.g. a malformed invocation payload) with the
    /// same headers and log line as any other.
    pub fn reject(method: &str, function: Option<Function>, mode: Mode, error: ApiError) -> ApiResponse {
        let span = tracing::info_span!("request", function = function.map_or("none", Function::name));
        span.in_scope(|| Self::finish(method, function, mode, Err(error), Instant::now()))
    }

    fn finish(
        method: &str,
        function: Option<Function>,
        mode: Mode,
        result: Result<ApiResponse, ApiError>,
        started: Instant,
    ) -> ApiResponse {
        let response = result.unwrap_or_else(ApiError::into_response);
        let response = match function {
            Some(Function::Jwks) | None => response,
            Some(_) => response.no_store(),
        };
        tracing::info!(
            function = function.map_or("none", Function::name),
            method = %method,
            mode = ?mode,
            status = response.status,
            outcome = response.outcome,
            reason = response.reason,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn route(&self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let function = req.function.ok_or(ApiError::NotFound("no such function"))?;
        let method = req.method.as_str();
        let allowed = match function {
            Function::Token | Function::Revoke => matches!(method, "POST" | "PATCH"),
            Function::Refresh => method == "POST",
            Function::Jwks => matches!(method, "GET" | "HEAD"),
        };
        if !allowed {
            return Err(ApiError::MethodNotAllowed(function.allow()));
        }
        match (function, method) {
            (Function::Jwks, _) => Ok(self.jwks()),
            (Function::Token, "POST") => self.token(req, &Fields::parse(req)?).await,
            (Function::Token | Function::Refresh, _) => self.refresh(&Fields::parse(req)?).await,
            (Function::Revoke, _) => self.revoke(req, &Fields::parse(req)?).await,
        }
    }

    fn jwks(&self) -> ApiResponse {
        let mut r = ApiResponse::json(200, self.service.access_tokens().keys().jwks());
        r.headers.push(("Cache-Control", "public, max-age=300".into()));
        r
    }

    /// `POST /api/token`: JSON `{username, password}` (grant_type optional), or a form with
    /// `grant_type=password|refresh_token`.
    async fn token(&self, req: &ApiRequest, fields: &Fields) -> Result<ApiResponse, ApiError> {
        let grant = fields.string("grant_type", 64)?;
        match (grant, fields.is_form()) {
            (None, true) => Err(ApiError::InvalidRequest("grant_type is required".into())),
            (None, false) | (Some("password"), _) => {
                let username = fields.required("username", MAX_USERNAME_CHARS * 4)?;
                let password = Password::new(fields.required("password", MAX_PASSWORD_BYTES)?);
                let pair = self.service.login(username, &password, &req.client_address()).await?;
                Ok(ApiResponse::json(200, &pair))
            }
            (Some("refresh_token"), _) => self.refresh(fields).await,
            (Some(_), _) => Err(ApiError::UnsupportedGrantType),
        }
    }

    /// Refresh: `{refresh_token, access_token?}`.
    async fn refresh(&self, fields: &Fields) -> Result<ApiResponse, ApiError> {
        let refresh_token = fields.required("refresh_token", MAX_TOKEN_LEN)?;
        let access_token = fields.string("access_token", MAX_TOKEN_LEN)?;
        let pair = self.service.refresh(refresh_token, access_token).await?;
        Ok(ApiResponse::json(200, &pair))
    }

    /// Revoke: a refresh token (`refresh_token`, or RFC 7009 `token`), or a `scope` with a Bearer.
    async fn revoke(&self, req: &ApiRequest, fields: &Fields) -> Result<ApiResponse, ApiError> {
        let scope = fields.string("scope", 32)?;
        let username = fields.string("username", MAX_USERNAME_CHARS * 4)?;
        let token = match (fields.string("refresh_token", MAX_TOKEN_LEN)?, fields.string("token", MAX_TOKEN_LEN)?) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest("send either refresh_token or token, not both".into()));
            }
            (a, b) => a.or(b),
        };
        match (scope, token) {
            (Some(_), Some(_)) => Err(ApiError::InvalidRequest("send either a token or a scope, not both".into())),
            (None, None) => Err(ApiError::InvalidRequest("refresh_token (or token) or scope is required".into())),
            (None, Some(token)) => {
                if username.is_some() {
                    return Err(ApiError::InvalidRequest("username is only allowed with scope=global".into()));
                }
                self.service.revoke_token(token).await?;
                Ok(ApiResponse::json(200, &serde_json::json!({})))
            }
            (Some(scope), None) => {
                let scope = match (scope, username) {
                    ("global", None) => RevokeScope::Global,
                    ("others", None) => RevokeScope::Others,
                    ("global", Some(user)) => RevokeScope::User(user.to_string()),
                    ("others", Some(_)) => {
                        return Err(ApiError::InvalidRequest("username is only allowed with scope=global".into()));
                    }
                    _ => return Err(ApiError::InvalidRequest("scope must be global or others".into())),
                };
                let caller = self.service.authenticate_bearer(bearer(req)?).await?;
                let ended = self.service.revoke_scope(&caller, &scope).await?;
                Ok(ApiResponse::json(200, &serde_json::json!({ "revoked_sessions": ended })))
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` header. No header, or another scheme, is
/// [`ApiError::MissingToken`]; a Bearer header without a usable token is an invalid token.
fn bearer(req: &ApiRequest) -> Result<&str, ApiError> {
    let header = req.header("authorization").ok_or(ApiError::MissingToken)?;
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::InvalidToken { expired: false, description: "malformed token" });
    }
    Ok(token)
}
