//! A DPoP client for tests and benchmarks (RFC 9449 §4): a P-256 key and the proofs it signs.
//! Included with `#[path]` by the tests and the latency benchmark, so each builds its proofs the
//! same way a real client does: `typ: dpop+jwt`, ES256, the public `jwk`, a random `jti`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A client's P-256 proof key.
pub struct ProofKey {
    encoding: EncodingKey,
    /// The public JWK.
    pub jwk: Value,
}

impl ProofKey {
    /// A fresh key.
    pub fn new() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])});
        Self { encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// The RFC 7638 thumbprint of the public key.
    #[allow(dead_code)]
    pub fn jkt(&self) -> String {
        let j = &self.jwk;
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        b64(Sha256::digest(canonical))
    }

    /// A proof with exactly these claims and this header `jwk`.
    pub fn sign(&self, claims: &Value, jwk: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(jwk.clone()).unwrap());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A fresh proof for `method url` issued at `iat` (seconds), with `ath` of `access_token` and
    /// `nonce` when given.
    pub fn proof_at(
        &self,
        method: &str,
        url: &str,
        iat: i64,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut claims = json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": method, "htu": url, "iat": iat});
        if let Some(token) = access_token {
            claims["ath"] = json!(b64(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        self.sign(&claims, &self.jwk)
    }
}
