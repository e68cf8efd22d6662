//! JWT access tokens (RFC 9068 profile): header `typ: at+jwt` with a `kid`; claims `iss`, `aud`,
//! `sub`, `exp`, `iat`, `nbf`, `jti`, `sid`, `name`, `roles`, and for a DPoP-bound token `cnf.jkt`
//! (RFC 9449 §6.1).
//!
//! Verification follows RFC 8725: an explicit algorithm allow-list (the algorithm of the key the
//! `kid` names, never the header's word alone), and checks of `typ`, `iss`, `aud`, `exp` and `nbf`
//! against the caller's `now`, with a configured clock-skew allowance.

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use crate::clock::UnixMs;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user's stable id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// The username.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// The key a DPoP-bound token is bound to (RFC 9449 §6.1); absent for bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// How the session's user authenticated (RFC 8176: `pwd`, `fed`, `otp`, `mfa`); absent for
    /// sessions from before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the session's user authenticated (OpenID Connect Core §2), seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// The `cnf` claim of a DPoP-bound token (RFC 7800 §3.1, RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint of the proof key (RFC 7638), base64url.
    pub jkt: String,
}

impl AccessClaims {
    /// The thumbprint of the key a DPoP-bound token is bound to; `None` for a bearer token.
    pub fn jkt(&self) -> Option<&str> {
        self.cnf.as_ref().map(|c| c.jkt.as_str())
    }
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    /// Valid in every respect except that it expired.
    #[error("the access token expired")]
    Expired,
    /// Malformed, forged, wrong type/issuer/audience, not yet valid, or signed by an unknown key.
    #[error("the access token is invalid: {0}")]
    Invalid(&'static str),
}

/// Whether `exp` is enforced (Bearer use) or ignored (the optional `access_token` sent with a
/// refresh, whose expiry is expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Reject expired tokens.
    Enforce,
    /// Accept expired tokens (signature, issuer, audience and type are still checked).
    Ignore,
}

/// Signs and verifies access tokens.
#[derive(Debug, Clone)]
pub struct AccessTokens {
    keys: KeySet,
    issuer: String,
    audience: String,
    lifetime_ms: i64,
    clock_skew_ms: i64,
}

/// What goes into a new access token besides the times and ids.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Stable user id.
    pub user_id: &'a str,
    /// Username.
    pub name: &'a str,
    /// Roles.
    pub roles: &'a [String],
    /// Session id.
    pub session_id: &'a str,
    /// The DPoP key thumbprint the token is bound to, if any.
    pub jkt: Option<&'a str>,
    /// How the user authenticated (RFC 8176).
    pub amr: &'a [String],
    /// When the user authenticated (ms).
    pub auth_time_ms: Option<UnixMs>,
}

/// A signed access token.
#[derive(Clone)]
pub struct SignedAccessToken {
    /// The compact JWS.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for SignedAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedAccessToken")
            .field("token", &crate::secret::token_prefix(&self.token))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl AccessTokens {
    /// A signer/verifier for one issuer and audience.
    pub fn new(keys: KeySet, issuer: String, audience: String, lifetime_ms: i64, clock_skew_ms: i64) -> Self {
        Self { keys, issuer, audience, lifetime_ms, clock_skew_ms }
    }

    /// The issuer: `iss` of every token, and the base URL of the discovery document.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The keys: the signing key and those still accepted.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Signs a token for `subject` valid from `now` for the configured lifetime.
    pub fn sign(&self, subject: Subject<'_>, now: UnixMs) -> Result<SignedAccessToken, jsonwebtoken::errors::Error> {
        let iat = now.div_euclid(1000);
        let exp = (now + self.lifetime_ms).div_euclid(1000);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.user_id.to_string(),
            exp,
            iat,
            nbf: iat,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: subject.session_id.to_string(),
            name: subject.name.to_string(),
            roles: subject.roles.to_vec(),
            cnf: subject.jkt.map(|jkt| Confirmation { jkt: jkt.to_string() }),
            amr: subject.amr.to_vec(),
            auth_time: subject.auth_time_ms.map(|t| t.div_euclid(1000)),
        };
        let mut header = Header::new(self.keys.signing_algorithm());
        header.typ = Some(TOKEN_TYPE.to_string());
        header.kid = Some(self.keys.signing_kid().to_string());
        let token = jsonwebtoken::encode(&header, &claims, self.keys.encoding())?;
        Ok(SignedAccessToken { token, expires_in: exp - iat })
    }

    /// Verifies a token at `now`.
    pub fn verify(&self, token: &str, now: UnixMs, expiry: Expiry) -> Result<AccessClaims, AccessTokenError> {
        if token.len() > 8 * 1024 {
            return Err(AccessTokenError::Invalid("token too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AccessTokenError::Invalid("malformed token"))?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(AccessTokenError::Invalid("not an access token (typ)"));
        }
        if header.crit.is_some() {
            return Err(AccessTokenError::Invalid("unsupported critical header"));
        }
        let kid = header.kid.as_deref().ok_or(AccessTokenError::Invalid("no key id"))?;
        let key = self.keys.find(kid).ok_or(AccessTokenError::Invalid("unknown key id"))?;
        if header.alg != key.algorithm {
            return Err(AccessTokenError::Invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(key.algorithm);
        // Times are checked below against the caller's clock, never the library's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AccessTokenError::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidAlgorithm => "algorithm not allowed",
                _ => "malformed token",
            })
        })?;
        let claims = data.claims;
        let skew = self.clock_skew_ms;
        if claims.nbf.saturating_mul(1000) > now.saturating_add(skew)
            || claims.iat.saturating_mul(1000) > now.saturating_add(skew)
        {
            return Err(AccessTokenError::Invalid("not valid yet"));
        }
        if expiry == Expiry::Enforce && claims.exp.saturating_mul(1000) <= now.saturating_sub(skew) {
            return Err(AccessTokenError::Expired);
        }
        Ok(claims)
    }
}
