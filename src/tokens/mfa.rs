//! The `mfa_token` of a login that needs a second factor: proof that the first step (a password,
//! or a provider's ID token) passed for one user, short-lived and holding no session. A compact,
//! HMAC-SHA256-signed value (never a JWT a resource server could mistake for an access token)
//! under a key derived from the rotation secret with its own label, so every instance issues and
//! checks the same ones. It is bound to the user and to the first step: to the password hash the
//! step was checked against (a password change voids it) and the method. Single use is enforced by
//! the caller through the store (the token's `jti`), across instances.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::UnixMs;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// The label of the key that signs MFA tokens.
pub const LABEL: &[u8] = b"jwt-refresh-token/mfa-token/v1";
/// How long an MFA token is good for.
pub const TTL_MS: i64 = 300_000;
/// Longest MFA token accepted.
pub const MAX_LEN: usize = 1024;

/// How the first step was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirstStep {
    /// A password (`amr` `pwd`).
    #[serde(rename = "pwd")]
    Password,
    /// A sign-in provider's ID token (`amr` `fed`).
    #[serde(rename = "fed")]
    Federated,
}

impl FirstStep {
    /// Its RFC 8176 `amr` value.
    pub fn amr(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::Federated => "fed",
        }
    }
}

/// What an MFA token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaClaims {
    /// The user id.
    #[serde(rename = "u")]
    pub user_id: String,
    /// The username.
    #[serde(rename = "n")]
    pub username: String,
    /// A fingerprint of the password hash the first step was checked against ("" without one).
    #[serde(rename = "p")]
    pub password_fingerprint: String,
    /// How the first step was passed.
    #[serde(rename = "m")]
    pub first_step: FirstStep,
    /// Expiry (ms).
    #[serde(rename = "e")]
    pub expires_at_ms: UnixMs,
    /// A unique id (its single use is recorded).
    #[serde(rename = "j")]
    pub jti: String,
}

/// Why an MFA token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MfaTokenError {
    /// Not one of ours, or altered.
    #[error("the mfa_token is not valid")]
    Invalid,
    /// Too old.
    #[error("the mfa_token expired")]
    Expired,
}

/// Issues and checks MFA tokens.
#[derive(Clone)]
pub struct MfaTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for MfaTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaTokens(***)")
    }
}

impl MfaTokens {
    /// Tokens signed with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, payload: &str) -> Vec<u8> {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default()));
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A token for `claims`.
    pub fn issue(&self, claims: &MfaClaims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = B64.encode(self.tag(&payload));
        format!("{payload}.{tag}")
    }

    /// The claims of `token` if it is ours and unexpired at `now`.
    pub fn verify(&self, token: &str, now: UnixMs) -> Result<MfaClaims, MfaTokenError> {
        if token.len() > MAX_LEN {
            return Err(MfaTokenError::Invalid);
        }
        let (payload, tag) = token.split_once('.').ok_or(MfaTokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| MfaTokenError::Invalid)?;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| MfaTokenError::Invalid)?;
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| MfaTokenError::Invalid)?;
        let raw = B64.decode(payload).map_err(|_| MfaTokenError::Invalid)?;
        let claims: MfaClaims = serde_json::from_slice(&raw).map_err(|_| MfaTokenError::Invalid)?;
        if now >= claims.expires_at_ms {
            return Err(MfaTokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> MfaClaims {
        MfaClaims {
            user_id: "u-1".into(),
            username: "alice".into(),
            password_fingerprint: "fp".into(),
            first_step: FirstStep::Password,
            expires_at_ms: 1_000 + TTL_MS,
            jti: "j-1".into(),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_under_their_key() {
        let tokens = MfaTokens::new([1; 32]);
        let token = tokens.issue(&claims());
        assert_eq!(tokens.verify(&token, 1_000).unwrap(), claims());
        assert_eq!(tokens.verify(&token, 1_000 + TTL_MS), Err(MfaTokenError::Expired));
        assert_eq!(MfaTokens::new([2; 32]).verify(&token, 1_000), Err(MfaTokenError::Invalid));
        let (payload, tag) = token.split_once('.').unwrap();
        let mut other = claims();
        other.user_id = "u-2".into();
        let forged = format!("{}.{tag}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert_ne!(payload, forged.split_once('.').unwrap().0);
        assert_eq!(tokens.verify(&forged, 1_000), Err(MfaTokenError::Invalid), "another user under the old tag");
        assert_eq!(tokens.verify("garbage", 1_000), Err(MfaTokenError::Invalid));
    }
}
