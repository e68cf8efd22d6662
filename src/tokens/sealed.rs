//! Secrets kept at rest sealed: AES-256-GCM under a key derived from the rotation secret with a
//! label of its own (a TOTP secret is useless to whoever reads the store alone), a random 96-bit
//! nonce per sealing, and the record's owner as associated data (a sealed value copied onto
//! another user does not open).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

use crate::secret::SecretBytes;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value does not open (another key, another owner, or altered)")]
pub struct OpenError;

/// Seals and opens values under one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// A sealer over a 32-byte key (see `RefreshTokens::derive_key`).
    pub fn new(key: [u8; 32]) -> Self {
        // A 32-byte key is exactly what AES-256-GCM takes, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, &key).unwrap_or_else(|_| unreachable_key());
        Self { key: LessSafeKey::new(unbound) }
    }

    /// `plain` sealed for `owner`: base64url of nonce, ciphertext and tag.
    pub fn seal(&self, plain: &[u8], owner: &str) -> Result<String, OpenError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| OpenError)?;
        let mut buffer = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(owner.as_bytes()), &mut buffer)
            .map_err(|_| OpenError)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(B64.encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed for `owner`.
    pub fn open(&self, sealed: &str, owner: &str) -> Result<SecretBytes, OpenError> {
        let raw = B64.decode(sealed).map_err(|_| OpenError)?;
        let (nonce, rest) = raw.split_at_checked(NONCE_LEN).ok_or(OpenError)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut buffer = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buffer).map_err(|_| OpenError)?;
        Ok(SecretBytes::new(plain.to_vec()))
    }
}

/// AES-256-GCM takes any 32-byte key; a failure here would be a broken build of the library.
#[cold]
fn unreachable_key() -> UnboundKey {
    #[allow(clippy::panic)]
    {
        panic!("AES-256-GCM refused a 32-byte key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_owner_under_their_key() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal(b"JBSWY3DPEHPK3PXP", "user-1").unwrap();
        assert_eq!(sealer.open(&sealed, "user-1").unwrap().expose(), b"JBSWY3DPEHPK3PXP");
        assert!(sealer.open(&sealed, "user-2").is_err(), "another owner");
        assert!(Sealer::new([8; 32]).open(&sealed, "user-1").is_err(), "another key");
        assert_ne!(sealer.seal(b"JBSWY3DPEHPK3PXP", "user-1").unwrap(), sealed, "a fresh nonce each time");
        let mut altered = sealed.into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(&String::from_utf8(altered).unwrap(), "user-1").is_err(), "altered");
        assert!(sealer.open("short", "user-1").is_err());
    }
}
