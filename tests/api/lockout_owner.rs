//! The second hardening pass: a client address that cannot be forged (`TrustedProxyHops`), lockout
//! that cannot be turned against the owner (device tokens, a reserved username-wide budget whose
//! lock grows), and usernames logged only as pseudonyms.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
const PER_USERNAME: &str = "JwtRefreshToken__Login__MaxFailuresPerUsername";
const LOCKOUT: &str = "JwtRefreshToken__Login__LockoutMs";
const HOPS: &str = "JwtRefreshToken__Network__TrustedProxyHops";
const APP: &str = "http://localhost:5173";

async fn login_with(app: &TestApp, forwarded_for: Option<&str>, body: Value) -> Reply {
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(xff) = forwarded_for {
        headers.push(("X-Forwarded-For".to_string(), xff.to_string()));
    }
    app.request("POST", "/api/token", &headers, body.to_string().into_bytes()).await
}

async fn attempt(app: &TestApp, forwarded_for: &str, username: &str, password: &str) -> Reply {
    login_with(app, Some(forwarded_for), json!({"username": username, "password": password})).await
}

#[tokio::test]
async fn a_forged_first_forwarded_entry_cannot_lock_the_victims_address() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "100")]);
    app.add_user("alice", PASSWORD, &[]);
    // The attacker names the victim's address first; Azure's front end appends the real one.
    for i in 1..=3 {
        let r = attempt(&app, "203.0.113.5, 198.51.100.66", "alice", "wrong-password").await;
        assert_invalid_grant(&r, &format!("failure {i}"));
    }
    let r = attempt(&app, "203.0.113.5, 198.51.100.66", "alice", PASSWORD).await;
    assert_eq!(r.status, 429, "the attacker's real address is locked: {}", r.text());
    assert_token_pair(&attempt(&app, "203.0.113.5", "alice", PASSWORD).await, "the victim's address is not locked");
}

#[tokio::test]
async fn invented_first_forwarded_entries_give_no_fresh_guesses() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "100")]);
    app.add_user("alice", PASSWORD, &[]);
    for i in 1..=3 {
        let r = attempt(&app, &format!("10.0.0.{i}, 198.51.100.66"), "alice", "wrong-password").await;
        assert_invalid_grant(&r, &format!("failure {i}"));
    }
    let r = attempt(&app, "10.0.0.99, 198.51.100.66", "alice", "wrong-password").await;
    assert_eq!(r.status, 429, "a new invented entry is the same client: {}", r.text());
    // Several headers are one list, in order.
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Forwarded-For".to_string(), "10.0.0.100".to_string()),
        ("X-Forwarded-For".to_string(), "198.51.100.66".to_string()),
    ];
    let body = json!({"username": "alice", "password": "wrong-password"}).to_string().into_bytes();
    assert_eq!(app.request("POST", "/api/token", &headers, body).await.status, 429, "split headers");
}

#[tokio::test]
async fn more_trusted_hops_take_the_entry_further_left() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "100"), (HOPS, "2")]);
    app.add_user("alice", PASSWORD, &[]);
    for _ in 0..3 {
        assert_invalid_grant(&attempt(&app, "6.6.6.6, 198.51.100.66, 10.1.1.1", "alice", "nope-nope").await, "failure");
    }
    assert_eq!(attempt(&app, "198.51.100.66, 10.1.1.2", "alice", PASSWORD).await.status, 429, "same client");
    assert_token_pair(&attempt(&app, "198.51.100.67, 10.1.1.1", "alice", PASSWORD).await, "another client");
    // Fewer entries than hops: the leftmost.
    assert_eq!(attempt(&app, "198.51.100.66", "alice", PASSWORD).await.status, 429, "leftmost");
}

#[tokio::test]
async fn with_no_trusted_hops_the_forwarded_header_is_ignored_and_the_peer_is_the_client() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "100"), (HOPS, "0")]);
    app.add_user("alice", PASSWORD, &[]);
    for i in 1..=3 {
        let r = attempt(&app, &format!("192.0.2.{i}"), "alice", "wrong-password").await;
        assert_invalid_grant(&r, &format!("failure {i}"));
    }
    let r = attempt(&app, "192.0.2.200", "alice", PASSWORD).await;
    assert_eq!(r.status, 429, "every request comes from the same peer: {}", r.text());
}

#[tokio::test]
async fn invocations_without_a_forwarded_address_do_not_lock_each_other() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3")]);
    app.add_user("alice", PASSWORD, &[]);
    let body = |password: &str| json!({"username": "alice", "password": password}).to_string();
    // More failures than MaxFailures, all through the host with no X-Forwarded-For: they used to
    // share the host's address and lock the username for every client.
    for i in 1..=5 {
        let (_, outer) = app.invoke("token", "POST", json_headers(), &body("wrong-password")).await;
        let (status, _, _) = inner(&outer);
        assert_eq!(status, 400, "failure {i}: {outer}");
    }
    let (_, outer) = app.invoke("token", "POST", json_headers(), &body(PASSWORD)).await;
    let (status, _, pair) = inner(&outer);
    assert_eq!(status, 200, "another client through the host: {outer}");
    // The session shows no address rather than the host's.
    let sessions = app
        .request("GET", "/api/sessions", &[("Authorization".into(), format!("Bearer {}", access_token(&pair)))], vec![])
        .await
        .json();
    let first = &sessions.as_array().map_or(&sessions["sessions"][0], |s| &s[0]);
    assert!(first["client_address"].is_null(), "{sessions}");
    // With a forwarded address, invocation mode throttles it as forwarded mode does.
    let xff = json!({"Content-Type": ["application/json"], "X-Forwarded-For": ["198.51.100.66"]});
    for _ in 0..3 {
        app.invoke("token", "POST", xff.clone(), &body("wrong-password")).await;
    }
    let (_, outer) = app.invoke("token", "POST", xff, &body(PASSWORD)).await;
    assert_eq!(inner(&outer).0, 429, "{outer}");
}

#[tokio::test]
async fn a_device_token_logs_in_while_the_username_is_locked_for_everyone_else() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "3"), (LOCKOUT, "60000")]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let pair = assert_token_pair(&attempt(&app, "192.0.2.1", "alice", PASSWORD).await, "first login");
    let device = pair["device_token"].as_str().unwrap_or_else(|| panic!("no device_token: {pair}")).to_string();
    let bobs = assert_token_pair(&attempt(&app, "192.0.2.1", "bob", PASSWORD).await, "bob")["device_token"].clone();
    // An attacker exhausts the username-wide budget from many addresses.
    for i in 1..=3 {
        assert_invalid_grant(&attempt(&app, &format!("203.0.113.{i}"), "alice", "wrong").await, "guess");
    }
    assert_eq!(attempt(&app, "192.0.2.1", "alice", PASSWORD).await.status, 429, "no device token: locked");
    let with = |token: &Value| json!({"username": "alice", "password": PASSWORD, "device_token": token});
    let again = assert_token_pair(&login_with(&app, Some("192.0.2.1"), with(&json!(device))).await, "owner's device");
    assert!(again["device_token"].is_string(), "a renewed device token: {again}");
    assert_eq!(login_with(&app, Some("192.0.2.1"), with(&bobs)).await.status, 429, "another user's device token");
    let forged = tamper(&device, 20);
    assert_eq!(login_with(&app, Some("192.0.2.1"), with(&json!(forged))).await.status, 429, "a forged device token");
    // The form carries it too.
    let form = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("device_token", &device)];
    assert_token_pair(&app.post_form("/api/token", &form).await, "form field");
}

#[tokio::test]
async fn failures_with_a_device_token_lock_only_that_device() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "30")]);
    app.add_user("alice", PASSWORD, &[]);
    let device = assert_token_pair(&app.try_login("alice", PASSWORD).await, "login")["device_token"].clone();
    let with = |password: &str| json!({"username": "alice", "password": password, "device_token": device});
    for _ in 0..3 {
        assert_invalid_grant(&login_with(&app, Some("192.0.2.1"), with("wrong")).await, "device failure");
    }
    let r = login_with(&app, Some("192.0.2.1"), with(PASSWORD)).await;
    assert_eq!(r.status, 429, "the device is locked: {}", r.text());
    assert_token_pair(&attempt(&app, "192.0.2.1", "alice", PASSWORD).await, "the address is not");
}

#[tokio::test]
async fn cookie_logins_set_and_honour_the_device_cookie() {
    let app =
        TestApp::spawn(&[("JwtRefreshToken__Cors__AllowedOrigins", APP), (MAX_FAILURES, "3"), (PER_USERNAME, "3")]);
    app.add_user("alice", PASSWORD, &[]);
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Token-Transport".to_string(), "cookie".to_string()),
        ("Origin".to_string(), APP.to_string()),
    ];
    let body = || json!({"username": "alice", "password": PASSWORD}).to_string().into_bytes();
    let r = app.request("POST", "/api/token", &headers, body()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["device_token"].is_string(), "{}", r.text());
    let cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-device="))
        .unwrap_or_else(|| panic!("no __Host-device cookie: {:?}", r.headers));
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=31536000"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} missing: {cookie}");
    }
    for i in 1..=3 {
        assert_invalid_grant(&attempt(&app, &format!("203.0.113.{i}"), "alice", "wrong").await, "guess");
    }
    let token = cookie.split("; ").next().unwrap().to_string();
    headers.push(("Cookie".to_string(), token));
    let r = app.request("POST", "/api/token", &headers, body()).await;
    assert_eq!(r.status, 200, "the browser's device cookie opens the locked username: {}", r.text());
}

#[tokio::test]
async fn repeated_exhaustion_of_the_username_budget_doubles_retry_after() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3"), (PER_USERNAME, "3"), (LOCKOUT, "1000")]);
    app.add_user("alice", PASSWORD, &[]);
    let mut waits = vec![];
    for round in 0..2 {
        for i in 1..=3 {
            assert_invalid_grant(&attempt(&app, &format!("203.0.{round}.{i}"), "alice", "wrong").await, "guess");
        }
        let r = attempt(&app, "192.0.2.1", "alice", PASSWORD).await;
        assert_eq!(r.status, 429, "round {round}: {}", r.text());
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        waits.push(wait);
        tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    }
    assert_eq!(waits, [1, 2], "the second exhaustion in a row locks twice as long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_never_overshoot_the_username_budget() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "5"), (PER_USERNAME, "10")]);
    app.add_user("alice", PASSWORD, &[]);
    let second = app.second_instance();
    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let target = if i % 2 == 0 { &app } else { &second };
        let (client, url) = (target.client.clone(), target.url("/api/token"));
        tasks.spawn(async move {
            let body = json!({"username": "alice", "password": "wrong-password"});
            let r = client.post(url).header("X-Forwarded-For", format!("10.9.{}.{}", i / 200, i % 200));
            r.json(&body).send().await.expect("request").status().as_u16()
        });
    }
    let mut checked = 0;
    while let Some(status) = tasks.join_next().await {
        match status.expect("task") {
            400 => checked += 1,
            429 | 503 => {}
            other => panic!("a guess answered {other}"),
        }
    }
    assert!(checked <= 10, "{checked} passwords were checked against a budget of 10");
}

#[tokio::test]
async fn unknown_usernames_are_logged_only_as_pseudonyms() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3")]);
    let typed = "Summer2024-my-real-password";
    for _ in 0..3 {
        assert_invalid_grant(&attempt(&app, "192.0.2.1", typed, "wrong").await, "failure");
    }
    let lines = app.wait_for_logs(|l| l.iter().any(|x| x.contains("login locked"))).await;
    let warning = lines.iter().find(|l| l.contains("login locked")).unwrap();
    let v: Value = serde_json::from_str(warning).unwrap();
    let pseudonym = v["fields"]["username"].as_str().or(v["username"].as_str()).unwrap_or_default().to_string();
    assert!(pseudonym.starts_with("u-") && pseudonym.len() == 14, "{warning}");
    let lower = typed.to_lowercase();
    assert!(!lines.iter().any(|l| l.contains(typed) || l.contains(&lower)), "the typed name was logged: {lines:?}");
}
