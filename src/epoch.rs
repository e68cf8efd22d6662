//! Revoke-everyone: one store-wide time before which every session counts as ended.
//!
//! Ending every session of every user is one write (O(1)): the store keeps the time in a record of
//! its own ([`crate::store::SessionStore::raise_sessions_epoch`]). Each instance caches it and reads it
//! again every [`REFRESH_INTERVAL`] in the background, so a refresh in steady state pays no extra
//! round trip, and a revoke-everyone is effective on every instance within that interval plus one
//! store read (the instance that wrote it, at once).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::UnixMs;

/// How often each instance reads the epoch again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_epoch_only_moves_forward() {
        let cache = Epoch::default();
        cache.raise(7);
        cache.raise(3);
        assert_eq!(cache.revoked_before_ms(), 7);
    }
}
