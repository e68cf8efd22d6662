//! Second factors at the HTTP edge: the caller's authenticator (`GET /api/mfa`,
//! `POST /api/mfa/totp`, `POST /api/mfa/totp/verify`, `DELETE /api/mfa/totp`) and the second
//! step of a login, `POST /api/token` with `grant_type=urn:ietf:params:oauth:grant-type:mfa-otp`
//! (the shape of Auth0's mfa-otp grant under this service's own URN): `mfa_token` and `otp`, or
//! `mfa_token` and `recovery_code`.

use http::StatusCode;
use serde_json::json;

use super::body::Fields;
use super::cookies::{self, Transport};
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Operation};
use crate::accounts::AccountService;
use crate::accounts::factors::{MAX_CODE_LEN, SecondFactor};
use crate::service::{Client, ServiceError};
use crate::tokens::mfa;
use crate::users::lockout::Origin;

/// The grant of a login's second step.
pub const MFA_OTP: &str = "urn:ietf:params:oauth:grant-type:mfa-otp";

fn accounts(api: &Api) -> Result<&AccountService, ApiError> {
    Ok(api.accounts.as_deref().ok_or(ServiceError::NotAvailable("second factors need the built-in user directory"))?)
}

/// `otp` or `recovery_code`, exactly one.
fn factor(fields: &Fields) -> Result<SecondFactor<'_>, ApiError> {
    match (fields.string("otp", MAX_CODE_LEN)?, fields.string("recovery_code", MAX_CODE_LEN)?) {
        (Some(otp), None) => Ok(SecondFactor::Otp(otp.trim())),
        (None, Some(code)) => Ok(SecondFactor::RecoveryCode(code)),
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest("send either otp or recovery_code, not both".into())),
        (None, None) => Err(ApiError::InvalidRequest("otp or recovery_code is required".into())),
    }
}

/// `POST /api/token` with the mfa-otp grant: the session of a login whose first step passed.
pub(crate) async fn second_step(
    api: &Api,
    req: &ApiRequest,
    fields: &Fields,
    transport: Transport,
) -> Result<ApiResponse, ApiError> {
    let token = fields.required("mfa_token", mfa::MAX_LEN)?;
    let factor = factor(fields)?;
    let jkt = api.proof_key(req)?;
    let accounts = accounts(api)?;
    // The code is checked (and counted by the lockout) before the token is used up: a mistyped
    // code can be corrected with the same mfa_token; a passing one is then single-use twice over.
    let claims = api.service.peek_mfa_token(token)?;
    let address = req.client.as_deref();
    // The device token, as at login: a body field, else the cookie (a browser's).
    let device_token = fields.string("device_token", super::MAX_TOKEN_LEN)?.or_else(|| cookies::device_cookie(req));
    let origin = Origin { address, device_token };
    let principal = accounts.second_step(&claims, factor, origin).await?;
    let claims = api.service.redeem_mfa_token(token).await?;
    let client = Client { address, user_agent: req.header("user-agent"), dpop_jkt: jkt.as_deref() };
    let amr = factor.amr(claims.first_step);
    let pair = api.service.second_step_login_from(principal, client, &amr, device_token).await?;
    let mut r = api.pair(&pair, transport);
    api.dpop_nonce(req, &mut r);
    Ok(r)
}

/// The authenticator routes.
pub(crate) async fn handle(api: &Api, operation: Operation, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let caller = api.caller(req).await?;
    let accounts = accounts(api)?;
    let address = req.client.as_deref();
    match (operation, req.param.as_deref()) {
        (Operation::FactorState, None) => Ok(ApiResponse::json(StatusCode::OK, &accounts.factor_state(&caller).await?)),
        (Operation::EnrolFactor, Some("totp")) => {
            let enrolment = accounts.enrol_totp(&caller).await?;
            Ok(ApiResponse::json(StatusCode::CREATED, &enrolment))
        }
        (Operation::EnrolFactor, Some("totp/verify")) => {
            let fields = Fields::parse(req)?;
            let code = fields.required("code", MAX_CODE_LEN)?;
            let codes = accounts.confirm_totp(&caller, code.trim(), address).await?;
            Ok(ApiResponse::json(StatusCode::OK, &json!({ "recovery_codes": codes })))
        }
        (Operation::RemoveFactor, Some("totp")) => {
            let fields = Fields::parse(req)?;
            let code = fields.required("code", MAX_CODE_LEN)?;
            // A current code (six digits) or a recovery code.
            let factor = if code.trim().len() == 6 && code.trim().bytes().all(|b| b.is_ascii_digit()) {
                SecondFactor::Otp(code.trim())
            } else {
                SecondFactor::RecoveryCode(code)
            };
            accounts.remove_totp(&caller, factor, address).await?;
            Ok(ApiResponse::no_content())
        }
        _ => Err(ApiError::NotFound("no such route; use /api/mfa, /api/mfa/totp or /api/mfa/totp/verify")),
    }
}
