//! Browser clients: the refresh token in an HttpOnly cookie with a session-bound anti-forgery
//! value, and CORS for the allowed origins.
//!
//! A client chooses cookie transport per login with `X-Token-Transport: cookie`. The refresh token
//! then travels only in `__Host-refresh_token` (HttpOnly, Secure, SameSite=Strict, Path=/), out of
//! reach of any script on the page. A request authenticated by that cookie must also carry
//! `X-XSRF-TOKEN` equal to its session's value (an HMAC of the session id, sent as the readable
//! `XSRF-TOKEN` cookie and the `X-XSRF-TOKEN` response header) and an `Origin` on the allowed list;
//! otherwise it is refused with 403 before anything rotates or ends.

use http::Method;
use http::header::{self, HeaderValue};

use super::error::ApiError;
use super::{ApiRequest, ApiResponse, Function};
use crate::service::{GrantFailure, TokenService};
use crate::settings::Cors;

/// The HttpOnly cookie holding the refresh token.
pub const REFRESH_COOKIE: &str = "__Host-refresh_token";
/// The HttpOnly cookie holding the device token of a password login (see `users::device`); it
/// outlives sessions, so a logout keeps it.
pub const DEVICE_COOKIE: &str = "__Host-device";
/// The script-readable cookie holding the anti-forgery value (the Angular/axios convention).
pub const XSRF_COOKIE: &str = "XSRF-TOKEN";
/// The request and response header carrying the anti-forgery value.
pub const XSRF_HEADER: &str = "x-xsrf-token";
/// The request header choosing the transport of a login's refresh token.
pub const TRANSPORT_HEADER: &str = "x-token-transport";
/// Request headers a cross-origin page may send.
pub const ALLOWED_HEADERS: &str = "Content-Type, Authorization, X-XSRF-TOKEN, X-Token-Transport, DPoP";
/// Response headers a cross-origin page may read.
pub const EXPOSED_HEADERS: &str = "X-XSRF-TOKEN, Token-Expired, WWW-Authenticate, Retry-After, DPoP-Nonce";
/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// Where a login's or refresh's refresh token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In the JSON body (mobile and server clients).
    Body,
    /// In the HttpOnly cookie (browsers).
    Cookie,
}

/// The transport the request asks for (`X-Token-Transport: body|cookie`, default body). Cookie
/// transport sets the session's cookies, so it needs an allowed `Origin` as every other cookie
/// request does: a cross-site page must not be able to log a browser in (login CSRF) or plant a
/// session of the attacker's choosing.
pub fn requested_transport(cors: &Cors, req: &ApiRequest) -> Result<Transport, ApiError> {
    match req.header(TRANSPORT_HEADER).map(str::trim) {
        None => Ok(Transport::Body),
        Some(v) if v.eq_ignore_ascii_case("body") => Ok(Transport::Body),
        Some(v) if v.eq_ignore_ascii_case("cookie") => {
            allowed_origin(cors, req)?;
            Ok(Transport::Cookie)
        }
        Some(_) => Err(ApiError::InvalidRequest("X-Token-Transport must be body or cookie".into())),
    }
}

/// A cookie request's `Origin` is on the allowed list.
fn allowed_origin(cors: &Cors, req: &ApiRequest) -> Result<(), ApiError> {
    match req.header("origin") {
        Some(origin) if cors.allows(origin) => Ok(()),
        Some(_) => Err(ApiError::AccessDenied("the request's Origin is not allowed to use the refresh-token cookie")),
        None => Err(ApiError::AccessDenied("a request with the refresh-token cookie must carry an allowed Origin")),
    }
}

/// Sets both cookies of a session for `max_age_s` seconds, and `X-XSRF-TOKEN`.
pub fn set_session_cookies(r: &mut ApiResponse, refresh_token: &str, xsrf: &str, max_age_s: i64) {
    let max_age = max_age_s.max(0);
    r.append(
        header::SET_COOKIE,
        &format!("{REFRESH_COOKIE}={refresh_token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"),
    );
    r.append(header::SET_COOKIE, &format!("{XSRF_COOKIE}={xsrf}; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"));
    r.set(http::HeaderName::from_static(XSRF_HEADER), xsrf);
}

/// Sets the device-token cookie for as long as the token is valid (`max_age_s`).
pub fn set_device_cookie(r: &mut ApiResponse, device_token: &str, max_age_s: i64) {
    let max_age = max_age_s.max(0);
    r.append(
        header::SET_COOKIE,
        &format!("{DEVICE_COOKIE}={device_token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"),
    );
}

/// The device token of the request's `__Host-device` cookie, if any.
pub fn device_cookie(req: &ApiRequest) -> Option<&str> {
    cookie(req, DEVICE_COOKIE)
}

/// Clears both cookies (`Max-Age=0`).
pub fn clear_session_cookies(r: &mut ApiResponse) {
    r.append(header::SET_COOKIE, &format!("{REFRESH_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"));
    r.append(header::SET_COOKIE, &format!("{XSRF_COOKIE}=; Secure; SameSite=Strict; Path=/; Max-Age=0"));
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(req: &'a ApiRequest, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The refresh token of a cookie-authenticated request, once its `Origin` is allowed and its
/// `X-XSRF-TOKEN` matches the session the cookie names. Without the cookie (and without a body)
/// the request names no token at all: 400.
pub fn authenticated_cookie<'a>(cors: &Cors, service: &TokenService, req: &'a ApiRequest) -> Result<&'a str, ApiError> {
    let Some(token) = cookie(req, REFRESH_COOKIE) else {
        return Err(ApiError::InvalidRequest(format!(
            "refresh_token is required (in the body, or with cookie transport in the {REFRESH_COOKIE} cookie)"
        )));
    };
    allowed_origin(cors, req)?;
    let presented = req
        .header(XSRF_HEADER)
        .ok_or(ApiError::AccessDenied("a request with the refresh-token cookie must carry X-XSRF-TOKEN"))?;
    let session = service.session_of(token).ok_or(ApiError::InvalidGrant(GrantFailure::Malformed))?;
    if !service.xsrf_matches(&session, presented.trim()) {
        return Err(ApiError::AccessDenied("X-XSRF-TOKEN does not belong to the refresh-token cookie's session"));
    }
    Ok(token)
}

/// An error answer of a cookie-mode refresh: when the session is gone (`invalid_grant`), the dead
/// cookies are cleared too, so the browser stops sending them.
pub fn ended(error: ApiError) -> Result<ApiResponse, ApiError> {
    match error {
        ApiError::InvalidGrant(_) => {
            let mut r = error.into_response();
            clear_session_cookies(&mut r);
            Ok(r)
        }
        other => Err(other),
    }
}

/// The preflight answer for `function`: the CORS headers when the `Origin` is allowed, none
/// otherwise (the browser then refuses the request itself).
pub fn preflight(cors: &Cors, req: &ApiRequest, function: Function, r: &mut ApiResponse) {
    r.headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = req.header("origin").filter(|o| cors.allows(o)) else { return };
    r.set(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    r.set(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    r.set(header::ACCESS_CONTROL_ALLOW_METHODS, &function.allow());
    r.set(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS);
    r.set(header::ACCESS_CONTROL_MAX_AGE, &PREFLIGHT_MAX_AGE_S.to_string());
}

/// Adds the CORS headers of an actual (not preflight) response for an allowed `Origin`.
pub fn cors_response(cors: &Cors, req: &ApiRequest, mut r: ApiResponse) -> ApiResponse {
    if req.method == Method::OPTIONS {
        return r; // the preflight set its own
    }
    if cors.is_enabled() {
        r.headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = req.header("origin").filter(|o| cors.allows(o)) {
        r.set(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        r.set(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        r.set(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
    }
    r
}
