//! DPoP proofs (RFC 9449): a client proves possession of a private key with a short-lived JWT
//! signed by it, sent in the `DPoP` header. Tokens issued to such a request are bound to the key's
//! JWK SHA-256 thumbprint (RFC 7638), the `jkt`.
//!
//! What a proof must be (§4.2, §4.3): a JWS with header `typ: dpop+jwt`, an asymmetric `alg` of
//! the allow-list (ES256, EdDSA, RS256; never `none` or an HMAC), and the public `jwk` that signed
//! it (no private members); claims `jti`, `htm` (the request method), `htu` (the request URL
//! without query and fragment, compared after RFC 3986 §6.2.2–6.2.3 normalisation), `iat` within
//! the window, `ath` (the access token's SHA-256) when one is presented with it, and the current
//! server `nonce` when nonces are required.
//!
//! Replays: a proof's `jti` is accepted once per instance within the window (a bounded cache).
//! Across instances a replayed proof can only obtain tokens bound to the very key that signed it,
//! which the replayer does not hold; nonces (`Dpop__RequireNonce`) shorten the window further.
//!
//! Nonces are stateless: an HMAC of a five-minute window under a key derived from the rotation
//! secret, so every instance issues and accepts the same ones without storing anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::clock::UnixMs;

/// The `typ` of a DPoP proof (RFC 9449 §4.2).
pub const PROOF_TYPE: &str = "dpop+jwt";
/// The proof algorithms accepted, as discovery lists them (`dpop_signing_alg_values_supported`).
pub const ALGORITHMS: [&str; 3] = ["ES256", "EdDSA", "RS256"];
/// Longest proof accepted (an RS256 proof with a 4096-bit key is about 1.5 KiB).
pub const MAX_PROOF_LEN: usize = 4 * 1024;
/// Proofs remembered per instance to refuse replays; beyond it (after dropping the expired ones)
/// new proofs are refused as busy rather than remembered less.
pub const MAX_REMEMBERED_PROOFS: usize = 100_000;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Longest `jti` accepted, in bytes.
const MAX_JTI_LEN: usize = 256;
/// A nonce is valid in the window it was issued in and the next one.
const NONCE_WINDOW_MS: i64 = 300_000;
const NONCE_LABEL: &[u8] = b"jwt-refresh-token/dpop-nonce/v1";

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Malformed, badly signed, or not for this request; the text says which check failed.
    #[error("invalid DPoP proof: {0}")]
    Invalid(&'static str),
    /// Nonces are required and the proof carried none, or a stale one: retry with the current one.
    #[error("a fresh DPoP nonce is required")]
    UseNonce,
    /// The replay cache is full of unexpired proofs (a flood); retry shortly.
    #[error("too many DPoP proofs at once")]
    Busy,
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The request method (`htm`).
    pub method: &'a str,
    /// The request's public URL without query and fragment (`htu`).
    pub url: &'a str,
    /// The access token presented with the proof (resource requests: `ath`), if any.
    pub access_token: Option<&'a str>,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The JWK SHA-256 thumbprint of the proof key (RFC 7638), base64url.
    pub jkt: String,
}

/// Verifies proofs, remembers their `jti`s and issues nonces.
pub struct Proofs {
    max_age_ms: i64,
    require_nonce: bool,
    nonce_key: [u8; 32],
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proofs")
            .field("max_age_ms", &self.max_age_ms)
            .field("require_nonce", &self.require_nonce)
            .finish_non_exhaustive()
    }
}

/// Proofs seen within the window: (thumbprint, jti) digests with when they may be forgotten, in
/// the order they were seen (which is the order they expire in).
#[derive(Default)]
struct Seen {
    until: HashMap<[u8; 32], UnixMs>,
    order: VecDeque<([u8; 32], UnixMs)>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl Proofs {
    /// Proofs whose `iat` is at most `max_age_ms` from now (either way); nonces required when
    /// `require_nonce`, made with `nonce_key`.
    pub fn new(max_age_ms: i64, require_nonce: bool, nonce_key: [u8; 32]) -> Self {
        Self { max_age_ms, require_nonce, nonce_key, seen: Mutex::default() }
    }

    /// Whether proofs must carry a server nonce.
    pub fn requires_nonce(&self) -> bool {
        self.require_nonce
    }

    /// The nonce to hand out at `now` (`DPoP-Nonce`).
    pub fn nonce(&self, now: UnixMs) -> String {
        self.nonce_for(now.div_euclid(NONCE_WINDOW_MS))
    }

    fn nonce_for(&self, window: i64) -> String {
        let mut out = window.to_be_bytes().to_vec();
        out.extend_from_slice(self.nonce_tag(window).get(..16).unwrap_or_default());
        b64().encode(out)
    }

    fn nonce_tag(&self, window: i64) -> [u8; 32] {
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(&self.nonce_key) else { return [0; 32] };
        mac.update(NONCE_LABEL);
        mac.update(&window.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn nonce_is_current(&self, nonce: &str, now: UnixMs) -> bool {
        let current = now.div_euclid(NONCE_WINDOW_MS);
        [current, current - 1].iter().any(|w| {
            use subtle::ConstantTimeEq as _;
            bool::from(self.nonce_for(*w).as_bytes().ct_eq(nonce.as_bytes()))
        })
    }

    /// Verifies `proof` for `target` at `now` and remembers it: a second use of the same proof on
    /// this instance within the window is refused.
    pub fn verify(&self, proof: &str, target: Target<'_>, now: UnixMs) -> Result<VerifiedProof, ProofError> {
        let invalid = ProofError::Invalid;
        if proof.len() > MAX_PROOF_LEN {
            return Err(invalid("proof too long"));
        }
        let (header_b64, _) = proof.split_once('.').ok_or(invalid("malformed proof"))?;
        let header_bytes = b64().decode(header_b64).map_err(|_| invalid("malformed proof header"))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header_bytes).map_err(|_| invalid("malformed proof header"))?;
        let typ = header.get("typ").and_then(|t| t.as_str()).ok_or(invalid("proof has no typ"))?;
        if !typ.eq_ignore_ascii_case(PROOF_TYPE) {
            return Err(invalid("proof typ is not dpop+jwt"));
        }
        if header.contains_key("crit") {
            return Err(invalid("unsupported critical header in proof"));
        }
        let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(invalid("proof has no alg"))?;
        let jwk = header.get("jwk").and_then(|j| j.as_object()).ok_or(invalid("proof has no jwk"))?;
        let key = ProofKey::from_jwk(alg, jwk)?;
        let mut validation = Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims::<&str>(&[]);
        let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid("proof signature does not verify"),
                _ => invalid("malformed proof"),
            })?
            .claims;
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(invalid("proof jti missing or too long"));
        }
        if claims.htm != target.method {
            return Err(invalid("proof htm does not match the request method"));
        }
        match (normalized_url(&claims.htu), normalized_url(target.url)) {
            (Some(presented), Some(expected)) if presented.eq_ignore_ascii_case(&expected) => {}
            _ => return Err(invalid("proof htu does not match the request URL")),
        }
        if claims.iat.saturating_mul(1000).abs_diff(now) > self.max_age_ms.unsigned_abs() {
            return Err(invalid("proof iat is outside the accepted window"));
        }
        match (target.access_token, claims.ath.as_deref()) {
            (Some(token), Some(ath)) if ath == access_token_hash(token) => {}
            (Some(_), Some(_)) => return Err(invalid("proof ath does not match the access token")),
            (Some(_), None) => return Err(invalid("proof has no ath for the access token")),
            (None, _) => {}
        }
        if self.require_nonce && !claims.nonce.as_deref().is_some_and(|n| self.nonce_is_current(n, now)) {
            return Err(ProofError::UseNonce);
        }
        self.remember(&key.jkt, &claims.jti, now)?;
        Ok(VerifiedProof { jkt: key.jkt })
    }

    /// Records a proof as used; `Err` when it was used before within the window.
    fn remember(&self, jkt: &str, jti: &str, now: UnixMs) -> Result<(), ProofError> {
        let mut digest = Sha256::new();
        digest.update(jkt.as_bytes());
        digest.update([0]);
        digest.update(jti.as_bytes());
        let id: [u8; 32] = digest.finalize().into();
        // A proof is accepted until its iat is max_age old, and iat may be max_age ahead of now.
        let forget_at = now.saturating_add(self.max_age_ms.saturating_mul(2));
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((old, at)) = seen.order.front().copied() {
            if at > now {
                break;
            }
            seen.order.pop_front();
            if seen.until.get(&old).is_some_and(|u| *u <= now) {
                seen.until.remove(&old);
            }
        }
        if seen.until.get(&id).is_some_and(|u| *u > now) {
            return Err(ProofError::Invalid("proof was used before (jti replayed)"));
        }
        if seen.until.len() >= MAX_REMEMBERED_PROOFS {
            return Err(ProofError::Busy);
        }
        seen.until.insert(id, forget_at);
        seen.order.push_back((id, forget_at));
        Ok(())
    }
}

/// `ath`: base64url of the SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    b64().encode(Sha256::digest(token.as_bytes()))
}

/// The verification key of a proof and its thumbprint.
struct ProofKey {
    algorithm: Algorithm,
    decoding: DecodingKey,
    jkt: String,
}

/// JWK members that only private (or symmetric) keys have.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl ProofKey {
    fn from_jwk(alg: &str, jwk: &serde_json::Map<String, serde_json::Value>) -> Result<Self, ProofError> {
        let invalid = ProofError::Invalid;
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(invalid("proof jwk holds private key material"));
        }
        let member = |name: &'static str| -> Result<&str, ProofError> {
            let value = jwk.get(name).and_then(|v| v.as_str()).ok_or(invalid("proof jwk lacks a required member"))?;
            // Base64url only: the value goes verbatim into the thumbprint's JSON.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid("proof jwk member is not base64url"));
            }
            Ok(value)
        };
        let decoded_len =
            |v: &str| b64().decode(v).map(|b| b.len()).map_err(|_| invalid("proof jwk member is not base64url"));
        let kty = jwk.get("kty").and_then(|v| v.as_str()).ok_or(invalid("proof jwk has no kty"))?;
        let crv = jwk.get("crv").and_then(|v| v.as_str());
        let wrong = || invalid("proof jwk does not fit its alg");
        let (algorithm, decoding, canonical) = match alg {
            "ES256" => {
                if kty != "EC" || crv != Some("P-256") {
                    return Err(wrong());
                }
                let (x, y) = (member("x")?, member("y")?);
                if decoded_len(x)? != 32 || decoded_len(y)? != 32 {
                    return Err(wrong());
                }
                let key = DecodingKey::from_ec_components(x, y).map_err(|_| wrong())?;
                (Algorithm::ES256, key, format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#))
            }
            "EdDSA" => {
                if kty != "OKP" || crv != Some("Ed25519") {
                    return Err(wrong());
                }
                let x = member("x")?;
                if decoded_len(x)? != 32 {
                    return Err(wrong());
                }
                let key = DecodingKey::from_ed_components(x).map_err(|_| wrong())?;
                (Algorithm::EdDSA, key, format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
            }
            "RS256" => {
                if kty != "RSA" {
                    return Err(wrong());
                }
                let (n, e) = (member("n")?, member("e")?);
                let n_bytes = b64().decode(n).map_err(|_| wrong())?;
                let bits = n_bytes.iter().position(|b| *b != 0).map_or(0, |i| (n_bytes.len() - i) * 8);
                if bits < MIN_RSA_BITS || decoded_len(e)? > 8 {
                    return Err(invalid("proof RSA key is too small"));
                }
                let key = DecodingKey::from_rsa_components(n, e).map_err(|_| wrong())?;
                (Algorithm::RS256, key, format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#))
            }
            _ => return Err(invalid("proof alg is not one of ES256, EdDSA, RS256")),
        };
        Ok(Self { algorithm, decoding, jkt: b64().encode(Sha256::digest(canonical.as_bytes())) })
    }
}

/// A URL normalised for comparison (RFC 3986 §6.2.2–6.2.3, RFC 9449 §4.3): scheme and host in
/// lower case, the scheme's default port dropped, an empty path as `/`, percent-encodings of
/// unreserved characters decoded and the others in upper case, no query or fragment. `None` for
/// anything but an absolute http(s) URL without user information.
pub fn normalized_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match authority.rsplit_once(':') {
        Some((host, port)) if port == default_port || port.is_empty() => host.to_string(),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}{}", normalized_path(path)?))
}

fn normalized_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    if !out.is_ascii() {
        return None;
    }
    Some(out)
}

/// Percent-encodes a path segment (everything but unreserved characters), for building the URL a
/// proof's `htu` must name from a decoded route parameter.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: UnixMs = 1_800_000_000_000;
    const URL: &str = "https://issuer.test/api/token";

    struct Client {
        encoding: EncodingKey,
        jwk: serde_json::Value,
        alg: Algorithm,
    }

    fn p256() -> Client {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let jwk =
            json!({"kty":"EC","crv":"P-256","x": b64().encode(&public[1..33]),"y": b64().encode(&public[33..65])});
        Client { encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk, alg: Algorithm::ES256 }
    }

    fn ed25519() -> Client {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty":"OKP","crv":"Ed25519","x": b64().encode(pair.public_key().as_ref())});
        Client { encoding: EncodingKey::from_ed_der(pkcs8.as_ref()), jwk, alg: Algorithm::EdDSA }
    }

    fn proof(client: &Client, claims: serde_json::Value) -> String {
        let mut header = Header::new(client.alg);
        header.typ = Some(PROOF_TYPE.into());
        header.jwk = Some(serde_json::from_value(client.jwk.clone()).unwrap());
        jsonwebtoken::encode(&header, &claims, &client.encoding).unwrap()
    }

    fn claims(jti: &str) -> serde_json::Value {
        json!({"jti": jti, "htm": "POST", "htu": URL, "iat": NOW / 1000})
    }

    fn target() -> Target<'static> {
        Target { method: "POST", url: URL, access_token: None }
    }

    fn proofs() -> Proofs {
        Proofs::new(60_000, false, [7; 32])
    }

    #[test]
    fn a_good_proof_binds_to_the_rfc_7638_thumbprint_of_its_key() {
        for client in [p256(), ed25519()] {
            let verified = proofs().verify(&proof(&client, claims("a")), target(), NOW).unwrap();
            let jwk = &client.jwk;
            let canonical = if jwk["kty"] == "EC" {
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    jwk["x"].as_str().unwrap(),
                    jwk["y"].as_str().unwrap()
                )
            } else {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jwk["x"].as_str().unwrap())
            };
            assert_eq!(verified.jkt, b64().encode(Sha256::digest(canonical)));
        }
    }

    #[test]
    fn the_rfc_7638_example_key_has_the_rfc_thumbprint() {
        // RFC 7638 §3.1: the example RSA key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"kty":"RSA","n": n,"e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        let key = ProofKey::from_jwk("RS256", jwk.as_object().unwrap()).unwrap_or_else(|_| panic!("RFC key refused"));
        assert_eq!(key.jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn an_rs256_proof_of_a_2048_bit_key_verifies_and_a_1024_bit_modulus_is_refused() {
        use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
        use aws_lc_rs::signature::RSA_PKCS1_SHA256;
        let sign = |pair: &RsaKeyPair, jti: &str| {
            let public = pair.public_key();
            let jwk = json!({"kty": "RSA", "n": b64().encode(public.modulus().big_endian_without_leading_zero()),
                "e": b64().encode(public.exponent().big_endian_without_leading_zero())});
            let header = b64().encode(json!({"typ": PROOF_TYPE, "alg": "RS256", "jwk": jwk}).to_string());
            let body = b64().encode(claims(jti).to_string());
            let input = format!("{header}.{body}");
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature).unwrap();
            format!("{input}.{}", b64().encode(signature))
        };
        let p = proofs();
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        p.verify(&sign(&pair, "rsa"), target(), NOW).unwrap();
        let mut forged = sign(&pair, "rsa-2");
        forged.replace_range(forged.len() - 5.., "AAAAA");
        assert_eq!(p.verify(&forged, target(), NOW), Err(ProofError::Invalid("proof signature does not verify")));
        let small = json!({"kty": "RSA", "n": b64().encode([0xc5; 128]), "e": "AQAB"});
        assert!(matches!(
            ProofKey::from_jwk("RS256", small.as_object().unwrap()).map(|_| ()),
            Err(ProofError::Invalid("proof RSA key is too small"))
        ));
    }

    #[test]
    fn a_proof_is_accepted_once_per_window() {
        let (p, client) = (proofs(), p256());
        let token = proof(&client, claims("once"));
        p.verify(&token, target(), NOW).unwrap();
        assert_eq!(
            p.verify(&token, target(), NOW + 1_000),
            Err(ProofError::Invalid("proof was used before (jti replayed)"))
        );
        // Another jti of the same key is a new proof.
        p.verify(&proof(&client, claims("twice")), target(), NOW).unwrap();
    }

    #[test]
    fn proofs_for_another_request_time_or_token_are_refused() {
        let (p, client) = (proofs(), p256());
        let check = |claims: serde_json::Value, target: Target<'_>| p.verify(&proof(&client, claims), target, NOW);
        let wrong_method = json!({"jti":"1","htm":"GET","htu":URL,"iat":NOW/1000});
        assert!(matches!(check(wrong_method, target()), Err(ProofError::Invalid(_))));
        let wrong_url = json!({"jti":"2","htm":"POST","htu":"https://issuer.test/api/refresh","iat":NOW/1000});
        assert!(matches!(check(wrong_url, target()), Err(ProofError::Invalid(_))));
        let stale = json!({"jti":"3","htm":"POST","htu":URL,"iat":NOW/1000 - 61});
        assert!(matches!(check(stale, target()), Err(ProofError::Invalid(_))));
        let future = json!({"jti":"4","htm":"POST","htu":URL,"iat":NOW/1000 + 61});
        assert!(matches!(check(future, target()), Err(ProofError::Invalid(_))));
        let with_token = Target { access_token: Some("the-token"), ..target() };
        let no_ath = json!({"jti":"5","htm":"POST","htu":URL,"iat":NOW/1000});
        assert!(matches!(check(no_ath, with_token), Err(ProofError::Invalid(_))));
        let wrong_ath = json!({"jti":"6","htm":"POST","htu":URL,"iat":NOW/1000,"ath":access_token_hash("other")});
        assert!(matches!(check(wrong_ath, with_token), Err(ProofError::Invalid(_))));
        let right_ath = json!({"jti":"7","htm":"POST","htu":URL,"iat":NOW/1000,"ath":access_token_hash("the-token")});
        check(right_ath, with_token).unwrap();
    }

    #[test]
    fn the_url_is_compared_after_normalisation_without_query_and_fragment() {
        let (p, client) = (proofs(), p256());
        for (i, htu) in [
            "HTTPS://Issuer.TEST:443/api/token?x=1",
            "https://issuer.test/api/%74oken#f",
            "https://issuer.test/API/token",
        ]
        .iter()
        .enumerate()
        {
            let c = json!({"jti": format!("n{i}"), "htm":"POST","htu":htu,"iat":NOW/1000});
            p.verify(&proof(&client, c), target(), NOW).unwrap_or_else(|e| panic!("{htu}: {e}"));
        }
        assert_eq!(normalized_url("https://h:8443/a%2fb").as_deref(), Some("https://h:8443/a%2Fb"));
        assert_eq!(normalized_url("https://user@h/a"), None);
        assert_eq!(normalized_url("ftp://h/a"), None);
    }

    #[test]
    fn unsigned_symmetric_private_and_mismatched_keys_are_refused() {
        let (p, client) = (proofs(), p256());
        let header = |h: serde_json::Value| b64().encode(h.to_string());
        let body = b64().encode(claims("x").to_string());
        let none = format!("{}.{body}.", header(json!({"typ":PROOF_TYPE,"alg":"none","jwk":client.jwk})));
        assert!(matches!(p.verify(&none, target(), NOW), Err(ProofError::Invalid(_))));
        let hs = format!(
            "{}.{body}.c2ln",
            header(json!({"typ":PROOF_TYPE,"alg":"HS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}))
        );
        assert!(matches!(p.verify(&hs, target(), NOW), Err(ProofError::Invalid(_))));
        // A genuine proof whose header is swapped for one naming another key, a private member, or
        // another typ.
        let genuine = proof(&client, claims("y"));
        let (_, rest) = genuine.split_once('.').unwrap();
        let mut with_d = client.jwk.clone();
        with_d["d"] = json!("AAAA");
        let other_key = p256().jwk;
        for h in [
            json!({"typ":PROOF_TYPE,"alg":"ES256","jwk":with_d}),
            json!({"typ":PROOF_TYPE,"alg":"ES256","jwk":other_key}),
            json!({"typ":"JWT","alg":"ES256","jwk":client.jwk}),
            json!({"typ":PROOF_TYPE,"alg":"EdDSA","jwk":client.jwk}),
            json!({"typ":PROOF_TYPE,"alg":"ES256"}),
            json!({"typ":PROOF_TYPE,"alg":"ES256","jwk":client.jwk,"crit":["exp"]}),
        ] {
            let forged = format!("{}.{rest}", header(h.clone()));
            assert!(matches!(p.verify(&forged, target(), NOW), Err(ProofError::Invalid(_))), "{h}");
        }
        assert!(matches!(p.verify("garbage", target(), NOW), Err(ProofError::Invalid(_))));
        assert!(matches!(p.verify(&"a".repeat(MAX_PROOF_LEN + 1), target(), NOW), Err(ProofError::Invalid(_))));
    }

    #[test]
    fn mutated_proofs_never_verify_and_never_panic() {
        // A fuzz pass over one genuine proof: every single-byte change, and random splices of
        // header and claims JSON, is refused (a mutated base64url character that decodes to the
        // same bytes is the only way to keep a valid proof, and then the jti is a replay).
        use rand::RngExt as _;
        let (p, client) = (proofs(), p256());
        let genuine = proof(&client, claims("fuzz"));
        let mut rng = rand::rng();
        let alphabet = b"ABCXYZabcxyz0189-_.={}\"%";
        for i in 0..genuine.len() {
            let mut bytes = genuine.clone().into_bytes();
            let replacement = alphabet[rng.random_range(0..alphabet.len())];
            if bytes[i] == replacement {
                continue;
            }
            bytes[i] = replacement;
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(p.verify(&mutated, target(), NOW).is_err(), "byte {i} changed: accepted");
        }
        let headers = [
            json!({"typ": PROOF_TYPE}),
            json!({"typ": PROOF_TYPE, "alg": "ES256", "jwk": "not an object"}),
            json!({"typ": PROOF_TYPE, "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "", "y": ""}}),
            json!({"typ": PROOF_TYPE, "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "!!", "y": "AA"}}),
            json!({"typ": PROOF_TYPE, "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}),
            json!({"typ": PROOF_TYPE, "alg": "RS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
            json!({"typ": 7, "alg": ["ES256"], "jwk": null}),
            json!([1, 2, 3]),
        ];
        let bodies =
            [json!({}), json!({"jti": 1, "htm": "POST", "htu": URL, "iat": "now"}), json!("text"), json!(null)];
        for h in &headers {
            for c in &bodies {
                let token = format!("{}.{}.AAAA", b64().encode(h.to_string()), b64().encode(c.to_string()));
                assert!(matches!(p.verify(&token, target(), NOW), Err(ProofError::Invalid(_))), "{h} {c}");
            }
        }
    }

    #[test]
    fn nonces_when_required_are_those_of_this_or_the_previous_window() {
        let p = Proofs::new(60_000, true, [9; 32]);
        let client = p256();
        assert_eq!(p.verify(&proof(&client, claims("no-nonce")), target(), NOW), Err(ProofError::UseNonce));
        let with = |jti: &str, nonce: &str| json!({"jti":jti,"htm":"POST","htu":URL,"iat":NOW/1000,"nonce":nonce});
        assert_eq!(p.verify(&proof(&client, with("bad", "made-up")), target(), NOW), Err(ProofError::UseNonce));
        let other = Proofs::new(60_000, true, [8; 32]).nonce(NOW);
        assert_eq!(p.verify(&proof(&client, with("other", &other)), target(), NOW), Err(ProofError::UseNonce));
        let earlier = p.nonce(NOW - NONCE_WINDOW_MS);
        p.verify(&proof(&client, with("prev", &earlier)), target(), NOW).unwrap();
        let old = p.nonce(NOW - 2 * NONCE_WINDOW_MS);
        assert_eq!(p.verify(&proof(&client, with("old", &old)), target(), NOW), Err(ProofError::UseNonce));
        p.verify(&proof(&client, with("now", &p.nonce(NOW))), target(), NOW).unwrap();
    }

    #[test]
    fn the_replay_cache_forgets_expired_proofs_and_refuses_when_full_of_live_ones() {
        let p = proofs();
        for i in 0..MAX_REMEMBERED_PROOFS {
            p.remember("k", &i.to_string(), NOW).unwrap();
        }
        assert_eq!(p.remember("k", "one-more", NOW), Err(ProofError::Busy));
        // After the window every entry is forgotten, and new proofs are accepted again.
        p.remember("k", "later", NOW + 120_001).unwrap();
        let seen = p.seen.lock().unwrap();
        assert_eq!(seen.until.len(), 1);
    }
}
