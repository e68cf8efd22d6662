//! Revoke-everyone: one store-wide time before which every session counts as ended.
//!
//! Ending every session of every user is one write (O(1)): the time is kept in a record of its own
//! in the accounts store, under a key no username can map to. Each instance caches it and reads it
//! again every [`REFRESH_INTERVAL`] in the background, so a refresh in steady state pays no extra
//! round trip, and a revoke-everyone is effective on every instance within that interval plus one
//! store read (the instance that wrote it, at once).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::UnixMs;
use crate::store::{Account, Cas, LoginThrottle, StoreError, UserStore, retry_cas};

/// How often each instance reads the epoch again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The record's key: it holds a NUL, which usernames never do.
const KEY: &str = "\u{0}sessions-epoch";

/// The cached epoch of this instance.
#[derive(Debug, Default)]
pub struct Epoch {
    revoked_before_ms: AtomicI64,
}

impl Epoch {
    /// Sessions that began before this time are ended (0: none).
    pub fn revoked_before_ms(&self) -> UnixMs {
        self.revoked_before_ms.load(Ordering::SeqCst)
    }

    /// Moves the epoch forward to `at` (never back).
    pub fn raise(&self, at: UnixMs) {
        self.revoked_before_ms.fetch_max(at, Ordering::SeqCst);
    }
}

/// The epoch as stored (0 when never set).
pub async fn read(store: &dyn UserStore) -> Result<UnixMs, StoreError> {
    Ok(store.get_account(KEY).await?.map_or(0, |a| a.value.throttle.last_failure_ms))
}

/// Stores the epoch `at` (or keeps a later one already stored); returns the stored value.
pub async fn write(store: &dyn UserStore, at: UnixMs) -> Result<UnixMs, StoreError> {
    let current = store.get_account(KEY).await?;
    retry_cas("sessions epoch", current, |current| async move {
        let stored = current.as_ref().map_or(0, |a| a.value.throttle.last_failure_ms);
        if stored >= at {
            return Ok(Cas::Done(stored));
        }
        let record = Account {
            username_key: KEY.to_string(),
            user: None,
            // The time lives in the throttle's timestamp; the record never expires.
            throttle: LoginThrottle { failures: 0, last_failure_ms: at, locked_until_ms: 0 },
            addresses: Vec::new(),
            expires_at_ms: None,
        };
        match store.put_account(&record, current.as_ref().map(|c| &c.version)).await {
            Ok(_) => Ok(Cas::Done(at)),
            Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                Ok(Cas::Retry(store.get_account(KEY).await?))
            }
            Err(e) => Err(e),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn the_epoch_only_moves_forward_and_is_not_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(read(&store).await.unwrap(), 0);
        assert_eq!(write(&store, 5_000).await.unwrap(), 5_000);
        assert_eq!(write(&store, 4_000).await.unwrap(), 5_000, "never back");
        assert_eq!(read(&store).await.unwrap(), 5_000);
        assert!(store.list_users().await.unwrap().is_empty());
        assert_eq!(store.purge_expired_accounts(i64::MAX).await.unwrap(), 0, "never purged");
        let cache = Epoch::default();
        cache.raise(7);
        cache.raise(3);
        assert_eq!(cache.revoked_before_ms(), 7);
    }
}
