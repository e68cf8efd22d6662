//! The account routes: `POST /api/register`, `POST /api/password`, `GET|DELETE /api/sessions[/{id}]`
//! and `GET|POST|PATCH /api/users[/{username}]`. Bodies follow the rules of every route (JSON or
//! form, 16 KiB, no repeated names); errors are RFC 6749-style JSON.

use std::num::NonZeroUsize;

use http::StatusCode;
use serde_json::{Value, json};

use super::body::Fields;
use super::cookies;
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, MAX_TOKEN_LEN, Operation};
use crate::accounts::{AccountService, Actor, EmailChange, MAX_PAGE, PasswordCheck, UserChange};
use crate::secret::Password;
use crate::service::{Client, ServiceError};
use crate::users::{MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS};

/// Default page size of `GET /api/users`.
const DEFAULT_PAGE: NonZeroUsize = match NonZeroUsize::new(50) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// Default and largest page of `GET /api/sessions`: as many as a user has sessions by default
/// (`JwtRefreshToken__Sessions__MaxPerUser`), so a client that does not page sees them all.
pub const SESSIONS_PAGE: NonZeroUsize = match NonZeroUsize::new(100) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// The `limit` query parameter: `default` when absent, else 1 to `max`.
fn limit(req: &ApiRequest, default: NonZeroUsize, max: NonZeroUsize) -> Result<NonZeroUsize, ApiError> {
    match req.query_param("limit")? {
        None => Ok(default),
        Some(l) => l
            .parse::<NonZeroUsize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| ApiError::InvalidRequest(format!("limit must be 1 to {max}"))),
    }
}
/// Most roles a user may hold.
const MAX_ROLES: usize = 32;

fn roles(fields: &Fields) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || ApiError::InvalidRequest(format!("roles must be an array of at most {MAX_ROLES} strings"));
    match fields.value("roles") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_ROLES => {
            items.iter().map(|r| r.as_str().map(str::to_string).ok_or_else(bad)).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(bad()),
    }
}

fn boolean(fields: &Fields, name: &str) -> Result<Option<bool>, ApiError> {
    match fields.value(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::InvalidRequest(format!("{name} must be true or false"))),
    }
}

/// Roles and flags are JSON arrays and booleans: these routes take JSON only.
fn json_only(fields: Fields) -> Result<Fields, ApiError> {
    if fields.is_form() { Err(ApiError::UnsupportedMediaType) } else { Ok(fields) }
}

/// Answers one of the account operations.
pub(crate) async fn handle(api: &Api, operation: Operation, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let service = &api.service;
    let accounts = || -> Result<&AccountService, ApiError> {
        Ok(api
            .accounts
            .as_deref()
            .ok_or(ServiceError::NotAvailable("account routes need the built-in user directory"))?)
    };
    let address = req.client.as_deref();
    match operation {
        Operation::Register => {
            let transport = cookies::requested_transport(&api.cors, req)?;
            let fields = Fields::parse(req)?;
            let username = fields.required("username", MAX_USERNAME_CHARS * 4)?;
            let password = Password::new(fields.required("password", MAX_PASSWORD_BYTES)?);
            let jkt = api.proof_key(req)?;
            let client = Client { address, user_agent: req.header("user-agent"), dpop_jkt: jkt.as_deref() };
            let email = fields.string("email", crate::accounts::email::MAX_ADDRESS_LEN * 4)?;
            let principal = accounts()?.register_with_email(username, &password, email, client.address).await?;
            let pair = service.open_session(principal, client).await?;
            let mut r = api.pair(&pair, transport);
            api.dpop_nonce(req, &mut r);
            r.status = StatusCode::CREATED;
            Ok(r)
        }
        Operation::ChangePassword if req.param.is_some() => {
            super::email::recovery(api, req.param.as_deref().unwrap_or_default(), req).await
        }
        Operation::ChangePassword => {
            let caller = api.caller(req).await?;
            let fields = Fields::parse(req)?;
            let current = Password::new(fields.required("current_password", MAX_PASSWORD_BYTES)?);
            let new = Password::new(fields.required("new_password", MAX_PASSWORD_BYTES)?);
            let ended = accounts()?.change_password(&caller, &current, &new, address).await?;
            Ok(ApiResponse::json(StatusCode::OK, &json!({ "other_sessions_ended": ended })))
        }
        Operation::ListSessions => {
            let caller = api.caller(req).await?;
            let limit = limit(req, SESSIONS_PAGE, SESSIONS_PAGE)?;
            let cursor = req.query_param("cursor")?;
            let page = service.list_sessions(&caller, limit, cursor.as_deref()).await?;
            Ok(ApiResponse::json(StatusCode::OK, &page))
        }
        Operation::EndSession => {
            let caller = api.caller(req).await?;
            let id = req.param.as_deref().unwrap_or_default();
            if id.is_empty() || id.len() > MAX_TOKEN_LEN {
                return Err(ApiError::NotFound("no such session"));
            }
            service.end_session(&caller, id).await?;
            Ok(ApiResponse::no_content())
        }
        Operation::ListUsers => {
            let caller = api.caller(req).await?;
            let limit = limit(req, DEFAULT_PAGE, MAX_PAGE)?;
            let cursor = req.query_param("cursor")?;
            let page = accounts()?.list_users(Actor::Admin(&caller), limit, cursor.as_deref()).await?;
            Ok(ApiResponse::json(StatusCode::OK, &page))
        }
        Operation::CreateUser => {
            let caller = api.caller(req).await?;
            let fields = json_only(Fields::parse(req)?)?;
            let username = fields.required("username", MAX_USERNAME_CHARS * 4)?;
            let password = Password::new(fields.required("password", MAX_PASSWORD_BYTES)?);
            let roles = roles(&fields)?.unwrap_or_default();
            let user = accounts()?
                .create_user(Actor::Admin(&caller), username, &password, &roles, PasswordCheck::Policy)
                .await?;
            Ok(ApiResponse::json(
                StatusCode::CREATED,
                &json!({ "id": user.id, "username": user.username, "roles": user.roles }),
            ))
        }
        Operation::ChangeUser => {
            let caller = api.caller(req).await?;
            let username = req.param.as_deref().unwrap_or_default();
            let fields = json_only(Fields::parse(req)?)?;
            const FIELDS: [&str; 6] = ["disabled", "roles", "unlock", "reset_mfa", "email", "email_verified"];
            if let Some(unknown) = fields.names().find(|n| !FIELDS.contains(n)) {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown field {unknown:?}; use disabled, roles, unlock, reset_mfa, email or email_verified"
                )));
            }
            let email = match (fields.value("email"), boolean(&fields, "email_verified")?) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(ApiError::InvalidRequest("email_verified goes with email".into()));
                }
                (Some(Value::Null), verified) => {
                    if verified == Some(true) {
                        return Err(ApiError::InvalidRequest(
                            "email null removes the address; it cannot be verified".into(),
                        ));
                    }
                    Some(EmailChange { address: None, verified: false })
                }
                (Some(_), verified) => {
                    let address = fields.required("email", crate::accounts::email::MAX_ADDRESS_LEN * 4)?;
                    Some(EmailChange { address: Some(address.to_string()), verified: verified == Some(true) })
                }
            };
            let reset_mfa = boolean(&fields, "reset_mfa")? == Some(true);
            let change = UserChange {
                disabled: boolean(&fields, "disabled")?,
                roles: roles(&fields)?,
                unlock: match boolean(&fields, "unlock")? {
                    None | Some(false) => false,
                    Some(true) => true,
                },
                email,
                ..UserChange::default()
            };
            if change == UserChange::default() && !reset_mfa {
                return Err(ApiError::InvalidRequest(
                    "send at least one of disabled, roles, unlock, reset_mfa or email".into(),
                ));
            }
            let accounts = accounts()?;
            let mut user = None;
            if change != UserChange::default() {
                user = Some(accounts.change_user(Actor::Admin(&caller), username, &change).await?.user);
            }
            if reset_mfa {
                user = Some(accounts.reset_factors(Actor::Admin(&caller), username).await?.user);
            }
            Ok(ApiResponse::json(StatusCode::OK, &user))
        }
        Operation::Login
        | Operation::Refresh
        | Operation::Revoke
        | Operation::Jwks
        | Operation::Metadata
        | Operation::Introspect
        | Operation::ListIdentities
        | Operation::LinkIdentity
        | Operation::UnlinkIdentity
        | Operation::FactorState
        | Operation::EnrolFactor
        | Operation::RemoveFactor
        | Operation::ListPasskeys
        | Operation::PasskeyCeremony
        | Operation::RemovePasskey
        | Operation::EmailState
        | Operation::SetEmail => Err(ApiError::NotFound("no such route")),
    }
}
