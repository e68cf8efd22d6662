//! `POST /api/introspect` (RFC 7662): resource servers ask whether an access token is active.
//! The caller authenticates with `client_secret_basic` (RFC 6749 §2.3.1); the token comes as a
//! form (or JSON) field `token`, with an optional `token_type_hint` that is read and then ignored
//! (§2.1 allows it: only access tokens are ever active here).

use base64::Engine as _;
use http::StatusCode;
use serde_json::json;

use super::body::Fields;
use super::error::ApiError;
use super::{Api, ApiRequest, ApiResponse, MAX_BODY_BYTES};
use crate::clients::MAX_CLIENT_ID_LEN;
use crate::service::{ActiveToken, Introspection};

/// Longest base64 credentials read: an id of [`MAX_CLIENT_ID_LEN`] bytes and a 43-character secret,
/// every byte form-encoded as `%XX`, fit in well under half of it.
const MAX_BASIC_CREDENTIALS_LEN: usize = 1_024;
const _: () = assert!((MAX_CLIENT_ID_LEN + 43) * 3 * 4 / 3 + 4 < MAX_BASIC_CREDENTIALS_LEN / 2);

/// What a caller without usable client credentials is told.
const NO_CLIENT: &str = "client authentication with HTTP Basic (client_secret_basic) is required";

/// Answers one introspection request.
pub(super) async fn handle(api: &Api, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let clients = api.clients.as_ref().ok_or(ApiError::NotFound("introspection is not served here"))?;
    let (client_id, secret) = basic_credentials(req)?;
    clients.authenticate(&client_id, &secret).await?;
    let fields = Fields::parse(req)?;
    // Any length up to the body limit: a token too long to be ours is simply not active.
    let token = fields.required("token", MAX_BODY_BYTES)?;
    fields.string("token_type_hint", 64)?;
    let body = match api.service.introspect(token).await? {
        Introspection::Inactive => json!({ "active": false }),
        Introspection::Active(active) => active_body(&active),
    };
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

/// The answer for an active token (RFC 7662 §2.2). `token_type` and, for a DPoP-bound token,
/// `cnf` come from the token's proof (`TokenProof`, RFC 9449 §6.2).
fn active_body(active: &ActiveToken) -> serde_json::Value {
    let c = &active.claims;
    let mut body = json!({
        "active": true,
        "sub": c.sub,
        "username": active.username,
        "exp": c.exp,
        "iat": c.iat,
        "nbf": c.nbf,
        "jti": c.jti,
        "sid": c.sid,
        "scope": active.roles.join(" "),
        "roles": active.roles,
        "token_type": active.proof.token_type(),
        "iss": c.iss,
        "aud": c.aud,
    });
    if let (Some(jkt), Some(fields)) = (active.proof.jkt(), body.as_object_mut()) {
        fields.insert("cnf".into(), json!({ "jkt": jkt }));
    }
    if let Some(fields) = body.as_object_mut() {
        if !c.amr.is_empty() {
            fields.insert("amr".into(), json!(c.amr));
        }
        if let Some(at) = c.auth_time {
            fields.insert("auth_time".into(), json!(at));
        }
    }
    body
}

/// The client id and secret of an `Authorization: Basic` header. RFC 6749 §2.3.1: both are
/// `application/x-www-form-urlencoded` before they are joined with `:` and base64-encoded, so
/// each is form-decoded here (`orders%2Dapi` is `orders-api`, `+` is a space). No header, another
/// scheme, or anything that does not decode is [`ApiError::InvalidClient`].
fn basic_credentials(req: &ApiRequest) -> Result<(String, String), ApiError> {
    let bad = || ApiError::InvalidClient(NO_CLIENT);
    let header = req.header("authorization").ok_or_else(bad)?.trim();
    let (scheme, encoded) = header.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let encoded = encoded.trim();
    if encoded.len() > MAX_BASIC_CREDENTIALS_LEN {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| bad())?;
    let text = std::str::from_utf8(&decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id).ok_or_else(bad)?;
    let secret = form_decode(secret).ok_or_else(bad)?;
    if id.is_empty() || secret.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte; the
/// result must be UTF-8. `None` for a broken escape or bytes that are not UTF-8.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_follows_rfc_6749_appendix_b() {
        assert_eq!(form_decode("orders%2Dapi").as_deref(), Some("orders-api"));
        assert_eq!(form_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(form_decode("%2B%25").as_deref(), Some("+%"));
        assert_eq!(form_decode("%C3%A9").as_deref(), Some("é"));
        for broken in ["%", "%2", "%zz", "%+1", "%FF"] {
            assert_eq!(form_decode(broken), None, "{broken}");
        }
    }
}
