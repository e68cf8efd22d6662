//! Async locks by key, each with a little state, held only while in use: the entry (and its state)
//! is forgotten once nobody holds or waits for it, so the map is bounded by the requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Locks by key, each guarding a `T` that lives while the key is held or awaited.
#[derive(Debug)]
pub struct KeyedLocks<T> {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<T>>>>,
}

impl<T> Default for KeyedLocks<T> {
    fn default() -> Self {
        Self { held: Mutex::new(HashMap::new()) }
    }
}

/// A held key; derefs to its state.
#[derive(Debug)]
pub struct KeyedGuard<'a, T: Default> {
    locks: &'a KeyedLocks<T>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<T>>,
}

impl<T: Default> KeyedLocks<T> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<T>>>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for `key` (callers holding other keys do not wait).
    pub async fn lock(&self, key: String) -> KeyedGuard<'_, T> {
        let mutex = Arc::clone(self.map().entry(key.clone()).or_default());
        let guard = mutex.lock_owned().await;
        KeyedGuard { locks: self, key, guard: Some(guard) }
    }

    /// Keys currently held or awaited.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Default> std::ops::Deref for KeyedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // The guard is only taken out in `drop`.
        self.guard.as_deref().unwrap_or_else(|| unreachable_state())
    }
}

impl<T: Default> std::ops::DerefMut for KeyedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self.guard.as_deref_mut() {
            Some(state) => state,
            None => unreachable_state(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_state() -> ! {
    // A guard's state is present from `lock` until `drop`; nothing else can observe it missing.
    panic!("keyed lock state used after release")
}

impl<T: Default> Drop for KeyedGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.locks.map();
        // Forget the key once nobody holds or waits for it (only the map's reference is left).
        if held.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_lives_while_the_key_is_awaited_and_is_forgotten_after() {
        let locks: Arc<KeyedLocks<u32>> = Arc::default();
        let mut first = locks.lock("k".into()).await;
        *first = 7;
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { *locks.lock("k".into()).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), 7, "a waiter sees the state its predecessor left");
        assert!(locks.is_empty(), "released keys are forgotten");
        assert_eq!(*locks.lock("k".into()).await, 0, "a later caller starts afresh");
    }
}
