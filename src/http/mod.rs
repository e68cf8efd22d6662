//! The HTTP edge. Both ways the Functions host can call a custom handler — forwarded or proxied
//! HTTP requests (`/api/<function>`) and invocation payloads (`POST /<function>`) — become one
//! [`ApiRequest`] (the `http` crate's method and header types), answered by the same
//! [`Api::handle`]; [`server`] serves HTTP/1.1, [`invocation`] adapts the payloads.
//!
//! One table, [`ROUTES`], names each function's methods: it drives dispatch, the `Allow` header of
//! a 405, the CORS allowed methods and the `function.json` check, so they cannot disagree.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use tracing::Instrument as _;

use crate::accounts::AccountService;
use crate::clients::ClientService;
use crate::secret::Password;
use crate::service::{Caller, RevokeScope, ServiceError, TokenPair, TokenService};
use crate::settings::Cors;
use crate::tokens::dpop::{self, Target};
use crate::users::{MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};

mod accounts;
pub mod body;
pub mod cookies;
mod email;
pub mod error;
mod federation;
mod introspect;
pub mod invocation;
mod mfa;
mod passkeys;
pub mod server;

use body::Fields;
use cookies::Transport;
use error::ApiError;

/// Largest accepted request body (16 KiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest accepted token field (access tokens are the longest tokens clients send).
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The functions this handler serves (one folder each, holding its `function.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `/api/token`: log in (POST), refresh (PATCH, the .NET package's route).
    Token,
    /// `/api/refresh`: refresh (POST).
    Refresh,
    /// `/api/revoke`: end sessions (POST, PATCH).
    Revoke,
    /// `/api/jwks`: public keys (GET, HEAD).
    Jwks,
    /// `/api/register`: sign up (POST).
    Register,
    /// `/api/password[/forgot|/reset]`: change the caller's password (POST), ask for a reset code by
    /// e-mail (POST `forgot`), set a new password with it (POST `reset`).
    Password,
    /// `/api/sessions[/{id}]`: the caller's sessions (GET), end one (DELETE).
    Sessions,
    /// `/api/users[/{username}]`: admin user management (GET, POST, PATCH).
    Users,
    /// `/api/introspect`: token introspection for resource servers (POST, RFC 7662).
    Introspect,
    /// `/api/.well-known/openid-configuration`: OpenID Connect Discovery metadata (GET, HEAD).
    OpenidConfiguration,
    /// `/api/.well-known/oauth-authorization-server`: RFC 8414 metadata (GET, HEAD).
    OauthAuthorizationServer,
    /// `/api/identities[/{provider}]`: the caller's sign-in providers' identities (GET), link one
    /// (POST), unlink one (DELETE).
    Identities,
    /// `/api/mfa[/totp[/verify]]`: the caller's second factors (GET), enrol and confirm an
    /// authenticator (POST), remove it (DELETE).
    Mfa,
    /// `/api/passkeys[/…]`: the caller's passkeys (GET), the registration and sign-in ceremonies
    /// (POST `register/start|finish`, `login/start|finish`), remove one (DELETE `{id}`).
    Passkeys,
    /// `/api/email[/verify]`: the caller's address (GET), set it (POST), verify it (POST `verify`).
    Email,
}

/// What a function does with a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Password grant (or a form's `grant_type=refresh_token`).
    Login,
    /// Refresh-token grant.
    Refresh,
    /// End sessions.
    Revoke,
    /// The JWK Set.
    Jwks,
    /// Sign-up.
    Register,
    /// Password change.
    ChangePassword,
    /// "My devices".
    ListSessions,
    /// End one of the caller's sessions.
    EndSession,
    /// Admin: list users.
    ListUsers,
    /// Admin: create a user.
    CreateUser,
    /// Admin: change a user.
    ChangeUser,
    /// Token introspection.
    Introspect,
    /// Discovery metadata.
    Metadata,
    /// The caller's linked identities.
    ListIdentities,
    /// Link an identity to the caller's account.
    LinkIdentity,
    /// Unlink one of the caller's identities.
    UnlinkIdentity,
    /// The caller's second factors.
    FactorState,
    /// Enrol (`totp`) or confirm (`totp/verify`) an authenticator.
    EnrolFactor,
    /// Remove the authenticator.
    RemoveFactor,
    /// The caller's passkeys.
    ListPasskeys,
    /// A step of a passkey ceremony.
    PasskeyCeremony,
    /// Remove a passkey.
    RemovePasskey,
    /// The caller's e-mail address.
    EmailState,
    /// Set (no parameter) or verify (`verify`) the caller's address.
    SetEmail,
}

/// One function and the methods it serves.
#[derive(Debug)]
pub struct Route {
    /// The function.
    pub function: Function,
    /// Its methods, each with what it does.
    methods: &'static [(Method, Operation)],
}

/// Every function and its methods: the one source for dispatch, `Allow`, CORS and `function.json`.
pub static ROUTES: [Route; 15] = [
    Route {
        function: Function::Token,
        methods: &[(Method::POST, Operation::Login), (Method::PATCH, Operation::Refresh)],
    },
    Route { function: Function::Refresh, methods: &[(Method::POST, Operation::Refresh)] },
    Route {
        function: Function::Revoke,
        methods: &[(Method::POST, Operation::Revoke), (Method::PATCH, Operation::Revoke)],
    },
    Route { function: Function::Jwks, methods: &[(Method::GET, Operation::Jwks), (Method::HEAD, Operation::Jwks)] },
    Route { function: Function::Register, methods: &[(Method::POST, Operation::Register)] },
    Route { function: Function::Password, methods: &[(Method::POST, Operation::ChangePassword)] },
    Route {
        function: Function::Sessions,
        methods: &[
            (Method::GET, Operation::ListSessions),
            (Method::HEAD, Operation::ListSessions),
            (Method::DELETE, Operation::EndSession),
        ],
    },
    Route {
        function: Function::Users,
        methods: &[
            (Method::GET, Operation::ListUsers),
            (Method::HEAD, Operation::ListUsers),
            (Method::POST, Operation::CreateUser),
            (Method::PATCH, Operation::ChangeUser),
        ],
    },
    Route { function: Function::Introspect, methods: &[(Method::POST, Operation::Introspect)] },
    Route {
        function: Function::OpenidConfiguration,
        methods: &[(Method::GET, Operation::Metadata), (Method::HEAD, Operation::Metadata)],
    },
    Route {
        function: Function::OauthAuthorizationServer,
        methods: &[(Method::GET, Operation::Metadata), (Method::HEAD, Operation::Metadata)],
    },
    Route {
        function: Function::Identities,
        methods: &[
            (Method::GET, Operation::ListIdentities),
            (Method::HEAD, Operation::ListIdentities),
            (Method::POST, Operation::LinkIdentity),
            (Method::DELETE, Operation::UnlinkIdentity),
        ],
    },
    Route {
        function: Function::Mfa,
        methods: &[
            (Method::GET, Operation::FactorState),
            (Method::HEAD, Operation::FactorState),
            (Method::POST, Operation::EnrolFactor),
            (Method::DELETE, Operation::RemoveFactor),
        ],
    },
    Route {
        function: Function::Passkeys,
        methods: &[
            (Method::GET, Operation::ListPasskeys),
            (Method::HEAD, Operation::ListPasskeys),
            (Method::POST, Operation::PasskeyCeremony),
            (Method::DELETE, Operation::RemovePasskey),
        ],
    },
    Route {
        function: Function::Email,
        methods: &[
            (Method::GET, Operation::EmailState),
            (Method::HEAD, Operation::EmailState),
            (Method::POST, Operation::SetEmail),
        ],
    },
];

/// The path segment under the route prefix that holds the discovery documents.
pub const WELL_KNOWN: &str = ".well-known";

impl Function {
    /// The function named `name` (case-insensitive, as Functions routes are).
    pub fn from_name(name: &str) -> Option<Self> {
        ROUTES.iter().map(|r| r.function).find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The folder / function name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Refresh => "refresh",
            Self::Revoke => "revoke",
            Self::Jwks => "jwks",
            Self::Register => "register",
            Self::Password => "password",
            Self::Sessions => "sessions",
            Self::Users => "users",
            Self::Introspect => "introspect",
            Self::OpenidConfiguration => "openid-configuration",
            Self::OauthAuthorizationServer => "oauth-authorization-server",
            Self::Identities => "identities",
            Self::Mfa => "mfa",
            Self::Passkeys => "passkeys",
            Self::Email => "email",
        }
    }

    /// Public, cacheable documents (keys and metadata); every other answer is `no-store`.
    fn is_public(self) -> bool {
        matches!(self, Self::Jwks) || self.is_well_known()
    }

    /// Served under `/api/.well-known/` rather than `/api/` (the discovery documents).
    pub fn is_well_known(self) -> bool {
        matches!(self, Self::OpenidConfiguration | Self::OauthAuthorizationServer)
    }

    /// The route of its `function.json`, under the route prefix: `token`, `sessions/{id?}`,
    /// `.well-known/openid-configuration`.
    pub fn route_template(self) -> String {
        match (self.is_well_known(), self.parameter()) {
            (true, _) => format!("{WELL_KNOWN}/{}", self.name()),
            (false, Some(p)) if self.takes_path() => format!("{}/{{*{p}}}", self.name()),
            (false, Some(p)) => format!("{}/{{{p}?}}", self.name()),
            (false, None) => self.name().to_string(),
        }
    }

    /// The route parameter the function takes after its name (`sessions/{id}`,
    /// `users/{username}`), if any.
    pub fn parameter(self) -> Option<&'static str> {
        match self {
            Self::Sessions => Some("id"),
            Self::Users => Some("username"),
            Self::Identities => Some("provider"),
            Self::Mfa => Some("factor"),
            Self::Passkeys => Some("path"),
            Self::Password | Self::Email => Some("action"),
            _ => None,
        }
    }

    /// Its parameter is the rest of the path, slashes included (`mfa/totp/verify`; a catch-all
    /// route parameter of the Functions host, `{*factor}`).
    pub fn takes_path(self) -> bool {
        matches!(self, Self::Mfa | Self::Passkeys)
    }

    fn route(self) -> &'static Route {
        // Every function has exactly one row; the fallback is never taken.
        ROUTES.iter().find(|r| r.function == self).unwrap_or(&ROUTES[0])
    }

    /// The methods the function serves.
    pub fn methods(self) -> impl Iterator<Item = &'static Method> {
        self.route().methods.iter().map(|(m, _)| m)
    }

    /// Methods the function accepts, as the `Allow` header lists them (`POST, PATCH`).
    pub fn allow(self) -> String {
        self.methods().map(Method::as_str).collect::<Vec<_>>().join(", ")
    }

    fn operation(self, method: &Method) -> Option<Operation> {
        self.route().methods.iter().find(|(m, _)| m == method).map(|(_, op)| *op)
    }
}

/// How the host delivered the request (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwarded or proxied HTTP (`enableProxyingHttpRequest` / `enableForwardingHttpRequest`).
    Forwarded,
    /// Invocation payload (`{"Data":{"req":…}}`).
    Invocation,
}

/// A request, whichever way it arrived.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// Target function, `None` when the path named none.
    pub function: Option<Function>,
    /// Headers.
    pub headers: HeaderMap,
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
    /// The client's address key (see [`client_address`]); `None` when no trusted source names it
    /// (invocation mode without a forwarded address): such a request is throttled per username
    /// and device only, never in a bucket shared with every other such client.
    pub client: Option<String>,
    /// The path segment after the function name (`sessions/{id}`), percent-decoded.
    pub param: Option<String>,
    /// The query string, without `?`.
    pub query: Option<String>,
}

impl ApiRequest {
    /// First value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter (decoded); repeated names are an error, as in bodies.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(q) = self.query.as_deref() else { return Ok(None) };
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| ApiError::InvalidRequest("malformed query string".into()))?;
        let mut found = pairs.into_iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v);
        if found.next().is_some() {
            return Err(ApiError::InvalidRequest(format!("query parameter {name:?} is repeated")));
        }
        Ok(first)
    }
}

/// The client address key of a request: the `X-Forwarded-For` entry `hops` places from the right
/// (every `X-Forwarded-For` header joined in order; 1 is the entry Azure's front end appends, the
/// entries left of it are the client's to invent; with fewer entries than `hops`, the leftmost),
/// else — with no header, `hops` 0, or an entry that is no address — the TCP `peer` (`None` in
/// invocation mode, whose peer is the host). Entries are `ip`, `ip:port`, `[v6]:port` or a bare
/// IPv6 address. IPv6 addresses are keyed by their /64 network, which one client usually holds
/// whole, so rotating addresses inside it gains an attacker nothing.
pub fn client_address(headers: &HeaderMap, hops: usize, peer: Option<IpAddr>) -> Option<String> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let chosen = match hops {
        0 => None,
        _ => entries.len().checked_sub(hops).and_then(|i| entries.get(i)).or(entries.first()),
    };
    let parsed = chosen
        .and_then(|e| e.parse::<IpAddr>().ok().or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())))
        .or(peer)?;
    Some(match parsed {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    })
}

/// A response, before it is written in either host mode.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers (`Content-Type` included).
    pub headers: HeaderMap,
    /// JSON body (empty for 204).
    pub body: Vec<u8>,
    /// `ok` or the error code (for logs).
    pub outcome: &'static str,
    /// A finer reason (for logs).
    pub reason: Option<&'static str>,
}

impl ApiResponse {
    /// A JSON response.
    pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self { status, headers, body, outcome: "ok", reason: None }
    }

    /// 204 No Content: a deletion done.
    pub(crate) fn no_content() -> Self {
        Self::empty(StatusCode::NO_CONTENT)
    }

    /// No content (a CORS preflight).
    fn empty(status: StatusCode) -> Self {
        Self { status, headers: HeaderMap::new(), body: Vec::new(), outcome: "ok", reason: None }
    }

    /// Sets a header from text; a value that is not a valid header value is left out (never the
    /// case for the values this crate builds).
    pub fn set(&mut self, name: HeaderName, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
    }

    /// Adds a header from text, keeping earlier values of the same name (`Set-Cookie`).
    pub fn append(&mut self, name: HeaderName, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.append(name, v);
        }
    }

    fn no_store(mut self) -> Self {
        self.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        self
    }
}

/// The application: routes requests to the token service and the account service.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) service: Arc<TokenService>,
    /// The account routes (sign-up, password change, admin users): only with the built-in directory.
    pub(crate) accounts: Option<Arc<AccountService>>,
    /// The introspection clients (the introspection route answers 404 without them).
    pub(crate) clients: Option<Arc<ClientService>>,
    /// Sign-in with providers' ID tokens (the exchange grant is refused without it).
    pub(crate) federation: Option<Arc<crate::federation::SignIn>>,
    /// The discovery documents' `service_documentation` (left out when `None`).
    service_documentation: Option<Arc<str>>,
    cors: Arc<Cors>,
    keys_checked: Option<tokio::sync::watch::Receiver<bool>>,
    /// Set once the first request (the host's readiness probe, or any other) arrived.
    first_request: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Api {
    /// An API over `service`, answering CORS for the origins in `cors`; the account routes answer
    /// 404 until [`Api::with_accounts`].
    pub fn new(service: Arc<TokenService>, cors: Cors) -> Self {
        let first_request = Arc::new(tokio::sync::watch::Sender::new(false));
        Self {
            service,
            accounts: None,
            clients: None,
            federation: None,
            service_documentation: None,
            cors: Arc::new(cors),
            keys_checked: None,
            first_request,
        }
    }

    /// Serves the account routes with `accounts`.
    #[must_use]
    pub fn with_accounts(mut self, accounts: Arc<AccountService>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Names `url` as `service_documentation` in the discovery documents.
    #[must_use]
    pub fn with_service_documentation(mut self, url: Option<&str>) -> Self {
        self.service_documentation = url.map(Arc::from);
        self
    }

    /// Exchanges the ID tokens of `sign_in`'s providers for sessions.
    #[must_use]
    pub fn with_federation(mut self, sign_in: Option<Arc<crate::federation::SignIn>>) -> Self {
        self.federation = sign_in;
        self
    }

    /// Serves token introspection to the clients of `clients`.
    #[must_use]
    pub fn with_clients(mut self, clients: Arc<ClientService>) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Becomes `true` when the first request arrives: start-up work that no answer needs waits
    /// for it, so it does not compete with the readiness probe for the CPU.
    pub fn first_request(&self) -> tokio::sync::watch::Receiver<bool> {
        self.first_request.subscribe()
    }

    /// Records that a request arrived (cheap after the first).
    pub(crate) fn note_request(&self) {
        if !*self.first_request.borrow() {
            self.first_request.send_replace(true);
        }
    }

    /// Requests wait until `keys_checked` is `true` (the secrets' strength was scored after the
    /// port answered); if it is dropped while still `false`, they are answered 503.
    #[must_use]
    pub fn gated(mut self, keys_checked: tokio::sync::watch::Receiver<bool>) -> Self {
        self.keys_checked = Some(keys_checked);
        self
    }

    async fn keys_checked(&self) -> Result<(), ApiError> {
        match &self.keys_checked {
            Some(gate) if !*gate.borrow() => {
                gate.clone().wait_for(|ok| *ok).await.map(drop).map_err(|_| ApiError::Unavailable)
            }
            _ => Ok(()),
        }
    }

    /// Handles one request in a span carrying its function, invocation id (as the host sent it),
    /// and the user and session once known, and logs its outcome and latency.
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        self.note_request();
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
            let response = Self::finish(&req.method, req.function, req.mode, result, started);
            cookies::cors_response(&self.cors, &req, response)
        }
        .instrument(span)
        .await
    }

    /// Answers a request that could not even be read (e.g. a malformed invocation payload) with the
    /// same headers and log line as any other.
    pub fn reject(method: &Method, function: Option<Function>, mode: Mode, error: ApiError) -> ApiResponse {
        let span = tracing::info_span!("request", function = function.map_or("none", Function::name));
        span.in_scope(|| Self::finish(method, function, mode, Err(error), Instant::now()))
    }

    fn finish(
        method: &Method,
        function: Option<Function>,
        mode: Mode,
        result: Result<ApiResponse, ApiError>,
        started: Instant,
    ) -> ApiResponse {
        let response = result.unwrap_or_else(ApiError::into_response);
        let response = match function {
            Some(f) if f.is_public() => response,
            None => response,
            Some(_) => response.no_store(),
        };
        tracing::info!(
            function = function.map_or("none", Function::name),
            method = %method,
            mode = ?mode,
            status = response.status.as_u16(),
            outcome = response.outcome,
            reason = response.reason,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn route(&self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let function = req.function.ok_or(ApiError::NotFound("no such function"))?;
        self.keys_checked().await?;
        if req.method == Method::OPTIONS {
            let mut r = ApiResponse::empty(StatusCode::NO_CONTENT);
            cookies::preflight(&self.cors, req, function, &mut r);
            return Ok(r);
        }
        let operation = function.operation(&req.method).ok_or_else(|| ApiError::MethodNotAllowed(function.allow()))?;
        let needs_param = matches!(
            operation,
            Operation::EndSession
                | Operation::ChangeUser
                | Operation::UnlinkIdentity
                | Operation::EnrolFactor
                | Operation::RemoveFactor
                | Operation::PasskeyCeremony
                | Operation::RemovePasskey
        );
        // `password/forgot|reset` and `email/verify` beside `password` and `email`.
        let may_have_param = matches!(operation, Operation::ChangePassword | Operation::SetEmail);
        match (&req.param, needs_param) {
            (Some(_), false) if !may_have_param => return Err(ApiError::NotFound("no such route")),
            (None, true) => return Err(ApiError::NotFound("this method needs an id in the path")),
            _ => {}
        }
        match operation {
            Operation::Jwks => Ok(self.jwks()),
            Operation::Metadata => Ok(self.metadata()),
            Operation::Login => self.token(req).await,
            Operation::Refresh => self.refresh(req, Fields::parse_optional(req)?).await,
            Operation::Revoke => self.revoke(req, Fields::parse_optional(req)?).await,
            Operation::Introspect => introspect::handle(self, req).await,
            Operation::Register
            | Operation::ChangePassword
            | Operation::ListSessions
            | Operation::EndSession
            | Operation::ListUsers
            | Operation::CreateUser
            | Operation::ChangeUser => accounts::handle(self, operation, req).await,
            Operation::ListIdentities | Operation::LinkIdentity | Operation::UnlinkIdentity => {
                federation::handle(self, operation, req).await
            }
            Operation::FactorState | Operation::EnrolFactor | Operation::RemoveFactor => {
                mfa::handle(self, operation, req).await
            }
            Operation::ListPasskeys | Operation::PasskeyCeremony | Operation::RemovePasskey => {
                passkeys::handle(self, operation, req).await
            }
            Operation::EmailState | Operation::SetEmail => email::handle(self, operation, req).await,
        }
    }

    /// The discovery document (OpenID Connect Discovery 1.0 §3, RFC 8414 §2): what this service
    /// does, at URLs derived from the Issuer, which is therefore the public base URL of the routes
    /// (`https://<app>.azurewebsites.net/api`). Only what is true is listed: there is no
    /// authorization endpoint and no ID token, so no response types or ID token algorithms.
    fn metadata(&self) -> ApiResponse {
        let tokens = self.service.access_tokens();
        let issuer = tokens.issuer();
        let base = issuer.trim_end_matches('/');
        let document = serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{base}/token"),
            "revocation_endpoint": format!("{base}/revoke"),
            "jwks_uri": format!("{base}/jwks"),
            "introspection_endpoint": format!("{base}/introspect"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": self.grant_types(),
            "dpop_signing_alg_values_supported": dpop::ALGORITHMS,
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
        });
        let mut document = document;
        if let (Some(url), Some(fields)) = (&self.service_documentation, document.as_object_mut()) {
            fields.insert("service_documentation".into(), serde_json::Value::String(url.to_string()));
        }
        let mut r = ApiResponse::json(StatusCode::OK, &document);
        r.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
        r
    }

    /// The grants `POST /api/token` takes: token exchange only with a sign-in provider configured.
    fn grant_types(&self) -> Vec<&'static str> {
        let mut grants = vec!["password", "refresh_token", mfa::MFA_OTP];
        if self.federation.is_some() {
            grants.push(federation::TOKEN_EXCHANGE);
        }
        grants
    }

    fn jwks(&self) -> ApiResponse {
        let mut r = ApiResponse::json(StatusCode::OK, self.service.access_tokens().keys().jwks());
        r.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r
    }

    /// A token pair in the transport the client chose: the body as today, or (cookie transport)
    /// the body without `refresh_token` and the two cookies plus `X-XSRF-TOKEN`.
    pub(crate) fn pair(&self, pair: &TokenPair, transport: Transport) -> ApiResponse {
        match transport {
            Transport::Body => ApiResponse::json(StatusCode::OK, pair),
            Transport::Cookie => {
                let mut body = serde_json::json!({
                    "access_token": pair.access_token,
                    "token_type": pair.token_type,
                    "expires_in": pair.expires_in,
                    "refresh_expires_in": pair.refresh_expires_in,
                });
                if let (Some(device), Some(fields)) = (&pair.device_token, body.as_object_mut()) {
                    fields.insert("device_token".into(), serde_json::Value::String(device.clone()));
                }
                let mut r = ApiResponse::json(StatusCode::OK, &body);
                let xsrf = self.service.xsrf_value(&pair.session_id);
                cookies::set_session_cookies(&mut r, &pair.refresh_token, &xsrf, pair.refresh_expires_in);
                if let Some(device) = &pair.device_token {
                    cookies::set_device_cookie(&mut r, device, self.service.device_token_ttl_ms() / 1000);
                }
                r
            }
        }
    }

    /// `POST /api/token`: JSON `{username, password, device_token?}` (grant_type optional), or a
    /// form with `grant_type=password|refresh_token`; the device token may also come in the
    /// `__Host-device` cookie. `X-Token-Transport: cookie` selects cookie transport.
    async fn token(&self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let transport = cookies::requested_transport(&self.cors, req)?;
        let fields = Fields::parse(req)?;
        let grant = fields.string("grant_type", 64)?;
        match (grant, fields.is_form()) {
            (None, true) => Err(ApiError::InvalidRequest("grant_type is required".into())),
            (None, false) | (Some("password"), _) => {
                let username = fields.required("username", MAX_USERNAME_CHARS * 4)?;
                let password = Password::new(fields.required("password", MAX_PASSWORD_BYTES)?);
                // The device token: a body field, else the cookie (a browser's).
                let device_token =
                    fields.string("device_token", MAX_TOKEN_LEN)?.or_else(|| cookies::device_cookie(req));
                let jkt = self.proof_key(req)?;
                let from = crate::service::LoginFrom {
                    address: req.client.as_deref(),
                    user_agent: req.header("user-agent"),
                    device_token,
                    dpop_jkt: jkt.as_deref(),
                };
                let pair = self.service.login_from(username, &password, from).await?;
                let mut r = self.pair(&pair, transport);
                self.dpop_nonce(req, &mut r);
                Ok(r)
            }
            (Some("refresh_token"), _) => self.refresh(req, Some(fields)).await,
            (Some(federation::TOKEN_EXCHANGE), _) => federation::exchange(self, req, &fields, transport).await,
            (Some(mfa::MFA_OTP), _) => mfa::second_step(self, req, &fields, transport).await,
            (Some(_), _) => Err(ApiError::UnsupportedGrantType),
        }
    }

    /// Refresh: `{refresh_token, access_token?}` in the body, or — with no body — the refresh-token
    /// cookie, checked against `Origin` and `X-XSRF-TOKEN` first.
    async fn refresh(&self, req: &ApiRequest, fields: Option<Fields>) -> Result<ApiResponse, ApiError> {
        let Some(fields) = fields.filter(|f| !f.is_empty()) else {
            let token = cookies::authenticated_cookie(&self.cors, &self.service, req)?;
            let jkt = self.proof_key(req)?;
            return match self.service.refresh_with_key(token, None, jkt.as_deref()).await {
                Ok(pair) => {
                    let mut r = self.pair(&pair, Transport::Cookie);
                    self.dpop_nonce(req, &mut r);
                    Ok(r)
                }
                // A refused proof changes nothing: the cookies stay.
                Err(e @ (ServiceError::InvalidDpopProof(_) | ServiceError::UseDpopNonce(_))) => Err(e.into()),
                Err(e) => cookies::ended(e.into()),
            };
        };
        let refresh_token = fields.required("refresh_token", MAX_TOKEN_LEN)?;
        let access_token = fields.string("access_token", MAX_TOKEN_LEN)?;
        let jkt = self.proof_key(req)?;
        let pair = self.service.refresh_with_key(refresh_token, access_token, jkt.as_deref()).await?;
        let mut r = self.pair(&pair, cookies::requested_transport(&self.cors, req)?);
        self.dpop_nonce(req, &mut r);
        Ok(r)
    }

    /// The public URL of the request as a DPoP proof's `htu` names it (RFC 9449 §4.3): the
    /// Issuer is the public base URL of the routes (`https://<app>.azurewebsites.net/api`), so the
    /// URL is the Issuer's plus the function's route — right behind the Functions host, a proxy or
    /// a custom domain, whatever `Host` the request arrived with. An Issuer without a path (the
    /// `--dev` default) stands for its origin with the `/api` route prefix.
    fn request_url(&self, req: &ApiRequest) -> String {
        let issuer = self.service.access_tokens().issuer().trim_end_matches('/');
        let has_path = issuer.split_once("://").is_some_and(|(_, rest)| rest.contains('/'));
        let mut url = if has_path { issuer.to_string() } else { format!("{issuer}/{}", server::ROUTE_PREFIX) };
        if let Some(function) = req.function {
            url.push('/');
            if function.is_well_known() {
                url.push_str(WELL_KNOWN);
                url.push('/');
            }
            url.push_str(function.name());
        }
        if let Some(param) = &req.param {
            url.push('/');
            // A path parameter (`passkeys/register/start`) keeps its slashes: each segment is
            // encoded on its own, as the client's URL has it.
            let segments: Vec<String> = param.split('/').map(dpop::encode_segment).collect();
            url.push_str(&segments.join("/"));
        }
        url
    }

    /// The single `DPoP` header of a request, if any (RFC 9449 §4.3: more than one is refused).
    fn dpop_header(req: &ApiRequest) -> Result<Option<&str>, ServiceError> {
        let mut values = req.headers.get_all("dpop").iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(ServiceError::InvalidDpopProof("send exactly one DPoP header"));
        }
        first
            .map(|v| v.to_str().map_err(|_| ServiceError::InvalidDpopProof("the DPoP header is not text")))
            .transpose()
            .map(|v| v.map(str::trim))
    }

    /// The key thumbprint of a token request's DPoP proof, `None` without one (refused when
    /// `Dpop__Required`): 400 `invalid_dpop_proof` or `use_dpop_nonce` for a refused proof.
    pub(crate) fn proof_key(&self, req: &ApiRequest) -> Result<Option<String>, ApiError> {
        let proof = Self::dpop_header(req)?;
        let url = self.request_url(req);
        let target = Target { method: req.method.as_str(), url: &url, access_token: None };
        Ok(self.service.proof_key(proof, target)?)
    }

    /// Adds `DPoP-Nonce` to a token answer when nonces are required, so the next proof can carry it.
    pub(crate) fn dpop_nonce(&self, req: &ApiRequest, response: &mut ApiResponse) {
        if let Some(nonce) = self.service.dpop_nonce().filter(|_| req.headers.contains_key("dpop")) {
            response.set(HeaderName::from_static("dpop-nonce"), &nonce);
        }
    }

    /// The caller of a resource route: `Authorization: Bearer <token>`, or `Authorization: DPoP
    /// <token>` with a `DPoP` proof for this request (RFC 9449 §7.1). A DPoP-bound token as a
    /// bearer token, and every refusal under the DPoP scheme, is answered with a DPoP challenge.
    pub(crate) async fn caller(&self, req: &ApiRequest) -> Result<Caller, ApiError> {
        let (scheme, token) = authorization(req)?;
        if scheme == Scheme::Bearer {
            return Ok(self.service.authenticate_bearer(token).await?);
        }
        let challenge = |error, description| ApiError::DpopChallenge { error, description, nonce: None };
        let url = self.request_url(req);
        let target = Target { method: req.method.as_str(), url: &url, access_token: Some(token) };
        let proof =
            Self::dpop_header(req).map_err(|_| challenge("invalid_dpop_proof", "send exactly one DPoP header"))?;
        match self.service.authenticate_dpop(token, proof, target).await {
            Ok(caller) => Ok(caller),
            Err(ServiceError::InvalidDpopProof(why)) => Err(challenge("invalid_dpop_proof", why)),
            Err(ServiceError::UseDpopNonce(nonce)) => Err(ApiError::DpopChallenge {
                error: "use_dpop_nonce",
                description: "send the DPoP proof again with the nonce of the DPoP-Nonce header",
                nonce: Some(nonce),
            }),
            Err(ServiceError::InvalidToken(crate::tokens::access::AccessTokenError::Expired)) => {
                Err(challenge("invalid_token", "the access token expired"))
            }
            Err(ServiceError::InvalidToken(crate::tokens::access::AccessTokenError::Invalid(why))) => {
                Err(challenge("invalid_token", why))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Revoke: a refresh token (`refresh_token`, or RFC 7009 `token`), or a `scope` with a Bearer;
    /// with no body, the session of the refresh-token cookie (checked like a cookie refresh), whose
    /// cookies are then cleared.
    async fn revoke(&self, req: &ApiRequest, fields: Option<Fields>) -> Result<ApiResponse, ApiError> {
        let Some(fields) = fields.filter(|f| !f.is_empty()) else {
            let token = cookies::authenticated_cookie(&self.cors, &self.service, req)?;
            self.service.revoke_token(token).await?;
            let mut r = ApiResponse::json(StatusCode::OK, &serde_json::json!({}));
            cookies::clear_session_cookies(&mut r);
            return Ok(r);
        };
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
                Ok(ApiResponse::json(StatusCode::OK, &serde_json::json!({})))
            }
            (Some("everyone"), None) => {
                if username.is_some() {
                    return Err(ApiError::InvalidRequest("username is only allowed with scope=global".into()));
                }
                let caller = self.caller(req).await?;
                let at = self.service.revoke_everyone(&caller).await?;
                Ok(ApiResponse::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "revoked": "everyone",
                        "revoked_before": at.div_euclid(1000),
                        "own_session_ended": true,
                        "effective_within_seconds": crate::epoch::REFRESH_INTERVAL.as_secs() + 1,
                    }),
                ))
            }
            (Some(scope), None) => {
                let scope = match (scope, username) {
                    ("global", None) => RevokeScope::Global,
                    ("others", None) => RevokeScope::Others,
                    ("global", Some(user)) => RevokeScope::User(user.to_string()),
                    ("others", Some(_)) => {
                        return Err(ApiError::InvalidRequest("username is only allowed with scope=global".into()));
                    }
                    _ => return Err(ApiError::InvalidRequest("scope must be global, others or everyone".into())),
                };
                let caller = self.caller(req).await?;
                let ended = self.service.revoke_scope(&caller, &scope).await?;
                Ok(ApiResponse::json(StatusCode::OK, &serde_json::json!({ "revoked_sessions": ended })))
            }
        }
    }
}

/// The scheme of an `Authorization` header of a resource route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// RFC 6750.
    Bearer,
    /// RFC 9449 §7.1.
    Dpop,
}

/// The scheme and token of an `Authorization: Bearer …` or `Authorization: DPoP …` header. No
/// header, or another scheme, is [`ApiError::MissingToken`]; a header without a usable token is an
/// invalid token.
fn authorization(req: &ApiRequest) -> Result<(Scheme, &str), ApiError> {
    let header = req.header("authorization").ok_or(ApiError::MissingToken)?;
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(ApiError::MissingToken);
    };
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::InvalidToken { expired: false, description: "malformed token" });
    }
    Ok((scheme, token))
}
