//! Cosmos-specific behaviour against the local test peer: TTL expiry, round trips per operation,
//! throttling and timeouts, missing resources. The emulator's counters and fault rules are global,
//! so the tests here run one at a time (`SERIAL`).
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use jwt_refresh_token::accounts::{AccountService, Actor, PasswordCheck};
use jwt_refresh_token::clock::ManualClock;
use jwt_refresh_token::secret::{Password, SecretBytes};
use jwt_refresh_token::service::{Introspection, LoginFrom, ServiceError, TokenService};
use jwt_refresh_token::settings::{CosmosAuth, CosmosSettings, Env, Mode, Settings};
use jwt_refresh_token::startup::{Services, build_services};
use jwt_refresh_token::store::cosmos::{ConnectError, CosmosStore, Provisioning};
use jwt_refresh_token::store::{Account, LoginThrottle, SessionRecord, SessionStore as _, Store, UserStore as _};
use jwt_refresh_token::users::PasswordHasher;
use serde_json::json;

#[path = "support/dpop_client.rs"]
mod dpop_client;
#[path = "support/emulator.rs"]
mod emulator;
#[path = "support/soft_authenticator.rs"]
mod soft_authenticator;
use dpop_client::ProofKey;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const START: i64 = 1_900_000_000_000;
const PASSWORD: &str = "correct horse battery";

fn settings(database: &str, timeout_ms: u64) -> CosmosSettings {
    CosmosSettings {
        endpoint: emulator::endpoint().to_string(),
        auth: CosmosAuth::Key(SecretBytes::new(emulator::EMULATOR_KEY.as_bytes().to_vec())),
        database: database.to_string(),
        token_container: "tokens".into(),
        user_container: "users".into(),
        request_timeout_ms: timeout_ms,
        region: None,
    }
}

async fn store(clock: &ManualClock, timeout_ms: u64) -> Arc<CosmosStore> {
    let store = CosmosStore::new(settings(&emulator::unique_database("cosmos"), timeout_ms), Arc::new(clock.clone()));
    store.connect(Provisioning::CreateMissing).await.expect("connect");
    Arc::new(store)
}

fn session(user: &str, sid: &str, expires_at_ms: i64) -> SessionRecord {
    SessionRecord {
        user_id: user.into(),
        session_id: sid.into(),
        seed: [1u8; 32],
        generation: 0,
        rotated_at_ms: START,
        created_at_ms: START,
        expires_at_ms,
        username: "u".into(),
        roles: vec![],
        details: Default::default(),
    }
}

/// `token` (a JWT) with the last character of its signature changed.
fn tamper_signature(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Adds user `alice` with [`PASSWORD`].
async fn add_alice(store: &Arc<CosmosStore>) {
    let hasher = PasswordHasher::start(&Default::default()).unwrap();
    let accounts = AccountService::new(store.clone(), hasher, Arc::new(ManualClock::new(START)), 8);
    let password = Password::new(PASSWORD);
    accounts.create_user(Actor::Operator, "alice", &password, &[], PasswordCheck::AllowWeak).await.unwrap();
}

/// A token service on a fresh Cosmos database with user `alice`.
async fn service(clock: &ManualClock, timeout_ms: u64) -> (Arc<TokenService>, Arc<CosmosStore>) {
    let (services, store) = services(clock, timeout_ms).await;
    (services.tokens, store)
}

/// Where the services' mail goes (the `outbox` transport), for the whole test binary.
static OUTBOX: std::sync::LazyLock<tempfile::TempDir> = std::sync::LazyLock::new(|| tempfile::tempdir().unwrap());

/// The code of the newest mail to `to` in the outbox (waiting up to 10 s for it to be written).
async fn mailed_code(to: &str, seen_before: usize) -> String {
    for _ in 0..200 {
        let mut codes = Vec::new();
        for entry in std::fs::read_dir(OUTBOX.path()).unwrap().filter_map(Result::ok) {
            let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if raw.lines().any(|l| l == format!("To: {to}")) {
                let modified = entry.metadata().and_then(|m| m.modified()).unwrap();
                let code = raw.lines().find_map(|l| l.strip_prefix("Code: ")).map(str::to_string);
                codes.push((modified, code));
            }
        }
        if codes.len() > seen_before {
            codes.sort();
            if let Some((_, Some(code))) = codes.last() {
                return code.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail {} to {to}", seen_before + 1);
}

/// Both services on a fresh Cosmos database with user `alice`.
async fn services(clock: &ManualClock, timeout_ms: u64) -> (Services, Arc<CosmosStore>) {
    let store = store(clock, timeout_ms).await;
    let env = Env::from_pairs([
        ("JwtRefreshToken__Descriptor__Issuer", "https://issuer.test"),
        ("JwtRefreshToken__Descriptor__Audience", "api://test"),
        (
            "JwtRefreshToken__Descriptor__AlgorithmKey",
            "dcovv0KIIhbbODoiqbKJ-u31v-sSZBBwwOL-EmHM6hiqVa149migK55Eo-vBsOMR",
        ),
        ("JwtRefreshToken__Registration__Mode", "open"),
        ("JwtRefreshToken__Passkeys__RpId", "example.test"),
        ("JwtRefreshToken__Passkeys__Origins", "https://app.example.test"),
        ("JwtRefreshToken__Email__Transport", "outbox"),
        ("JwtRefreshToken__Email__From", "no-reply@service.test"),
        ("JwtRefreshToken__Email__OutboxPath", OUTBOX.path().to_str().unwrap()),
    ]);
    let settings = Settings::load(&env, Mode::Production).unwrap();
    let services = build_services(&settings, store.clone() as Arc<dyn Store>, Arc::new(clock.clone())).unwrap();
    add_alice(&store).await;
    (services, store)
}

#[tokio::test]
async fn sessions_expire_by_cosmos_ttl_at_the_end_of_their_absolute_lifetime() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let store = store(&clock, 10_000).await;
    let v = store.insert_session(&session("u1", "s1", START + 10_000)).await.unwrap();
    // Six seconds later the session rotates: its ttl shrinks to the four seconds left, it does
    // not restart at ten.
    clock.advance(6_000);
    emulator::advance_clock(6).await;
    let mut rotated = session("u1", "s1", START + 10_000);
    rotated.generation = 1;
    store.replace_session(&rotated, &v).await.unwrap();
    emulator::advance_clock(3).await;
    assert!(store.get_session("u1", "s1").await.unwrap().is_some(), "alive before its end");
    emulator::advance_clock(2).await;
    assert!(store.get_session("u1", "s1").await.unwrap().is_none(), "Cosmos TTL removed the expired session");
}

#[tokio::test]
async fn throttle_only_accounts_expire_by_ttl_and_user_accounts_never() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let store = store(&clock, 10_000).await;
    let throttle = LoginThrottle { failures: 2, last_failure_ms: START, locked_until_ms: 0, strikes: 0 };
    let ghost = Account {
        username_key: "ghost".into(),
        user: None,
        throttle,
        addresses: vec![],
        devices: vec![],
        expires_at_ms: Some(START + 5_000),
    };
    store.put_account(&ghost, None).await.unwrap();
    add_alice(&store).await;
    emulator::advance_clock(6).await;
    assert!(store.get_account("ghost").await.unwrap().is_none());
    assert!(store.get_account("alice").await.unwrap().is_some());
}

#[tokio::test]
async fn every_operation_stays_within_its_round_trip_budget() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, accounts, clients }, _store) = services(&clock, 10_000).await;
    let password = Password::new(PASSWORD);
    let mut report = Vec::new();
    let mut within = async |name: &str, budget: u64| -> serde_json::Value {
        let kinds = emulator::document_requests().await;
        let total = emulator::document_request_total().await;
        assert!(total <= budget, "{name}: {total} document requests > {budget}: {kinds}");
        report.push(format!("{name}: {total} document requests {kinds}"));
        emulator::reset_stats().await;
        kinds
    };

    // Warm-up: the first login computes the dummy hash.
    let first = service.login("alice", &password, "192.0.2.1").await.unwrap();
    emulator::reset_stats().await;
    let device = first.device_token.clone().expect("a password login returns a device token");
    let from = LoginFrom { address: Some("192.0.2.1"), user_agent: None, device_token: Some(&device), dpop_jkt: None };
    let pair = service.login_from("alice", &password, from).await.unwrap();
    // With the user's device token (no failures on it): read the account, create the session,
    // then together (one round trip of latency): read the account again (a disable racing the
    // login) and list the user's sessions (the session cap).
    let kinds = within("login", 4).await;
    assert_eq!((kinds["read"].as_u64(), kinds["create"].as_u64()), (Some(2), Some(1)), "{kinds}");
    assert_eq!(kinds["query"].as_u64(), Some(1), "{kinds}");

    // Without a device token the attempt is reserved against the username-wide budget before the
    // hash is checked (so parallel attempts on any number of instances cannot overshoot it), and
    // the success gives the reservation back: two account writes more than with a device token
    // (read, reserve, release, create the session, then re-read and list the sessions together).
    service.login("alice", &password, "192.0.2.1").await.unwrap();
    let kinds = within("login without a device token", 6).await;
    assert_eq!(kinds["replace"].as_u64(), Some(2), "the reservation and its release: {kinds}");

    let next = service.refresh(&pair.refresh_token, None).await.unwrap();
    let kinds = within("refresh", 2).await;
    assert_eq!((kinds["read"].as_u64(), kinds["replace"].as_u64()), (Some(1), Some(1)), "{kinds}");

    let retry = service.refresh(&pair.refresh_token, None).await.unwrap();
    assert_eq!(retry.refresh_token, next.refresh_token);
    within("retry within grace", 1).await;

    assert!(service.revoke_token(&next.refresh_token).await.unwrap());
    within("revoke one session", 2).await;

    let wrong = service.login("alice", &Password::new("wrong password"), "192.0.2.1").await;
    assert!(matches!(wrong, Err(ServiceError::InvalidGrant(_))));
    within("failed login", 2).await;

    // After a failure from this address: read, reserve the attempt, clear the address's count,
    // create the session, read again and list the sessions.
    let mut pairs = vec![service.login("alice", &password, "192.0.2.1").await.unwrap()];
    within("login after a failure from the same address", 6).await;
    for _ in 0..2 {
        pairs.push(service.login("alice", &password, "192.0.2.1").await.unwrap());
    }
    emulator::reset_stats().await;
    let caller = service.authenticate_bearer(&pairs[0].access_token).await.unwrap();
    within("Bearer check (the session is live)", 1).await;
    // Introspection: the client's record is read once, then served from the instance's cache for
    // 60 s; the introspection itself is the one session read (liveness as for a Bearer check).
    let client = clients.add("resource-server").await.unwrap();
    let secret = client.client_secret.expose();
    emulator::reset_stats().await;
    clients.authenticate("resource-server", secret).await.unwrap();
    let kinds = within("introspection client, first lookup", 1).await;
    assert_eq!(kinds["read"].as_u64(), Some(1), "{kinds}");
    clients.authenticate("resource-server", secret).await.unwrap();
    within("introspection client, cached", 0).await;
    let found = service.introspect(&pairs[0].access_token).await.unwrap();
    assert!(matches!(found, Introspection::Active(_)), "{found:?}");
    let kinds = within("introspection of a live token", 1).await;
    assert_eq!(kinds["read"].as_u64(), Some(1), "{kinds}");
    let found = service.introspect(&tamper_signature(&pairs[0].access_token)).await.unwrap();
    assert!(matches!(found, Introspection::Inactive), "{found:?}");
    within("introspection of a forged token", 0).await;
    let ended = service.revoke_scope(&caller, &jwt_refresh_token::service::RevokeScope::Global).await.unwrap();
    assert_eq!(ended, 5, "the warm-up session, the one without a device token and the three new ones");
    let kinds = within("revoke all sessions", 2).await;
    assert_eq!((kinds["query"].as_u64(), kinds["batch"].as_u64()), (Some(1), Some(1)), "{kinds}");

    // Sign-up: claim the name's look-alike skeleton, create the account, create the session (no
    // read for a new name whose skeleton is new).
    let client =
        jwt_refresh_token::service::Client { address: Some("192.0.2.9"), user_agent: Some("test"), dpop_jkt: None };
    let newbie =
        accounts.register("newbie", &Password::new("plum umbrella cactus 1987"), client.address).await.unwrap();
    let signed_up = service.open_session(newbie, client).await.unwrap();
    let kinds = within("sign-up", 3).await;
    assert_eq!(kinds["create"].as_u64(), Some(3), "claim, account, session: {kinds}");
    let other = service.login("newbie", &Password::new("plum umbrella cactus 1987"), "192.0.2.9").await.unwrap();
    let caller = service.authenticate_bearer(&signed_up.access_token).await.unwrap();
    emulator::reset_stats().await;
    let page = service.list_sessions(&caller, std::num::NonZeroUsize::new(100).unwrap(), None).await.unwrap();
    assert_eq!(page.sessions.len(), 2);
    let kinds = within("sessions list", 1).await;
    assert_eq!(kinds["query"].as_u64(), Some(1), "{kinds}");
    let found = service.introspect(&pairs[0].access_token).await.unwrap();
    assert!(matches!(found, Introspection::Inactive), "revoked above: {found:?}");
    within("introspection of a revoked session's token", 1).await;
    // Password change: the account read and write, then the batch ending the other sessions.
    let ended = accounts
        .change_password(
            &caller,
            &Password::new("plum umbrella cactus 1987"),
            &Password::new("quiet harbour lantern 42"),
            Some("192.0.2.9"),
        )
        .await
        .unwrap();
    assert_eq!(ended, 1);
    // The current password is checked through the lockout like a login without a device token:
    // reserved against the username-wide budget first, the reservation given back after (two
    // account writes more than before the reservation was made for every such attempt).
    let kinds = within("password change", 6).await;
    assert_eq!((kinds["read"].as_u64(), kinds["replace"].as_u64()), (Some(1), Some(3)), "{kinds}");
    assert_eq!((kinds["query"].as_u64(), kinds["batch"].as_u64()), (Some(1), Some(1)), "{kinds}");
    assert!(service.refresh(&other.refresh_token, None).await.is_err());
    emulator::reset_stats().await;
    // Refresh is unchanged by all of this.
    service.refresh(&signed_up.refresh_token, None).await.unwrap();
    within("refresh after the account routes", 2).await;
    for line in report {
        println!("{line}");
    }
}

#[tokio::test]
async fn dpop_bound_operations_cost_what_bearer_ones_do_and_a_refused_proof_writes_nothing() {
    use jwt_refresh_token::tokens::dpop::Target;
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, .. }, _store) = services(&clock, 10_000).await;
    let password = Password::new(PASSWORD);
    let mut report = Vec::new();
    let mut within = async |name: &str, budget: u64| -> serde_json::Value {
        let kinds = emulator::document_requests().await;
        let total = emulator::document_request_total().await;
        assert!(total <= budget, "{name}: {total} document requests > {budget}: {kinds}");
        report.push(format!("{name}: {total} document requests {kinds}"));
        emulator::reset_stats().await;
        kinds
    };
    let first = service.login("alice", &password, "192.0.2.1").await.unwrap();
    let device = first.device_token.clone().unwrap();
    emulator::reset_stats().await;

    // The proof is checked in memory: a bound login costs what any login with a device token does.
    let key = ProofKey::new();
    let target = |url| Target { method: "POST", url, access_token: None };
    let proof = key.proof_at("POST", "https://issuer.test/api/token", START / 1000, None, None);
    let jkt = service.proof_key(Some(&proof), target("https://issuer.test/api/token")).unwrap().unwrap();
    within("a DPoP proof check", 0).await;
    let from =
        LoginFrom { address: Some("192.0.2.1"), user_agent: None, device_token: Some(&device), dpop_jkt: Some(&jkt) };
    let pair = service.login_from("alice", &password, from).await.unwrap();
    assert_eq!(pair.token_type, "DPoP");
    within("DPoP-bound login", 4).await;

    // A refresh without the key, or with another, reads the session and writes nothing.
    let refused = service.refresh(&pair.refresh_token, None).await;
    assert!(matches!(refused, Err(ServiceError::InvalidDpopProof(_))), "{refused:?}");
    let kinds = within("bound refresh without a proof (refused)", 1).await;
    assert_eq!(kinds["read"].as_u64(), Some(1), "{kinds}");
    let thief = ProofKey::new().proof_at("POST", "https://issuer.test/api/refresh", START / 1000, None, None);
    let other = service.proof_key(Some(&thief), target("https://issuer.test/api/refresh")).unwrap().unwrap();
    let refused = service.refresh_with_key(&pair.refresh_token, None, Some(&other)).await;
    assert!(matches!(refused, Err(ServiceError::InvalidDpopProof(_))), "{refused:?}");
    within("bound refresh with another key (refused)", 1).await;

    // The owner's refresh: the same read and conditional replace as a bearer refresh.
    let proof = key.proof_at("POST", "https://issuer.test/api/refresh", START / 1000, None, None);
    let same = service.proof_key(Some(&proof), target("https://issuer.test/api/refresh")).unwrap().unwrap();
    let next = service.refresh_with_key(&pair.refresh_token, None, Some(&same)).await.unwrap();
    let kinds = within("bound refresh with its key", 2).await;
    assert_eq!((kinds["read"].as_u64(), kinds["replace"].as_u64()), (Some(1), Some(1)), "{kinds}");

    // A resource request under the DPoP scheme: one session read, as for Bearer.
    let url = "https://issuer.test/api/sessions";
    let proof = key.proof_at("GET", url, START / 1000, Some(&next.access_token), None);
    let get = Target { method: "GET", url, access_token: None };
    service.authenticate_dpop(&next.access_token, Some(&proof), get).await.unwrap();
    within("DPoP resource request", 1).await;
    let found = service.introspect(&next.access_token).await.unwrap();
    let Introspection::Active(active) = found else { panic!("active expected") };
    assert_eq!(active.proof.jkt(), Some(jkt.as_str()));
    within("introspection of a DPoP-bound token", 1).await;
    for line in report {
        println!("{line}");
    }
}

#[tokio::test]
async fn a_login_beyond_the_session_cap_costs_one_delete_more() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let store = store(&clock, 10_000).await;
    let env = Env::from_pairs([
        ("JwtRefreshToken__Descriptor__Issuer", "https://issuer.test"),
        ("JwtRefreshToken__Descriptor__Audience", "api://test"),
        (
            "JwtRefreshToken__Descriptor__AlgorithmKey",
            "dcovv0KIIhbbODoiqbKJ-u31v-sSZBBwwOL-EmHM6hiqVa149migK55Eo-vBsOMR",
        ),
        ("JwtRefreshToken__Sessions__MaxPerUser", "2"),
    ]);
    let settings = Settings::load(&env, Mode::Production).unwrap();
    let services = build_services(&settings, store.clone() as Arc<dyn Store>, Arc::new(clock.clone())).unwrap();
    add_alice(&store).await;
    let service = services.tokens;
    let password = Password::new(PASSWORD);
    let first = service.login("alice", &password, "192.0.2.1").await.unwrap();
    clock.advance(1_000);
    service.login("alice", &password, "192.0.2.1").await.unwrap();
    clock.advance(1_000);
    emulator::reset_stats().await;
    service.login("alice", &password, "192.0.2.1").await.unwrap();
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    // A login without a device token costs 6 (see `every_operation_stays_within_its_round_trip_budget`).
    assert_eq!(total, 7, "the login's 6 and one delete: {kinds}");
    assert_eq!(kinds["delete"].as_u64(), Some(1), "{kinds}");
    assert!(service.refresh(&first.refresh_token, None).await.is_err(), "the least recently used ended");
}

#[tokio::test]
async fn throttling_is_retried_a_bounded_number_of_times_then_surfaces_as_unavailable() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (service, _store) = service(&clock, 5_000).await;
    let pair = service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await.unwrap();

    // A short burst of 429s is absorbed by retries that honour x-ms-retry-after-ms.
    emulator::inject(json!({"status": 429, "retryAfterMs": 5, "count": 2, "kinds": ["read"]})).await;
    let next = service.refresh(&pair.refresh_token, None).await.unwrap();

    // Sustained throttling: bounded retries, then the caller sees Unavailable (503 at the edge).
    emulator::inject(json!({"status": 429, "retryAfterMs": 5, "count": 50, "kinds": ["replace"]})).await;
    let started = std::time::Instant::now();
    let r = service.refresh(&next.refresh_token, None).await;
    emulator::clear_faults().await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded: {:?}", started.elapsed());
    // Nothing was half-rotated: the same token still refreshes.
    service.refresh(&next.refresh_token, None).await.unwrap();
}

#[tokio::test]
async fn a_slow_store_times_out_and_a_retry_gets_the_same_successor() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (service, _store) = service(&clock, 1_000).await;
    let pair = service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await.unwrap();
    emulator::inject(json!({"delayMs": 1_600, "count": 1, "kinds": ["replace"]})).await;
    let r = service.refresh(&pair.refresh_token, None).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    // The delayed replace may still land after the client gave up; whichever way it went, the
    // client's retry with the same token succeeds and the session is not forked.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let first = service.refresh(&pair.refresh_token, None).await.unwrap();
    let again = service.refresh(&pair.refresh_token, None).await.unwrap();
    assert_eq!(first.refresh_token, again.refresh_token);
    service.refresh(&first.refresh_token, None).await.unwrap();
}

#[tokio::test]
async fn without_create_rights_a_missing_database_or_container_is_named() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let database = emulator::unique_database("missing");
    let store = CosmosStore::new(settings(&database, 10_000), Arc::new(clock.clone()));
    match store.connect(Provisioning::RequireExisting).await {
        Err(ConnectError::Missing { setting, what }) => {
            assert_eq!(setting, "JwtRefreshToken__Cosmos__DatabaseName");
            assert!(what.contains(&database), "{what}");
        }
        other => panic!("expected a missing database, got {other:?}"),
    }
    // Requests meanwhile fail as unavailable, never as "not found".
    let r = store.get_session("u", "s").await;
    assert!(matches!(r, Err(jwt_refresh_token::store::StoreError::Unavailable { .. })), "{r:?}");

    // The database exists (created by a store with other container names) but not the containers.
    let mut elsewhere = settings(&database, 10_000);
    elsewhere.token_container = "other-tokens".into();
    elsewhere.user_container = "other-users".into();
    CosmosStore::new(elsewhere, Arc::new(clock.clone())).connect(Provisioning::CreateMissing).await.unwrap();
    match store.connect(Provisioning::RequireExisting).await {
        Err(ConnectError::Missing { setting, what }) => {
            assert_eq!(setting, "JwtRefreshToken__Cosmos__TokenContainerId");
            assert!(what.contains("\"tokens\""), "{what}");
        }
        other => panic!("expected a missing container, got {other:?}"),
    }
}

#[tokio::test]
async fn a_login_whose_session_write_landed_but_whose_answer_was_lost_succeeds() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (service, store) = service(&clock, 5_000).await;
    emulator::reset_stats().await;
    // The peer stores the session, then drops the connection; the SDK retries the create, which
    // conflicts with the first attempt.
    emulator::inject(json!({"action": "apply-then-drop", "count": 1, "kinds": ["create"], "containers": ["tokens"]}))
        .await;
    let pair = service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await.expect("the login succeeds");
    assert_eq!(emulator::document_requests().await["create"].as_u64(), Some(2), "the SDK retried the create");
    let user = store.get_account("alice").await.unwrap().unwrap().value.user.unwrap();
    assert_eq!(store.list_user_sessions(&user.id).await.unwrap().len(), 1, "one session, no orphan");
    service.refresh(&pair.refresh_token, None).await.expect("its refresh token works");
    // A real conflict (another record under the same id) is still one.
    let mut other = store.list_user_sessions(&user.id).await.unwrap().remove(0);
    other.seed = [7u8; 32];
    assert!(matches!(store.insert_session(&other).await, Err(jwt_refresh_token::store::StoreError::Conflict)));
}

#[tokio::test]
async fn a_returning_federated_sign_in_costs_what_a_password_login_without_a_device_token_does() {
    use jwt_refresh_token::accounts::identities;
    use jwt_refresh_token::federation::Verified;
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, accounts, .. }, store) = services(&clock, 10_000).await;
    let verified = |token: &str| Verified {
        provider: "google".into(),
        subject: "110169484474386276334".into(),
        email: Some("someone@gmail.com".into()),
        email_verified: true,
        name: None,
        expires_at_ms: START + 3_600_000,
        token_hash: token.into(),
        amr: Vec::new(),
        mfa_asserted: false,
    };
    let client = jwt_refresh_token::service::Client { address: Some("192.0.2.7"), user_agent: None, dpop_jkt: None };
    let sign_in = async |v: &Verified| {
        identities::consume(store.as_ref(), v, START).await.unwrap();
        let account = accounts.federated_account(v, client.address).await.unwrap();
        let pair = service.federated_login(account.principal, client, false).await.unwrap();
        (account.created, pair)
    };
    emulator::reset_stats().await;
    let (created, first) = sign_in(&verified("aa01")).await;
    assert!(created);
    // First sign-in: the marker, the identity read (none), the look-alike claim, the identity's
    // claim, the account, the session, then the re-read and the session list.
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    assert!(total <= 10, "first federated sign-in: {total} document requests: {kinds}");
    println!("first federated sign-in: {total} document requests {kinds}");
    emulator::reset_stats().await;
    let (created, again) = sign_in(&verified("aa02")).await;
    assert!(!created);
    assert_eq!(again.session_id.len(), first.session_id.len());
    // Returning: the marker (create), the identity and the account (reads), the session (create),
    // then the re-read and the session list together — what a password login without a device
    // token costs (6; see `every_operation_stays_within_its_round_trip_budget`).
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("returning federated sign-in: {total} document requests {kinds}");
    assert!(total <= 6, "returning federated sign-in: {total} document requests > 6: {kinds}");
    assert_eq!((kinds["create"].as_u64(), kinds["read"].as_u64()), (Some(2), Some(3)), "{kinds}");
    assert_eq!(kinds["query"].as_u64(), Some(1), "{kinds}");
    // A replayed token costs the one marker create (409) and its read, and changes nothing.
    emulator::reset_stats().await;
    assert!(identities::consume(store.as_ref(), &verified("aa02"), START).await.is_err());
    let total = emulator::document_request_total().await;
    assert!(total <= 2, "a replay: {total} document requests");
}

#[tokio::test]
async fn a_two_step_login_costs_stated_round_trips() {
    use jwt_refresh_token::accounts::factors::SecondFactor;
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, accounts, .. }, _store) = services(&clock, 10_000).await;
    let password = Password::new(PASSWORD);
    let pair = service.login("alice", &password, "192.0.2.1").await.unwrap();
    let caller = service.authenticate_bearer(&pair.access_token).await.unwrap();
    emulator::reset_stats().await;
    let enrolment = accounts.enrol_totp(&caller).await.unwrap();
    // Enrolment: the account read and its replace.
    let kinds = emulator::document_requests().await;
    assert_eq!((kinds["read"].as_u64(), kinds["replace"].as_u64()), (Some(1), Some(1)), "enrolment: {kinds}");
    assert_eq!(emulator::document_request_total().await, 2, "enrolment: {kinds}");
    let secret = totp_rs::Secret::try_from_base32(&enrolment.secret).unwrap().as_bytes().to_vec();
    let authenticator = totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name("alice")
        .with_step_duration(30)
        .with_digits(6)
        .with_skew(1)
        .build()
        .unwrap();
    let step = u64::try_from(START / 1000).unwrap() / 30;
    let code = |s: u64| authenticator.generate(s * 30).to_string();
    emulator::reset_stats().await;
    accounts.confirm_totp(&caller, &code(step), Some("192.0.2.1")).await.unwrap();
    // Confirmation: the code is checked through the lockout (read, reserve, release) and its step
    // and the recovery codes written by compare-and-swap.
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("TOTP confirmation: {total} document requests {kinds}");
    assert!(total <= 4, "confirmation: {total} > 4: {kinds}");
    emulator::reset_stats().await;
    // The first step: the account read, the reservation and its release (as a login without a
    // device token, less the session and its checks).
    let mfa_token = match service.login("alice", &password, "192.0.2.1").await {
        Err(ServiceError::MfaRequired { mfa_token, .. }) => mfa_token,
        other => panic!("expected mfa_required, got {other:?}"),
    };
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("first step: {total} document requests {kinds}");
    assert!(total <= 3, "first step: {total} > 3: {kinds}");
    emulator::reset_stats().await;
    // The second step: the mfa_token's single-use marker, the account read, the reservation and
    // its release, the code's step written by compare-and-swap, then the session as at login
    // (create, re-read, list).
    let claims = service.redeem_mfa_token(&mfa_token).await.unwrap();
    let origin = jwt_refresh_token::users::lockout::Origin { address: Some("192.0.2.1"), device_token: None };
    let principal = accounts.second_step(&claims, SecondFactor::Otp(&code(step + 1)), origin).await.unwrap();
    let client = jwt_refresh_token::service::Client { address: Some("192.0.2.1"), user_agent: None, dpop_jkt: None };
    service.second_step_login(principal, client, &["pwd", "otp", "mfa"]).await.unwrap();
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("second step: {total} document requests {kinds}");
    assert!(total <= 8, "second step: {total} > 8: {kinds}");
    assert_eq!(kinds["create"].as_u64(), Some(2), "the marker and the session: {kinds}");
}

#[tokio::test]
async fn a_passkey_sign_in_costs_stated_round_trips() {
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, accounts, .. }, _store) = services(&clock, 10_000).await;
    let pair = service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await.unwrap();
    let caller = service.authenticate_bearer(&pair.access_token).await.unwrap();
    let origin = "https://app.example.test";
    let mut key = soft_authenticator::SoftAuthenticator::new(true, false);
    emulator::reset_stats().await;
    let start = accounts.start_passkey_registration(&caller).await.unwrap();
    let options = serde_json::to_value(&start).unwrap()["options"].clone();
    let credential = key.register(&options, origin);
    accounts.finish_passkey_registration(&caller, &start.ceremony, &credential, Some("key")).await.unwrap();
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("passkey registration: {total} document requests {kinds}");
    // Start: the account read. Finish: the account read, the ceremony's marker, the credential's
    // record (read, create), the account (read, replace).
    assert!(total <= 7, "passkey registration: {total} > 7: {kinds}");
    emulator::reset_stats().await;
    let start = accounts.start_passkey_login(None).await.unwrap();
    let options = serde_json::to_value(&start).unwrap()["options"].clone();
    let credential = key.assert(&options, origin);
    let signed_in = accounts.finish_passkey_login(&start.ceremony, &credential, None).await.unwrap();
    let client = jwt_refresh_token::service::Client { address: Some("192.0.2.1"), user_agent: None, dpop_jkt: None };
    service.second_step_login(signed_in.principal, client, &["hwk", "mfa"]).await.unwrap();
    let kinds = emulator::document_requests().await;
    let total = emulator::document_request_total().await;
    println!("passkey sign-in: {total} document requests {kinds}");
    // The ceremony's marker, the credential's record, the account, the counter written by
    // compare-and-swap (read, replace), then the session as at login (create, re-read, list).
    assert!(total <= 8, "passkey sign-in: {total} > 8: {kinds}");
    assert_eq!(kinds["create"].as_u64(), Some(2), "the marker and the session: {kinds}");
}

#[tokio::test]
async fn e_mail_operations_cost_stated_round_trips() {
    use jwt_refresh_token::accounts::email::Who;
    let _serial = SERIAL.lock().await;
    let clock = ManualClock::new(START);
    let (Services { tokens: service, accounts, .. }, _store) = services(&clock, 10_000).await;
    let pair = service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await.unwrap();
    let caller = service.authenticate_bearer(&pair.access_token).await.unwrap();
    let measure = |what: &'static str, budget: u64| async move {
        let kinds = emulator::document_requests().await;
        let total = emulator::document_request_total().await;
        println!("{what}: {total} document requests {kinds}");
        assert!(total <= budget, "{what}: {total} > {budget}: {kinds}");
        emulator::reset_stats().await;
    };
    // Setting the address: the account read, the address's and the account's code records read
    // and written, the account written.
    emulator::reset_stats().await;
    accounts.set_my_email(&caller, "alice@example.com").await.unwrap();
    measure("set address", 6).await;
    let code = mailed_code("alice@example.com", 0).await;
    emulator::reset_stats().await;
    // Verifying: the account read, the code read and used, the address claim read and created,
    // the account written.
    accounts.verify_my_email(&caller, &code).await.unwrap();
    measure("verify address", 6).await;
    // Forgot, by username: the account read, then the two code records read and written.
    assert!(accounts.request_password_reset(&Who::Username("alice".into())).await.unwrap());
    measure("forgot by username", 5).await;
    // By address: the claim read first.
    assert!(accounts.request_password_reset(&Who::Email("alice@example.com".into())).await.unwrap());
    measure("forgot by address", 6).await;
    // Nothing to send: the account read only.
    assert!(!accounts.request_password_reset(&Who::Username("nobody".into())).await.unwrap());
    measure("forgot, unknown account", 1).await;
    let code = mailed_code("alice@example.com", 2).await;
    emulator::reset_stats().await;
    // Reset: the account read, the code read and used, the account read and written, the
    // sessions' query and one delete per session (alice has one).
    let new = Password::new("plum umbrella cactus 1987");
    let ended = accounts.reset_password(&Who::Username("alice".into()), &code, &new, None, None).await.unwrap();
    assert_eq!(ended, 1);
    measure("reset (one session)", 8).await;
}
