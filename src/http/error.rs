//! API errors: the only place that knows status codes and `WWW-Authenticate` headers. Bodies are
//! RFC 6749 §5.2 JSON (`error`, `error_description`); a 5xx never carries internals.

use http::StatusCode;
use http::header::{self, HeaderName};

use crate::service::{GrantFailure, ServiceError};
use crate::tokens::access::AccessTokenError;

use super::ApiResponse;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `invalid_request`.
    InvalidRequest(String),
    /// 400 `invalid_grant`.
    InvalidGrant(GrantFailure),
    /// 400 `unsupported_grant_type`.
    UnsupportedGrantType,
    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"` (and `Token-Expired: true`).
    InvalidToken {
        /// Valid except for its expiry.
        expired: bool,
        /// What was wrong.
        description: &'static str,
    },
    /// 401 with a bare `WWW-Authenticate: Bearer` (RFC 6750 §3.1: no credentials, no error code).
    MissingToken,
    /// 403 `insufficient_scope`.
    Forbidden(&'static str),
    /// 403 `access_denied`: a cookie-authenticated request without an allowed `Origin` or the
    /// session's `X-XSRF-TOKEN` (cross-site request forgery).
    AccessDenied(&'static str),
    /// 404.
    NotFound(&'static str),
    /// 405 with `Allow`.
    MethodNotAllowed(String),
    /// 409 `conflict`: the change is refused in the current state (the last enabled admin).
    Conflict(&'static str),
    /// 408: the body did not arrive within the body-read timeout (the connection is then closed).
    BodyTimeout,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429 with `Retry-After`.
    Locked {
        /// Seconds until the lock opens.
        retry_after_s: i64,
    },
    /// 429 with `Retry-After`: the client used up its request budget (not a login lock).
    RateLimited {
        /// Seconds until a request is accepted again.
        retry_after_s: i64,
    },
    /// 401 `invalid_client` with `WWW-Authenticate: Basic` (RFC 6749 §5.2): client
    /// authentication failed or was missing.
    InvalidClient(&'static str),
    /// 400 `invalid_dpop_proof` (RFC 9449 §5): a token request's DPoP proof was refused or missing.
    InvalidDpopProof(&'static str),
    /// 400 `use_dpop_nonce` with `DPoP-Nonce` (RFC 9449 §8): retry the token request with this nonce.
    UseDpopNonce(String),
    /// 401 with `WWW-Authenticate: DPoP error=…` (RFC 9449 §7.1): a resource request with the
    /// DPoP scheme was refused, or a DPoP-bound token came as a bearer token.
    DpopChallenge {
        /// `invalid_token`, `invalid_dpop_proof` or `use_dpop_nonce`.
        error: &'static str,
        /// What was wrong.
        description: &'static str,
        /// The nonce to retry with (`use_dpop_nonce`).
        nonce: Option<String>,
    },
    /// 401 `mfa_required`: the password (or ID token) passed, a second factor must follow; the
    /// body carries `mfa_token` and `factors`.
    MfaRequired {
        /// Proof of the first step.
        mfa_token: String,
        /// The factors the user can use.
        factors: Vec<&'static str>,
    },
    /// 503 with `Retry-After`.
    Unavailable,
    /// 503 with `Retry-After`: too much work at once (not a fault; not logged as one).
    Busy(&'static str),
    /// 500; details are logged, never sent.
    Internal,
}

/// The realm of the `Basic` challenge of client authentication (introspection).
pub const BASIC_REALM: &str = "introspection";

/// The proof algorithms a DPoP challenge names (`algs`, RFC 9449 §7.1).
const DPOP_ALGS: &str = "ES256 EdDSA RS256";

/// Seconds a client should wait before retrying after a 503.
const UNAVAILABLE_RETRY_AFTER_S: i64 = 1;

impl ApiError {
    /// HTTP status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidGrant(_)
            | Self::UnsupportedGrantType
            | Self::InvalidDpopProof(_)
            | Self::UseDpopNonce(_) => StatusCode::BAD_REQUEST,
            Self::InvalidToken { .. }
            | Self::MissingToken
            | Self::InvalidClient(_)
            | Self::DpopChallenge { .. }
            | Self::MfaRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::AccessDenied(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Locked { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::BodyTimeout | Self::PayloadTooLarge | Self::UnsupportedMediaType => {
                "invalid_request"
            }
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidToken { .. } => "invalid_token",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidDpopProof(_) => "invalid_dpop_proof",
            Self::UseDpopNonce(_) => "use_dpop_nonce",
            Self::DpopChallenge { error, .. } => error,
            Self::MfaRequired { .. } => "mfa_required",
            Self::MissingToken => "unauthorized",
            Self::Forbidden(_) => "insufficient_scope",
            Self::AccessDenied(_) => "access_denied",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Locked { .. } | Self::RateLimited { .. } | Self::Unavailable | Self::Busy(_) => {
                "temporarily_unavailable"
            }
            Self::Internal => "server_error",
        }
    }

    fn description(&self) -> String {
        match self {
            Self::InvalidRequest(d) => d.clone(),
            Self::InvalidGrant(f) => f.description().to_string(),
            Self::UnsupportedGrantType => {
                "grant_type must be password, refresh_token, urn:ietf:params:oauth:grant-type:token-exchange or \
                 urn:ietf:params:oauth:grant-type:mfa-otp"
                    .into()
            }
            Self::InvalidToken { description, .. }
            | Self::InvalidDpopProof(description)
            | Self::DpopChallenge { description, .. } => (*description).into(),
            Self::UseDpopNonce(_) => "send the DPoP proof again with the nonce of the DPoP-Nonce header".into(),
            Self::MissingToken => "a Bearer access token is required".into(),
            Self::MfaRequired { .. } => "a second factor is required: send the mfa_token with a code (grant_type \
                 urn:ietf:params:oauth:grant-type:mfa-otp)"
                .into(),
            Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::AccessDenied(d)
            | Self::Conflict(d)
            | Self::InvalidClient(d) => (*d).into(),
            Self::MethodNotAllowed(allow) => format!("method not allowed; use {allow}"),
            Self::BodyTimeout => "the request body did not arrive in time".into(),
            Self::PayloadTooLarge => format!("request body exceeds {} bytes", super::MAX_BODY_BYTES),
            Self::UnsupportedMediaType => {
                "Content-Type must be application/json or application/x-www-form-urlencoded (UTF-8)".into()
            }
            Self::Locked { .. } => "too many failed logins for this username; try again later".into(),
            Self::RateLimited { .. } => "too many requests from this client; try again later".into(),
            Self::Unavailable => "the service is temporarily unavailable; try again shortly".into(),
            Self::Busy(_) => "the service is busy; try again shortly".into(),
            Self::Internal => "the server failed to handle the request".into(),
        }
    }

    /// Short reason for logs (more precise than the code, never secret).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::InvalidGrant(f) => Some(f.reason()),
            Self::InvalidToken { description, .. }
            | Self::InvalidDpopProof(description)
            | Self::DpopChallenge { description, .. } => Some(description),
            Self::Busy(why) | Self::AccessDenied(why) => Some(why),
            _ => None,
        }
    }

    /// The full response.
    pub fn into_response(self) -> ApiResponse {
        let mut body = serde_json::json!({ "error": self.code(), "error_description": self.description() });
        if let (Self::MfaRequired { mfa_token, factors }, Some(fields)) = (&self, body.as_object_mut()) {
            fields.insert("mfa_token".into(), mfa_token.clone().into());
            fields.insert("factors".into(), factors.clone().into());
        }
        let mut response = ApiResponse::json(self.status(), &body);
        response.outcome = self.code();
        response.reason = self.reason();
        let www = HeaderName::from_static("www-authenticate");
        match &self {
            Self::InvalidToken { expired, description } => {
                response.set(www, &format!("Bearer error=\"invalid_token\", error_description=\"{description}\""));
                if *expired {
                    response.set(HeaderName::from_static("token-expired"), "true");
                }
            }
            Self::MissingToken => response.set(www, "Bearer"),
            Self::Forbidden(_) => response.set(www, "Bearer error=\"insufficient_scope\""),
            Self::MethodNotAllowed(allow) => response.set(header::ALLOW, allow),
            Self::Locked { retry_after_s } | Self::RateLimited { retry_after_s } => {
                response.set(header::RETRY_AFTER, &retry_after_s.max(&1).to_string());
            }
            Self::InvalidClient(_) => response.set(www, &format!("Basic realm=\"{BASIC_REALM}\", charset=\"UTF-8\"")),
            Self::UseDpopNonce(nonce) => response.set(HeaderName::from_static("dpop-nonce"), nonce),
            Self::DpopChallenge { error, description, nonce } => {
                response.set(
                    www,
                    &format!("DPoP error=\"{error}\", error_description=\"{description}\", algs=\"{DPOP_ALGS}\""),
                );
                if let Some(nonce) = nonce {
                    response.set(HeaderName::from_static("dpop-nonce"), nonce);
                }
            }
            Self::Unavailable | Self::Busy(_) => {
                response.set(header::RETRY_AFTER, &UNAVAILABLE_RETRY_AFTER_S.to_string());
            }
            _ => {}
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidRequest(d) => Self::InvalidRequest(d.into()),
            ServiceError::InvalidRequestOwned(d) => Self::InvalidRequest(d),
            ServiceError::AccessDenied(d) => Self::AccessDenied(d),
            ServiceError::NotFound(d) | ServiceError::NotAvailable(d) => Self::NotFound(d),
            ServiceError::InvalidGrant(f) => Self::InvalidGrant(f),
            ServiceError::Locked { retry_after_ms } => Self::Locked { retry_after_s: (retry_after_ms + 999) / 1000 },
            ServiceError::RateLimited { retry_after_ms } => {
                Self::RateLimited { retry_after_s: (retry_after_ms + 999) / 1000 }
            }
            ServiceError::InvalidClient(d) => Self::InvalidClient(d),
            ServiceError::InvalidToken(AccessTokenError::Expired) => {
                Self::InvalidToken { expired: true, description: "the access token expired" }
            }
            ServiceError::InvalidToken(AccessTokenError::Invalid(why)) => {
                Self::InvalidToken { expired: false, description: why }
            }
            ServiceError::Forbidden(d) => Self::Forbidden(d),
            ServiceError::Conflict(d) => Self::Conflict(d),
            ServiceError::UnknownUser => Self::NotFound("no such user"),
            ServiceError::Busy(why) => Self::Busy(why),
            ServiceError::InvalidDpopProof(why) => Self::InvalidDpopProof(why),
            ServiceError::UseDpopNonce(nonce) => Self::UseDpopNonce(nonce),
            ServiceError::MfaRequired { mfa_token, factors } => Self::MfaRequired { mfa_token, factors },
            ServiceError::BoundTokenAsBearer => Self::DpopChallenge {
                error: "invalid_token",
                description: "this access token is DPoP-bound: use the DPoP scheme with a proof",
                nonce: None,
            },
            ServiceError::Unavailable(source) => {
                tracing::error!(error = %source, "store unavailable");
                Self::Unavailable
            }
            ServiceError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Self::Internal
            }
        }
    }
}
