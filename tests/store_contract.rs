//! The store contract: one behaviour function per rule, run against every backend by the
//! `store_contract!` macro so backends cannot drift apart. A new backend adds one macro line.

use std::sync::Arc;

use jwt_refresh_token::store::embedded::EmbeddedStore;
use jwt_refresh_token::store::{
    LoginThrottle, SessionRecord, SessionStore as _, Store, StoreError, UserRecord, UserStore as _, Version,
};

mod contract {
    use super::*;

    pub fn session(user: &str, sid: &str, expires_at_ms: i64) -> SessionRecord {
        SessionRecord {
            user_id: user.into(),
            session_id: sid.into(),
            seed: [3u8; 32],
            generation: 0,
            rotated_at_ms: 1_000,
            created_at_ms: 1_000,
            expires_at_ms,
            username: format!("name-of-{user}"),
            roles: vec!["reader".into(), "admin".into()],
        }
    }

    pub fn user(key: &str, id: &str) -> UserRecord {
        UserRecord {
            id: id.into(),
            username: key.to_uppercase(),
            username_key: key.into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at_ms: 42,
        }
    }

    pub async fn a_stored_session_reads_back_unchanged(store: &dyn Store) {
        let s = session("u1", "s1", 10_000);
        let v = store.insert_session(&s).await.unwrap();
        let got = store.get_session("u1", "s1").await.unwrap().unwrap();
        assert_eq!(got.value, s);
        assert_eq!(got.version, v);
    }

    pub async fn a_missing_session_reads_as_none(store: &dyn Store) {
        assert!(store.get_session("u1", "nope").await.unwrap().is_none());
        store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        assert!(store.get_session("u2", "s1").await.unwrap().is_none(), "sessions are keyed by user too");
    }

    pub async fn inserting_an_existing_session_conflicts(store: &dyn Store) {
        store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        let mut again = session("u1", "s1", 20_000);
        again.generation = 9;
        assert!(matches!(store.insert_session(&again).await, Err(StoreError::Conflict)));
        assert_eq!(store.get_session("u1", "s1").await.unwrap().unwrap().value.generation, 0, "nothing overwritten");
    }

    pub async fn replace_at_the_current_version_succeeds_and_moves_the_version(store: &dyn Store) {
        let v1 = store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        let mut next = session("u1", "s1", 10_000);
        next.generation = 1;
        next.rotated_at_ms = 2_000;
        let v2 = store.replace_session(&next, &v1).await.unwrap();
        assert_ne!(v1, v2);
        let got = store.get_session("u1", "s1").await.unwrap().unwrap();
        assert_eq!(got.value, next);
        assert_eq!(got.version, v2);
    }

    pub async fn replace_at_a_stale_version_fails_with_precondition(store: &dyn Store) {
        let v1 = store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        let mut next = session("u1", "s1", 10_000);
        next.generation = 1;
        store.replace_session(&next, &v1).await.unwrap();
        next.generation = 2;
        assert!(matches!(store.replace_session(&next, &v1).await, Err(StoreError::Precondition)));
        assert!(matches!(
            store.replace_session(&next, &Version("garbage".into())).await,
            Err(StoreError::Precondition)
        ));
        assert_eq!(store.get_session("u1", "s1").await.unwrap().unwrap().value.generation, 1);
    }

    pub async fn replacing_a_missing_session_fails_with_not_found(store: &dyn Store) {
        let v1 = store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        assert!(store.delete_session("u1", "s1").await.unwrap());
        assert!(matches!(store.replace_session(&session("u1", "s1", 10_000), &v1).await, Err(StoreError::NotFound)));
        assert!(store.get_session("u1", "s1").await.unwrap().is_none(), "replace never resurrects");
    }

    pub async fn of_concurrent_replaces_at_one_version_exactly_one_wins(store: Arc<dyn Store>) {
        let v1 = store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for generation in 1..=16u64 {
            let (store, v1) = (store.clone(), v1.clone());
            tasks.spawn(async move {
                let mut next = session("u1", "s1", 10_000);
                next.generation = generation;
                store.replace_session(&next, &v1).await.map(|_| generation)
            });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(g) => winners.push(g),
                Err(StoreError::Precondition) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert_eq!(store.get_session("u1", "s1").await.unwrap().unwrap().value.generation, winners[0]);
    }

    pub async fn delete_reports_whether_the_session_existed(store: &dyn Store) {
        store.insert_session(&session("u1", "s1", 10_000)).await.unwrap();
        assert!(store.delete_session("u1", "s1").await.unwrap());
        assert!(!store.delete_session("u1", "s1").await.unwrap());
        assert!(store.get_session("u1", "s1").await.unwrap().is_none());
    }

    pub async fn deleting_user_sessions_keeps_the_named_one_and_other_users(store: &dyn Store) {
        for sid in ["a", "b", "c"] {
            store.insert_session(&session("u1", sid, 10_000)).await.unwrap();
        }
        store.insert_session(&session("u2", "a", 10_000)).await.unwrap();
        assert_eq!(store.delete_user_sessions("u1", Some("b")).await.unwrap(), 2);
        let left: Vec<String> =
            store.list_user_sessions("u1").await.unwrap().into_iter().map(|s| s.session_id).collect();
        assert_eq!(left, vec!["b".to_string()]);
        assert_eq!(store.delete_user_sessions("u1", None).await.unwrap(), 1);
        assert!(store.list_user_sessions("u1").await.unwrap().is_empty());
        assert_eq!(store.list_user_sessions("u2").await.unwrap().len(), 1, "other users untouched");
        assert_eq!(store.delete_user_sessions("nobody", None).await.unwrap(), 0);
    }

    pub async fn purging_never_removes_live_sessions(store: &dyn Store) {
        store.insert_session(&session("u1", "live", 10_000)).await.unwrap();
        store.insert_session(&session("u1", "dead", 5_000)).await.unwrap();
        let purged = store.purge_expired(6_000).await.unwrap();
        assert!(purged <= 1);
        assert!(store.get_session("u1", "live").await.unwrap().is_some());
    }

    pub async fn users_read_back_by_key_and_list_in_key_order(store: &dyn Store) {
        store.insert_user(&user("carol", "id-c")).await.unwrap();
        store.insert_user(&user("alice", "id-a")).await.unwrap();
        let got = store.get_user("alice").await.unwrap().unwrap();
        assert_eq!(got.value, user("alice", "id-a"));
        assert!(store.get_user("ALICE").await.unwrap().is_none(), "keys are given lowercased by callers");
        assert!(store.get_user("bob").await.unwrap().is_none());
        let keys: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.username_key).collect();
        assert_eq!(keys, vec!["alice".to_string(), "carol".to_string()]);
    }

    pub async fn a_taken_username_or_id_conflicts(store: &dyn Store) {
        store.insert_user(&user("alice", "id-a")).await.unwrap();
        assert!(matches!(store.insert_user(&user("alice", "id-other")).await, Err(StoreError::Conflict)));
        assert!(matches!(store.insert_user(&user("bob", "id-a")).await, Err(StoreError::Conflict)));
        assert_eq!(store.list_users().await.unwrap().len(), 1);
    }

    pub async fn user_replace_is_compare_and_swap(store: &dyn Store) {
        store.insert_user(&user("alice", "id-a")).await.unwrap();
        let v1 = store.get_user("alice").await.unwrap().unwrap().version;
        let mut disabled = user("alice", "id-a");
        disabled.disabled = true;
        let v2 = store.replace_user(&disabled, &v1).await.unwrap();
        assert!(matches!(store.replace_user(&user("alice", "id-a"), &v1).await, Err(StoreError::Precondition)));
        let got = store.get_user("alice").await.unwrap().unwrap();
        assert!(got.value.disabled);
        assert_eq!(got.version, v2);
        assert!(matches!(store.replace_user(&user("zed", "id-z"), &v2).await, Err(StoreError::NotFound)));
    }

    pub async fn throttles_are_created_once_then_compare_and_swapped(store: &dyn Store) {
        let t1 = LoginThrottle { failures: 1, last_failure_ms: 10, locked_until_ms: 0 };
        let v1 = store.put_throttle("alice", &t1, None).await.unwrap();
        assert!(matches!(store.put_throttle("alice", &t1, None).await, Err(StoreError::Conflict)));
        let t2 = LoginThrottle { failures: 2, last_failure_ms: 20, locked_until_ms: 0 };
        let v2 = store.put_throttle("alice", &t2, Some(&v1)).await.unwrap();
        assert!(matches!(store.put_throttle("alice", &t1, Some(&v1)).await, Err(StoreError::Precondition)));
        let got = store.get_throttle("alice").await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (t2, v2.clone()));
        assert!(store.delete_throttle("alice").await.unwrap());
        assert!(!store.delete_throttle("alice").await.unwrap());
        assert!(store.get_throttle("alice").await.unwrap().is_none());
        assert!(matches!(store.put_throttle("alice", &t2, Some(&v2)).await, Err(StoreError::NotFound)));
    }
}

/// Stamps out one test per contract behaviour for a backend. `$make` is an async block returning
/// `(Arc<dyn Store>, guard)`; the guard lives as long as the test (temp dirs, containers).
macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            store_contract!(@by_ref $make;
                a_stored_session_reads_back_unchanged,
                a_missing_session_reads_as_none,
                inserting_an_existing_session_conflicts,
                replace_at_the_current_version_succeeds_and_moves_the_version,
                replace_at_a_stale_version_fails_with_precondition,
                replacing_a_missing_session_fails_with_not_found,
                delete_reports_whether_the_session_existed,
                deleting_user_sessions_keeps_the_named_one_and_other_users,
                purging_never_removes_live_sessions,
                users_read_back_by_key_and_list_in_key_order,
                a_taken_username_or_id_conflicts,
                user_replace_is_compare_and_swap,
                throttles_are_created_once_then_compare_and_swapped
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn of_concurrent_replaces_at_one_version_exactly_one_wins() {
                let (store, _guard) = $make.await;
                contract::of_concurrent_replaces_at_one_version_exactly_one_wins(store).await;
            }
        }
    };
    (@by_ref $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $make.await;
                contract::$name(store.as_ref()).await;
            }
        )+
    };
}

async fn embedded() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (Arc::new(store), dir)
}

store_contract!(embedded_store, embedded());

/// Embedded-only: expiry is purged by the store itself (Cosmos uses TTL instead).
#[tokio::test]
async fn embedded_purge_removes_exactly_the_expired_sessions() {
    let (store, _dir) = embedded().await;
    store.insert_session(&contract::session("u1", "live", 10_000)).await.unwrap();
    store.insert_session(&contract::session("u1", "dead", 5_000)).await.unwrap();
    assert_eq!(store.purge_expired(6_000).await.unwrap(), 1);
    assert!(store.get_session("u1", "dead").await.unwrap().is_none());
    assert!(store.get_session("u1", "live").await.unwrap().is_some());
}

/// Embedded-only: a second handle on the same file (another process, in production: the `user`
/// commands) sees writes at once.
#[tokio::test]
async fn embedded_store_is_shared_between_handles_on_one_file() {
    let (a, dir) = embedded().await;
    let b = EmbeddedStore::open(dir.path()).unwrap();
    a.insert_user(&contract::user("alice", "id-a")).await.unwrap();
    assert!(b.get_user("alice").await.unwrap().is_some());
    b.insert_session(&contract::session("id-a", "s", 10_000)).await.unwrap();
    assert_eq!(a.delete_user_sessions("id-a", None).await.unwrap(), 1);
}

/// Embedded-only: a database from a newer schema is refused rather than misread.
#[tokio::test]
async fn embedded_store_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = EmbeddedStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}
