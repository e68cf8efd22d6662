//! The sign-up throttle, in this instance: sign-ups per client address in a window, and sign-ups of
//! everyone together per minute (an attacker with many addresses still cannot flood the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::UnixMs;
use crate::settings::Accounts;

/// Client addresses whose sign-ups are remembered at once (the oldest window is dropped first).
const MAX_SIGNUP_ADDRESSES: usize = 10_000;
/// The window of the instance-wide count.
const GLOBAL_WINDOW_MS: i64 = 60_000;

/// Sign-up rules and the per-address count.
#[derive(Debug, Clone)]
pub(super) struct SignUp {
    /// Who may sign up, how often, and the password rules.
    pub(super) rules: Accounts,
    /// Sign-ups per client address in the current window: (window start, count).
    counts: Arc<Mutex<HashMap<String, (UnixMs, u32)>>>,
    /// Sign-ups of everyone in the current minute: (window start, count).
    global: Arc<Mutex<(UnixMs, u32)>>,
}

impl SignUp {
    /// The rules, with nothing counted yet.
    pub(super) fn new(rules: Accounts) -> Self {
        Self { rules, counts: Arc::default(), global: Arc::default() }
    }

    /// Counts a sign-up from `address` at `now`; `Err(retry_after_ms)` when the address used up its
    /// sign-ups for the window.
    /// Also `Err` when this instance took `MaxPerMinute` sign-ups in the current minute. A sign-up
    /// without an address (`None`: no trusted source names one) counts only in that minute budget,
    /// never in a per-address bucket every such client would share.
    pub(super) fn count(&self, address: Option<&str>, now: UnixMs) -> Result<(), i64> {
        let mut global = self.global.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if global.1 == 0 || now - global.0 >= GLOBAL_WINDOW_MS {
            *global = (now, 0);
        }
        if global.1 >= self.rules.max_signups_per_minute {
            return Err(global.0 + GLOBAL_WINDOW_MS - now);
        }
        let Some(address) = address else {
            global.1 += 1;
            return Ok(());
        };
        let mut map = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.rules.signup_window_ms;
        map.retain(|_, (start, _)| now - *start < window);
        if map.len() >= MAX_SIGNUP_ADDRESSES && !map.contains_key(address) {
            return Err(window);
        }
        let entry = map.entry(address.to_string()).or_insert((now, 0));
        if entry.1 >= self.rules.max_signups_per_address {
            return Err(entry.0 + window - now);
        }
        entry.1 += 1;
        global.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RegistrationMode;

    fn rules(per_address: u32, per_minute: u32) -> Accounts {
        Accounts {
            registration: RegistrationMode::Open,
            max_signups_per_address: per_address,
            signup_window_ms: 3_600_000,
            password_min_chars: 8,
            max_signups_per_minute: per_minute,
        }
    }

    #[test]
    fn many_addresses_together_stop_at_the_instance_wide_minute_budget() {
        let signup = SignUp::new(rules(5, 3));
        for i in 0..3 {
            assert!(signup.count(Some(&format!("10.0.0.{i}")), 1_000).is_ok());
        }
        assert_eq!(signup.count(Some("10.0.0.9"), 1_500), Err(59_500), "a fresh address waits for the next minute");
        assert!(signup.count(Some("10.0.0.9"), 61_000).is_ok(), "the next minute opens again");
    }

    #[test]
    fn a_refused_sign_up_uses_no_budget() {
        let signup = SignUp::new(rules(1, 2));
        assert!(signup.count(Some("a"), 0).is_ok());
        assert!(signup.count(Some("a"), 1).is_err(), "the address used its one");
        assert!(signup.count(Some("b"), 2).is_ok(), "the refusal did not count against the minute");
    }

    #[test]
    fn sign_ups_without_an_address_share_no_bucket_only_the_minute_budget() {
        let signup = SignUp::new(rules(1, 3));
        assert!(signup.count(None, 0).is_ok());
        assert!(signup.count(None, 1).is_ok(), "a second client without an address is not refused as the first's");
        assert!(signup.count(None, 2).is_ok());
        assert_eq!(signup.count(None, 3), Err(59_997), "the instance-wide minute budget still holds");
    }
}
