//! The token rules driven through the library with a fixed clock: rotation, reuse grace, reuse
//! detection, absolute lifetime, lockout, access-token checks. Nothing here sleeps.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use jwt_refresh_token::accounts::{AccountService, Actor, PasswordCheck, UserChange};
use jwt_refresh_token::clock::{Clock, ManualClock};
use jwt_refresh_token::secret::Password;
use jwt_refresh_token::service::{GrantFailure, RevokeScope, ServiceError, TokenPair, TokenService};
use jwt_refresh_token::settings::{Env, Mode, Settings};
use jwt_refresh_token::startup::build_services;
use jwt_refresh_token::store::embedded::EmbeddedStore;
use jwt_refresh_token::store::{SessionStore as _, Store};
use jwt_refresh_token::tokens::access::{AccessTokenError, Expiry};

const START: i64 = 1_800_000_000_000;
const KEY: &str = "ztT4_JxYykEeJ1xCq4TebLuQh8M2861EnSQrio1nfonxB9EsYDZhPsnm8ea23wx-";
const PASSWORD: &str = "correct horse battery";

struct Fixture {
    clock: ManualClock,
    store: Arc<EmbeddedStore>,
    service: Arc<TokenService>,
    accounts: Arc<AccountService>,
    _dir: tempfile::TempDir,
}

fn env(extra: &[(&str, &str)]) -> Env {
    let mut pairs = vec![
        ("JwtRefreshToken__Descriptor__Issuer", "https://issuer.test"),
        ("JwtRefreshToken__Descriptor__Audience", "api://test"),
        ("JwtRefreshToken__Descriptor__AlgorithmKey", KEY),
        ("JwtRefreshToken__Rotation__ReuseGraceMs", "10000"),
        ("JwtRefreshToken__Expires__RefreshExpiresInMs", "3600000"),
        ("JwtRefreshToken__Login__MaxFailures", "3"),
        ("JwtRefreshToken__Login__LockoutMs", "60000"),
    ];
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend_from_slice(extra);
    Env::from_pairs(pairs)
}

async fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let clock = ManualClock::new(START);
    let settings = Settings::load(&env(extra), Mode::Production).unwrap();
    let services = build_services(&settings, store.clone() as Arc<dyn Store>, Arc::new(clock.clone())).unwrap();
    let (service, accounts) = (services.tokens, services.accounts);
    for (name, roles) in [("alice", vec![]), ("bob", vec![]), ("root", vec!["admin".to_string()])] {
        let password = Password::new(PASSWORD);
        accounts.create_user(Actor::Operator, name, &password, &roles, PasswordCheck::AllowWeak).await.unwrap();
    }
    Fixture { clock, store, service, accounts, _dir: dir }
}

impl Fixture {
    /// `handler user disable`, as the operator.
    async fn disable(&self, name: &str) -> jwt_refresh_token::accounts::Changed {
        let change = UserChange { disabled: Some(true), ..UserChange::default() };
        self.accounts.change_user(Actor::Operator, name, &change).await.unwrap()
    }

    async fn login(&self, user: &str) -> TokenPair {
        self.service.login(user, &Password::new(PASSWORD), "192.0.2.1").await.unwrap()
    }

    async fn refresh(&self, token: &str) -> Result<TokenPair, ServiceError> {
        self.service.refresh(token, None).await
    }
}

fn grant_failure(r: Result<TokenPair, ServiceError>) -> GrantFailure {
    match r {
        Err(ServiceError::InvalidGrant(f)) => f,
        other => panic!("expected invalid_grant, got {other:?}"),
    }
}

#[tokio::test]
async fn every_refresh_rotates_the_refresh_token() {
    let f = fixture(&[]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    f.clock.advance(20_000);
    let third = f.refresh(&second.refresh_token).await.unwrap();
    assert_ne!(first.refresh_token, second.refresh_token);
    assert_ne!(second.refresh_token, third.refresh_token);
    assert_ne!(first.access_token, second.access_token);
}

#[tokio::test]
async fn previous_token_within_grace_returns_the_same_successor() {
    let f = fixture(&[]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    f.clock.advance(9_999);
    let retry = f.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(retry.refresh_token, second.refresh_token, "a retry must get the same successor");
    // The successor still works: the retry did not fork or end the session.
    f.refresh(&second.refresh_token).await.unwrap();
}

#[tokio::test]
async fn previous_token_after_grace_ends_the_session() {
    let f = fixture(&[]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    f.clock.advance(10_001);
    assert_eq!(grant_failure(f.refresh(&first.refresh_token).await), GrantFailure::Reused);
    assert_eq!(grant_failure(f.refresh(&second.refresh_token).await), GrantFailure::UnknownSession);
}

#[tokio::test]
async fn a_token_two_generations_old_ends_the_session_at_once() {
    let f = fixture(&[]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    let third = f.refresh(&second.refresh_token).await.unwrap();
    assert_eq!(grant_failure(f.refresh(&first.refresh_token).await), GrantFailure::Reused);
    assert_eq!(grant_failure(f.refresh(&third.refresh_token).await), GrantFailure::UnknownSession);
}

#[tokio::test]
async fn zero_grace_makes_any_replay_end_the_session() {
    let f = fixture(&[("JwtRefreshToken__Rotation__ReuseGraceMs", "0")]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    // Within 100 ms of the rotation, in the process that made it, a refresh of the previous token
    // counts as sent together with the winner (scheduling, not a retry): it gets the successor.
    f.clock.advance(100);
    assert_eq!(f.refresh(&first.refresh_token).await.unwrap().refresh_token, second.refresh_token);
    // Any later, with a grace of 0, it is a replay.
    f.clock.advance(1);
    assert_eq!(grant_failure(f.refresh(&first.refresh_token).await), GrantFailure::Reused);
    assert!(f.refresh(&second.refresh_token).await.is_err());
}

#[tokio::test]
async fn rotation_never_extends_the_absolute_lifetime() {
    let f = fixture(&[]).await;
    let mut pair = f.login("alice").await;
    assert_eq!(pair.refresh_expires_in, 3600);
    let mut last = pair.refresh_expires_in;
    for _ in 0..5 {
        f.clock.advance(600_000);
        pair = f.refresh(&pair.refresh_token).await.unwrap();
        assert!(pair.refresh_expires_in < last, "{} !< {last}", pair.refresh_expires_in);
        last = pair.refresh_expires_in;
    }
    assert_eq!(last, 600);
    f.clock.advance(599_999);
    let almost = f.refresh(&pair.refresh_token).await.unwrap();
    assert_eq!(almost.refresh_expires_in, 1);
    f.clock.advance(1);
    assert_eq!(grant_failure(f.refresh(&almost.refresh_token).await), GrantFailure::Expired);
}

#[tokio::test]
async fn tampered_tokens_are_refused_without_touching_the_session() {
    let f = fixture(&[]).await;
    let pair = f.login("alice").await;
    let t = &pair.refresh_token;
    let mid = t.len() / 2;
    let flipped = if &t[mid..=mid] == "A" { "B" } else { "A" };
    let tampered = format!("{}{}{}", &t[..mid], flipped, &t[mid + 1..]);
    let failure = grant_failure(f.refresh(&tampered).await);
    assert!(
        matches!(failure, GrantFailure::Tampered | GrantFailure::Malformed | GrantFailure::UnknownSession),
        "{failure:?}"
    );
    assert!(!f.service.revoke_token(&tampered).await.unwrap(), "a tampered token revokes nothing");
    f.refresh(&pair.refresh_token).await.unwrap();
}

#[tokio::test]
async fn a_copy_of_the_store_without_the_secret_cannot_use_tokens() {
    let f = fixture(&[]).await;
    let pair = f.login("alice").await;
    // Same store, same signing key, a different rotation secret: the tag no longer verifies.
    let settings = Settings::load(
        &env(&[(
            "JwtRefreshToken__Rotation__Secret",
            "awTjism13rD4kFbombWxQSwWdgIc5gs_a4dyKs_4LD7Gkg63RsiXF0QhV0eTxphT",
        )]),
        Mode::Production,
    )
    .unwrap();
    let other = build_services(&settings, f.store.clone() as Arc<dyn Store>, Arc::new(f.clock.clone())).unwrap().tokens;
    assert_eq!(grant_failure(other.refresh(&pair.refresh_token, None).await), GrantFailure::Tampered);
    f.refresh(&pair.refresh_token).await.unwrap();
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_all_get_the_same_successor() {
    let f = Arc::new(fixture(&[]).await);
    let pair = f.login("alice").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let (f, token) = (f.clone(), pair.refresh_token.clone());
        tasks.spawn(async move { f.refresh(&token).await });
    }
    let mut successors = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        successors.insert(r.unwrap().unwrap().refresh_token);
    }
    assert_eq!(successors.len(), 1, "the session forked: {} successors", successors.len());
    let successor = successors.into_iter().next().unwrap();
    f.refresh(&successor).await.unwrap();
}

#[tokio::test]
async fn revoking_with_the_previous_token_ends_the_session() {
    let f = fixture(&[]).await;
    let first = f.login("alice").await;
    let second = f.refresh(&first.refresh_token).await.unwrap();
    assert!(f.service.revoke_token(&first.refresh_token).await.unwrap());
    assert_eq!(grant_failure(f.refresh(&second.refresh_token).await), GrantFailure::UnknownSession);
    assert!(!f.service.revoke_token(&second.refresh_token).await.unwrap(), "already ended");
}

#[tokio::test]
async fn revoking_an_access_token_ends_its_session_until_it_expires() {
    let f = fixture(&[]).await;
    let phone = f.login("alice").await;
    let laptop = f.login("alice").await;
    assert!(f.service.revoke_token(&phone.access_token).await.unwrap());
    assert!(f.refresh(&phone.refresh_token).await.is_err());
    f.refresh(&laptop.refresh_token).await.unwrap();
    // An expired access token revokes nothing.
    f.clock.advance(300_000 + 30_000);
    assert!(!f.service.revoke_token(&laptop.access_token).await.unwrap());
}

#[tokio::test]
async fn scope_revocation_ends_the_right_sessions() {
    let f = fixture(&[]).await;
    let phone = f.login("alice").await;
    let laptop = f.login("alice").await;
    let tablet = f.login("alice").await;
    let bob = f.login("bob").await;
    let caller = f.service.authenticate_bearer(&phone.access_token).await.unwrap();
    assert_eq!(f.service.revoke_scope(&caller, &RevokeScope::Others).await.unwrap(), 2);
    assert!(f.refresh(&laptop.refresh_token).await.is_err());
    assert!(f.refresh(&tablet.refresh_token).await.is_err());
    let phone2 = f.refresh(&phone.refresh_token).await.unwrap();

    assert!(matches!(
        f.service.revoke_scope(&caller, &RevokeScope::User("bob".into())).await,
        Err(ServiceError::Forbidden(_))
    ));
    let root = f.login("root").await;
    let admin = f.service.authenticate_bearer(&root.access_token).await.unwrap();
    assert!(matches!(
        f.service.revoke_scope(&admin, &RevokeScope::User("nobody".into())).await,
        Err(ServiceError::UnknownUser)
    ));
    assert_eq!(f.service.revoke_scope(&admin, &RevokeScope::User("BOB".into())).await.unwrap(), 1);
    assert!(f.refresh(&bob.refresh_token).await.is_err());

    assert_eq!(f.service.revoke_scope(&caller, &RevokeScope::Global).await.unwrap(), 1);
    assert!(f.refresh(&phone2.refresh_token).await.is_err());
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_blocks_login() {
    let f = fixture(&[]).await;
    let pair = f.login("alice").await;
    let ended = f.disable("alice").await.sessions_ended;
    assert_eq!(ended, 1);
    assert_eq!(grant_failure(f.refresh(&pair.refresh_token).await), GrantFailure::UnknownSession);
    let r = f.service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await;
    assert_eq!(grant_failure(r), GrantFailure::BadCredentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_racing_a_disable_leaves_no_session_behind() {
    let f = Arc::new(fixture(&[]).await);
    // Many rounds; in each, logins (from different addresses, so they run in parallel) are in
    // flight while the user is disabled. Whenever each one writes its session, none survives.
    for round in 0..12 {
        let name = format!("racer{round}");
        let password = Password::new(PASSWORD);
        f.accounts.create_user(Actor::Operator, &name, &password, &[], PasswordCheck::AllowWeak).await.unwrap();
        let mut logins = tokio::task::JoinSet::new();
        for i in 0..6 {
            let (f, name) = (f.clone(), name.clone());
            logins
                .spawn(async move { f.service.login(&name, &Password::new(PASSWORD), &format!("192.0.2.{i}")).await });
        }
        tokio::time::sleep(std::time::Duration::from_millis(round * 7)).await;
        let user = f.disable(&name).await.user;
        let mut tokens = Vec::new();
        while let Some(r) = logins.join_next().await {
            if let Ok(pair) = r.unwrap() {
                tokens.push(pair.refresh_token);
            }
        }
        assert!(
            f.store.list_user_sessions(&user.id).await.unwrap().is_empty(),
            "round {round}: a session outlived the disable"
        );
        for token in tokens {
            assert!(f.refresh(&token).await.is_err());
        }
    }
}

#[tokio::test]
async fn lockout_follows_the_clock_and_treats_unknown_users_alike() {
    let f = fixture(&[]).await;
    for user in ["alice", "ghost"] {
        for _ in 0..3 {
            let r = f.service.login(user, &Password::new("wrong password"), "192.0.2.1").await;
            assert_eq!(grant_failure(r), GrantFailure::BadCredentials);
        }
        match f.service.login(user, &Password::new(PASSWORD), "192.0.2.1").await {
            Err(ServiceError::Locked { retry_after_ms }) => assert_eq!(retry_after_ms, 60_000),
            other => panic!("{user}: expected a lock, got {other:?}"),
        }
    }
    f.clock.advance(59_999);
    assert!(matches!(
        f.service.login("alice", &Password::new(PASSWORD), "192.0.2.1").await,
        Err(ServiceError::Locked { retry_after_ms: 1 })
    ));
    f.clock.advance(1);
    f.login("alice").await;
    // A success clears the count: two more failures do not lock.
    for _ in 0..2 {
        let _ = f.service.login("alice", &Password::new("wrong password"), "192.0.2.1").await;
    }
    f.login("alice").await;
}

#[tokio::test]
async fn access_tokens_expire_by_the_clock_with_skew() {
    let f = fixture(&[("JwtRefreshToken__Descriptor__ClockSkewMs", "30000")]).await;
    let pair = f.login("alice").await;
    assert_eq!(pair.expires_in, 300);
    let access = f.service.access_tokens();
    let now = f.clock.now_ms();
    access.verify(&pair.access_token, now + 300_000 + 29_999, Expiry::Enforce).unwrap();
    assert_eq!(access.verify(&pair.access_token, now + 330_000, Expiry::Enforce), Err(AccessTokenError::Expired));
    access.verify(&pair.access_token, now + 10_000_000, Expiry::Ignore).unwrap();
    assert!(matches!(
        access.verify(&pair.access_token, now - 30_001, Expiry::Enforce),
        Err(AccessTokenError::Invalid(_))
    ));
    access.verify(&pair.access_token, now - 30_000, Expiry::Enforce).unwrap();
}

#[tokio::test]
async fn forged_access_tokens_are_refused() {
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let f = fixture(&[]).await;
    let pair = f.login("alice").await;
    let now = f.clock.now_ms();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = pair.access_token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_string();
    let sign = |alg_header: Header, claims: &serde_json::Value, key: &[u8]| {
        jsonwebtoken::encode(&alg_header, claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let with = |typ: Option<&str>, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = typ.map(str::to_string);
        h.kid = kid.map(str::to_string);
        h
    };
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = "https://evil.test".into();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = "api://other".into();
    let alg_none = format!("{}.{}.", b64.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#)), parts[1]);
    let cases = [
        (sign(with(Some("at+jwt"), Some(&kid)), &claims, b"another-key-another-key-another-key!"), "other key"),
        (sign(with(Some("JWT"), Some(&kid)), &claims, KEY.as_bytes()), "typ JWT"),
        (sign(with(None, Some(&kid)), &claims, KEY.as_bytes()), "no typ"),
        (sign(with(Some("at+jwt"), None), &claims, KEY.as_bytes()), "no kid"),
        (sign(with(Some("at+jwt"), Some("unknown")), &claims, KEY.as_bytes()), "unknown kid"),
        (sign(with(Some("at+jwt"), Some(&kid)), &wrong_iss, KEY.as_bytes()), "wrong iss"),
        (sign(with(Some("at+jwt"), Some(&kid)), &wrong_aud, KEY.as_bytes()), "wrong aud"),
        (alg_none, "alg none"),
        (format!("{}.{}.{}", parts[0], parts[1], "AAAA"), "bad signature"),
        ("not.a.jwt".to_string(), "garbage"),
        (String::new(), "empty"),
    ];
    for (token, why) in cases {
        let r = f.service.access_tokens().verify(&token, now, Expiry::Enforce);
        assert!(matches!(r, Err(AccessTokenError::Invalid(_))), "{why}: {r:?}");
    }
    // Control: the genuine token and a re-signed identical one verify.
    f.service.access_tokens().verify(&pair.access_token, now, Expiry::Enforce).unwrap();
    let resigned = sign(with(Some("at+jwt"), Some(&kid)), &claims, KEY.as_bytes());
    f.service.access_tokens().verify(&resigned, now, Expiry::Enforce).unwrap();
}

#[tokio::test]
async fn an_access_token_sent_with_a_refresh_must_match_the_subject() {
    let f = fixture(&[]).await;
    let alice = f.login("alice").await;
    let bob = f.login("bob").await;
    f.clock.advance(3_600_000 - 1);
    // Expired, but ours and for the same subject: accepted.
    let next = f.service.refresh(&alice.refresh_token, Some(&alice.access_token)).await.unwrap();
    let r = f.service.refresh(&next.refresh_token, Some(&bob.access_token)).await;
    assert_eq!(grant_failure(r), GrantFailure::AccessTokenMismatch);
    let r = f.service.refresh(&next.refresh_token, Some("garbage")).await;
    assert_eq!(grant_failure(r), GrantFailure::AccessTokenMismatch);
    // Neither mismatch touched the session.
    f.refresh(&next.refresh_token).await.unwrap();
}

#[tokio::test]
async fn an_idle_session_ends_and_each_refresh_moves_the_idle_deadline_but_never_the_absolute_end() {
    let f = fixture(&[("JwtRefreshToken__Expires__IdleExpiresInMs", "60000")]).await;
    let pair = f.login("alice").await;
    assert_eq!(pair.refresh_expires_in, 60, "the earlier of idle (60 s) and absolute (1 h)");
    f.clock.advance(59_000);
    let mut token = f.refresh(&pair.refresh_token).await.unwrap().refresh_token;
    f.clock.advance(60_000);
    assert_eq!(grant_failure(f.refresh(&token).await), GrantFailure::Expired, "idle for 60 s");
    // Kept busy, a session lives until its absolute end and no longer.
    let pair = f.login("alice").await;
    token = pair.refresh_token;
    let mut last = pair.refresh_expires_in;
    for _ in 0..70 {
        f.clock.advance(59_000);
        match f.refresh(&token).await {
            Ok(next) => {
                assert!(next.refresh_expires_in <= 60);
                last = next.refresh_expires_in;
                token = next.refresh_token;
            }
            Err(e) => {
                assert_eq!(grant_failure(Err(e)), GrantFailure::Expired);
                assert!(last < 60, "the last pairs reported the absolute end, {last} s");
                return;
            }
        }
    }
    panic!("a session refreshed every 59 s outlived its absolute lifetime of 1 h");
}

#[tokio::test]
async fn idle_sessions_are_purged_from_the_embedded_store() {
    let f = fixture(&[("JwtRefreshToken__Expires__IdleExpiresInMs", "60000")]).await;
    f.login("alice").await;
    f.login("bob").await;
    f.clock.advance(61_000);
    let purged = f.store.purge_expired(f.clock.now_ms()).await.unwrap();
    assert_eq!(purged, 2);
}
