//! Login throttling: one state machine, [`Lockout::attempt`], over pure rules of the stored
//! [`Account`], who is attempting ([`Origin`]) and `now`.
//!
//! An attempt presenting a valid device token of the user (see [`super::device`]) is counted in
//! that device's own throttle only: a few failures lock that device for a while, and failures from
//! other devices or addresses never block it, so lockout cannot be turned against the owner. Every
//! other attempt counts per (username, client address) — an attacker at one address locks only
//! that address out of the username — and in the username-wide budget over all addresses, the
//! backstop against guessing from many addresses; each repeated exhaustion of that budget doubles
//! its lock, up to [`MAX_LOCK_DOUBLINGS`] doublings. A request without a client address (invocation
//! mode without a forwarded one) has no per-address throttle, never a bucket shared with every
//! other such request. All of it counts for usernames that do not exist too, so lockout reveals
//! nothing about who has an account. Failures older than the lockout window are forgotten.

use std::sync::Arc;

use super::device::{DeviceTokens, Pseudonyms};
use super::{read_account, username_key};
use crate::clock::UnixMs;
use crate::keyed::KeyedLocks;
use crate::settings::Login;
use crate::store::{
    Account, AddressThrottle, DeviceThrottle, LoginThrottle, Step, StoreError, UserRecord, UserStore, Versioned,
    update_account,
};

/// Login throttling for every check of a password against an account (login, a password change).
///
/// The rule: an attempt with a valid device token counts in its device's throttle; every other
/// attempt counts per username and client address, and in the username-wide budget, whether or
/// not the username exists; a count that reaches its ceiling within the window refuses that
/// device, address (or every attempt without a device token) until its lock has passed. Every
/// attempt without a device token is counted against the username-wide budget before its password
/// is checked (one conditional account update), so parallel guesses on any number of instances
/// never get more passwords checked than the budget allows; a device's attempt is counted first
/// once the device has failures. The count is given back when the password was right or could not
/// be checked. A right password clears the address's (or device's) count.
///
/// [`Lockout::attempt`] is the one entry point: it reserves, checks (the caller's password check),
/// then records or releases, in that order, each step one conditional update of the account.
#[derive(Debug, Clone)]
pub struct Lockout {
    policy: Login,
    /// One attempt per username and address at a time in this process; across processes the
    /// reservation keeps the count.
    turns: Arc<KeyedLocks<()>>,
    /// Verifies device tokens; without it, none counts.
    devices: Option<DeviceTokens>,
    /// Names usernames in the lock warning.
    pseudonyms: Pseudonyms,
}

/// Who attempts a login: the client address (`None` when no trusted source names one) and the
/// device token the client presented, if any (verified against the account by the lockout).
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The client address key (see `http::client_address`).
    pub address: Option<&'a str>,
    /// A device token as presented (unverified).
    pub device_token: Option<&'a str>,
}

impl<'a> From<&'a str> for Origin<'a> {
    fn from(address: &'a str) -> Self {
        Self { address: Some(address), device_token: None }
    }
}

/// What the caller's password check found (see [`Lockout::attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<T> {
    /// The password is right and the account may act; the caller goes on with `T`.
    Passed(T),
    /// The password is right but the login needs a second step: the reservation is given back,
    /// and nothing is cleared — failures of second steps (wrong codes) add up across logins whose
    /// passwords pass, so knowing the password does not reset the count of guessed codes.
    PassedFirstStep(T),
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

/// Which throttle an attempt counts in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bucket<'a> {
    /// A verified device of the user (its id).
    Device(String),
    /// No valid device token: the address (if any) and the username-wide budget.
    Shared(Option<&'a str>),
}

impl Lockout {
    /// Throttling with `policy`; device tokens count as none until [`Lockout::with_keys`], and
    /// log pseudonyms are keyed per process.
    pub fn new(policy: Login) -> Self {
        Self { policy, turns: Arc::default(), devices: None, pseudonyms: Pseudonyms::random() }
    }

    /// Recognises device tokens with `devices` and names usernames in logs with `pseudonyms`.
    #[must_use]
    pub fn with_keys(mut self, devices: DeviceTokens, pseudonyms: Pseudonyms) -> Self {
        self.devices = Some(devices);
        self.pseudonyms = pseudonyms;
        self
    }

    /// The keyed pseudonym of a username key, for logs.
    pub fn pseudonym(&self, username_key: &str) -> String {
        self.pseudonyms.of(username_key)
    }

    /// One password attempt on `username` by `origin` at `now`: refused while locked; else the
    /// attempt is reserved (always without a valid device token; with one, when the device
    /// already has failures), `check` runs on the user (if any; it must take the same time without
    /// one), and the result is recorded — a failure counted, a success clearing the address or
    /// device and giving the reservation back — or, when `check` could not run, the reservation
    /// released.
    pub async fn attempt<'o, T, F, Fut>(
        &self,
        store: &dyn UserStore,
        username: &str,
        origin: impl Into<Origin<'o>>,
        now: UnixMs,
        check: F,
    ) -> Result<Attempt<T>, StoreError>
    where
        F: FnOnce(Option<UserRecord>) -> Fut,
        Fut: std::future::Future<Output = Result<Check<T>, StoreError>>,
    {
        let origin = origin.into();
        let Ok(key) = username_key(username) else { return Ok(Attempt::Failed) };
        let policy = &self.policy;
        // Attempts of one bucket take turns (keyed by what was presented, known before the read).
        let turn =
            format!("{key}\u{0}{}\u{0}{}", origin.address.unwrap_or_default(), origin.device_token.unwrap_or_default());
        let _turn = self.turns.lock(turn).await;
        let (key, read) = read_account(store, &key, username).await?;
        let user_id = read.as_ref().and_then(|a| a.value.user.as_ref()).map(|u| u.id.clone());
        let device = match (&self.devices, origin.device_token, user_id) {
            (Some(devices), Some(token), Some(user_id)) => devices.verify(token, &user_id, now),
            _ => None,
        };
        let bucket = match device {
            Some(d) => Bucket::Device(d),
            None => Bucket::Shared(origin.address),
        };
        let bucket = &bucket;
        // Reserve: count the attempt first. `before`: the account as it was before the
        // reservation, if one was made.
        let (gate, account) = update_account(store, &key, read, |current| {
            let account = current.cloned().unwrap_or_else(|| Account::empty(&key));
            match gate(&account, bucket, now, policy) {
                Gate::Locked { retry_after_ms } => Step::Done(Err(retry_after_ms)),
                Gate::Open { reserve: false } => Step::Done(Ok(None)),
                Gate::Open { reserve: true } => {
                    let mut next = account.clone();
                    record_failure(&mut next, bucket, now, policy);
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
                    change(store, &key, account, |a| release(a, bucket)).await?;
                }
                Ok(Attempt::Unchecked(why))
            }
            (Check::PassedFirstStep(outcome), before) => {
                let account = if before.is_some() {
                    change(store, &key, account, |a| release(a, bucket)).await?.1
                } else {
                    account
                };
                Ok(Attempt::Passed { outcome, key, account })
            }
            (Check::Passed(outcome), before) => {
                let reserved = before.is_some();
                let has_entry = account.as_ref().is_some_and(|a| has_entry(&a.value, bucket));
                let account = if reserved || has_entry {
                    change(store, &key, account, |a| record_success(a, bucket, reserved)).await?.1
                } else {
                    account
                };
                Ok(Attempt::Passed { outcome, key, account })
            }
            (Check::Failed, Some(before)) => {
                // The reservation already counted this failure.
                if let Some(after) = &account {
                    self.warn_if_locked(&before, &after.value, &key, bucket, now);
                }
                Ok(Attempt::Failed)
            }
            (Check::Failed, None) => {
                let (before, after) = change(store, &key, account, |a| record_failure(a, bucket, now, policy)).await?;
                if let Some(after) = &after {
                    self.warn_if_locked(&before, &after.value, &key, bucket, now);
                }
                Ok(Attempt::Failed)
            }
        }
    }

    /// Warns once, for the failure that set a lock (not for late guesses during it), naming the
    /// username only by its keyed pseudonym (and the user id when there is a user), and the client
    /// address.
    fn warn_if_locked(&self, before: &Account, after: &Account, key: &str, bucket: &Bucket<'_>, now: UnixMs) {
        let policy = &self.policy;
        if is_locked(after, bucket, now, policy) && !is_locked(before, bucket, now, policy) {
            let username_wide = after.throttle.locked_until_ms > now && matches!(bucket, Bucket::Shared(_));
            let (address, device) = match bucket {
                Bucket::Device(_) => (None, true),
                Bucket::Shared(a) => (*a, false),
            };
            tracing::warn!(
                username = %self.pseudonyms.of(key),
                user_id = after.user.as_ref().map(|u| u.id.as_str()),
                client_address = address.unwrap_or("unknown"),
                device,
                username_wide,
                "login locked after repeated failures"
            );
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

/// Addresses remembered per username (the most recent failures win); older ones are forgotten,
/// and still count in the username-wide ceiling.
pub const MAX_ADDRESSES: usize = 32;
/// Devices with failures remembered per username (the most recent failures win).
pub const MAX_DEVICES: usize = 16;
/// Each exhaustion of the username-wide budget that follows the previous one (failures kept
/// coming within its lock's length) doubles the lock, at most this many times.
pub const MAX_LOCK_DOUBLINGS: u32 = 5;

/// What a login attempt may do before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Refused without checking the password, for this many milliseconds.
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// May be checked. `reserve`: the attempt must be counted (with compare-and-swap) before
    /// the hash is evaluated.
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

fn device<'a>(account: &'a Account, device: &str) -> Option<&'a LoginThrottle> {
    account.devices.iter().find(|d| d.device == device).map(|d| &d.throttle)
}

fn has_entry(account: &Account, bucket: &Bucket<'_>) -> bool {
    match bucket {
        Bucket::Device(d) => device(account, d).is_some(),
        Bucket::Shared(Some(a)) => address(account, a).is_some(),
        Bucket::Shared(None) => false,
    }
}

/// Whether an attempt counted in `bucket` may proceed at `now`.
fn gate(account: &Account, bucket: &Bucket<'_>, now: UnixMs, policy: &Login) -> Gate {
    match bucket {
        Bucket::Device(d) => {
            let here = device(account, d).copied().unwrap_or_default();
            match locked_for(&here, now) {
                Some(retry_after_ms) => Gate::Locked { retry_after_ms },
                None => Gate::Open { reserve: live_failures(&here, now, policy) > 0 },
            }
        }
        Bucket::Shared(client) => {
            let here = client.and_then(|c| address(account, c)).copied().unwrap_or_default();
            let lock = [locked_for(&here, now), locked_for(&account.throttle, now)].into_iter().flatten().max();
            match lock {
                Some(retry_after_ms) => Gate::Locked { retry_after_ms },
                // Always reserved: the username-wide budget must hold under parallel attempts.
                None => Gate::Open { reserve: true },
            }
        }
    }
}

/// The lock set by the `strikes`-th exhaustion in a row of the username-wide budget.
fn lock_ms(policy: &Login, strikes: u32) -> i64 {
    let doublings = strikes.saturating_sub(1).min(MAX_LOCK_DOUBLINGS);
    policy.lockout_ms.saturating_mul(1_i64 << doublings)
}

/// One more failure at `now` on `throttle`, locking it for `lockout_ms` when it reaches `limit`
/// (`escalate`: for the `strikes`-th exhaustion in a row, see [`lock_ms`]). A failure recorded
/// while locked (a guess that passed the gate just before a parallel guess set the lock) keeps
/// the lock as it is: parallel guesses can never undo it.
fn fail(throttle: &LoginThrottle, now: UnixMs, limit: u32, policy: &Login, escalate: bool) -> LoginThrottle {
    if throttle.locked_until_ms > now {
        return *throttle;
    }
    // Strikes are forgotten after a quiet spell as long as the last lock.
    let last = throttle.last_failure_ms.max(throttle.locked_until_ms);
    let strikes = if escalate && now - last < lock_ms(policy, throttle.strikes) { throttle.strikes } else { 0 };
    let failures = live_failures(throttle, now, policy).saturating_add(1);
    if failures >= limit {
        let strikes = if escalate { strikes.saturating_add(1).min(MAX_LOCK_DOUBLINGS + 1) } else { 0 };
        let lock = if escalate { lock_ms(policy, strikes) } else { policy.lockout_ms };
        LoginThrottle { failures, last_failure_ms: now, locked_until_ms: now + lock, strikes }
    } else {
        LoginThrottle { failures, last_failure_ms: now, locked_until_ms: 0, strikes }
    }
}

/// Records one failure in `bucket` at `now` (also used to reserve an attempt before checking).
fn record_failure(account: &mut Account, bucket: &Bucket<'_>, now: UnixMs, policy: &Login) {
    match bucket {
        Bucket::Device(d) => {
            let here = device(account, d).copied().unwrap_or_default();
            let updated =
                DeviceThrottle { device: d.clone(), throttle: fail(&here, now, policy.max_failures, policy, false) };
            account.devices.retain(|t| &t.device != d && live_failures(&t.throttle, now, policy) > 0);
            account.devices.insert(0, updated);
            account.devices.truncate(MAX_DEVICES);
        }
        Bucket::Shared(client) => {
            if let Some(client) = client {
                let here = address(account, client).copied().unwrap_or_default();
                let updated = AddressThrottle {
                    address: (*client).to_string(),
                    throttle: fail(&here, now, policy.max_failures, policy, false),
                };
                account.addresses.retain(|a| a.address != *client && live_failures(&a.throttle, now, policy) > 0);
                account.addresses.insert(0, updated);
                account.addresses.truncate(MAX_ADDRESSES);
            }
            account.throttle = fail(&account.throttle, now, policy.max_failures_per_username, policy, true);
        }
    }
    // A record that only counts failures may go once every lock and window is over.
    let until = std::iter::once(&account.throttle)
        .chain(account.addresses.iter().map(|a| &a.throttle))
        .chain(account.devices.iter().map(|d| &d.throttle))
        .map(|t| t.last_failure_ms.max(t.locked_until_ms))
        .max()
        .unwrap_or(now);
    account.expires_at_ms = Some(until + policy.lockout_ms);
}

/// After a successful login: its address (or device) starts afresh; a reservation made for the
/// attempt is given back.
fn record_success(account: &mut Account, bucket: &Bucket<'_>, reserved: bool) {
    match bucket {
        Bucket::Device(d) => account.devices.retain(|t| &t.device != d),
        Bucket::Shared(client) => {
            if let Some(client) = client {
                account.addresses.retain(|a| a.address != *client);
            }
            if reserved && account.throttle.locked_until_ms == 0 {
                account.throttle.failures = account.throttle.failures.saturating_sub(1);
            }
        }
    }
}

/// Takes back a reservation for an attempt whose password was never checked (the hashing queue
/// refused it).
fn release(account: &mut Account, bucket: &Bucket<'_>) {
    let unlocked_entry = |t: &mut LoginThrottle| {
        if t.locked_until_ms == 0 {
            t.failures = t.failures.saturating_sub(1);
        }
    };
    match bucket {
        Bucket::Device(d) => {
            account.devices.iter_mut().filter(|t| &t.device == d).for_each(|t| unlocked_entry(&mut t.throttle))
        }
        Bucket::Shared(client) => {
            if let Some(client) = client {
                account
                    .addresses
                    .iter_mut()
                    .filter(|a| a.address == *client)
                    .for_each(|a| unlocked_entry(&mut a.throttle));
            }
            unlocked_entry(&mut account.throttle);
        }
    }
}

/// Whether `bucket` is locked at `now`.
fn is_locked(account: &Account, bucket: &Bucket<'_>, now: UnixMs, policy: &Login) -> bool {
    matches!(gate(account, bucket, now, policy), Gate::Locked { .. })
}

/// Clears every failure and lock of the username (`handler user unlock`).
pub fn unlock(account: &mut Account) {
    account.throttle = LoginThrottle::default();
    account.addresses.clear();
    account.devices.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Login =
        Login { max_failures: 3, max_failures_per_username: 5, lockout_ms: 60_000, device_token_ttl_ms: 86_400_000 };

    fn at(address: &str) -> Bucket<'_> {
        Bucket::Shared(Some(address))
    }

    fn empty() -> Account {
        Account {
            username_key: "u".into(),
            user: None,
            throttle: LoginThrottle::default(),
            addresses: vec![],
            devices: vec![],
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_device_counts_alone_and_is_never_blocked_by_other_failures() {
        let mut a = empty();
        let phone = Bucket::Device("phone".into());
        for now in 0..5 {
            record_failure(&mut a, &at("203.0.113.9"), now, &POLICY);
        }
        assert!(matches!(gate(&a, &at("198.51.100.1"), 10, &POLICY), Gate::Locked { .. }), "username-wide lock");
        assert_eq!(gate(&a, &phone, 10, &POLICY), Gate::Open { reserve: false }, "the owner's device may try");
        for now in 10..13 {
            record_failure(&mut a, &phone, now, &POLICY);
        }
        assert!(matches!(gate(&a, &phone, 13, &POLICY), Gate::Locked { .. }));
        assert_eq!(gate(&a, &Bucket::Device("laptop".into()), 13, &POLICY), Gate::Open { reserve: false });
        assert_eq!(a.throttle.failures, 5, "device failures stay out of the username-wide budget");
    }

    #[test]
    fn without_an_address_only_the_username_wide_budget_counts() {
        let mut a = empty();
        for now in 0..4 {
            record_failure(&mut a, &Bucket::Shared(None), now, &POLICY);
        }
        assert!(a.addresses.is_empty(), "no bucket shared by every client without an address");
        assert_eq!(gate(&a, &Bucket::Shared(None), 4, &POLICY), Gate::Open { reserve: true });
        record_failure(&mut a, &Bucket::Shared(None), 4, &POLICY);
        assert!(matches!(gate(&a, &Bucket::Shared(None), 5, &POLICY), Gate::Locked { .. }));
    }

    #[test]
    fn repeated_exhaustion_doubles_the_username_wide_lock_up_to_a_cap() {
        let mut a = empty();
        let mut now = 0;
        let mut locks = vec![];
        for _ in 0..8 {
            for i in 0..5 {
                record_failure(&mut a, &at(&format!("10.0.0.{i}")), now, &POLICY);
            }
            let Gate::Locked { retry_after_ms } = gate(&a, &at("192.0.2.1"), now, &POLICY) else {
                panic!("not locked")
            };
            locks.push(retry_after_ms);
            now += retry_after_ms; // the attacker comes back the moment the lock opens
        }
        assert_eq!(locks[..4], [60_000, 120_000, 240_000, 480_000]);
        assert_eq!(locks[7], 60_000 << MAX_LOCK_DOUBLINGS, "capped");
        // A quiet spell as long as the last lock forgets the strikes.
        now += locks[7];
        for i in 0..5 {
            record_failure(&mut a, &at(&format!("10.0.0.{i}")), now, &POLICY);
        }
        assert_eq!(gate(&a, &at("192.0.2.1"), now, &POLICY), Gate::Locked { retry_after_ms: 60_000 });
    }

    #[test]
    fn the_nth_failure_from_one_address_locks_only_that_address() {
        let mut a = empty();
        assert_eq!(gate(&a, &at("1.1.1.1"), 0, &POLICY), Gate::Open { reserve: true });
        record_failure(&mut a, &at("1.1.1.1"), 1_000, &POLICY);
        assert_eq!(gate(&a, &at("1.1.1.1"), 1_000, &POLICY), Gate::Open { reserve: true });
        record_failure(&mut a, &at("1.1.1.1"), 2_000, &POLICY);
        record_failure(&mut a, &at("1.1.1.1"), 3_000, &POLICY);
        assert_eq!(gate(&a, &at("1.1.1.1"), 3_000, &POLICY), Gate::Locked { retry_after_ms: 60_000 });
        assert_eq!(
            gate(&a, &at("2.2.2.2"), 3_000, &POLICY),
            Gate::Open { reserve: true },
            "the owner elsewhere may try"
        );
        assert_eq!(gate(&a, &at("1.1.1.1"), 63_000, &POLICY), Gate::Open { reserve: true });
    }

    #[test]
    fn the_username_wide_ceiling_locks_every_address() {
        let mut a = empty();
        for (i, now) in (0..5).zip(0..) {
            record_failure(&mut a, &at(&format!("10.0.0.{i}")), now, &POLICY);
        }
        assert!(matches!(gate(&a, &at("192.0.2.1"), 10, &POLICY), Gate::Locked { .. }));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut a = empty();
        record_failure(&mut a, &at("x"), 0, &POLICY);
        record_failure(&mut a, &at("x"), 1, &POLICY);
        record_failure(&mut a, &at("x"), 60_001, &POLICY);
        assert_eq!(address(&a, "x").unwrap().failures, 1);
        assert_eq!(a.throttle.failures, 1);
    }

    #[test]
    fn failures_recorded_during_a_lock_keep_it() {
        let mut a = empty();
        for now in 0..3 {
            record_failure(&mut a, &at("x"), now, &POLICY);
        }
        let locked = *address(&a, "x").unwrap();
        for now in 3..10 {
            record_failure(&mut a, &at("x"), now, &POLICY);
        }
        assert_eq!(*address(&a, "x").unwrap(), locked);
    }

    #[test]
    fn success_clears_the_address_and_returns_the_reservation() {
        let mut a = empty();
        record_failure(&mut a, &at("x"), 0, &POLICY);
        record_failure(&mut a, &at("x"), 1, &POLICY); // the reservation of the attempt that succeeds
        record_success(&mut a, &at("x"), true);
        assert!(address(&a, "x").is_none());
        assert_eq!(a.throttle.failures, 1);
        release(&mut a, &at("y"));
        assert_eq!(a.throttle.failures, 0);
    }

    #[test]
    fn addresses_are_bounded() {
        let mut a = empty();
        let wide = Login { max_failures_per_username: 1_000, ..POLICY };
        for i in 0..100 {
            record_failure(&mut a, &at(&format!("a{i}")), i, &wide);
        }
        assert_eq!(a.addresses.len(), MAX_ADDRESSES);
        assert_eq!(a.addresses[0].address, "a99");
        unlock(&mut a);
        assert_eq!(gate(&a, &at("a99"), 100, &wide), Gate::Open { reserve: true });
    }
}
