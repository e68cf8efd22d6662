//! Refresh tokens: opaque, URL-safe, self-locating, and useless without the server's secret.
//!
//! Layout before base64url (no padding), version 1:
//! `0x01 | session id (16) | generation (8, big-endian) | tag (32) | user id length (1) | user id`.
//! The tag is HMAC-SHA256(rotation secret, label | user id | session id | generation | session seed),
//! where the seed is 256 bits from the OS CSPRNG drawn when the session began. So:
//! - the token carries its own key (user id = partition, session id = record): a refresh is a
//!   point read, never a scan;
//! - the store holds neither the token nor anything it can be computed from without the secret;
//!   a copy of the store alone cannot mint or use a token (Supabase Auth's v2 tokens work alike);
//! - the successor of generation `n` is always the same string, so a retried refresh gets the very
//!   token the lost response carried, without storing it.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

use crate::secret::SecretBytes;

const VERSION: u8 = 1;
const FIXED_LEN: usize = 1 + 16 + 8 + 32 + 1;
/// The longest user id a refresh token can carry.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest accepted encoded token; anything longer is rejected before decoding.
pub const MAX_ENCODED_LEN: usize = (FIXED_LEN + MAX_USER_ID_LEN).div_ceil(3) * 4;
const LABEL: &[u8] = b"jwt-refresh-token/refresh/v1";
const XSRF_LABEL: &[u8] = b"jwt-refresh-token/xsrf/v1";

/// The decoded, not yet verified, parts of a refresh token.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshTokenParts {
    /// Owner's stable id.
    pub user_id: String,
    /// Session id (base64url of 16 random bytes).
    pub session_id: String,
    /// Generation within the session.
    pub generation: u64,
    tag: [u8; 32],
}

impl std::fmt::Debug for RefreshTokenParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenParts")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The server-side secret of every refresh token.
#[derive(Clone)]
pub struct RefreshTokens {
    secret: SecretBytes,
    /// Key of the anti-forgery values, derived from `secret` with a label of its own.
    xsrf_key: [u8; 32],
}

impl std::fmt::Debug for RefreshTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshTokens(***)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Encodes 16 session-id bytes as the textual session id.
pub fn session_id_text(raw: &[u8; 16]) -> String {
    b64().encode(raw)
}

impl RefreshTokens {
    /// Uses `secret` directly (at least 32 bytes; settings check that).
    pub fn new(secret: SecretBytes) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"jwt-refresh-token"), secret.expose());
        let mut xsrf_key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(XSRF_LABEL, &mut xsrf_key);
        Self { secret, xsrf_key }
    }

    /// A 32-byte key derived from the rotation secret with HKDF-SHA256 and `label` (its own per
    /// use: device tokens, log pseudonyms), as the anti-forgery key is.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"jwt-refresh-token"), self.secret.expose());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(label, &mut key);
        key
    }

    /// The anti-forgery value of a session for cookie transport: HMAC-SHA256 of the session id
    /// under a key derived from the rotation secret with its own label. Bound to the session, so a
    /// value planted or copied from another session is useless, and stable for its whole life.
    pub fn xsrf_value(&self, session_id: &str) -> String {
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.xsrf_key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm cannot run.
            Err(_) => return String::new(),
        };
        mac.update(XSRF_LABEL);
        mac.update(session_id.as_bytes());
        b64().encode(mac.finalize().into_bytes())
    }

    /// Whether `presented` is the anti-forgery value of `session_id` (constant-time).
    pub fn xsrf_matches(&self, session_id: &str, presented: &str) -> bool {
        let expected = self.xsrf_value(session_id);
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// Derives the rotation secret from the signing key with HKDF-SHA256 and a label of its own,
    /// for deployments that do not set `Rotation__Secret`.
    pub fn derived_from(signing_key: &SecretBytes) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"jwt-refresh-token"), signing_key.expose());
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(b"jwt-refresh-token/rotation-secret/v1", &mut okm);
        Self::new(SecretBytes::new(okm.to_vec()))
    }

    fn tag(&self, user_id: &str, session_id: &str, generation: u64, seed: &[u8; 32]) -> [u8; 32] {
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.expose()) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm cannot run.
            Err(_) => return [0u8; 32],
        };
        mac.update(LABEL);
        mac.update(&(user_id.len() as u64).to_be_bytes());
        mac.update(user_id.as_bytes());
        mac.update(session_id.as_bytes());
        mac.update(&generation.to_be_bytes());
        mac.update(seed);
        mac.finalize().into_bytes().into()
    }

    /// The token of `generation` in a session. `None` if the ids cannot be encoded (user id longer
    /// than [`MAX_USER_ID_LEN`] bytes, session id not 16 base64url bytes).
    pub fn issue(&self, user_id: &str, session_id: &str, generation: u64, seed: &[u8; 32]) -> Option<String> {
        let sid = b64().decode(session_id).ok()?;
        if sid.len() != 16 || user_id.len() > MAX_USER_ID_LEN {
            return None;
        }
        let mut raw = Vec::with_capacity(FIXED_LEN + user_id.len());
        raw.push(VERSION);
        raw.extend_from_slice(&sid);
        raw.extend_from_slice(&generation.to_be_bytes());
        raw.extend_from_slice(&self.tag(user_id, session_id, generation, seed));
        raw.push(u8::try_from(user_id.len()).ok()?);
        raw.extend_from_slice(user_id.as_bytes());
        Some(b64().encode(raw))
    }

    /// Decodes a token's parts without verifying it. `None` for anything that is not a well-formed
    /// version-1 token (garbage, truncation, padding, other alphabets).
    pub fn parse(&self, token: &str) -> Option<RefreshTokenParts> {
        if token.len() > MAX_ENCODED_LEN {
            return None;
        }
        let raw = b64().decode(token).ok()?;
        if raw.len() < FIXED_LEN || raw.first() != Some(&VERSION) {
            return None;
        }
        let sid: [u8; 16] = raw.get(1..17)?.try_into().ok()?;
        let generation = u64::from_be_bytes(raw.get(17..25)?.try_into().ok()?);
        let tag: [u8; 32] = raw.get(25..57)?.try_into().ok()?;
        let user_len = usize::from(*raw.get(57)?);
        let user = raw.get(58..)?;
        if user.len() != user_len || user_len == 0 {
            return None;
        }
        let user_id = String::from_utf8(user.to_vec()).ok()?;
        Some(RefreshTokenParts { user_id, session_id: session_id_text(&sid), generation, tag })
    }

    /// Whether `parts` were issued by this server for the session whose seed is `seed`
    /// (constant-time comparison).
    pub fn verify(&self, parts: &RefreshTokenParts, seed: &[u8; 32]) -> bool {
        let expected = self.tag(&parts.user_id, &parts.session_id, parts.generation, seed);
        bool::from(expected.ct_eq(&parts.tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> RefreshTokens {
        RefreshTokens::new(SecretBytes::new(b"rotation-secret-rotation-secret-!!".to_vec()))
    }

    const SEED: [u8; 32] = [7u8; 32];

    fn sid() -> String {
        session_id_text(&[9u8; 16])
    }

    #[test]
    fn issued_tokens_parse_and_verify() {
        let t = tokens();
        let token = t.issue("user-1", &sid(), 3, &SEED).unwrap();
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        let parts = t.parse(&token).unwrap();
        assert_eq!(parts.user_id, "user-1");
        assert_eq!(parts.session_id, sid());
        assert_eq!(parts.generation, 3);
        assert!(t.verify(&parts, &SEED));
    }

    #[test]
    fn the_same_generation_always_gives_the_same_token() {
        let t = tokens();
        assert_eq!(t.issue("u", &sid(), 5, &SEED), t.issue("u", &sid(), 5, &SEED));
        assert_ne!(t.issue("u", &sid(), 5, &SEED), t.issue("u", &sid(), 6, &SEED));
    }

    #[test]
    fn a_different_secret_or_seed_does_not_verify() {
        let token = tokens().issue("u", &sid(), 1, &SEED).unwrap();
        let parts = tokens().parse(&token).unwrap();
        let other = RefreshTokens::new(SecretBytes::new(b"another-secret-another-secret-!!!!".to_vec()));
        assert!(!other.verify(&parts, &SEED));
        assert!(!tokens().verify(&parts, &[8u8; 32]));
    }

    #[test]
    fn tampering_with_any_byte_is_detected_or_unparseable() {
        let t = tokens();
        let token = t.issue("user-1", &sid(), 2, &SEED).unwrap();
        let raw = b64().decode(&token).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let encoded = b64().encode(&bad);
            if let Some(parts) = t.parse(&encoded) {
                assert!(!t.verify(&parts, &SEED), "flipping byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn garbage_and_truncations_do_not_parse() {
        let t = tokens();
        let token = t.issue("user-1", &sid(), 2, &SEED).unwrap();
        for cut in 0..token.len() {
            assert!(t.parse(&token[..cut]).is_none(), "prefix of {cut} chars parsed");
        }
        for junk in ["", "a", "!!!!", "not a token", &format!("{token}="), &"A".repeat(10_000)] {
            assert!(t.parse(junk).is_none(), "{junk:?} parsed");
        }
    }

    #[test]
    fn derived_secret_depends_on_the_key() {
        let a = RefreshTokens::derived_from(&SecretBytes::new(b"0123456789abcdef0123456789abcdef".to_vec()));
        let b = RefreshTokens::derived_from(&SecretBytes::new(b"0123456789abcdef0123456789abcdeF".to_vec()));
        let token = a.issue("u", &sid(), 0, &SEED).unwrap();
        let parts = a.parse(&token).unwrap();
        assert!(a.verify(&parts, &SEED));
        assert!(!b.verify(&parts, &SEED));
        // The derived secret is not the signing key itself.
        let plain = RefreshTokens::new(SecretBytes::new(b"0123456789abcdef0123456789abcdef".to_vec()));
        assert!(!plain.verify(&parts, &SEED));
    }

    #[test]
    fn overlong_user_ids_cannot_be_issued() {
        assert!(tokens().issue(&"u".repeat(MAX_USER_ID_LEN + 1), &sid(), 0, &SEED).is_none());
        assert!(tokens().issue(&"u".repeat(MAX_USER_ID_LEN), &sid(), 0, &SEED).is_some());
    }
}
