//! Fresh key material in exactly the form the settings take (`handler keys generate`).

use aws_lc_rs::encoding::{AsDer as _, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;

use crate::secret::SecretBytes;
use crate::settings::SigningAlgorithm;

/// Random bytes in a generated HS256 key (encoded as 64 base64url characters).
pub const HS256_KEY_BYTES: usize = 48;

/// Generated key material.
pub struct GeneratedKey {
    /// The setting's value: an HS256 secret, or a PKCS#8 PEM private key.
    pub value: SecretBytes,
    /// For ES256/EdDSA: the SPKI PEM public key (for `PreviousKeys` after a rotation).
    pub public_pem: Option<String>,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("value", &self.value).field("public_pem", &self.public_pem).finish()
    }
}

/// The OS random number generator or the key encoder failed.
#[derive(Debug, thiserror::Error)]
#[error("key generation failed: {0}")]
pub struct GenerateError(&'static str);

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Fresh key material for `algorithm`, from the OS random number generator.
pub fn generate(algorithm: SigningAlgorithm) -> Result<GeneratedKey, GenerateError> {
    let rng = SystemRandom::new();
    match algorithm {
        SigningAlgorithm::Hs256 => {
            let mut raw = [0u8; HS256_KEY_BYTES];
            rng.fill(&mut raw).map_err(|_| GenerateError("the OS random number generator failed"))?;
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            Ok(GeneratedKey { value: SecretBytes::new(text.into_bytes()), public_pem: None })
        }
        SigningAlgorithm::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| GenerateError("P-256 key generation failed"))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .map_err(|_| GenerateError("the generated P-256 key did not parse"))?;
            let public: PublicKeyX509Der<'_> =
                pair.public_key().as_der().map_err(|_| GenerateError("the P-256 public key did not encode"))?;
            Ok(GeneratedKey {
                value: SecretBytes::new(pem("PRIVATE KEY", doc.as_ref()).into_bytes()),
                public_pem: Some(pem("PUBLIC KEY", public.as_ref())),
            })
        }
        SigningAlgorithm::EdDsa => {
            let doc =
                Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|_| GenerateError("Ed25519 key generation failed"))?;
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(doc.as_ref())
                .map_err(|_| GenerateError("the generated Ed25519 key did not parse"))?;
            let public: PublicKeyX509Der<'_> =
                pair.public_key().as_der().map_err(|_| GenerateError("the Ed25519 public key did not encode"))?;
            Ok(GeneratedKey {
                value: SecretBytes::new(pem("PRIVATE KEY", doc.as_ref()).into_bytes()),
                public_pem: Some(pem("PUBLIC KEY", public.as_ref())),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::entropy;

    #[test]
    fn hs256_keys_are_random_and_strong() {
        let a = generate(SigningAlgorithm::Hs256).unwrap();
        let b = generate(SigningAlgorithm::Hs256).unwrap();
        assert_ne!(a.value, b.value);
        let text = std::str::from_utf8(a.value.expose()).unwrap();
        assert_eq!(text.len(), 64);
        assert!(entropy::estimate_bits(text) >= entropy::MIN_SECRET_BITS);
        assert!(a.public_pem.is_none());
    }

    #[test]
    fn asymmetric_keys_come_as_pem_pairs() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let k = generate(alg).unwrap();
            let private = std::str::from_utf8(k.value.expose()).unwrap();
            assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg:?}");
            assert!(k.public_pem.unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"), "{alg:?}");
        }
    }
}
