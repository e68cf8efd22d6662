//! argon2id password hashing with OWASP parameters (19 MiB, 2 passes, 1 lane), run off the async
//! threads and bounded in parallelism so a burst of logins cannot exhaust memory.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::secret::Password;
use crate::store::StoreError;

/// Hashes on at most this many threads at once.
const MAX_PARALLEL_HASHES: usize = 4;

/// Hashes and verifies passwords.
#[derive(Debug)]
pub struct PasswordHasher {
    params: Params,
    permits: Semaphore,
    /// Hash of a random password, verified against when a username is unknown so that the answer
    /// takes as long as for a wrong password.
    dummy: OnceCell<String>,
}

impl PasswordHasher {
    /// OWASP's recommended argon2id parameters.
    pub fn owasp() -> Arc<Self> {
        Arc::new(Self {
            params: Params::default(),
            permits: Semaphore::new(MAX_PARALLEL_HASHES),
            dummy: OnceCell::new(),
        })
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Waits for one of the hashing slots. Hold it across the read of the record to verify and the
    /// verification, so the time between the two is the hash's own, never a queue's.
    pub async fn slot(&self) -> Result<HashSlot<'_>, StoreError> {
        Ok(HashSlot(self.permits.acquire().await.map_err(StoreError::unavailable)?))
    }

    async fn off_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(job).await.map_err(StoreError::unavailable)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, StoreError> {
        let _slot = self.slot().await?;
        self.hash_now(password).await
    }

    async fn hash_now(&self, password: &Password) -> Result<String, StoreError> {
        let params = self.params.clone();
        let password = password.clone();
        Self::off_thread(move || {
            Self::argon2(params).hash_password(password.expose().as_bytes()).map(|h| h.to_string())
        })
        .await?
        .map_err(|e| StoreError::unavailable(e.to_string()))
    }

    /// Computes the dummy hash now (called in the background at start-up, so the first login of an
    /// unknown user does not pay for it).
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.dummy_hash().await.map(|_| ())
    }

    async fn dummy_hash(&self) -> Result<&String, StoreError> {
        self.dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut random).map_err(StoreError::unavailable)?;
                let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
                // Computed once, outside the slots: callers waiting for it may hold every slot.
                self.hash_now(&Password::new(text)).await
            })
            .await
    }

    /// Whether `password` matches `phc`, using the caller's `slot`. With `phc = None` (unknown
    /// user) it verifies against the dummy hash, taking the same time, and answers `false`.
    pub async fn verify(
        &self,
        _slot: &HashSlot<'_>,
        password: &Password,
        phc: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (phc, real) = match phc {
            Some(p) => (p.to_string(), true),
            None => (self.dummy_hash().await?.clone(), false),
        };
        let password = password.clone();
        let matched = Self::off_thread(move || match PasswordHash::new(&phc) {
            Ok(parsed) => Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        })
        .await?;
        Ok(real && matched)
    }
}

/// One of the bounded hashing slots (see [`PasswordHasher::slot`]).
#[derive(Debug)]
pub struct HashSlot<'a>(#[allow(dead_code)] tokio::sync::SemaphorePermit<'a>);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let h = PasswordHasher::owasp();
        let phc = h.hash(&Password::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let slot = h.slot().await.unwrap();
        assert!(h.verify(&slot, &Password::new("correct horse"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&slot, &Password::new("correct hors"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&slot, &Password::new("correct horse"), Some("not a phc string")).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_but_do_the_work() {
        let h = PasswordHasher::owasp();
        let slot = h.slot().await.unwrap();
        assert!(!h.verify(&slot, &Password::new(""), None).await.unwrap());
        assert!(h.dummy.get().is_some(), "the dummy hash was computed and verified against");
    }

    #[tokio::test]
    async fn verifiers_holding_every_slot_still_get_the_dummy_hash() {
        let h = PasswordHasher::owasp();
        let mut slots = Vec::new();
        for _ in 0..MAX_PARALLEL_HASHES {
            slots.push(h.slot().await.unwrap());
        }
        let password = Password::new("x");
        let verified = tokio::time::timeout(std::time::Duration::from_secs(30), h.verify(&slots[0], &password, None));
        assert!(!verified.await.expect("no deadlock").unwrap());
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let h = PasswordHasher::owasp();
        let a = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        let b = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        assert_ne!(a, b);
    }
}
