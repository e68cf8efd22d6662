//! Look-alike names: each UTS #39 confusable skeleton is claimed by one username key, in a record
//! of its own ([`NameClaim`]), before the user is written. `m` and `rn` share the skeleton `rn`, as
//! do `paypal` and `pаypаl` (Cyrillic а); whichever registers second finds the claim and is
//! refused, also when both register at once on two instances (they race on the one claim record).
//!
//! A claim left by a sign-up that failed after claiming (its user was never written) is stale once
//! it is [`STALE_AFTER_MS`] old: the next name with that skeleton takes it over by compare-and-swap.
//! A younger claim without its user is a sign-up still under way, and refuses the look-alike. Names registered before claims
//! existed hold none; the caller still compares the new name's skeleton with their keys.

use crate::clock::UnixMs;
use crate::store::{Cas, NameClaim, StoreError, UserStore, Versioned, retry_cas};

/// A claim whose user was not written this long after it was made is stale (a sign-up writes its
/// user within a second of the claim, or failed).
pub(super) const STALE_AFTER_MS: i64 = 60_000;

/// What [`claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claimed {
    /// The skeleton is `owner`'s now (newly claimed, taken over from a stale claim, or already so).
    Ours,
    /// Another registered name holds the skeleton: the new name looks like it.
    LooksLikeAnother,
}

/// Claims `skeleton` for the username key `owner`. One request when the skeleton is new (the
/// common case: a create that succeeds); a read, and a read of the holder's account, only when it
/// is taken.
pub(super) async fn claim(
    store: &dyn UserStore,
    skeleton: &str,
    owner: &str,
    now: UnixMs,
) -> Result<Claimed, StoreError> {
    let mine = NameClaim { owner_key: owner.to_string(), claimed_at_ms: now };
    retry_cas("name claim", None, |known: Option<Versioned<NameClaim>>| {
        let mine = &mine;
        async move {
            let Some(current) = known else {
                return match store.put_name_claim(skeleton, mine, None).await {
                    Ok(_) => Ok(Cas::Done(Claimed::Ours)),
                    Err(StoreError::Conflict) => Ok(Cas::Retry(store.get_name_claim(skeleton).await?)),
                    Err(e) => Err(e),
                };
            };
            if current.value.owner_key == owner {
                return Ok(Cas::Done(Claimed::Ours));
            }
            let holder = store.get_account(&current.value.owner_key).await?;
            if holder.is_some_and(|a| a.value.user.is_some()) || now - current.value.claimed_at_ms < STALE_AFTER_MS {
                return Ok(Cas::Done(Claimed::LooksLikeAnother));
            }
            // Stale: its sign-up never wrote the user. Take it over, unless it changed meanwhile.
            match store.put_name_claim(skeleton, mine, Some(&current.version)).await {
                Ok(_) => Ok(Cas::Done(Claimed::Ours)),
                Err(StoreError::Precondition | StoreError::NotFound) => {
                    Ok(Cas::Retry(store.get_name_claim(skeleton).await?))
                }
                Err(e) => Err(e),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedStore, MEMORY};
    use crate::store::{Account, UserRecord};

    fn store() -> EmbeddedStore {
        EmbeddedStore::open(std::path::Path::new(MEMORY)).unwrap()
    }

    async fn register(store: &EmbeddedStore, key: &str) {
        let mut account = Account::empty(key);
        account.user = Some(UserRecord {
            id: format!("id-{key}"),
            username: key.to_string(),
            username_key: key.to_string(),
            password_hash: "x".into(),
            roles: Vec::new(),
            disabled: false,
            created_at_ms: 0,
            identities: Vec::new(),
            factors: Default::default(),
            email: None,
        });
        store.put_account(&account, None).await.unwrap();
    }

    #[tokio::test]
    async fn the_first_claims_a_registered_holder_keeps_it_and_a_stale_claim_is_taken_over() {
        let store = store();
        assert_eq!(claim(&store, "rn", "m", 0).await.unwrap(), Claimed::Ours);
        assert_eq!(claim(&store, "rn", "m", 1).await.unwrap(), Claimed::Ours, "claiming again is no conflict");
        assert_eq!(
            claim(&store, "rn", "rn", 2).await.unwrap(),
            Claimed::LooksLikeAnother,
            "a young claim without its user is a sign-up under way"
        );
        // `m` never got its user (its sign-up failed after the claim): later the claim is stale.
        let later = STALE_AFTER_MS + 1;
        assert_eq!(claim(&store, "rn", "rn", later).await.unwrap(), Claimed::Ours, "a stale claim is taken over");
        assert_eq!(store.get_name_claim("rn").await.unwrap().unwrap().value.owner_key, "rn");
        register(&store, "rn").await;
        let much_later = later + 10 * STALE_AFTER_MS;
        assert_eq!(claim(&store, "rn", "m", much_later).await.unwrap(), Claimed::LooksLikeAnother);
    }

    #[tokio::test]
    async fn two_look_alikes_claiming_at_once_leave_exactly_one_holder() {
        let store = store();
        let (a, b) = tokio::join!(claim(&store, "rn", "m", 0), claim(&store, "rn", "rn", 0));
        let outcomes = [a.unwrap(), b.unwrap()];
        assert_eq!(outcomes.iter().filter(|c| **c == Claimed::Ours).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|c| **c == Claimed::LooksLikeAnother).count(), 1, "{outcomes:?}");
    }
}
