//! Passkeys at the HTTP edge: `GET /api/passkeys`, `DELETE /api/passkeys/{id}`,
//! `POST /api/passkeys/register/start|finish` (Bearer), and the sign-in ceremony
//! `POST /api/passkeys/login/start|finish` (no credentials; with `mfa_token`, a passkey as the
//! second factor of a login). Bodies are JSON: the ceremony's `credential` is the
//! `PublicKeyCredential` as WebAuthn's JSON serialisation has it (binary members base64url).

use http::StatusCode;
use serde_json::{Value, json};

use super::body::Fields;
use super::cookies;
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Operation};
use crate::accounts::AccountService;
use crate::service::{Client, ServiceError};
use crate::tokens::mfa;

/// Longest sealed ceremony accepted.
const MAX_CEREMONY_LEN: usize = 8 * 1024;

fn accounts(api: &Api) -> Result<&AccountService, ApiError> {
    Ok(api.accounts.as_deref().ok_or(ServiceError::NotAvailable("passkeys need the built-in user directory"))?)
}

/// The `credential` object of a finishing request.
fn credential(fields: &Fields) -> Result<Value, ApiError> {
    match fields.value("credential") {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Err(ApiError::InvalidRequest("credential must be the authenticator's PublicKeyCredential (JSON)".into())),
    }
}

/// JSON bodies only: a credential is an object.
fn json_fields(req: &ApiRequest) -> Result<Fields, ApiError> {
    let fields = Fields::parse(req)?;
    if fields.is_form() { Err(ApiError::UnsupportedMediaType) } else { Ok(fields) }
}

/// The passkey routes.
pub(crate) async fn handle(api: &Api, operation: Operation, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let accounts = accounts(api)?;
    match (operation, req.param.as_deref()) {
        (Operation::ListPasskeys, None) => {
            let caller = api.caller(req).await?;
            Ok(ApiResponse::json(StatusCode::OK, &json!({ "passkeys": accounts.passkeys(&caller).await? })))
        }
        (Operation::RemovePasskey, Some(id)) if !id.contains('/') && id.len() <= 1024 => {
            let caller = api.caller(req).await?;
            accounts.remove_passkey(&caller, id).await?;
            Ok(ApiResponse::no_content())
        }
        (Operation::PasskeyCeremony, Some("register/start")) => {
            let caller = api.caller(req).await?;
            Ok(ApiResponse::json(StatusCode::OK, &accounts.start_passkey_registration(&caller).await?))
        }
        (Operation::PasskeyCeremony, Some("register/finish")) => {
            let caller = api.caller(req).await?;
            let fields = json_fields(req)?;
            let ceremony = fields.required("ceremony", MAX_CEREMONY_LEN)?;
            let name = fields.string("name", 256)?;
            let done = accounts.finish_passkey_registration(&caller, ceremony, &credential(&fields)?, name).await?;
            Ok(ApiResponse::json(StatusCode::CREATED, &done))
        }
        (Operation::PasskeyCeremony, Some("login/start")) => {
            let fields = Fields::parse_optional(req)?;
            let token = match &fields {
                Some(f) => f.string("mfa_token", mfa::MAX_LEN)?,
                None => None,
            };
            let claims = token.map(|t| api.service.peek_mfa_token(t)).transpose()?;
            Ok(ApiResponse::json(StatusCode::OK, &accounts.start_passkey_login(claims.as_ref()).await?))
        }
        (Operation::PasskeyCeremony, Some("login/finish")) => {
            let transport = cookies::requested_transport(&api.cors, req)?;
            let fields = json_fields(req)?;
            let ceremony = fields.required("ceremony", MAX_CEREMONY_LEN)?;
            let credential = credential(&fields)?;
            let jkt = api.proof_key(req)?;
            let token = fields.string("mfa_token", mfa::MAX_LEN)?;
            let claims = token.map(|t| api.service.peek_mfa_token(t)).transpose()?;
            let signed_in = accounts.finish_passkey_login(ceremony, &credential, claims.as_ref()).await?;
            // The first step's token is used up once the passkey passed.
            if let Some(token) = token {
                api.service.redeem_mfa_token(token).await?;
            }
            let amr: Vec<&str> = match &claims {
                Some(c) => vec![c.first_step.amr(), signed_in.key_amr, "mfa"],
                None => vec![signed_in.key_amr, "mfa"],
            };
            let address = req.client.as_deref();
            let client = Client { address, user_agent: req.header("user-agent"), dpop_jkt: jkt.as_deref() };
            let device_token =
                fields.string("device_token", super::MAX_TOKEN_LEN)?.or_else(|| cookies::device_cookie(req));
            let pair = api.service.second_step_login_from(signed_in.principal, client, &amr, device_token).await?;
            let mut r = api.pair(&pair, transport);
            api.dpop_nonce(req, &mut r);
            Ok(r)
        }
        _ => Err(ApiError::NotFound(
            "no such route; use /api/passkeys, /api/passkeys/{id}, /api/passkeys/register/start|finish or \
             /api/passkeys/login/start|finish",
        )),
    }
}
