//! Sign-in with a provider's ID token at the HTTP edge: the RFC 8693 token-exchange grant of
//! `POST /api/token`, and the caller's linked identities, `GET|POST /api/identities` and
//! `DELETE /api/identities/{provider}`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::body::Fields;
use super::cookies::Transport;
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, Operation};
use crate::accounts::AccountService;
use crate::accounts::identities;
use crate::federation::{FederationError, MAX_ID_TOKEN_LEN, MAX_NONCE_LEN, SignIn, Verified};
use crate::service::{Client, GrantFailure, ServiceError};

/// RFC 8693 §2.1: the grant type of a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the token type of an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// RFC 8693 §3: the token type of the access token issued.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Longest provider name accepted.
const MAX_PROVIDER_LEN: usize = 64;

fn sign_in(api: &Api) -> Result<&SignIn, ApiError> {
    api.federation.as_deref().ok_or_else(|| {
        ServiceError::InvalidGrant(GrantFailure::IdToken("no sign-in provider is configured on this service")).into()
    })
}

fn accounts(api: &Api) -> Result<&Arc<AccountService>, ApiError> {
    Ok(api.accounts.as_ref().ok_or(ServiceError::NotAvailable("sign-in providers need the built-in user directory"))?)
}

/// Verifies an ID token and records its single use, counting refusals per client address and per
/// provider subject (429 past `Federation__MaxFailures` in the window).
async fn verify_and_consume(
    api: &Api,
    req: &ApiRequest,
    provider: &str,
    token: &str,
    nonce: Option<&str>,
) -> Result<Verified, ApiError> {
    let sign_in = sign_in(api)?;
    let now = api.service.clock().now_ms();
    let (max, window) = (sign_in.max_failures, sign_in.failure_window_ms);
    // Without a trusted client address (invocation mode with no forwarded address) there is no
    // per-address count: one bucket shared by every such client would let anyone lock them all out.
    let address = req.client.as_deref().map(|a| format!("address:{a}"));
    let limited = |retry_after_ms| ApiError::from(ServiceError::RateLimited { retry_after_ms });
    if let Some(address) = &address {
        sign_in.failures.check(address, max, window, now).map_err(limited)?;
    }
    let count_address = |now| {
        if let Some(address) = &address {
            sign_in.failures.count(address, window, now);
        }
    };
    let verified = match sign_in.verifier.verify(provider, token, nonce, now).await {
        Ok(v) => v,
        Err(FederationError::Unavailable(why)) => return Err(ServiceError::Busy(why).into()),
        Err(e) => {
            count_address(now);
            let why = match e {
                FederationError::UnknownProvider => "no sign-in provider of that name is configured",
                FederationError::Refused(why) => why,
                FederationError::Unavailable(why) => why,
            };
            tracing::info!(provider, reason = why, "ID token refused");
            return Err(ServiceError::InvalidGrant(GrantFailure::IdToken(why)).into());
        }
    };
    let subject = format!("subject:{}\u{0}{}", verified.provider, verified.subject);
    sign_in.failures.check(&subject, max, window, now).map_err(limited)?;
    if let Err(e) = identities::consume(api.service.store().as_ref(), &verified, now).await {
        if matches!(e, ServiceError::InvalidGrant(_)) {
            count_address(now);
            sign_in.failures.count(&subject, window, now);
        }
        return Err(e.into());
    }
    Ok(verified)
}

/// `POST /api/token` with `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
/// `subject_token` (the ID token), `subject_token_type=urn:ietf:params:oauth:token-type:id_token`,
/// `provider` and (per the provider's nonce mode) `nonce`: this service's token pair, as a
/// password login answers it (cookies, DPoP), plus `issued_token_type`.
pub(crate) async fn exchange(
    api: &Api,
    req: &ApiRequest,
    fields: &Fields,
    transport: Transport,
) -> Result<ApiResponse, ApiError> {
    let token = fields.required("subject_token", MAX_ID_TOKEN_LEN)?;
    let token_type = fields.required("subject_token_type", 128)?;
    if token_type != ID_TOKEN_TYPE {
        return Err(ApiError::InvalidRequest(format!("subject_token_type must be {ID_TOKEN_TYPE}")));
    }
    if let Some(requested) = fields.string("requested_token_type", 128)?
        && requested != ACCESS_TOKEN_TYPE
    {
        return Err(ApiError::InvalidRequest(format!("requested_token_type may only be {ACCESS_TOKEN_TYPE}")));
    }
    let provider = fields.required("provider", MAX_PROVIDER_LEN)?;
    let nonce = fields.string("nonce", MAX_NONCE_LEN)?;
    // A refused DPoP proof must not burn the ID token: check it first.
    let jkt = api.proof_key(req)?;
    let accounts = accounts(api)?;
    let verified = verify_and_consume(api, req, provider, token, nonce).await?;
    let address = req.client.as_deref();
    let account = accounts.federated_account(&verified, address).await?;
    let client = Client { address, user_agent: req.header("user-agent"), dpop_jkt: jkt.as_deref() };
    let pair = api.service.federated_login(account.principal, client, verified.mfa_asserted).await?;
    let mut r = api.pair(&pair, transport);
    if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_slice::<serde_json::Value>(&r.body) {
        body.insert("issued_token_type".into(), ACCESS_TOKEN_TYPE.into());
        body.insert("account_created".into(), account.created.into());
        r.body = serde_json::to_vec(&body).unwrap_or_default();
    }
    api.dpop_nonce(req, &mut r);
    tracing::info!(provider = %verified.provider, created = account.created, "provider sign-in");
    Ok(r)
}

/// The identity routes.
pub(crate) async fn handle(api: &Api, operation: Operation, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    match operation {
        Operation::ListIdentities => {
            let caller = api.caller(req).await?;
            let list = accounts(api)?.identities(&caller).await?;
            Ok(ApiResponse::json(StatusCode::OK, &json!({ "identities": list })))
        }
        Operation::LinkIdentity => {
            let caller = api.caller(req).await?;
            let fields = Fields::parse(req)?;
            let provider = fields.required("provider", MAX_PROVIDER_LEN)?;
            let token = fields.required("id_token", MAX_ID_TOKEN_LEN)?;
            let nonce = fields.string("nonce", MAX_NONCE_LEN)?;
            let accounts = accounts(api)?;
            let verified = verify_and_consume(api, req, provider, token, nonce).await?;
            let linked = accounts.link_identity(&caller, &verified).await?;
            Ok(ApiResponse::json(StatusCode::OK, &linked))
        }
        Operation::UnlinkIdentity => {
            let caller = api.caller(req).await?;
            let provider = req.param.as_deref().unwrap_or_default();
            if provider.is_empty() || provider.len() > MAX_PROVIDER_LEN {
                return Err(ApiError::NotFound("no identity of that provider is linked"));
            }
            accounts(api)?.unlink_identity(&caller, provider).await?;
            Ok(ApiResponse::no_content())
        }
        _ => Err(ApiError::NotFound("no such route")),
    }
}
