//! Login throttling: `MaxFailures` failures lock a username (existing or not) for `LockoutMs`.

use std::time::Duration;

use crate::helpers::*;

const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
const LOCKOUT: &str = "JwtRefreshToken__Login__LockoutMs";

fn assert_locked(r: &Reply, context: &str) {
    assert_error(r, 429, "temporarily_unavailable", context);
    let retry_after: i64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{context}: no Retry-After"))
        .parse()
        .unwrap_or_else(|e| panic!("{context}: Retry-After is not whole seconds: {e}"));
    assert!((1..=2).contains(&retry_after), "{context}: Retry-After {retry_after} for a 2 s lock");
}

#[tokio::test]
async fn repeated_failures_lock_the_username_with_retry_after() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (LOCKOUT, "2000")]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    for (attempt, name) in ["alice", "Alice", "ALICE"].iter().enumerate() {
        assert_invalid_grant(&app.try_login(name, "wrong-password").await, &format!("failure {}", attempt + 1));
    }
    assert_locked(&app.try_login("alice", "wrong-password").await, "a fourth wrong password");
    assert_locked(&app.try_login("alice", PASSWORD).await, "the right password while locked");
    assert_locked(&app.try_login("aLiCe", PASSWORD).await, "another spelling while locked");
    assert_token_pair(&app.try_login("bob", PASSWORD).await, "other usernames are not locked");
}

#[tokio::test]
async fn a_username_that_does_not_exist_is_locked_like_a_real_one() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (LOCKOUT, "2000")]);
    app.add_user("alice", PASSWORD, &[]);
    for attempt in 1..=3 {
        assert_invalid_grant(&app.try_login("ghost", "wrong-password").await, &format!("failure {attempt}"));
    }
    assert_locked(&app.try_login("ghost", "wrong-password").await, "unknown username after 3 failures");
}

#[tokio::test]
async fn a_success_before_the_limit_clears_the_failures() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (LOCKOUT, "2000")]);
    app.add_user("alice", PASSWORD, &[]);
    for _ in 0..2 {
        assert_invalid_grant(&app.try_login("alice", "wrong-password").await, "failure");
    }
    app.login("alice", PASSWORD).await;
    for _ in 0..2 {
        assert_invalid_grant(&app.try_login("alice", "wrong-password").await, "failure after a success");
    }
    assert_token_pair(&app.try_login("alice", PASSWORD).await, "two failures after a success do not lock");
}

#[tokio::test]
async fn the_right_password_works_again_after_the_lock() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (LOCKOUT, "1000")]);
    app.add_user("alice", PASSWORD, &[]);
    for attempt in 1..=3 {
        assert_invalid_grant(&app.try_login("alice", "wrong-password").await, &format!("failure {attempt}"));
    }
    let locked = app.try_login("alice", PASSWORD).await;
    assert_eq!(locked.status, 429, "locked right after the third failure: {}", locked.text());
    assert_eq!(locked.header("retry-after").as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_token_pair(&app.try_login("alice", PASSWORD).await, "after the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_still_lock_the_username() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (LOCKOUT, "2000")]);
    app.add_user("alice", PASSWORD, &[]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (app.client.clone(), app.url("/api/token"));
        tasks.spawn(async move {
            let body = serde_json::json!({"username": "alice", "password": "wrong-password"});
            client.post(url).json(&body).send().await.expect("request").status().as_u16()
        });
    }
    while let Some(status) = tasks.join_next().await {
        let status = status.expect("task");
        assert!(status == 400 || status == 429, "a concurrent failure answered {status}");
    }
    assert_locked(&app.try_login("alice", PASSWORD).await, "no failure was lost to a race");
    let warnings = app.logs().iter().filter(|l| l.contains("login locked after repeated failures")).count();
    assert_eq!(warnings, 1, "one warning for the failure that set the lock, none for late guesses");
}
