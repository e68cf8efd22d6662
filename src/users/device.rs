//! Device tokens (OWASP "device cookie") and username pseudonyms for logs.
//!
//! A device token is handed out by every successful password login and presented with later
//! logins of the same user: such a login is counted in the device's own throttle, so failures from
//! other devices or addresses — an attacker guessing, or trying to lock the owner out — never block
//! it. Layout before base64url (no padding), version 1:
//! `0x01 | device id (16) | issued at (8, Unix seconds, big-endian) | tag (32)`, where the tag is
//! HMAC-SHA256(key, label | user id length (1) | user id | device id | issued at) under a key
//! derived from the rotation secret with a label of its own. The user id is not in the token: a
//! token verifies only against the account it was issued for, so another user's token, or a forged
//! one, counts as none.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

use crate::clock::UnixMs;

const VERSION: u8 = 1;
const LEN: usize = 1 + 16 + 8 + 32;
/// Longest accepted encoded device token; anything longer is refused before decoding.
pub const MAX_ENCODED_LEN: usize = LEN.div_ceil(3) * 4;
const LABEL: &[u8] = b"jwt-refresh-token/device/v1";
const PSEUDONYM_LABEL: &[u8] = b"jwt-refresh-token/username-pseudonym/v1";
/// How long a device token stays valid after it was issued (a year); every successful login with
/// it issues a fresh one.
pub const DEFAULT_DEVICE_TOKEN_TTL_MS: i64 = 365 * 24 * 3_600_000;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &[u8; 32]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for 32 bytes.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC accepts 32-byte keys")
}

/// Issues and verifies device tokens under one key.
#[derive(Clone)]
pub struct DeviceTokens {
    key: [u8; 32],
    ttl_ms: i64,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTokens(***)")
    }
}

impl DeviceTokens {
    /// Tokens under `key` (derived from the rotation secret with [`DeviceTokens::LABEL`]), valid
    /// for [`DEFAULT_DEVICE_TOKEN_TTL_MS`] (see [`DeviceTokens::valid_for`]).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key, ttl_ms: DEFAULT_DEVICE_TOKEN_TTL_MS }
    }

    /// The same tokens, valid for `ttl_ms` after they are issued (`Login__DeviceTokenLifetimeDays`).
    #[must_use]
    pub fn valid_for(mut self, ttl_ms: i64) -> Self {
        self.ttl_ms = ttl_ms.max(1);
        self
    }

    /// How long a token stays valid after it is issued.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// The HKDF label the key is derived with.
    pub const LABEL: &'static [u8] = LABEL;

    fn tag(&self, user_id: &str, device: &[u8; 16], issued_at_s: u64) -> [u8; 32] {
        let mut m = mac(&self.key);
        m.update(LABEL);
        // User ids are at most 128 bytes (a refresh-token limit); the length keeps fields apart.
        m.update(&[u8::try_from(user_id.len()).unwrap_or(u8::MAX)]);
        m.update(user_id.as_bytes());
        m.update(device);
        m.update(&issued_at_s.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// A token for device `device` of user `user_id`, issued at `now`.
    pub fn issue(&self, user_id: &str, device: &[u8; 16], now: UnixMs) -> String {
        let issued = u64::try_from(now.div_euclid(1000)).unwrap_or(0);
        let mut raw = Vec::with_capacity(LEN);
        raw.push(VERSION);
        raw.extend_from_slice(device);
        raw.extend_from_slice(&issued.to_be_bytes());
        raw.extend_from_slice(&self.tag(user_id, device, issued));
        b64().encode(raw)
    }

    /// The device id (base64url) of `token` when it is a token of ours for `user_id` that has not
    /// expired at `now`; `None` for anything else (forged, another user's, expired, garbage).
    pub fn verify(&self, token: &str, user_id: &str, now: UnixMs) -> Option<String> {
        self.verified(token, user_id, now).map(|d| b64().encode(d))
    }

    /// [`DeviceTokens::verify`], giving the raw device id.
    pub fn verified(&self, token: &str, user_id: &str, now: UnixMs) -> Option<[u8; 16]> {
        if token.len() > MAX_ENCODED_LEN {
            return None;
        }
        let raw = b64().decode(token).ok()?;
        let (&version, rest) = raw.split_first()?;
        let (device, rest) = rest.split_first_chunk::<16>()?;
        let (issued, tag) = rest.split_first_chunk::<8>()?;
        if version != VERSION || tag.len() != 32 {
            return None;
        }
        let (device, issued) = (*device, u64::from_be_bytes(*issued));
        let expected = self.tag(user_id, &device, issued);
        if !bool::from(expected.ct_eq(tag)) {
            return None;
        }
        let issued_ms = i64::try_from(issued).ok()?.checked_mul(1000)?;
        // Issued in the future (beyond a minute of clock skew) or longer ago than the lifetime: refused.
        (issued_ms <= now + 60_000 && now - issued_ms < self.ttl_ms).then_some(device)
    }
}

/// Keyed pseudonyms of usernames for logs: people type passwords into the username field, so an
/// unknown username is never logged as typed, only as a short HMAC under a derived key (the same
/// name gives the same pseudonym on every instance, so an operator can still follow it).
#[derive(Clone)]
pub struct Pseudonyms {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(***)")
    }
}

impl Pseudonyms {
    /// The HKDF label the key is derived with.
    pub const LABEL: &'static [u8] = PSEUDONYM_LABEL;

    /// Pseudonyms under `key` (derived from the rotation secret with [`Pseudonyms::LABEL`]).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Pseudonyms under a random key: stable within this process only.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        // Without OS randomness the key stays zero: pseudonyms are then unkeyed, never the text.
        let _ = rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key);
        Self { key }
    }

    /// `u-` and 12 hex digits of HMAC(key, username key).
    pub fn of(&self, username_key: &str) -> String {
        let mut m = mac(&self.key);
        m.update(PSEUDONYM_LABEL);
        m.update(username_key.as_bytes());
        let tag = m.finalize().into_bytes();
        let mut out = String::from("u-");
        for b in tag.iter().take(6) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_configured_lifetime_ends_a_device_token_sooner() {
        let tokens = DeviceTokens::new([7; 32]).valid_for(2 * DAY);
        let t = tokens.issue("user-1", &[1; 16], 10 * DAY);
        assert_eq!(tokens.verified(&t, "user-1", 12 * DAY - 1_000), Some([1; 16]), "within two days");
        assert_eq!(tokens.verified(&t, "user-1", 12 * DAY), None, "two days after it was issued");
        assert_eq!(tokens.ttl_ms(), 2 * DAY);
    }

    #[test]
    fn a_device_token_verifies_only_for_its_user_and_until_it_expires() {
        let tokens = DeviceTokens::new([7; 32]);
        let t = tokens.issue("user-1", &[1; 16], 1_000 * DAY);
        assert_eq!(tokens.verified(&t, "user-1", 1_000 * DAY), Some([1; 16]));
        assert_eq!(tokens.verified(&t, "user-2", 1_000 * DAY), None, "another user's token is none");
        assert_eq!(tokens.verified(&t, "user-1", 1_000 * DAY + DEFAULT_DEVICE_TOKEN_TTL_MS), None, "expired");
        assert_eq!(DeviceTokens::new([8; 32]).verified(&t, "user-1", 1_000 * DAY), None, "other key");
        let mut forged = t.clone().into_bytes();
        forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
        assert_eq!(tokens.verified(&String::from_utf8(forged).unwrap(), "user-1", 1_000 * DAY), None);
        assert_eq!(tokens.verified("garbage", "user-1", 0), None);
        assert!(t.len() <= MAX_ENCODED_LEN);
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_never_the_text() {
        let p = Pseudonyms::new([1; 32]);
        assert_eq!(p.of("hunter2"), p.of("hunter2"));
        assert_ne!(p.of("hunter2"), Pseudonyms::new([2; 32]).of("hunter2"));
        assert!(!p.of("hunter2").contains("hunter2"));
        assert_eq!(p.of("x").len(), 14);
    }
}
