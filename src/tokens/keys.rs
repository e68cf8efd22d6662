//! Signing keys: the current one signs, previous ones (from earlier rotations) still verify.
//!
//! Every key has a `kid`: for public keys the RFC 7638 JWK thumbprint, for HS256 secrets a truncated
//! HMAC of a fixed label (so the `kid` reveals nothing about the secret). JWKS lists public keys only.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::secret::SecretBytes;
use crate::settings::names::{ALGORITHM_KEY, PREVIOUS_KEYS};
use crate::settings::{Descriptor, SettingsError, SigningAlgorithm};

/// A key that can verify tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Key id, matched against the token header's `kid`.
    pub kid: String,
    /// The only algorithm this key accepts.
    pub algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The current signing key and every key that still verifies.
#[derive(Clone)]
pub struct KeySet {
    signing_kid: String,
    signing_algorithm: Algorithm,
    encoding: EncodingKey,
    verifying: Vec<VerifyingKey>,
    jwks: JwkSet,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("signing_kid", &self.signing_kid)
            .field("signing_algorithm", &self.signing_algorithm)
            .field("verifying", &self.verifying)
            .finish_non_exhaustive()
    }
}

fn jose(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::Hs256 => Algorithm::HS256,
        SigningAlgorithm::Es256 => Algorithm::ES256,
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac_kid(secret: &[u8]) -> Result<String, SettingsError> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .map_err(|_| SettingsError::new(ALGORITHM_KEY, "cannot be used as an HMAC key"))?;
    mac.update(b"jwt-refresh-token/kid/v1");
    let digest = mac.finalize().into_bytes();
    Ok(b64(digest.get(..12).unwrap_or(&digest)))
}

fn public_jwk(mut jwk: Jwk, algorithm: Algorithm, setting: &str) -> Result<(String, Jwk), SettingsError> {
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| SettingsError::new(setting, format!("has no usable public key: {e}")))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match algorithm {
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::EdDSA,
    });
    Ok((kid, jwk))
}

impl KeySet {
    /// Builds the key set from the descriptor settings; a bad key names its setting.
    pub fn from_descriptor(d: &Descriptor) -> Result<Self, SettingsError> {
        let algorithm = jose(d.algorithm);
        let mut jwks = Vec::new();
        let mut verifying = Vec::new();
        let key = d.algorithm_key.expose();
        let (encoding, kid) = match d.algorithm {
            SigningAlgorithm::Hs256 => {
                verifying.push(VerifyingKey {
                    kid: hmac_kid(key)?,
                    algorithm,
                    decoding: DecodingKey::from_secret(key),
                });
                (EncodingKey::from_secret(key), hmac_kid(key)?)
            }
            SigningAlgorithm::Es256 | SigningAlgorithm::EdDsa => {
                let bad = |e: jsonwebtoken::errors::Error| {
                    SettingsError::new(
                        ALGORITHM_KEY,
                        format!("must be a PKCS#8 PEM private key for {}: {e}", d.algorithm.jose_name()),
                    )
                };
                let encoding = match d.algorithm {
                    SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(key),
                    _ => EncodingKey::from_ed_pem(key),
                }
                .map_err(bad)?;
                let jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(bad)?;
                let (kid, jwk) = public_jwk(jwk, algorithm, ALGORITHM_KEY)?;
                let decoding = DecodingKey::from_jwk(&jwk).map_err(bad)?;
                verifying.push(VerifyingKey { kid: kid.clone(), algorithm, decoding });
                jwks.push(jwk);
                (encoding, kid)
            }
        };
        for (i, previous) in d.previous_keys.iter().enumerate() {
            let setting = format!("{PREVIOUS_KEYS}__{i}");
            let (key, jwk) = previous_key(previous, &setting)?;
            if verifying.iter().any(|k| k.kid == key.kid) {
                return Err(SettingsError::new(setting, "repeats a key that is already configured"));
            }
            verifying.push(key);
            jwks.extend(jwk);
        }
        Ok(Self { signing_kid: kid, signing_algorithm: algorithm, encoding, verifying, jwks: JwkSet { keys: jwks } })
    }

    /// `kid` of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// Algorithm of the signing key.
    pub fn signing_algorithm(&self) -> Algorithm {
        self.signing_algorithm
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The verifying key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.iter().find(|k| k.kid == kid)
    }

    /// The public keys (JWKS document); empty when only HMAC keys are configured.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }
}

/// A previous key: a `PUBLIC KEY` PEM (ES256 or EdDSA) or an HS256 secret.
fn previous_key(raw: &SecretBytes, setting: &str) -> Result<(VerifyingKey, Option<Jwk>), SettingsError> {
    let bytes = raw.expose();
    if bytes.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        let candidates =
            [(Algorithm::ES256, DecodingKey::from_ec_pem(bytes)), (Algorithm::EdDSA, DecodingKey::from_ed_pem(bytes))];
        for (algorithm, decoding) in candidates {
            let Ok(decoding) = decoding else { continue };
            let Ok(jwk) = Jwk::from_decoding_key(&decoding, Some(algorithm)) else { continue };
            let (kid, jwk) = public_jwk(jwk, algorithm, setting)?;
            let decoding = DecodingKey::from_jwk(&jwk)
                .map_err(|e| SettingsError::new(setting, format!("is not a usable public key: {e}")))?;
            return Ok((VerifyingKey { kid, algorithm, decoding }, Some(jwk)));
        }
        return Err(SettingsError::new(setting, "must be a P-256 or Ed25519 public key in SPKI PEM form"));
    }
    if bytes.starts_with(b"-----BEGIN") {
        return Err(SettingsError::new(setting, "must hold a PUBLIC KEY PEM; never configure an old private key"));
    }
    if bytes.len() < 32 {
        return Err(SettingsError::new(
            setting,
            format!("an HS256 key must be at least 32 bytes, got {}", bytes.len()),
        ));
    }
    let key =
        VerifyingKey { kid: hmac_kid(bytes)?, algorithm: Algorithm::HS256, decoding: DecodingKey::from_secret(bytes) };
    Ok((key, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::access::{AccessTokens, Expiry, Subject};

    const ES256: &str = include_str!("../../tests/fixtures/es256-private.pem");
    const ES256_OLD: &str = include_str!("../../tests/fixtures/es256-old-private.pem");
    const ES256_OLD_PUBLIC: &str = include_str!("../../tests/fixtures/es256-old-public.pem");
    const ED25519: &str = include_str!("../../tests/fixtures/ed25519-private.pem");
    const HS_KEY: &str = "0123456789abcdef0123456789abcdef";

    fn descriptor(algorithm: SigningAlgorithm, key: &str, previous: &[&str]) -> Descriptor {
        Descriptor {
            issuer: "iss".into(),
            audience: "aud".into(),
            algorithm,
            algorithm_key: SecretBytes::new(key.as_bytes().to_vec()),
            previous_keys: previous.iter().map(|k| SecretBytes::new(k.as_bytes().to_vec())).collect(),
            clock_skew_ms: 0,
        }
    }

    fn tokens(d: &Descriptor) -> AccessTokens {
        AccessTokens::new(KeySet::from_descriptor(d).unwrap(), "iss".into(), "aud".into(), 60_000, 0)
    }

    fn sign(t: &AccessTokens) -> String {
        let roles = vec!["r".to_string()];
        t.sign(
            Subject {
                user_id: "u",
                name: "n",
                roles: &roles,
                session_id: "s",
                jkt: None,
                amr: &[],
                auth_time_ms: None,
            },
            1_000_000,
        )
        .unwrap()
        .token
    }

    #[test]
    fn asymmetric_keys_sign_verify_and_publish_only_public_parts() {
        for (alg, key, kty) in [(SigningAlgorithm::Es256, ES256, "EC"), (SigningAlgorithm::EdDsa, ED25519, "OKP")] {
            let t = tokens(&descriptor(alg, key, &[]));
            let claims = t.verify(&sign(&t), 1_000_000, Expiry::Enforce).unwrap();
            assert_eq!(claims.sub, "u");
            let jwks = serde_json::to_value(t.keys().jwks()).unwrap();
            let keys = jwks["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0]["kty"], kty);
            assert_eq!(keys[0]["kid"], t.keys().signing_kid());
            assert_eq!(keys[0]["alg"], alg.jose_name());
            assert_eq!(keys[0]["use"], "sig");
            assert!(keys[0].get("d").is_none(), "private part published: {jwks}");
        }
    }

    #[test]
    fn hs256_publishes_nothing_and_its_kid_hides_the_key() {
        let t = tokens(&descriptor(SigningAlgorithm::Hs256, HS_KEY, &[]));
        assert!(t.keys().jwks().keys.is_empty());
        assert!(!t.keys().signing_kid().contains("0123"));
        assert_eq!(t.keys().signing_kid().len(), 16);
    }

    #[test]
    fn previous_public_keys_still_verify_and_are_published() {
        let old = tokens(&descriptor(SigningAlgorithm::Es256, ES256_OLD, &[]));
        let old_token = sign(&old);
        let current = tokens(&descriptor(SigningAlgorithm::Es256, ES256, &[ES256_OLD_PUBLIC]));
        current.verify(&old_token, 1_000_000, Expiry::Enforce).unwrap();
        assert_eq!(current.keys().jwks().keys.len(), 2);
        let without = tokens(&descriptor(SigningAlgorithm::Es256, ES256, &[]));
        assert!(without.verify(&old_token, 1_000_000, Expiry::Enforce).is_err());
    }

    #[test]
    fn migrating_from_hs256_to_es256_keeps_old_tokens_valid() {
        let old = tokens(&descriptor(SigningAlgorithm::Hs256, HS_KEY, &[]));
        let old_token = sign(&old);
        let current = tokens(&descriptor(SigningAlgorithm::Es256, ES256, &[HS_KEY]));
        current.verify(&old_token, 1_000_000, Expiry::Enforce).unwrap();
        assert_eq!(current.keys().jwks().keys.len(), 1, "the HMAC secret is never published");
    }

    #[test]
    fn bad_keys_name_their_setting() {
        let cases = [
            (descriptor(SigningAlgorithm::Es256, HS_KEY, &[]), ALGORITHM_KEY.to_string()),
            (descriptor(SigningAlgorithm::EdDsa, ES256, &[]), ALGORITHM_KEY.to_string()),
            (descriptor(SigningAlgorithm::Es256, ES256, &[ES256_OLD]), format!("{PREVIOUS_KEYS}__0")),
            (descriptor(SigningAlgorithm::Hs256, HS_KEY, &["short"]), format!("{PREVIOUS_KEYS}__0")),
            (descriptor(SigningAlgorithm::Hs256, HS_KEY, &[HS_KEY]), format!("{PREVIOUS_KEYS}__0")),
            (
                descriptor(
                    SigningAlgorithm::Hs256,
                    HS_KEY,
                    &["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
                ),
                format!("{PREVIOUS_KEYS}__0"),
            ),
        ];
        for (d, setting) in cases {
            let err = KeySet::from_descriptor(&d).unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
        }
    }

    #[test]
    fn a_token_claiming_another_algorithm_for_a_known_kid_is_refused() {
        // An HS256 token whose kid names the ES256 key (the classic algorithm-confusion attack,
        // with the public key bytes as HMAC secret).
        let es = tokens(&descriptor(SigningAlgorithm::Es256, ES256, &[]));
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(es.keys().signing_kid().to_string());
        let claims = serde_json::json!({"iss":"iss","aud":"aud","sub":"u","exp":2_000,"iat":1_000,"nbf":1_000,
            "jti":"j","sid":"s","name":"n","roles":[]});
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(ES256.as_bytes())).unwrap();
        assert!(es.verify(&forged, 1_000_000, Expiry::Enforce).is_err());
    }
}
