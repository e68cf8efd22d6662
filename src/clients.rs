//! Introspection clients (RFC 7662 §2.1): the resource servers allowed to ask whether a token is
//! active, each authenticated with `client_secret_basic`. The rules live here: client ids, secrets
//! and their hash, the per-instance cache of client records and the per-client rate limit. HTTP
//! and the `handler clients …` commands both call [`ClientService`].
//!
//! A secret is 32 random bytes (base64url), so a keyed SHA-256 (HMAC under a fixed label, with the
//! client id) is enough to keep it from the store: nobody can guess 256 bits, so no slow hash is
//! needed. The comparison is constant-time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

use crate::clock::{Clock, UnixMs};
use crate::secret::Password;
use crate::service::ServiceError;
use crate::store::{ClientRecord, ClientStore, StoreError};

/// How long a client record read from the store is used before it is read again: a removed client
/// stops working on every instance within this time.
pub const CLIENT_CACHE_TTL_MS: i64 = 60_000;
/// Most client records one instance caches (and rate-limits) at once. Only clients that exist are
/// cached, so unknown ids cannot fill it; when full, expired entries go first, then the oldest.
pub const MAX_CACHED_CLIENTS: usize = 1_024;
/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Random bytes in a client secret.
const SECRET_BYTES: usize = 32;
/// Domain separation of the secret hash.
const HASH_LABEL: &[u8] = b"jwt-refresh-token/introspection-client-secret/v1";
/// The rate limit's window: `max_per_minute` requests per minute, as a token bucket.
const MINUTE_MS: i64 = 60_000;

/// A client id is 1 to [`MAX_CLIENT_ID_LEN`] of `A-Z a-z 0-9 . _ -`: safe in a Basic user-id,
/// a Cosmos document id and a log line.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The keyed SHA-256 of `secret` for `client_id`, as stored.
pub fn secret_hash(client_id: &str, secret: &[u8]) -> [u8; 32] {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(HASH_LABEL) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return [0u8; 32],
    };
    mac.update(&(client_id.len() as u64).to_be_bytes());
    mac.update(client_id.as_bytes());
    mac.update(secret);
    mac.finalize().into_bytes().into()
}

/// A client just added: its secret is shown once and never kept.
#[derive(Debug)]
pub struct NewClient {
    /// The client id.
    pub client_id: String,
    /// The client secret (base64url of 32 random bytes).
    pub client_secret: Password,
}

/// A cached client record and when it was read.
#[derive(Debug, Clone)]
struct Cached {
    client: ClientRecord,
    read_at_ms: UnixMs,
}

/// One client's token bucket: `tokens` as of `at_ms` (fractions count).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: UnixMs,
}

/// The introspection clients: add, list, remove, and authenticate with rate limiting.
#[derive(Debug, Clone)]
pub struct ClientService {
    store: Arc<dyn ClientStore>,
    clock: Arc<dyn Clock>,
    /// Requests one client may make per minute on this instance.
    max_per_minute: u32,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

/// What an unauthenticated caller is told (one answer for every cause).
const BAD_CLIENT: &str = "client authentication failed";

impl ClientService {
    /// A service over `store`, allowing each client `max_per_minute` requests per minute.
    pub fn new(store: Arc<dyn ClientStore>, clock: Arc<dyn Clock>, max_per_minute: u32) -> Self {
        Self { store, clock, max_per_minute, cache: Arc::default(), buckets: Arc::default() }
    }

    /// Adds a client under `client_id` with a fresh secret; `InvalidRequest` for an id that is
    /// not acceptable, `Conflict` when the id is taken.
    pub async fn add(&self, client_id: &str) -> Result<NewClient, ServiceError> {
        if !valid_client_id(client_id) {
            return Err(ServiceError::InvalidRequestOwned(format!(
                "a client id is 1 to {MAX_CLIENT_ID_LEN} letters, digits, '.', '_' or '-'"
            )));
        }
        let mut raw = [0u8; SECRET_BYTES];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut raw)
            .map_err(|e| ServiceError::Internal(format!("OS random number generator failed: {e}")))?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let record = ClientRecord {
            client_id: client_id.to_string(),
            secret_hash: secret_hash(client_id, secret.as_bytes()),
            created_at_ms: self.clock.now_ms(),
        };
        match self.store.insert_client(&record).await {
            Ok(()) => Ok(NewClient { client_id: record.client_id, client_secret: Password::new(secret) }),
            Err(StoreError::Conflict) => Err(ServiceError::Conflict("a client with this id exists")),
            Err(e) => Err(e.into()),
        }
    }

    /// Every client, by id (never a secret: only hashes are kept).
    pub async fn list(&self) -> Result<Vec<ClientRecord>, ServiceError> {
        Ok(self.store.list_clients().await?)
    }

    /// Removes a client; `NotFound` when there is none. Instances that cached it stop accepting it
    /// within [`CLIENT_CACHE_TTL_MS`]; this one at once.
    pub async fn remove(&self, client_id: &str) -> Result<(), ServiceError> {
        self.lock_cache().remove(client_id);
        if self.store.delete_client(client_id).await? { Ok(()) } else { Err(ServiceError::NotFound("no such client")) }
    }

    /// Authenticates `client_id` with `secret` and counts the request in its rate limit. Unknown
    /// ids and wrong secrets are [`ServiceError::InvalidClient`] alike; a client over its limit is
    /// [`ServiceError::RateLimited`]. At most one store read, and none while the record is cached.
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Result<(), ServiceError> {
        if !valid_client_id(client_id) {
            return Err(ServiceError::InvalidClient(BAD_CLIENT));
        }
        let now = self.clock.now_ms();
        // Hashed before the lookup: a known and an unknown id cost the same work here.
        let presented = secret_hash(client_id, secret.as_bytes());
        let client = match self.cached(client_id, now) {
            Some(client) => client,
            None => {
                let client = self.store.get_client(client_id).await?.ok_or(ServiceError::InvalidClient(BAD_CLIENT))?;
                self.remember(client.clone(), now);
                client
            }
        };
        if !bool::from(presented.ct_eq(&client.secret_hash)) {
            return Err(ServiceError::InvalidClient(BAD_CLIENT));
        }
        self.take_token(client_id, now).map_err(|retry_after_ms| ServiceError::RateLimited { retry_after_ms })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(&self, client_id: &str, now: UnixMs) -> Option<ClientRecord> {
        self.lock_cache()
            .get(client_id)
            .filter(|c| now.saturating_sub(c.read_at_ms) < CLIENT_CACHE_TTL_MS)
            .map(|c| c.client.clone())
    }

    fn remember(&self, client: ClientRecord, now: UnixMs) {
        let mut cache = self.lock_cache();
        if cache.len() >= MAX_CACHED_CLIENTS && !cache.contains_key(&client.client_id) {
            cache.retain(|_, c| now.saturating_sub(c.read_at_ms) < CLIENT_CACHE_TTL_MS);
            if cache.len() >= MAX_CACHED_CLIENTS
                && let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.read_at_ms).map(|(id, _)| id.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(client.client_id.clone(), Cached { client, read_at_ms: now });
    }

    /// Takes one request from the client's bucket (capacity and refill: `max_per_minute` per
    /// minute); `Err(ms until one is available)` when empty. Buckets exist only for
    /// authenticated clients and are bounded like the cache.
    fn take_token(&self, client_id: &str, now: UnixMs) -> Result<(), i64> {
        let capacity = f64::from(self.max_per_minute.max(1));
        let per_ms = capacity / MINUTE_MS as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CACHED_CLIENTS && !buckets.contains_key(client_id) {
            // A bucket that refilled completely holds no state worth keeping.
            buckets.retain(|_, b| b.tokens + (now - b.at_ms) as f64 * per_ms < capacity);
            if buckets.len() >= MAX_CACHED_CLIENTS
                && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at_ms).map(|(id, _)| id.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(client_id.to_string()).or_insert(Bucket { tokens: capacity, at_ms: now });
        let elapsed = now.saturating_sub(bucket.at_ms).max(0) as f64;
        let tokens = (bucket.tokens + elapsed * per_ms).min(capacity);
        *bucket = Bucket { tokens, at_ms: now.max(bucket.at_ms) };
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            Err((((1.0 - tokens) / per_ms).ceil() as i64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::embedded::{EmbeddedStore, MEMORY};

    fn service(per_minute: u32) -> (ClientService, Arc<ManualClock>) {
        let store = Arc::new(EmbeddedStore::open(std::path::Path::new(MEMORY)).unwrap());
        let clock = Arc::new(ManualClock::new(1_000_000));
        (ClientService::new(store, clock.clone(), per_minute), clock)
    }

    fn secret(c: &NewClient) -> String {
        c.client_secret.expose().to_string()
    }

    #[test]
    fn client_ids_are_short_and_plain() {
        for good in ["orders-api", "a", "svc_1.prod"] {
            assert!(valid_client_id(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_client_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_depends_on_the_client_and_the_secret() {
        assert_ne!(secret_hash("a", b"s"), secret_hash("b", b"s"));
        assert_ne!(secret_hash("a", b"s"), secret_hash("a", b"t"));
        assert_eq!(secret_hash("a", b"s"), secret_hash("a", b"s"));
    }

    #[tokio::test]
    async fn a_client_authenticates_with_its_secret_only() {
        let (clients, _) = service(100);
        let new = clients.add("orders-api").await.unwrap();
        assert_eq!(secret(&new).len(), 43, "32 bytes, base64url without padding");
        clients.authenticate("orders-api", &secret(&new)).await.unwrap();
        let wrong = clients.authenticate("orders-api", "nope").await.unwrap_err();
        assert!(matches!(wrong, ServiceError::InvalidClient(_)), "{wrong:?}");
        let unknown = clients.authenticate("other", &secret(&new)).await.unwrap_err();
        assert!(matches!(unknown, ServiceError::InvalidClient(_)), "{unknown:?}");
        assert!(matches!(clients.add("orders-api").await, Err(ServiceError::Conflict(_))));
    }

    #[tokio::test]
    async fn unknown_ids_are_not_cached() {
        let (clients, _) = service(100);
        for i in 0..50 {
            let _ = clients.authenticate(&format!("nobody-{i}"), "x").await;
        }
        assert!(clients.lock_cache().is_empty());
    }

    #[tokio::test]
    async fn a_removed_client_fails_on_other_instances_after_the_ttl() {
        let (clients, clock) = service(100);
        let other = ClientService::new(clients.store.clone(), clock.clone(), 100);
        let new = clients.add("svc").await.unwrap();
        other.authenticate("svc", &secret(&new)).await.unwrap();
        clients.remove("svc").await.unwrap();
        assert!(clients.authenticate("svc", &secret(&new)).await.is_err(), "the removing instance at once");
        other.authenticate("svc", &secret(&new)).await.unwrap();
        clock.advance(CLIENT_CACHE_TTL_MS);
        assert!(matches!(other.authenticate("svc", &secret(&new)).await, Err(ServiceError::InvalidClient(_))));
        assert!(matches!(clients.remove("svc").await, Err(ServiceError::NotFound(_))));
    }

    #[tokio::test]
    async fn the_bucket_empties_and_refills_over_the_minute() {
        let (clients, clock) = service(3);
        let new = clients.add("svc").await.unwrap();
        for _ in 0..3 {
            clients.authenticate("svc", &secret(&new)).await.unwrap();
        }
        match clients.authenticate("svc", &secret(&new)).await {
            Err(ServiceError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 20_000),
            other => panic!("{other:?}"),
        }
        clock.advance(20_000);
        clients.authenticate("svc", &secret(&new)).await.unwrap();
        assert!(clients.authenticate("svc", &secret(&new)).await.is_err());
    }

    #[tokio::test]
    async fn a_wrong_secret_uses_no_budget() {
        let (clients, _) = service(1);
        let new = clients.add("svc").await.unwrap();
        for _ in 0..5 {
            let _ = clients.authenticate("svc", "wrong").await;
        }
        clients.authenticate("svc", &secret(&new)).await.unwrap();
    }
}
