//! E-mail at the HTTP edge: the caller's address (`GET /api/email`), setting it (`POST /api/email`
//! with `{"email"}`, which mails a verification code) and verifying it (`POST /api/email/verify`
//! with `{"code"}`), all with the caller's access token; and password recovery without one:
//! `POST /api/password/forgot` (`username` or `email`; always 202, the same body, before anything
//! is looked up) and `POST /api/password/reset` (`username` or `email`, `code`, `password`, and for
//! an account with a second factor `otp` or `recovery_code`).

use http::StatusCode;
use serde_json::json;

use super::body::Fields;
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Operation};
use crate::accounts::AccountService;
use crate::accounts::email::{MAX_ADDRESS_LEN, Who};
use crate::accounts::factors::{MAX_CODE_LEN, SecondFactor};
use crate::secret::Password;
use crate::service::ServiceError;
use crate::users::{MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};

/// Longest `code` field read (the codes are 6 to 8 digits; spaces and dashes are allowed).
const MAX_EMAIL_CODE_LEN: usize = 32;

fn accounts(api: &Api) -> Result<&AccountService, ApiError> {
    Ok(api.accounts.as_deref().ok_or(ServiceError::NotAvailable("e-mail needs the built-in user directory"))?)
}

/// `username` or `email`, exactly one.
fn who(fields: &Fields) -> Result<Who, ApiError> {
    match (fields.string("username", MAX_USERNAME_CHARS * 4)?, fields.string("email", MAX_ADDRESS_LEN * 4)?) {
        (Some(name), None) => Ok(Who::Username(name.to_string())),
        (None, Some(address)) => Ok(Who::Email(address.to_string())),
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest("send either username or email, not both".into())),
        (None, None) => Err(ApiError::InvalidRequest("username or email is required".into())),
    }
}

/// `otp` or `recovery_code`, at most one.
fn optional_factor(fields: &Fields) -> Result<Option<SecondFactor<'_>>, ApiError> {
    match (fields.string("otp", MAX_CODE_LEN)?, fields.string("recovery_code", MAX_CODE_LEN)?) {
        (Some(otp), None) => Ok(Some(SecondFactor::Otp(otp.trim()))),
        (None, Some(code)) => Ok(Some(SecondFactor::RecoveryCode(code))),
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest("send either otp or recovery_code, not both".into())),
        (None, None) => Ok(None),
    }
}

/// `POST /api/password/forgot` and `/api/password/reset`.
pub(crate) async fn recovery(api: &Api, action: &str, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let accounts = accounts(api)?;
    let fields = Fields::parse(req)?;
    match action {
        "forgot" => {
            let who = who(&fields)?;
            accounts.forgot_password(who)?;
            Ok(ApiResponse::json(
                StatusCode::ACCEPTED,
                &json!({ "status": "accepted", "message": "if the account has a verified address, a code is on its way" }),
            ))
        }
        "reset" => {
            let who = who(&fields)?;
            let code = fields.required("code", MAX_EMAIL_CODE_LEN)?;
            let password = Password::new(fields.required("password", MAX_PASSWORD_BYTES)?);
            let factor = optional_factor(&fields)?;
            let ended = accounts.reset_password(&who, code, &password, factor, req.client.as_deref()).await?;
            Ok(ApiResponse::json(StatusCode::OK, &json!({ "sessions_ended": ended })))
        }
        _ => Err(ApiError::NotFound("no such route; use /api/password, /api/password/forgot or /api/password/reset")),
    }
}

/// The caller's address.
pub(crate) async fn handle(api: &Api, operation: Operation, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let caller = api.caller(req).await?;
    let accounts = accounts(api)?;
    match (operation, req.param.as_deref()) {
        (Operation::EmailState, None) => Ok(ApiResponse::json(StatusCode::OK, &accounts.my_email(&caller).await?)),
        (Operation::SetEmail, None) => {
            let fields = Fields::parse(req)?;
            let address = fields.required("email", MAX_ADDRESS_LEN * 4)?;
            Ok(ApiResponse::json(StatusCode::OK, &accounts.set_my_email(&caller, address).await?))
        }
        (Operation::SetEmail, Some("verify")) => {
            let fields = Fields::parse(req)?;
            let code = fields.required("code", MAX_EMAIL_CODE_LEN)?;
            Ok(ApiResponse::json(StatusCode::OK, &accounts.verify_my_email(&caller, code).await?))
        }
        _ => Err(ApiError::NotFound("no such route; use /api/email or /api/email/verify")),
    }
}
