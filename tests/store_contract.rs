//! The store contract: one behaviour function per rule, run against every backend by the
//! `store_contract!` macro so backends cannot drift apart. A new backend adds one macro line.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use jwt_refresh_token::clock::ManualClock;
use jwt_refresh_token::settings::{CosmosAuth, CosmosSettings};
use jwt_refresh_token::store::cosmos::{CosmosStore, Provisioning};
use jwt_refresh_token::store::embedded::EmbeddedStore;
use jwt_refresh_token::store::{
    Account, AddressThrottle, AdminRoster, ClientRecord, ClientStore as _, CodeRecord, DeviceThrottle, EmailClaim,
    IdentityRecord, LoginThrottle, NameClaim, SessionDetails, SessionRecord, SessionStore as _, Step, Store,
    StoreError, UserRecord, UserStore as _, Version, Versioned, update_account,
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
            // Device details and the inactivity deadline round-trip too.
            details: SessionDetails {
                last_used_at_ms: 1_000,
                idle_expires_at_ms: None,
                user_agent: Some("Mozilla/5.0 (test)".into()),
                client_address: Some("192.0.2.7".into()),
                dpop_jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
                amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
            },
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
            identities: Vec::new(),
            factors: jwt_refresh_token::store::Factors {
                totp: Some(jwt_refresh_token::store::TotpFactor {
                    sealed_secret: "c2VhbGVk".into(),
                    active: true,
                    last_step: 58_000_000,
                    enrolled_at_ms: 1_700_000_000_000,
                }),
                recovery_codes: vec!["ab".repeat(32)],
                passkeys: vec![jwt_refresh_token::store::StoredPasskey {
                    id: "Y3JlZGVudGlhbA".into(),
                    name: "laptop".into(),
                    credential: serde_json::json!({"cred": {"counter": 3}}),
                    counter: 3,
                    backup_eligible: true,
                    backup_state: false,
                    created_at_ms: 1_700_000_000_000,
                    last_used_at_ms: Some(1_700_000_100_000),
                }],
            },
            email: Some(jwt_refresh_token::store::EmailAddress { address: "ann@example.com".into(), verified: true }),
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

    pub async fn deleting_more_sessions_than_one_batch_holds_ends_them_all(store: &dyn Store) {
        for i in 0..230 {
            // An hour to live: on Cosmos the TTL must outlast inserting 230 documents on a slow machine.
            store.insert_session(&session("u1", &format!("s{i:03}"), 3_600_000)).await.unwrap();
        }
        assert_eq!(store.delete_user_sessions("u1", Some("s007")).await.unwrap(), 229);
        let left: Vec<String> =
            store.list_user_sessions("u1").await.unwrap().into_iter().map(|s| s.session_id).collect();
        assert_eq!(left, vec!["s007".to_string()]);
    }

    pub async fn purging_never_removes_live_sessions(store: &dyn Store) {
        store.insert_session(&session("u1", "live", 10_000)).await.unwrap();
        store.insert_session(&session("u1", "dead", 5_000)).await.unwrap();
        let purged = store.purge_expired(6_000).await.unwrap();
        assert!(purged <= 1);
        assert!(store.get_session("u1", "live").await.unwrap().is_some());
    }

    pub fn account(key: &str, user: Option<UserRecord>) -> Account {
        Account {
            username_key: key.into(),
            user,
            throttle: LoginThrottle { failures: 2, last_failure_ms: 7, locked_until_ms: 0, strikes: 2 },
            // Per-address throttles round-trip too.
            addresses: vec![AddressThrottle {
                address: "2001:db8:1:2::/64".into(),
                throttle: LoginThrottle { failures: 1, last_failure_ms: 6, locked_until_ms: 9, strikes: 0 },
            }],
            // And per-device ones.
            devices: vec![DeviceThrottle {
                device: "AAAAAAAAAAAAAAAAAAAAAA".into(),
                throttle: LoginThrottle { failures: 3, last_failure_ms: 8, locked_until_ms: 10, strikes: 0 },
            }],
            expires_at_ms: Some(5_000),
        }
    }

    pub async fn accounts_read_back_and_users_list_in_key_order(store: &dyn Store) {
        let carol = account("carol", Some(user("carol", "id-c")));
        store.put_account(&carol, None).await.unwrap();
        store.put_account(&account("alice", Some(user("alice", "id-a"))), None).await.unwrap();
        store.put_account(&account("bob", None), None).await.unwrap();
        let got = store.get_account("carol").await.unwrap().unwrap();
        assert_eq!(got.value, carol);
        assert!(store.get_account("CAROL").await.unwrap().is_none(), "keys are given lowercased by callers");
        assert!(store.get_account("dave").await.unwrap().is_none());
        let users: Vec<UserRecord> = store.list_users().await.unwrap();
        assert_eq!(users, vec![user("alice", "id-a"), user("carol", "id-c")], "accounts without a user are not users");
    }

    pub async fn creating_an_existing_account_conflicts(store: &dyn Store) {
        store.put_account(&account("alice", None), None).await.unwrap();
        let with_user = account("alice", Some(user("alice", "id-a")));
        assert!(matches!(store.put_account(&with_user, None).await, Err(StoreError::Conflict)));
        assert!(store.get_account("alice").await.unwrap().unwrap().value.user.is_none(), "nothing overwritten");
    }

    pub async fn account_writes_are_compare_and_swap(store: &dyn Store) {
        let v1 = store.put_account(&account("alice", None), None).await.unwrap();
        assert_eq!(store.get_account("alice").await.unwrap().unwrap().version, v1);
        let with_user = account("alice", Some(user("alice", "id-a")));
        let v2 = store.put_account(&with_user, Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        let mut cleared = with_user.clone();
        cleared.throttle = LoginThrottle::default();
        assert!(matches!(store.put_account(&cleared, Some(&v1)).await, Err(StoreError::Precondition)));
        let got = store.get_account("alice").await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (with_user, v2.clone()));
        assert!(matches!(store.put_account(&account("zed", None), Some(&v2)).await, Err(StoreError::NotFound)));
        assert!(store.get_account("zed").await.unwrap().is_none(), "a CAS write never creates");
    }

    /// N writers × M read-modify-writes of one account through `update_account` end at exactly
    /// N × M: no update is lost and none lands twice. A writer whose update stayed contended past
    /// the bound (the store reports it unavailable, nothing written) tries again, as a client would.
    pub async fn parallel_account_updates_converge_on_the_exact_count(store: Arc<dyn Store>) {
        const WRITERS: u32 = 4;
        const UPDATES: u32 = 10;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WRITERS {
            let store = store.clone();
            tasks.spawn(async move {
                let mut gave_up = 0;
                for _ in 0..UPDATES {
                    loop {
                        let bump = |current: Option<&Account>| {
                            let mut next = current.cloned().unwrap_or_else(|| Account::empty("racer"));
                            next.throttle.failures += 1;
                            Step::Write(next, ())
                        };
                        match update_account(store.as_ref(), "racer", None, bump).await {
                            Ok(_) => break,
                            Err(StoreError::Unavailable { .. }) if gave_up < 20 => gave_up += 1,
                            Err(e) => panic!("update failed: {e}"),
                        }
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let stored = store.get_account("racer").await.unwrap().unwrap().value;
        assert_eq!(stored.throttle.failures, WRITERS * UPDATES);
    }

    pub async fn the_sessions_epoch_only_moves_forward_and_is_not_an_account(store: &dyn Store) {
        assert_eq!(store.sessions_epoch().await.unwrap(), 0, "never set");
        assert_eq!(store.raise_sessions_epoch(5_000).await.unwrap(), 5_000);
        assert_eq!(store.raise_sessions_epoch(4_000).await.unwrap(), 5_000, "never back");
        assert_eq!(store.sessions_epoch().await.unwrap(), 5_000);
        assert_eq!(store.raise_sessions_epoch(6_000).await.unwrap(), 6_000);
        assert!(store.list_users().await.unwrap().is_empty(), "the epoch is no user");
        store.purge_expired_accounts(i64::MAX).await.unwrap();
        store.purge_expired(i64::MAX).await.unwrap();
        assert_eq!(store.sessions_epoch().await.unwrap(), 6_000, "never purged");
    }

    pub async fn parallel_epoch_raises_keep_the_latest(store: Arc<dyn Store>) {
        let mut tasks = tokio::task::JoinSet::new();
        for at in 1..=8i64 {
            let store = store.clone();
            tasks.spawn(async move { store.raise_sessions_epoch(at * 1_000).await.unwrap() });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap() >= 1_000);
        }
        assert_eq!(store.sessions_epoch().await.unwrap(), 8_000);
    }

    /// The epoch as stores before it had a record of its own kept it: an account under this key
    /// with the time in `last_failure_ms`.
    pub fn legacy_epoch_account(at: i64) -> Account {
        let mut fake = Account::empty("\u{0}sessions-epoch");
        fake.throttle.last_failure_ms = at;
        fake
    }

    pub async fn the_admin_roster_is_absent_until_written_then_compare_and_swap_and_not_an_account(store: &dyn Store) {
        assert!(store.get_admins().await.unwrap().is_none(), "a new store has no roster");
        let first = AdminRoster { admin_ids: vec!["id-a".into(), "id-b".into()] };
        let v1 = store.put_admins(&first, None).await.unwrap();
        assert!(matches!(store.put_admins(&first, None).await, Err(StoreError::Conflict)));
        let got = store.get_admins().await.unwrap().unwrap();
        assert_eq!((&got.value, &got.version), (&first, &v1));
        let second = AdminRoster { admin_ids: vec!["id-a".into()] };
        let v2 = store.put_admins(&second, Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        assert!(matches!(store.put_admins(&first, Some(&v1)).await, Err(StoreError::Precondition)));
        assert_eq!(store.get_admins().await.unwrap().unwrap().value, second, "the stale write changed nothing");
        assert!(store.list_users().await.unwrap().is_empty(), "the roster is no user");
    }

    pub async fn of_parallel_roster_writes_at_one_version_exactly_one_wins(store: Arc<dyn Store>) {
        let v = store.put_admins(&AdminRoster { admin_ids: vec!["a".into(), "b".into()] }, None).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for keep in ["a", "b", "a", "b"] {
            let (store, v) = (store.clone(), v.clone());
            tasks.spawn(async move { store.put_admins(&AdminRoster { admin_ids: vec![keep.into()] }, Some(&v)).await });
        }
        let mut won = 0;
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::Precondition) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(store.get_admins().await.unwrap().unwrap().value.admin_ids.len(), 1);
    }

    pub async fn a_name_claim_is_created_once_then_compare_and_swap_and_is_no_account(store: &dyn Store) {
        // A skeleton may hold any character and be long (Cosmos ids may not: the backend hashes it).
        let skeleton = format!("rn/\u{0}#?{}", "x".repeat(300));
        assert!(store.get_name_claim(&skeleton).await.unwrap().is_none());
        let first = NameClaim { owner_key: "m".into(), claimed_at_ms: 1 };
        let v1 = store.put_name_claim(&skeleton, &first, None).await.unwrap();
        assert!(matches!(store.put_name_claim(&skeleton, &first, None).await, Err(StoreError::Conflict)));
        let got = store.get_name_claim(&skeleton).await.unwrap().unwrap();
        assert_eq!((&got.value, &got.version), (&first, &v1));
        let second = NameClaim { owner_key: "rn".into(), claimed_at_ms: 2 };
        let v2 = store.put_name_claim(&skeleton, &second, Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        assert!(matches!(store.put_name_claim(&skeleton, &first, Some(&v1)).await, Err(StoreError::Precondition)));
        assert_eq!(store.get_name_claim(&skeleton).await.unwrap().unwrap().value, second);
        assert!(store.get_name_claim("rn").await.unwrap().is_none(), "claims are per skeleton");
        assert!(store.get_account(&skeleton).await.unwrap().is_none(), "a claim is no account");
        assert!(store.list_users().await.unwrap().is_empty(), "a claim is no user");
        assert!(store.get_admins().await.unwrap().is_none(), "a claim is not the roster");
    }

    pub async fn an_identity_record_is_created_once_then_compare_and_swap_and_is_no_account(store: &dyn Store) {
        // Subjects may hold any character (Cosmos ids may not: the backend hashes them).
        let subject = format!("001234.a/b#?\u{0}{}", "s".repeat(250));
        assert!(store.get_identity("apple", &subject).await.unwrap().is_none());
        let first = IdentityRecord {
            provider: "apple".into(),
            subject: subject.clone(),
            owner_key: Some("marta".into()),
            owner_id: Some("u-1".into()),
            claimed_at_ms: 1,
        };
        let v1 = store.put_identity(&first, None).await.unwrap();
        assert!(matches!(store.put_identity(&first, None).await, Err(StoreError::Conflict)));
        let got = store.get_identity("apple", &subject).await.unwrap().unwrap();
        assert_eq!((&got.value, &got.version), (&first, &v1));
        let unlinked = IdentityRecord { owner_key: None, owner_id: None, claimed_at_ms: 2, ..first.clone() };
        let v2 = store.put_identity(&unlinked, Some(&v1)).await.unwrap();
        assert!(matches!(store.put_identity(&first, Some(&v1)).await, Err(StoreError::Precondition)));
        assert_eq!(
            store.get_identity("apple", &subject).await.unwrap().unwrap(),
            Versioned { value: unlinked, version: v2 }
        );
        assert!(store.get_identity("google", &subject).await.unwrap().is_none(), "records are per provider");
        assert!(store.list_users().await.unwrap().is_empty(), "an identity record is no user");
    }

    pub async fn an_email_claim_is_created_once_then_compare_and_swap_and_is_no_account(store: &dyn Store) {
        let address = format!("{}@example.com", "a.b+c".repeat(40));
        assert!(store.get_email_claim(&address).await.unwrap().is_none());
        let first = EmailClaim { owner_key: "ann".into(), owner_id: "u-1".into(), claimed_at_ms: 1 };
        let v1 = store.put_email_claim(&address, &first, None).await.unwrap();
        assert!(matches!(store.put_email_claim(&address, &first, None).await, Err(StoreError::Conflict)));
        let taken = EmailClaim { owner_key: "bob".into(), owner_id: "u-2".into(), claimed_at_ms: 2 };
        let v2 = store.put_email_claim(&address, &taken, Some(&v1)).await.unwrap();
        assert!(matches!(store.put_email_claim(&address, &first, Some(&v1)).await, Err(StoreError::Precondition)));
        assert_eq!(store.get_email_claim(&address).await.unwrap().unwrap(), Versioned { value: taken, version: v2 });
        assert!(store.get_email_claim("other@example.com").await.unwrap().is_none(), "claims are per address");
        assert!(store.list_users().await.unwrap().is_empty(), "a claim is no user");
    }

    pub async fn a_code_record_is_compare_and_swap_and_reads_as_absent_once_expired(store: &dyn Store) {
        let record = CodeRecord {
            code_hash: Some("ab".repeat(32)),
            address: Some("ann@example.com".into()),
            code_expires_at_ms: 5_000,
            failures: 0,
            sent_at_ms: vec![1_000],
            expires_at_ms: 10_000,
        };
        let key = "reset:u-1";
        assert!(store.get_code(key, 1_000).await.unwrap().is_none());
        let v1 = store.put_code(key, &record, None, 1_000).await.unwrap();
        assert!(
            matches!(store.put_code(key, &record, None, 2_000).await, Err(StoreError::Conflict)),
            "a live one stays"
        );
        let got = store.get_code(key, 2_000).await.unwrap().unwrap();
        assert_eq!((&got.value, &got.version), (&record, &v1));
        let used = CodeRecord { code_hash: None, failures: 1, ..record.clone() };
        let v2 = store.put_code(key, &used, Some(&v1), 2_000).await.unwrap();
        assert!(matches!(store.put_code(key, &record, Some(&v1), 2_000).await, Err(StoreError::Precondition)));
        assert_eq!(store.get_code(key, 3_000).await.unwrap().unwrap(), Versioned { value: used, version: v2 });
        assert!(store.get_code(key, 10_000).await.unwrap().is_none(), "expired: absent");
        let fresh = CodeRecord { expires_at_ms: 20_000, ..record.clone() };
        store.put_code(key, &fresh, None, 10_000).await.unwrap();
        assert_eq!(store.get_code(key, 10_001).await.unwrap().unwrap().value, fresh, "an expired record is taken over");
        assert!(store.get_code("verify:u-1", 10_001).await.unwrap().is_none(), "records are per key");
        assert!(store.list_users().await.unwrap().is_empty(), "a code record is no user");
    }

    pub async fn a_used_token_marker_is_taken_once_until_it_expires(store: &dyn Store) {
        let marker = "ab".repeat(32);
        assert!(store.mark_used(&marker, 1_000, 61_000).await.unwrap(), "first use");
        assert!(!store.mark_used(&marker, 2_000, 61_000).await.unwrap(), "second use while live");
        assert!(store.mark_used(&"cd".repeat(32), 2_000, 61_000).await.unwrap(), "markers are per token");
        let (a, b) = tokio::join!(store.mark_used("race", 1_000, 61_000), store.mark_used("race", 1_000, 61_000));
        assert!(a.unwrap() ^ b.unwrap(), "of two racing uses exactly one wins");
    }

    pub fn client(id: &str, hash_byte: u8) -> ClientRecord {
        ClientRecord { client_id: id.into(), secret_hash: [hash_byte; 32], created_at_ms: 1_700_000_000_123 }
    }

    pub async fn clients_read_back_list_in_id_order_and_are_no_accounts(store: &dyn Store) {
        assert!(store.get_client("orders-api").await.unwrap().is_none(), "a new store has no client");
        assert!(store.list_clients().await.unwrap().is_empty());
        for (id, byte) in [("orders-api", 1), ("billing.svc", 2), ("a_first", 3)] {
            store.insert_client(&client(id, byte)).await.unwrap();
        }
        assert_eq!(store.get_client("orders-api").await.unwrap(), Some(client("orders-api", 1)));
        let ids: Vec<String> = store.list_clients().await.unwrap().into_iter().map(|c| c.client_id).collect();
        assert_eq!(ids, ["a_first", "billing.svc", "orders-api"]);
        assert!(store.list_users().await.unwrap().is_empty(), "a client is no user");
        assert!(store.get_admins().await.unwrap().is_none(), "nor the roster");
        store.put_account(&account("orders-api", None), None).await.unwrap();
        assert_eq!(store.get_client("orders-api").await.unwrap(), Some(client("orders-api", 1)), "nor an account");
    }

    pub async fn adding_an_existing_client_conflicts_and_changes_nothing(store: &dyn Store) {
        store.insert_client(&client("svc", 1)).await.unwrap();
        assert!(matches!(store.insert_client(&client("svc", 2)).await, Err(StoreError::Conflict)));
        assert_eq!(store.get_client("svc").await.unwrap().unwrap().secret_hash, [1; 32], "nothing overwritten");
    }

    pub async fn deleting_a_client_reports_whether_it_existed(store: &dyn Store) {
        store.insert_client(&client("svc", 1)).await.unwrap();
        store.insert_client(&client("other", 2)).await.unwrap();
        assert!(store.delete_client("svc").await.unwrap());
        assert!(!store.delete_client("svc").await.unwrap());
        assert!(store.get_client("svc").await.unwrap().is_none());
        assert!(store.get_client("other").await.unwrap().is_some(), "other clients stay");
        store.insert_client(&client("svc", 3)).await.unwrap();
        assert_eq!(store.get_client("svc").await.unwrap().unwrap().secret_hash, [3; 32], "the id can be reused");
    }

    pub async fn purging_accounts_never_removes_users_or_live_throttles(store: &dyn Store) {
        let mut live = account("live", None);
        live.expires_at_ms = Some(10_000);
        store.put_account(&live, None).await.unwrap();
        store.put_account(&account("user", Some(user("user", "id-u"))), None).await.unwrap();
        store.put_account(&account("dead", None), None).await.unwrap();
        assert!(store.purge_expired_accounts(6_000).await.unwrap() <= 1);
        assert!(store.get_account("live").await.unwrap().is_some());
        assert!(store.get_account("user").await.unwrap().is_some(), "an account with a user never expires");
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
                deleting_more_sessions_than_one_batch_holds_ends_them_all,
                purging_never_removes_live_sessions,
                accounts_read_back_and_users_list_in_key_order,
                creating_an_existing_account_conflicts,
                account_writes_are_compare_and_swap,
                purging_accounts_never_removes_users_or_live_throttles,
                the_sessions_epoch_only_moves_forward_and_is_not_an_account,
                the_admin_roster_is_absent_until_written_then_compare_and_swap_and_not_an_account,
                a_name_claim_is_created_once_then_compare_and_swap_and_is_no_account,
                an_identity_record_is_created_once_then_compare_and_swap_and_is_no_account,
                a_used_token_marker_is_taken_once_until_it_expires,
                an_email_claim_is_created_once_then_compare_and_swap_and_is_no_account,
                a_code_record_is_compare_and_swap_and_reads_as_absent_once_expired,
                clients_read_back_list_in_id_order_and_are_no_accounts,
                adding_an_existing_client_conflicts_and_changes_nothing,
                deleting_a_client_reports_whether_it_existed
            );
            store_contract!(@shared $make;
                of_concurrent_replaces_at_one_version_exactly_one_wins,
                parallel_account_updates_converge_on_the_exact_count,
                parallel_epoch_raises_keep_the_latest,
                of_parallel_roster_writes_at_one_version_exactly_one_wins
            );
        }
    };
    (@shared $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                contract::$name(store).await;
            }
        )+
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

async fn in_memory() -> (Arc<dyn Store>, ()) {
    let store = EmbeddedStore::open(std::path::Path::new(jwt_refresh_token::store::embedded::MEMORY)).unwrap();
    (Arc::new(store), ())
}

store_contract!(in_memory_store, in_memory());

#[path = "support/emulator.rs"]
mod emulator;

/// A Cosmos store on the local test peer, in a database of its own.
async fn cosmos() -> (Arc<dyn Store>, ()) {
    let settings = CosmosSettings {
        endpoint: emulator::endpoint().to_string(),
        auth: CosmosAuth::Key(jwt_refresh_token::secret::SecretBytes::new(emulator::EMULATOR_KEY.as_bytes().to_vec())),
        database: emulator::unique_database("contract"),
        token_container: "tokens".into(),
        user_container: "users".into(),
        request_timeout_ms: 10_000,
        region: None,
    };
    // The store's clock at 0: a session's TTL is its whole `expires_at_ms` (the contract's
    // sessions end at small absolute times), not the 1 s minimum a wall clock would give.
    let store = CosmosStore::new(settings, Arc::new(ManualClock::new(0)));
    // Every contract test connects at once, and the test peer (a Node server) now and then drops
    // one of that burst of connections mid-answer (a broken pipe while reading the account's
    // properties): that connection is tried again, a few times. The contract itself runs on the
    // connected store, unaided.
    let mut tries = 0u64;
    loop {
        match store.connect(Provisioning::CreateMissing).await {
            Ok(()) => break,
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("connect to the Cosmos emulator, try {tries}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
            }
            Err(e) => panic!("connect to the Cosmos emulator: {e:?}"),
        }
    }
    (Arc::new(store), ())
}

store_contract!(cosmos_store, cosmos());

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

/// Embedded-only: user-less accounts past their expiry are purged by the store itself.
#[tokio::test]
async fn embedded_purge_removes_exactly_the_expired_throttle_only_accounts() {
    let (store, _dir) = embedded().await;
    store.put_account(&contract::account("dead", None), None).await.unwrap();
    let mut live = contract::account("live", None);
    live.expires_at_ms = Some(10_000);
    store.put_account(&live, None).await.unwrap();
    store.put_account(&contract::account("user", Some(contract::user("user", "id-u"))), None).await.unwrap();
    assert_eq!(store.purge_expired_accounts(6_000).await.unwrap(), 1);
    assert!(store.get_account("dead").await.unwrap().is_none());
}

/// Embedded-only: a second handle on the same file (another process, in production: the `user`
/// commands) sees writes at once.
#[tokio::test]
async fn embedded_store_is_shared_between_handles_on_one_file() {
    let (a, dir) = embedded().await;
    let b = EmbeddedStore::open(dir.path()).unwrap();
    a.put_account(&contract::account("alice", Some(contract::user("alice", "id-a"))), None).await.unwrap();
    assert!(b.get_account("alice").await.unwrap().is_some());
    b.insert_session(&contract::session("id-a", "s", 10_000)).await.unwrap();
    assert_eq!(a.delete_user_sessions("id-a", None).await.unwrap(), 1);
}

/// Embedded-only: a store of schema 3, with the epoch as a fake account, is migrated on open: the
/// epoch moves into its own record and the fake account is gone.
#[tokio::test]
async fn embedded_store_moves_an_old_epoch_account_into_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put_account(&contract::legacy_epoch_account(7_000), None).await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    // A version-3 database: no epoch record, no device throttles.
    conn.execute_batch(
        "DROP TABLE store_values;
         DROP TABLE clients;
         DROP TABLE used_tokens;
         DROP TABLE codes;
         ALTER TABLE accounts DROP COLUMN email;
         ALTER TABLE accounts DROP COLUMN strikes;
         ALTER TABLE accounts DROP COLUMN device_throttles;
         ALTER TABLE accounts DROP COLUMN identities;
         ALTER TABLE accounts DROP COLUMN factors;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.sessions_epoch().await.unwrap(), 7_000, "the old epoch is honoured");
    assert!(store.get_account("\u{0}sessions-epoch").await.unwrap().is_none(), "no fake account is left");
    assert_eq!(store.raise_sessions_epoch(6_000).await.unwrap(), 7_000);
}

/// Embedded-only: a store of schema 4 (before the admin roster and the device throttles) opens,
/// upgraded, with no roster.
#[tokio::test]
async fn embedded_store_of_schema_4_gains_the_roster_table_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE store_records;
         DROP TABLE clients;
         DROP TABLE used_tokens;
         DROP TABLE codes;
         ALTER TABLE accounts DROP COLUMN email;
         ALTER TABLE accounts DROP COLUMN strikes;
         ALTER TABLE accounts DROP COLUMN device_throttles;
         ALTER TABLE accounts DROP COLUMN identities;
         ALTER TABLE accounts DROP COLUMN factors;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 4).unwrap();
    drop(conn);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.get_admins().await.unwrap().is_none());
    store.put_admins(&AdminRoster { admin_ids: vec!["x".into()] }, None).await.unwrap();
}

/// Embedded-only: a store of schema 5 (before introspection clients) opens upgraded to schema 6,
/// its users and sessions kept, with no clients and a clients table that works.
#[tokio::test]
async fn embedded_store_of_schema_5_gains_the_clients_table_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put_account(&contract::account("alice", Some(contract::user("alice", "id-a"))), None).await.unwrap();
    store.insert_session(&contract::session("id-a", "s1", 10_000)).await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE clients;
         DROP TABLE used_tokens;
         DROP TABLE codes;
         ALTER TABLE accounts DROP COLUMN email;
         ALTER TABLE accounts DROP COLUMN identities;
         ALTER TABLE accounts DROP COLUMN factors;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 5).unwrap();
    drop(conn);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.list_clients().await.unwrap().is_empty());
    store.insert_client(&contract::client("svc", 9)).await.unwrap();
    assert!(store.get_client("svc").await.unwrap().is_some());
    assert_eq!(store.list_users().await.unwrap().len(), 1, "users are kept");
    assert!(store.get_session("id-a", "s1").await.unwrap().is_some(), "sessions are kept");
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 8);
}

/// Embedded-only: a store of schema 6 (before sign-in identities, second factors and used-token
/// markers) opens upgraded to schema 7: its users gain empty identities and factors, and both
/// work.
#[tokio::test]
async fn embedded_store_of_schema_6_gains_identities_factors_and_markers_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut alice = contract::user("alice", "id-a");
    alice.factors = Default::default();
    store.put_account(&contract::account("alice", Some(alice.clone())), None).await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE used_tokens;
         DROP TABLE codes;
         ALTER TABLE accounts DROP COLUMN email;
         ALTER TABLE accounts DROP COLUMN identities;
         ALTER TABLE accounts DROP COLUMN factors;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 6).unwrap();
    drop(conn);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let found = store.get_account("alice").await.unwrap().unwrap();
    let user = found.value.user.clone().unwrap();
    assert!(user.identities.is_empty() && user.factors == Default::default(), "{user:?}");
    let mut with_factors = found.value.clone();
    with_factors.user = Some(contract::user("alice", "id-a"));
    store.put_account(&with_factors, Some(&found.version)).await.unwrap();
    assert_eq!(store.get_account("alice").await.unwrap().unwrap().value.user, Some(contract::user("alice", "id-a")));
    assert!(store.mark_used("m", 1, 10).await.unwrap());
    assert!(!store.mark_used("m", 2, 10).await.unwrap());
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 8);
}

/// Cosmos-only: an epoch written as a fake account by an older version is read while no epoch
/// record exists, and the first raise keeps it if it is later.
#[tokio::test]
async fn cosmos_store_honours_an_old_epoch_account() {
    let (store, ()) = cosmos().await;
    store.put_account(&contract::legacy_epoch_account(7_000), None).await.unwrap();
    assert_eq!(store.sessions_epoch().await.unwrap(), 7_000);
    assert_eq!(store.raise_sessions_epoch(6_000).await.unwrap(), 7_000, "an older raise keeps the old epoch");
    assert_eq!(store.raise_sessions_epoch(8_000).await.unwrap(), 8_000);
    assert_eq!(store.sessions_epoch().await.unwrap(), 8_000);
    assert!(store.list_users().await.unwrap().is_empty());
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

#[tokio::test]
async fn embedded_wal_stays_small_under_sustained_writes() {
    // The writer does not checkpoint inside its commits; the checkpointer thread must, or the log
    // grows by every commit (3,000 sequential commits make about 24 MB of log; bounded, about 4 MB).
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut s = contract::session("wal", "s", 10_000_000);
    let mut version = store.insert_session(&s).await.unwrap();
    let mut largest = 0;
    for i in 0..3_000 {
        s.generation = i + 1;
        version = store.replace_session(&s, &version).await.unwrap();
        if i % 100 == 0 {
            let wal = std::fs::metadata(dir.path().join("store.db-wal")).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
    }
    assert!(largest > 0, "the store is in WAL mode");
    assert!(largest < 8 << 20, "the WAL reached {largest} bytes");
    assert_eq!(store.get_session("wal", "s").await.unwrap().unwrap().value.generation, 3_000);
}
