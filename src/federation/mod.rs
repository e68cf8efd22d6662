//! Sign-in with another provider's OpenID Connect ID token (Sign in with Apple, Google,
//! Microsoft, any OpenID provider): [`Verifier::verify`] checks a token the way its vendor
//! documents it, against the provider's published keys ([`keys`]), and says who it names.
//!
//! Checks, in order: the provider is configured; the header's `alg` is on the provider's
//! allow-list (never `none` or an HMAC, so a published key can never serve as an HMAC secret);
//! the key of the header's `kid` (refetched at most once per interval when unknown), whose type
//! and own `alg` fit; the signature; `iss` exactly (Microsoft: the issuer with the token's `tid`
//! filled in, and the tenant allowed); `aud` among the audiences, and `azp`, when present, too;
//! `exp`, `nbf` and `iat` within the clock skew; the nonce per `NonceMode`; `email_verified` when
//! required. What the token names is [`Verified`]; single use is the caller's to enforce (the
//! store keeps a marker per token until it expires).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clock::UnixMs;
use crate::settings::federation::{Federation, IdTokenAlgorithm, NonceMode, Provider, TENANT_PLACEHOLDER, Tenants};

pub mod keys;

/// Longest ID token accepted.
pub const MAX_ID_TOKEN_LEN: usize = 16 * 1024;
/// Longest raw nonce accepted.
pub const MAX_NONCE_LEN: usize = 512;
/// Failure windows remembered at once (the oldest are dropped first).
const MAX_TRACKED: usize = 10_000;
/// Longest subject accepted (OpenID Connect Core §2: at most 255 ASCII characters).
const MAX_SUBJECT_LEN: usize = 255;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// No provider of that name is configured.
    #[error("unknown provider")]
    UnknownProvider,
    /// The token failed a check; the text says which (safe to show: the client holds the token).
    #[error("ID token refused: {0}")]
    Refused(&'static str),
    /// The provider's keys could not be had (unreachable, slow, too large, malformed); retrying
    /// later may succeed.
    #[error("sign-in provider unavailable: {0}")]
    Unavailable(&'static str),
}

/// What a verified ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's name.
    pub provider: String,
    /// The provider's stable id of the person (`sub`).
    pub subject: String,
    /// The e-mail address the token carries, if any (informational: never used to link).
    pub email: Option<String>,
    /// Whether the provider says it verified that address.
    pub email_verified: bool,
    /// A display name the token carries (`name`, `given_name`, `preferred_username`), if any.
    pub name: Option<String>,
    /// When the token expires (the replay marker lives this long).
    pub expires_at_ms: UnixMs,
    /// SHA-256 of the whole token, hex: the key of its single-use marker.
    pub token_hash: String,
    /// The token's `amr` values, if any (RFC 8176).
    pub amr: Vec<String>,
    /// The provider is trusted to assert MFA (`TrustMfa`) and this token's `amr` holds `mfa`.
    pub mfa_asserted: bool,
}

/// The claims read from an ID token.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    iat: i64,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, or (Sign in with Apple) the string `"true"`/`"false"`.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
}

fn jwt_algorithm(a: IdTokenAlgorithm) -> Algorithm {
    match a {
        IdTokenAlgorithm::Rs256 => Algorithm::RS256,
        IdTokenAlgorithm::Ps256 => Algorithm::PS256,
        IdTokenAlgorithm::Es256 => Algorithm::ES256,
        IdTokenAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// Verifies ID tokens of the configured providers, each with its own key cache.
#[derive(Debug, Clone)]
pub struct Verifier {
    providers: Arc<HashMap<String, (Provider, keys::KeySet)>>,
    clock_skew_ms: i64,
}

impl Verifier {
    /// A verifier of `federation`'s providers, allowing `clock_skew_ms` on the token times;
    /// `None` when no provider is configured.
    pub fn new(federation: &Federation, clock_skew_ms: i64) -> Result<Option<Self>, keys::ClientError> {
        if federation.providers.is_empty() {
            return Ok(None);
        }
        let fetcher = keys::Fetcher::new(federation)?;
        let providers = federation
            .providers
            .iter()
            .map(|p| (p.name.clone(), (p.clone(), keys::KeySet::new(p, fetcher.clone()))))
            .collect();
        Ok(Some(Self { providers: Arc::new(providers), clock_skew_ms }))
    }

    /// The configured provider names, sorted.
    pub fn provider_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether a provider called `name` is configured.
    pub fn knows(&self, name: &str) -> bool {
        self.providers.contains_key(&name.to_ascii_lowercase())
    }

    /// Verifies `token` as an ID token of `provider` for a sign-in that sent `nonce`, at `now`.
    pub async fn verify(
        &self,
        provider: &str,
        token: &str,
        nonce: Option<&str>,
        now: UnixMs,
    ) -> Result<Verified, FederationError> {
        let (config, keys) =
            self.providers.get(&provider.to_ascii_lowercase()).ok_or(FederationError::UnknownProvider)?;
        if token.len() > MAX_ID_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(FederationError::Refused("the ID token is not a signed JWT"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| FederationError::Refused("the ID token header is malformed"))?;
        let alg = config
            .algorithms
            .iter()
            .map(|a| jwt_algorithm(*a))
            .find(|a| *a == header.alg)
            .ok_or(FederationError::Refused("the ID token's alg is not one this provider may use"))?;
        let key = keys.key(header.kid.as_deref(), alg, now).await?;
        let mut validation = Validation::new(alg);
        validation.leeway = u64::try_from(self.clock_skew_ms / 1000).unwrap_or(0);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_audience(&config.audiences);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            FederationError::Refused(match e.kind() {
                ErrorKind::InvalidSignature => "the ID token's signature does not verify",
                ErrorKind::ExpiredSignature => "the ID token expired",
                ErrorKind::ImmatureSignature => "the ID token is not valid yet (nbf)",
                ErrorKind::InvalidAudience => "the ID token was issued to another audience",
                ErrorKind::MissingRequiredClaim(_) => "the ID token lacks a required claim (iss, sub, aud, exp, iat)",
                ErrorKind::InvalidAlgorithm => "the ID token's key does not fit its alg",
                _ => "the ID token is malformed",
            })
        })?;
        let claims = data.claims;
        check_issuer(config, &claims)?;
        if claims.iat.saturating_mul(1000) > now.saturating_add(self.clock_skew_ms) {
            return Err(FederationError::Refused("the ID token was issued in the future (iat)"));
        }
        if let Some(azp) = &claims.azp
            && !config.audiences.iter().any(|a| a == azp)
        {
            return Err(FederationError::Refused("the ID token's authorized party (azp) is not an accepted audience"));
        }
        check_nonce(config.nonce, claims.nonce.as_deref(), nonce)?;
        let email_verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        if config.require_email_verified && (claims.email.is_none() || !email_verified) {
            return Err(FederationError::Refused("the provider does not say the e-mail address is verified"));
        }
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_LEN || claims.sub.chars().any(char::is_control) {
            return Err(FederationError::Refused("the ID token's subject is empty or too long"));
        }
        let name = claims.name.or(claims.given_name).or(claims.preferred_username);
        let amr: Vec<String> = claims.amr.unwrap_or_default().into_iter().take(16).collect();
        let mfa_asserted = config.trust_mfa && amr.iter().any(|a| a == "mfa");
        Ok(Verified {
            provider: config.name.clone(),
            subject: claims.sub,
            email: claims.email.filter(|e| e.len() <= 320),
            email_verified,
            name: name.filter(|n| n.len() <= 256),
            expires_at_ms: claims.exp.saturating_mul(1000),
            token_hash: hex(&Sha256::digest(token.as_bytes())),
            amr,
            mfa_asserted,
        })
    }
}

/// Refused ID-token exchanges per key (client address, or provider subject) in a window, on
/// this instance: a client sending garbage, or replaying one person's tokens, is answered 429.
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, (UnixMs, u32)>>,
}

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (UnixMs, u32)>> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(retry_after_ms)` while `key` has `max` failures in the window that began at its first.
    pub fn check(&self, key: &str, max: u32, window_ms: i64, now: UnixMs) -> Result<(), i64> {
        match self.lock().get(key) {
            Some((start, n)) if *n >= max && now - *start < window_ms => Err(start + window_ms - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `key` at `now`.
    pub fn count(&self, key: &str, window_ms: i64, now: UnixMs) {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, (start, _)| now - *start < window_ms);
            if map.len() >= MAX_TRACKED {
                // Still full of live windows: forget the oldest rather than grow.
                if let Some(oldest) = map.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(key.to_string()).or_insert((now, 0));
        if now - entry.0 >= window_ms {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// A sign-in by ID token at the HTTP edge: the verifier, and the count of refused exchanges.
#[derive(Debug)]
pub struct SignIn {
    /// Verifies the tokens.
    pub verifier: Verifier,
    /// Refused exchanges per client address and per provider subject.
    pub failures: Failures,
    /// Refusals allowed per key in the window.
    pub max_failures: u32,
    /// The failure window.
    pub failure_window_ms: i64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `iss` exactly as configured; Microsoft's multi-tenant issuer with the token's `tid` in place of
/// `{tenantid}`, the tenant on the allow-list (Microsoft identity platform, "Validate the issuer").
fn check_issuer(config: &Provider, claims: &Claims) -> Result<(), FederationError> {
    let refused = FederationError::Refused("the ID token's issuer is not this provider's");
    for issuer in &config.issuers {
        if !issuer.contains(TENANT_PLACEHOLDER) {
            if *issuer == claims.iss {
                return Ok(());
            }
            continue;
        }
        let Some(tid) = claims.tid.as_deref() else { continue };
        let tid_ok = tid.len() == 36 && tid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !tid_ok || issuer.replace(TENANT_PLACEHOLDER, tid) != claims.iss {
            continue;
        }
        return match &config.tenants {
            Some(Tenants::Only(allowed)) if !allowed.iter().any(|t| t.eq_ignore_ascii_case(tid)) => {
                Err(FederationError::Refused("the ID token's tenant (tid) is not allowed to sign in"))
            }
            _ => Ok(()),
        };
    }
    Err(refused)
}

/// The nonce check: `raw`, the token's `nonce` equals the one sent; `sha256`, it equals the
/// lowercase hex SHA-256 of the one sent. Either way both must be there.
fn check_nonce(mode: NonceMode, in_token: Option<&str>, sent: Option<&str>) -> Result<(), FederationError> {
    let expected = match (mode, sent) {
        (NonceMode::None, _) => return Ok(()),
        (_, None) => return Err(FederationError::Refused("this provider needs the nonce of the sign-in request")),
        (NonceMode::Raw, Some(raw)) => raw.to_string(),
        (NonceMode::Sha256, Some(raw)) => hex(&Sha256::digest(raw.as_bytes())),
    };
    let Some(in_token) = in_token else {
        return Err(FederationError::Refused("the ID token carries no nonce"));
    };
    if bool::from(in_token.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(FederationError::Refused("the ID token's nonce does not match the nonce sent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_a_key_for_the_rest_of_its_window() {
        let f = Failures::default();
        for t in 0..3 {
            assert!(f.check("a", 3, 1_000, t).is_ok());
            f.count("a", 1_000, t);
        }
        assert_eq!(f.check("a", 3, 1_000, 10), Err(990));
        assert!(f.check("b", 3, 1_000, 10).is_ok(), "other keys are unaffected");
        assert!(f.check("a", 3, 1_000, 1_000).is_ok(), "a new window");
    }

    #[test]
    fn nonce_modes() {
        assert!(check_nonce(NonceMode::None, None, None).is_ok());
        assert!(check_nonce(NonceMode::Raw, Some("n-1"), Some("n-1")).is_ok());
        assert!(check_nonce(NonceMode::Raw, Some("n-1"), Some("n-2")).is_err());
        assert!(check_nonce(NonceMode::Raw, Some("n-1"), None).is_err());
        assert!(check_nonce(NonceMode::Raw, None, Some("n-1")).is_err());
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(check_nonce(NonceMode::Sha256, Some(abc), Some("abc")).is_ok());
        assert!(check_nonce(NonceMode::Sha256, Some("abc"), Some("abc")).is_err(), "the raw nonce is not its hash");
        assert!(check_nonce(NonceMode::Sha256, Some(&abc.to_uppercase()), Some("abc")).is_err(), "lowercase hex");
    }

    fn microsoft(tenants: Tenants) -> Provider {
        Provider {
            name: "microsoft".into(),
            issuers: vec!["https://login.microsoftonline.com/{tenantid}/v2.0".into()],
            audiences: vec!["app".into()],
            jwks_uri: None,
            nonce: NonceMode::Raw,
            require_email_verified: false,
            algorithms: vec![IdTokenAlgorithm::Rs256],
            tenants: Some(tenants),
            trust_mfa: false,
        }
    }

    fn claims(iss: &str, tid: Option<&str>) -> Claims {
        serde_json::from_value(serde_json::json!({"iss": iss, "sub": "s", "exp": 1, "iat": 1, "tid": tid})).unwrap()
    }

    #[test]
    fn microsoft_issuers_name_the_tokens_tenant_and_the_tenant_must_be_allowed() {
        let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let iss = format!("https://login.microsoftonline.com/{tid}/v2.0");
        assert!(check_issuer(&microsoft(Tenants::Any), &claims(&iss, Some(tid))).is_ok());
        assert!(check_issuer(&microsoft(Tenants::Only(vec![tid.into()])), &claims(&iss, Some(tid))).is_ok());
        let other = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        assert!(check_issuer(&microsoft(Tenants::Only(vec![other.into()])), &claims(&iss, Some(tid))).is_err());
        assert!(check_issuer(&microsoft(Tenants::Any), &claims(&iss, Some(other))).is_err(), "tid must match iss");
        assert!(check_issuer(&microsoft(Tenants::Any), &claims(&iss, None)).is_err(), "tid is required");
        let templated = "https://login.microsoftonline.com/{tenantid}/v2.0";
        assert!(check_issuer(&microsoft(Tenants::Any), &claims(templated, Some(tid))).is_err());
    }
}
