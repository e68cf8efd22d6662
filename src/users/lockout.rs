//! Login throttling: one state machine, [`Lockout::attempt`], over pure rules of the stored
//! [`Account`], the client address and `now`.
//!
//! Failures count per (username, client address), so an attacker at one address locks only that
//! address out of the username, never its owner logging in from elsewhere; and per username over all
//! addresses, with a higher ceiling, as the backstop against guessing from many addresses. Both
//! count for usernames that do not exist too, so lockout reveals nothing about who has an account.
//! Failures older than the lockout window are forgotten.

use std::sync::Arc;

use super::{read_account, username_key};
use crate::clock::UnixMs;
use crate::keyed::KeyedLocks;
use crate::settings::Login;
use crate::store::{
    Account, AddressThrottle, LoginThrottle, Step, StoreError, UserRecord, UserStore, Versioned, update_account,
};

/// Login throttling for every check of a password against an account (login, a password change).
///
/// The rule: failures count per username and client address, and per username over all addresses
/// with a higher ceiling, whether or not the username exists; a count that reaches its ceiling
/// within the window refuses that address (or every address) until the window has passed. An
/// attempt from an address that already has failures counted is counted before its password is
/// checked, so parallel guesses never get more passwords checked than the ceiling allows, and the
/// count is given back when the password could not be checked. A right password clears the
/// address's count.
///
/// [`Lockout::attempt`] is the one entry point: it reserves, checks (the caller's password check),
/// then records or releases, in that order, each step one conditional update of the account.
#[derive(Debug, Clone)]
pub struct Lockout {
    policy: Login,
    /// One attempt per username and address at a time in this process; across processes the
    /// reservation keeps the count.
    turns: Arc<KeyedLocks<()>>,
}

/// What the caller's password check found (see [`Lockout::attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<T> {
    /// The password is right and the account may act; the caller goes on with `T`.
    Passed(T),
    /// Wrong password, unknown user or disabled account (alike by design): counted.
    Failed,
    /// The password could not be checked now (hashing saturated): not counted.
    Unchecked(&'static str),
}

/// The outcome of [`Lockout::attempt`].
// Returned and matched at once, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The check passed; its failures from this address are cleared.
    Passed {
        /// What the check passed on.
        outcome: T,
        /// The key the account lives under (the mapped key, or the legacy one).
        key: String,
        /// The account as it stands after the attempt, for a write that follows.
        account: Option<Versioned<Account>>,
    },
    /// The check failed; the failure is counted.
    Failed,
    /// Refused without checking the password, for this many milliseconds.
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// The password could not be checked now; nothing is counted.
    Unchecked(&'static str),
}

impl Lockout {
    /// Throttling with `policy`.
    pub fn new(policy: Login) -> Self {
        Self { policy, turns: Arc::default() }
    }

    /// One password attempt on `username` from `client` at `now`: refused while locked; else the
    /// attempt is reserved when this address already has failures, `check` runs on the user (if
    /// any; it must take the same time without one), and the result is recorded — a failure
    /// counted, a success clearing the address — or, when `check` could not run, the reservation
    /// released.
    pub async fn attempt<T, F, Fut>(
        &self,
        store: &dyn UserStore,
        username: &str,
        client: &str,
        now: UnixMs,
        check: F,
    ) -> Result<Attempt<T>, StoreError>
    where
        F: FnOnce(Option<UserRecord>) -> Fut,
        Fut: std::future::Future<Output = Result<Check<T>, StoreError>>,
    {
        let Ok(key) = username_key(username) else { return Ok(Attempt::Failed) };
        let policy = &self.policy;
        let _turn = self.turns.lock(format!("{key}\u{0}{client}")).await;
        let (key, read) = read_account(store, &key, username).await?;
        // Reserve: count the attempt first when failures are already recorded. `before`: the
        // account as it was before the reservation, if one was made.
        let (gate, account) = update_account(store, &key, read, |current| {
            let account = current.cloned().unwrap_or_else(|| Account::empty(&key));
            match gate(&account, client, now, policy) {
                Gate::Locked { retry_after_ms } => Step::Done(Err(retry_after_ms)),
                Gate::Open { reserve: false } => Step::Done(Ok(None)),
                Gate::Open { reserve: true } => {
                    let mut next = account.clone();
                    record_failure(&mut next, client, now, policy);
                    Step::Write(next, Ok(Some(account)))
                }
            }
        })
        .await?;
        let before = match gate {
            Ok(before) => before,
            Err(retry_after_ms) => return Ok(Attempt::Locked { retry_after_ms }),
        };
        // Check.
        let user = account.as_ref().and_then(|a| a.value.user.clone());
        let checked = check(user).await?;
        // Record or release.
        match (checked, before) {
            (Check::Unchecked(why), before) => {
                if before.is_some() {
                    change(store, &key, account, |a| release(a, client)).await?;
                }
                Ok(Attempt::Unchecked(why))
            }
            (Check::Passed(outcome), before) => {
                let reserved = before.is_some();
                let has_entry = account.as_ref().is_some_and(|a| a.value.addresses.iter().any(|t| t.address == client));
                let account = if reserved || has_entry {
                    change(store, &key, account, |a| record_success(a, client, reserved)).await?.1
                } else {
                    account
                };
                Ok(Attempt::Passed { outcome, key, account })
            }
            (Check::Failed, Some(before)) => {
                // The reservation already counted this failure.
                if let Some(after) = &account {
                    warn_if_locked(&before, &after.value, &key, client, now, policy);
                }
                Ok(Attempt::Failed)
            }
            (Check::Failed, None) => {
                let (before, after) = change(store, &key, account, |a| record_failure(a, client, now, policy)).await?;
                if let Some(after) = &after {
                    warn_if_locked(&before, &after.value, &key, client, now, policy);
                }
                Ok(Attempt::Failed)
            }
        }
    }
}

/// Applies `apply` to the account under `key` (last read as `known`); returns the account as it
/// was before the change that was written, and as written.
async fn change(
    store: &dyn UserStore,
    key: &str,
    known: Option<Versioned<Account>>,
    apply: impl Fn(&mut Account),
) -> Result<(Account, Option<Versioned<Account>>), StoreError> {
    update_account(store, key, known, |current| {
        let before = current.cloned().unwrap_or_else(|| Account::empty(key));
        let mut next = before.clone();
        apply(&mut next);
        Step::Write(next, before)
    })
    .await
}

/// Warns once, for the failure that set a lock (not for late guesses during it), naming the
/// username key and the client address.
fn warn_if_locked(before: &Account, after: &Account, key: &str, client: &str, now: UnixMs, policy: &Login) {
    if is_locked(after, client, now, policy) && !is_locked(before, client, now, policy) {
        let username_wide = after.throttle.locked_until_ms > now;
        tracing::warn!(username = %key, client_address = %client, username_wide, "login locked after repeated failures");
    }
}

/// Addresses remembered per username (the most recent failures win); older ones are forgotten,
/// and still count in the username-wide ceiling.
pub const MAX_ADDRESSES: usize = 32;

/// What a login attempt may do before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Refused without checking the password, for this many milliseconds.
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// May be checked. `reserve`: failures from this address are already recorded, so the attempt
    /// must be counted (with compare-and-swap) before the hash is evaluated.
    Open {
        /// Count the attempt first.
        reserve: bool,
    },
}

fn locked_for(t: &LoginThrottle, now: UnixMs) -> Option<i64> {
    (t.locked_until_ms > now).then(|| t.locked_until_ms - now)
}

/// Failures still inside the window (0 once the window or the lock is over).
fn live_failures(t: &LoginThrottle, now: UnixMs, policy: &Login) -> u32 {
    if t.locked_until_ms > now || (t.locked_until_ms == 0 && now - t.last_failure_ms < policy.lockout_ms) {
        t.failures
    } else {
        0
    }
}

fn address<'a>(account: &'a Account, address: &str) -> Option<&'a LoginThrottle> {
    account.addresses.iter().find(|a| a.address == address).map(|a| &a.throttle)
}

/// Whether an attempt from `client` may proceed at `now`.
fn gate(account: &Account, client: &str, now: UnixMs, policy: &Login) -> Gate {
    let here = address(account, client).copied().unwrap_or_default();
    let lock = [locked_for(&here, now), locked_for(&account.throttle, now)].into_iter().flatten().max();
    if let Some(retry_after_ms) = lock {
        return Gate::Locked { retry_after_ms };
    }
    Gate::Open { reserve: live_failures(&here, now, policy) > 0 }
}

/// One more failure at `now` on `throttle`, locking it for `lockout_ms` when it reaches `limit`. A
/// failure recorded while locked (a guess that passed the gate just before a parallel guess set
/// the lock) keeps the lock as it is: parallel guesses can never undo it.
fn fail(throttle: &LoginThrottle, now: UnixMs, limit: u32, policy: &Login) -> LoginThrottle {
    if throttle.locked_until_ms > now {
        return *throttle;
    }
    let failures = live_failures(throttle, now, policy).saturating_add(1);
    if failures >= limit {
        LoginThrottle { failures, last_failure_ms: now, locked_until_ms: now + policy.lockout_ms }
    } else {
        LoginThrottle { failures, last_failure_ms: now, locked_until_ms: 0 }
    }
}

/// Records one failure from `client` at `now` (also used to reserve an attempt before checking).
fn record_failure(account: &mut Account, client: &str, now: UnixMs, policy: &Login) {
    let here = address(account, client).copied().unwrap_or_default();
    let updated =
        AddressThrottle { address: client.to_string(), throttle: fail(&here, now, policy.max_failures, policy) };
    account.addresses.retain(|a| a.address != client && live_failures(&a.throttle, now, policy) > 0);
    account.addresses.insert(0, updated);
    account.addresses.truncate(MAX_ADDRESSES);
    account.throttle = fail(&account.throttle, now, policy.max_failures_per_username, policy);
    // A record that only counts failures may go once every lock and window is over.
    let until = std::iter::once(&account.throttle)
        .chain(account.addresses.iter().map(|a| &a.throttle))
        .map(|t| t.last_failure_ms.max(t.locked_until_ms))
        .max()
        .unwrap_or(now);
    account.expires_at_ms = Some(until + policy.lockout_ms);
}

/// After a successful login from `client`: its address starts afresh; a reservation made for the
/// attempt is taken back from the username-wide count.
fn record_success(account: &mut Account, client: &str, reserved: bool) {
    account.addresses.retain(|a| a.address != client);
    if reserved && account.throttle.locked_until_ms == 0 {
        account.throttle.failures = account.throttle.failures.saturating_sub(1);
    }
}

/// Takes back a reservation for an attempt whose password was never checked (the hashing queue
/// refused it).
fn release(account: &mut Account, client: &str) {
    if let Some(a) = account.addresses.iter_mut().find(|a| a.address == client && a.throttle.locked_until_ms == 0) {
        a.throttle.failures = a.throttle.failures.saturating_sub(1);
    }
    if account.throttle.locked_until_ms == 0 {
        account.throttle.failures = account.throttle.failures.saturating_sub(1);
    }
}

/// Whether `client` (or the whole username) is locked at `now`.
fn is_locked(account: &Account, client: &str, now: UnixMs, policy: &Login) -> bool {
    matches!(gate(account, client, now, policy), Gate::Locked { .. })
}

/// Clears every failure and lock of the username (`handler user unlock`).
pub fn unlock(account: &mut Account) {
    account.throttle = LoginThrottle::default();
    account.addresses.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Login = Login { max_failures: 3, max_failures_per_username: 5, lockout_ms: 60_000 };

    fn empty() -> Account {
        Account {
            username_key: "u".into(),
            user: None,
            throttle: LoginThrottle::default(),
            addresses: vec![],
            expires_at_ms: None,
        }
    }

    #[test]
    fn the_nth_failure_from_one_address_locks_only_that_address() {
        let mut a = empty();
        assert_eq!(gate(&a, "1.1.1.1", 0, &POLICY), Gate::Open { reserve: false });
        record_failure(&mut a, "1.1.1.1", 1_000, &POLICY);
        assert_eq!(gate(&a, "1.1.1.1", 1_000, &POLICY), Gate::Open { reserve: true });
        record_failure(&mut a, "1.1.1.1", 2_000, &POLICY);
        record_failure(&mut a, "1.1.1.1", 3_000, &POLICY);
        assert_eq!(gate(&a, "1.1.1.1", 3_000, &POLICY), Gate::Locked { retry_after_ms: 60_000 });
        assert_eq!(gate(&a, "2.2.2.2", 3_000, &POLICY), Gate::Open { reserve: false }, "the owner elsewhere may try");
        assert_eq!(gate(&a, "1.1.1.1", 63_000, &POLICY), Gate::Open { reserve: false });
    }

    #[test]
    fn the_username_wide_ceiling_locks_every_address() {
        let mut a = empty();
        for (i, now) in (0..5).zip(0..) {
            record_failure(&mut a, &format!("10.0.0.{i}"), now, &POLICY);
        }
        assert!(matches!(gate(&a, "192.0.2.1", 10, &POLICY), Gate::Locked { .. }));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut a = empty();
        record_failure(&mut a, "x", 0, &POLICY);
        record_failure(&mut a, "x", 1, &POLICY);
        record_failure(&mut a, "x", 60_001, &POLICY);
        assert_eq!(address(&a, "x").unwrap().failures, 1);
        assert_eq!(a.throttle.failures, 1);
    }

    #[test]
    fn failures_recorded_during_a_lock_keep_it() {
        let mut a = empty();
        for now in 0..3 {
            record_failure(&mut a, "x", now, &POLICY);
        }
        let locked = *address(&a, "x").unwrap();
        for now in 3..10 {
            record_failure(&mut a, "x", now, &POLICY);
        }
        assert_eq!(*address(&a, "x").unwrap(), locked);
    }

    #[test]
    fn success_clears_the_address_and_returns_the_reservation() {
        let mut a = empty();
        record_failure(&mut a, "x", 0, &POLICY);
        record_failure(&mut a, "x", 1, &POLICY); // the reservation of the attempt that succeeds
        record_success(&mut a, "x", true);
        assert!(address(&a, "x").is_none());
        assert_eq!(a.throttle.failures, 1);
        release(&mut a, "y");
        assert_eq!(a.throttle.failures, 0);
    }

    #[test]
    fn addresses_are_bounded() {
        let mut a = empty();
        let wide = Login { max_failures_per_username: 1_000, ..POLICY };
        for i in 0..100 {
            record_failure(&mut a, &format!("a{i}"), i, &wide);
        }
        assert_eq!(a.addresses.len(), MAX_ADDRESSES);
        assert_eq!(a.addresses[0].address, "a99");
        unlock(&mut a);
        assert_eq!(gate(&a, "a99", 100, &wide), Gate::Open { reserve: false });
    }
}
