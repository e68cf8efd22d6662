//! Login throttling rules, pure functions of the stored [`LoginThrottle`] and `now`.
//!
//! Failures count per username (lowercased) whether or not it exists, so lockout reveals nothing
//! about who has an account. Failures older than the lockout window are forgotten.

use crate::clock::UnixMs;
use crate::settings::Login;
use crate::store::LoginThrottle;

/// If the username is locked at `now`, the milliseconds until it opens again.
pub fn locked_for(throttle: &LoginThrottle, now: UnixMs) -> Option<i64> {
    (throttle.locked_until_ms > now).then(|| throttle.locked_until_ms - now)
}

/// The throttle after one more failure at `now`: the count restarts when the previous failure is
/// older than the window, and reaching `max_failures` locks the username for `lockout_ms`. A
/// failure recorded while the username is locked (a guess that passed the lock check just before
/// a parallel guess set the lock) keeps the lock as it is: parallel guesses can never undo it.
pub fn after_failure(throttle: Option<&LoginThrottle>, now: UnixMs, policy: &Login) -> LoginThrottle {
    if let Some(locked) = throttle.filter(|t| t.locked_until_ms > now) {
        return *locked;
    }
    let previous = throttle
        .filter(|t| now - t.last_failure_ms < policy.lockout_ms && t.locked_until_ms <= now)
        .map_or(0, |t| t.failures);
    let failures = previous.saturating_add(1);
    if failures >= policy.max_failures {
        LoginThrottle { failures: 0, last_failure_ms: now, locked_until_ms: now + policy.lockout_ms }
    } else {
        LoginThrottle { failures, last_failure_ms: now, locked_until_ms: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Login = Login { max_failures: 3, lockout_ms: 60_000 };

    #[test]
    fn the_nth_failure_locks_for_the_lockout_period() {
        let t1 = after_failure(None, 1_000, &POLICY);
        let t2 = after_failure(Some(&t1), 2_000, &POLICY);
        assert_eq!(locked_for(&t2, 2_000), None);
        let t3 = after_failure(Some(&t2), 3_000, &POLICY);
        assert_eq!(locked_for(&t3, 3_000), Some(60_000));
        assert_eq!(locked_for(&t3, 62_999), Some(1));
        assert_eq!(locked_for(&t3, 63_000), None);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let t1 = after_failure(None, 0, &POLICY);
        let t2 = after_failure(Some(&t1), 1, &POLICY);
        let t3 = after_failure(Some(&t2), 60_001, &POLICY);
        assert_eq!(t3.failures, 1);
        assert_eq!(locked_for(&t3, 60_001), None);
    }

    #[test]
    fn counting_restarts_after_a_lock_expires() {
        let mut t = None;
        for now in 0..3 {
            t = Some(after_failure(t.as_ref(), now, &POLICY));
        }
        let after = after_failure(t.as_ref(), 70_000, &POLICY);
        assert_eq!(after.failures, 1);
        assert_eq!(locked_for(&after, 70_000), None);
    }

    #[test]
    fn failures_recorded_during_a_lock_keep_it() {
        let mut t = None;
        for now in 0..3 {
            t = Some(after_failure(t.as_ref(), now, &POLICY));
        }
        let locked = t.unwrap();
        // Late failures of guesses that passed the lock check before the lock was written.
        let mut later = locked;
        for now in 3..10 {
            later = after_failure(Some(&later), now, &POLICY);
        }
        assert_eq!(later, locked);
        assert_eq!(locked_for(&later, 10), Some(60_000 - 8));
    }

    #[test]
    fn one_allowed_failure_locks_at_once() {
        let strict = Login { max_failures: 1, lockout_ms: 5_000 };
        let t = after_failure(None, 10, &strict);
        assert_eq!(locked_for(&t, 10), Some(5_000));
    }
}
