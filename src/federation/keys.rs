//! A provider's signing keys, fetched like a careful client: HTTPS only (loopback http only with
//! the test setting), no redirects, a timeout and a size limit on every answer, cached for the
//! answer's `Cache-Control: max-age` (bounded), one fetch at a time per provider, and an unknown
//! `kid` refetching at most once per `KeyRefetchIntervalMs` — an attacker sending tokens with
//! random key ids cannot make the service hammer the provider. When a refetch fails, the last good
//! keys keep serving (Microsoft's key-rollover guidance); with none, sign-ins answer 503.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::FederationError;
use crate::clock::UnixMs;
use crate::settings::federation::{Federation, Provider, acceptable_url};

/// Largest discovery document or key set read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept of one key set.
pub const MAX_KEYS: usize = 64;
/// Keys are kept at least this long, whatever `max-age` says.
const MIN_CACHE_MS: i64 = 60_000;
/// … and at most this long.
const MAX_CACHE_MS: i64 = 24 * 3_600_000;
/// Without `max-age`: an hour.
const DEFAULT_CACHE_MS: i64 = 3_600_000;
/// After a failed fetch with no keys to serve, sign-ins answer 503 for this long before trying
/// again (at most the refetch interval).
const FAILED_FETCH_BACKOFF_MS: i64 = 5_000;

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for sign-in providers: {0}")]
pub struct ClientError(String);

/// The HTTP client shared by every provider.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    allow_http_loopback: bool,
    refetch_interval_ms: i64,
}

impl Fetcher {
    /// A client with the timeouts of `federation`.
    pub fn new(federation: &Federation) -> Result<Self, ClientError> {
        let timeout = Duration::from_millis(u64::try_from(federation.fetch_timeout_ms).unwrap_or(5_000));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!federation.allow_http_loopback)
            .user_agent(concat!("jwt-refresh-token/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            http,
            allow_http_loopback: federation.allow_http_loopback,
            refetch_interval_ms: federation.key_refetch_interval_ms,
        })
    }

    /// GETs `url` as JSON, at most [`MAX_DOCUMENT_BYTES`]; with the answer's cache lifetime.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<(T, i64), FederationError> {
        if !acceptable_url(url, self.allow_http_loopback) {
            return Err(FederationError::Unavailable("the provider named a key set URL that is not https"));
        }
        let mut response = self.http.get(url).header("accept", "application/json").send().await.map_err(|e| {
            tracing::warn!(url, error = %e, "sign-in provider did not answer");
            FederationError::Unavailable("the provider did not answer")
        })?;
        if !response.status().is_success() {
            tracing::warn!(url, status = response.status().as_u16(), "sign-in provider answered an error");
            return Err(FederationError::Unavailable("the provider answered an error"));
        }
        let too_large = FederationError::Unavailable("the provider's answer is too large");
        if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            tracing::warn!(url, "sign-in provider's answer exceeds the size limit");
            return Err(too_large);
        }
        let cache_ms = cache_lifetime_ms(response.headers().get("cache-control").and_then(|v| v.to_str().ok()));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                        tracing::warn!(url, "sign-in provider's answer exceeds the size limit");
                        return Err(too_large);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(url, error = %e, "sign-in provider's answer broke off");
                    return Err(FederationError::Unavailable("the provider did not answer"));
                }
            }
        }
        let value = serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(url, "sign-in provider's answer is not the expected JSON");
            FederationError::Unavailable("the provider's answer is malformed")
        })?;
        Ok((value, cache_ms))
    }
}

/// The cache lifetime of an answer: `max-age` clamped to a minute … a day; an hour without it.
fn cache_lifetime_ms(cache_control: Option<&str>) -> i64 {
    let max_age = cache_control.and_then(|v| {
        v.split(',')
            .filter_map(|d| d.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
            .and_then(|(_, n)| n.trim().trim_matches('"').parse::<i64>().ok())
    });
    max_age.map_or(DEFAULT_CACHE_MS, |s| s.saturating_mul(1000).clamp(MIN_CACHE_MS, MAX_CACHE_MS))
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// One usable key of a key set.
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, if it names one.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Default)]
struct Cached {
    keys: Vec<Arc<Key>>,
    /// When the keys should be fetched again.
    fresh_until_ms: UnixMs,
    /// When a fetch was last started (the refetch limit).
    last_fetch_ms: Option<UnixMs>,
    /// A failed fetch left no keys: 503 until then.
    failing_until_ms: UnixMs,
    /// The key set URL, once discovered.
    jwks_uri: Option<String>,
}

/// The key cache of one provider.
#[derive(Clone)]
pub struct KeySet {
    issuer: String,
    configured_uri: Option<String>,
    fetcher: Fetcher,
    cached: Arc<Mutex<Cached>>,
    /// One fetch at a time: the others wait and then use its keys.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// Whether `key` may verify `alg`: the key type fits, and its own `alg`, when given, is `alg`.
fn fits(key: &Key, alg: Algorithm) -> bool {
    key.decoding.family() == alg.family() && key.alg.is_none_or(|a| a == alg)
}

impl KeySet {
    /// An empty cache for `provider`'s keys.
    pub fn new(provider: &Provider, fetcher: Fetcher) -> Self {
        Self {
            issuer: provider.issuers.first().cloned().unwrap_or_default(),
            configured_uri: provider.jwks_uri.clone(),
            fetcher,
            cached: Arc::default(),
            fetching: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key `kid` of the current key set, fit for `alg` (without a `kid`: the only key that
    /// fits). Fetches when the cache is empty or stale, or (at most once per interval) when the
    /// `kid` is unknown.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm, now: UnixMs) -> Result<DecodingKey, FederationError> {
        for attempt in 0..2 {
            let (found, refetch) = {
                let cached = self.lock();
                let found = find(&cached.keys, kid, alg);
                let stale = now >= cached.fresh_until_ms;
                let may_refetch =
                    cached.last_fetch_ms.is_none_or(|at| now.saturating_sub(at) >= self.fetcher.refetch_interval_ms);
                match found {
                    Some(key) if !stale || !may_refetch => return Ok(key),
                    Some(key) => (Some(key), true),
                    None if cached.keys.is_empty() && now < cached.failing_until_ms => {
                        return Err(FederationError::Unavailable("the provider's keys could not be fetched"));
                    }
                    None if cached.keys.is_empty() || may_refetch => (None, true),
                    None => (None, false),
                }
            };
            if !refetch || attempt == 1 {
                return found
                    .ok_or(FederationError::Refused("the ID token's key id (kid) is not in the provider's key set"));
            }
            match self.refresh(now).await {
                Ok(()) => {}
                // The last good keys keep serving while the provider is away.
                Err(_) if found.is_some() => return found.ok_or(FederationError::Unavailable("unreachable")),
                Err(e) => return Err(e),
            }
        }
        Err(FederationError::Refused("the ID token's key id (kid) is not in the provider's key set"))
    }

    /// Fetches the key set once (a fetch another request started meanwhile counts).
    async fn refresh(&self, now: UnixMs) -> Result<(), FederationError> {
        let started_before = self.lock().last_fetch_ms;
        let _turn = self.fetching.lock().await;
        {
            let mut cached = self.lock();
            if cached.last_fetch_ms != started_before {
                // Someone fetched while we waited: use theirs.
                return if cached.keys.is_empty() {
                    Err(FederationError::Unavailable("the provider's keys could not be fetched"))
                } else {
                    Ok(())
                };
            }
            cached.last_fetch_ms = Some(now);
        }
        let result = self.fetch().await;
        let mut cached = self.lock();
        match result {
            Ok((keys, uri, cache_ms)) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "sign-in provider keys fetched");
                cached.keys = keys;
                cached.jwks_uri = Some(uri);
                cached.fresh_until_ms = now.saturating_add(cache_ms);
                cached.failing_until_ms = 0;
                Ok(())
            }
            Err(e) => {
                if cached.keys.is_empty() {
                    let backoff = FAILED_FETCH_BACKOFF_MS.min(self.fetcher.refetch_interval_ms);
                    cached.failing_until_ms = now.saturating_add(backoff);
                }
                // A discovered URL that failed is discovered again next time.
                if self.configured_uri.is_none() {
                    cached.jwks_uri = None;
                }
                Err(e)
            }
        }
    }

    /// The key set URL (configured, cached or discovered) and its keys.
    async fn fetch(&self) -> Result<(Vec<Arc<Key>>, String, i64), FederationError> {
        let known = self.configured_uri.clone().or_else(|| self.lock().jwks_uri.clone());
        let uri = match known {
            Some(uri) => uri,
            None => {
                let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
                let (discovery, _): (Discovery, _) = self.fetcher.get_json(&url).await?;
                if discovery.issuer != self.issuer {
                    tracing::warn!(expected = %self.issuer, found = %discovery.issuer, "discovery names another issuer");
                    return Err(FederationError::Unavailable("the provider's discovery document names another issuer"));
                }
                discovery.jwks_uri
            }
        };
        let (set, cache_ms): (JwkSet, i64) = self.fetcher.get_json(&uri).await?;
        let keys: Vec<Arc<Key>> = set.keys.into_iter().filter_map(usable).take(MAX_KEYS).map(Arc::new).collect();
        if keys.is_empty() {
            return Err(FederationError::Unavailable("the provider's key set holds no usable key"));
        }
        Ok((keys, uri, cache_ms))
    }
}

fn find(keys: &[Arc<Key>], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let mut fitting = keys.iter().filter(|k| fits(k, alg));
    let key = match kid {
        Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let only = fitting.next();
            if fitting.next().is_some() { None } else { only }
        }
    };
    key.map(|k| k.decoding.clone())
}

/// A signature key of a JWK Set: RSA (2048 bits or more), EC P-256 or Ed25519, not marked for
/// encryption. Symmetric (`oct`) keys are never used, so no published value can become an HMAC
/// secret.
fn usable(value: serde_json::Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            use base64::Engine as _;
            let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(rsa.n.trim_end_matches('=')).ok()?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return None;
            }
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve != EllipticCurve::P256 => return None,
        AlgorithmParameters::EllipticCurve(_) | AlgorithmParameters::OctetKeyPair(_) => {}
        _ => return None,
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        // A key meant for another algorithm never verifies ours.
        Some(_) => return None,
    };
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key { kid: jwk.common.key_id, alg, decoding })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetimes_follow_max_age_within_bounds() {
        assert_eq!(cache_lifetime_ms(Some("public, max-age=21600, must-revalidate")), 21_600_000);
        assert_eq!(cache_lifetime_ms(Some("max-age=5")), MIN_CACHE_MS);
        assert_eq!(cache_lifetime_ms(Some("max-age=99999999")), MAX_CACHE_MS);
        assert_eq!(cache_lifetime_ms(Some("no-cache")), DEFAULT_CACHE_MS);
        assert_eq!(cache_lifetime_ms(None), DEFAULT_CACHE_MS);
    }

    #[test]
    fn symmetric_short_and_encryption_keys_are_never_used() {
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(usable(oct).is_none());
        let short = serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "s"});
        assert!(usable(short).is_none());
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        assert!(usable(p384).is_none());
    }
}
