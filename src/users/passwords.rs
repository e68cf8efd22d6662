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

    async fn blocking<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
        let _permit = self.permits.acquire().await.map_err(StoreError::unavailable)?;
        tokio::task::spawn_blocking(job).await.map_err(StoreError::unavailable)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, StoreError> {
        let params = self.params.clone();
        let password = password.clone();
        self.blocking(move || Self::argon2(params).hash_password(password.expose().as_bytes()).map(|h| h.to_string()))
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
                self.hash(&Password::new(text)).await
            })
            .await
    }

    /// Whether `password` matches `phc`. With `phc = None` (unknown user) it verifies against the
    /// dummy hash, taking the same time, and answers `false`.
    pub async fn verify(&self, password: &Password, phc: Option<&str>) -> Result<bool, StoreError> {
        let (phc, real) = match phc {
            Some(p) => (p.to_string(), true),
            None => (self.dummy_hash().await?.clone(), false),
        };
        let password = password.clone();
        let matched = self
            .blocking(move || match PasswordHash::new(&phc) {
                Ok(parsed) => Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok(),
                Err(_) => false,
            })
            .await?;
        Ok(real && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let h = PasswordHasher::owasp();
        let phc = h.hash(&Password::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&Password::new("correct horse"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&Password::new("correct hors"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&Password::new("correct horse"), Some("not a phc string")).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_verify_but_do_the_work() {
        let h = PasswordHasher::owasp();
        assert!(!h.verify(&Password::new(""), None).await.unwrap());
        assert!(h.dummy.get().is_some(), "the dummy hash was computed and verified against");
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let h = PasswordHasher::owasp();
        let a = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        let b = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        assert_ne!(a, b);
    }
}
