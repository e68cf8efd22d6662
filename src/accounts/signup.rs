//! The sign-up throttle: sign-ups per client address in a window, in this instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::UnixMs;
use crate::settings::Accounts;

/// Client addresses whose sign-ups are remembered at once (the oldest window is dropped first).
const MAX_SIGNUP_ADDRESSES: usize = 10_000;

/// Sign-up rules and the per-address count.
#[derive(Debug, Clone)]
pub(super) struct SignUp {
    /// Who may sign up, how often, and the password rules.
    pub(super) rules: Accounts,
    /// Sign-ups per client address in the current window: (window start, count).
    counts: Arc<Mutex<HashMap<String, (UnixMs, u32)>>>,
}

impl SignUp {
    /// The rules, with nothing counted yet.
    pub(super) fn new(rules: Accounts) -> Self {
        Self { rules, counts: Arc::default() }
    }

    /// Counts a sign-up from `address` at `now`; `Err(retry_after_ms)` when the address used up its
    /// sign-ups for the window.
    pub(super) fn count(&self, address: &str, now: UnixMs) -> Result<(), i64> {
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
        Ok(())
    }
}
