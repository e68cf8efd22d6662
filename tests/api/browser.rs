//! Browser clients without a browser: cookie transport (every attribute), the session-bound
//! anti-forgery value, the Origin check, CORS preflights and actual responses, and cookie-mode
//! refresh and revoke under the reuse and concurrency rules. (`tests/browser/` drives Chromium.)

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

const APP: &str = "http://localhost:5173";
const ORIGINS: &str = "JwtRefreshToken__Cors__AllowedOrigins";

fn app() -> TestApp {
    let app = TestApp::spawn(&[(ORIGINS, &format!("{APP}, https://app.example.com"))]);
    app.add_user("alice", PASSWORD, &[]);
    app
}

/// The cookies a response sets: name → (value, attributes).
fn set_cookies(r: &Reply) -> Vec<(String, String, String)> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let v = v.to_str().unwrap().to_string();
            let (pair, attrs) = v.split_once("; ").unwrap_or((&v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_string(), value.to_string(), attrs.to_string())
        })
        .collect()
}

struct Session {
    refresh: String,
    xsrf: String,
}

fn session_of(r: &Reply) -> Session {
    let cookies = set_cookies(r);
    let get =
        |n: &str| cookies.iter().find(|c| c.0 == n).unwrap_or_else(|| panic!("no {n} cookie: {cookies:?}")).1.clone();
    Session { refresh: get("__Host-refresh_token"), xsrf: get("XSRF-TOKEN") }
}

async fn cookie_login(app: &TestApp) -> Reply {
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Token-Transport".to_string(), "cookie".to_string()),
        ("Origin".to_string(), APP.to_string()),
    ];
    let body = json!({"username": "alice", "password": PASSWORD}).to_string().into_bytes();
    app.request("POST", "/api/token", &headers, body).await
}

async fn with_cookie(
    app: &TestApp,
    method: &str,
    path: &str,
    refresh: &str,
    origin: Option<&str>,
    xsrf: Option<&str>,
) -> Reply {
    let mut headers = vec![("Cookie".to_string(), format!("__Host-refresh_token={refresh}; XSRF-TOKEN=whatever"))];
    if let Some(o) = origin {
        headers.push(("Origin".to_string(), o.to_string()));
    }
    if let Some(x) = xsrf {
        headers.push(("X-XSRF-TOKEN".to_string(), x.to_string()));
    }
    app.request(method, path, &headers, Vec::new()).await
}

async fn cookie_refresh(app: &TestApp, s: &Session) -> Reply {
    with_cookie(app, "POST", "/api/refresh", &s.refresh, Some(APP), Some(&s.xsrf)).await
}

#[tokio::test]
async fn a_cookie_login_sets_both_cookies_with_every_attribute_and_keeps_the_token_out_of_the_body() {
    let app = app();
    let r = cookie_login(&app).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert!(body.get("refresh_token").is_none(), "no refresh token in the body: {body}");
    assert!(body["access_token"].is_string());
    let max_age = body["refresh_expires_in"].as_i64().unwrap();
    let cookies = set_cookies(&r);
    // The session's two, and the device cookie (checked in `lockout_owner`).
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    let (_, refresh, attrs) = cookies.iter().find(|c| c.0 == "__Host-refresh_token").unwrap();
    assert_eq!(attrs, &format!("HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"));
    assert!(!refresh.is_empty());
    let (_, xsrf, attrs) = cookies.iter().find(|c| c.0 == "XSRF-TOKEN").unwrap();
    assert_eq!(
        attrs,
        &format!("Secure; SameSite=Strict; Path=/; Max-Age={max_age}"),
        "readable by script: no HttpOnly"
    );
    assert_eq!(r.header("x-xsrf-token").as_deref(), Some(xsrf.as_str()), "the value is also a response header");
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some(APP));
    assert!(r.header("access-control-expose-headers").unwrap().contains("X-XSRF-TOKEN"));
}

#[tokio::test]
async fn a_cookie_refresh_rotates_and_re_sets_both_cookies_with_the_same_xsrf_value() {
    let app = app();
    let first = session_of(&cookie_login(&app).await);
    let r = cookie_refresh(&app, &first).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none());
    let next = session_of(&r);
    assert_ne!(next.refresh, first.refresh, "rotated");
    assert_eq!(next.xsrf, first.xsrf, "bound to the session, not to the generation");
    assert_eq!(cookie_refresh(&app, &next).await.status, 200, "the new cookie works");
}

#[tokio::test]
async fn cookie_requests_without_an_allowed_origin_or_the_sessions_xsrf_are_refused_and_change_nothing() {
    let app = app();
    let victim = session_of(&cookie_login(&app).await);
    let other = session_of(&cookie_login(&app).await);
    let attacks: [(Option<&str>, Option<&str>, &str); 5] = [
        (None, Some(&victim.xsrf), "no Origin"),
        (Some("http://localhost:6666"), Some(&victim.xsrf), "a same-site origin that is not allowed"),
        (Some("http://127.0.0.1:5173"), Some(&victim.xsrf), "a cross-site origin"),
        (Some(APP), None, "no X-XSRF-TOKEN"),
        (Some(APP), Some(&other.xsrf), "a valid X-XSRF-TOKEN of another session"),
    ];
    for (path, method) in
        [("/api/refresh", "POST"), ("/api/token", "PATCH"), ("/api/revoke", "POST"), ("/api/revoke", "PATCH")]
    {
        for (origin, xsrf, why) in attacks {
            let r = with_cookie(&app, method, path, &victim.refresh, origin, xsrf).await;
            assert_error(&r, 403, "access_denied", &format!("{method} {path}: {why}"));
            assert!(r.headers.get("set-cookie").is_none(), "{why}: no cookie changes");
        }
    }
    // The victim's session neither rotated nor ended: its current token refreshes, once.
    let r = cookie_refresh(&app, &victim).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = session_of(&r);
    assert_eq!(cookie_refresh(&app, &after).await.status, 200);
}

#[tokio::test]
async fn a_cookie_revoke_ends_the_session_and_clears_both_cookies() {
    let app = app();
    let s = session_of(&cookie_login(&app).await);
    let r = with_cookie(&app, "POST", "/api/revoke", &s.refresh, Some(APP), Some(&s.xsrf)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cleared = set_cookies(&r);
    assert_eq!(cleared.len(), 2);
    for (name, value, attrs) in &cleared {
        assert!(value.is_empty() && attrs.ends_with("Max-Age=0"), "{name} cleared: {attrs}");
    }
    let r = cookie_refresh(&app, &s).await;
    assert_invalid_grant(&r, "the revoked session");
    assert!(set_cookies(&r).iter().all(|c| c.2.ends_with("Max-Age=0")), "a dead session's cookies are cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tabs_refreshing_at_once_get_one_successor_and_an_old_cookie_replayed_ends_the_session() {
    let app = TestApp::spawn(&[(ORIGINS, APP), ("JwtRefreshToken__Rotation__ReuseGraceMs", "0")]);
    app.add_user("alice", PASSWORD, &[]);
    let s = session_of(&cookie_login(&app).await);
    let mut tabs = JoinSet::new();
    for _ in 0..8 {
        let (client, url, refresh, xsrf) =
            (app.client.clone(), app.url("/api/refresh"), s.refresh.clone(), s.xsrf.clone());
        tabs.spawn(async move {
            let resp = client
                .post(url)
                .header("Cookie", format!("__Host-refresh_token={refresh}"))
                .header("Origin", APP)
                .header("X-XSRF-TOKEN", xsrf)
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let cookie = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .find(|c| c.starts_with("__Host-refresh_token="))
                .unwrap_or_default();
            (status, cookie)
        });
    }
    let mut successors = Vec::new();
    while let Some(r) = tabs.join_next().await {
        let (status, cookie) = r.expect("tab");
        assert_eq!(status, 200);
        successors.push(cookie);
    }
    assert!(successors.iter().all(|c| *c == successors[0]), "one successor: {successors:?}");
    let next = Session {
        refresh: successors[0].split(';').next().unwrap().trim_start_matches("__Host-refresh_token=").to_string(),
        xsrf: s.xsrf.clone(),
    };
    let third = session_of(&cookie_refresh(&app, &next).await);
    // The first cookie, two generations old, is a replay: the whole session ends.
    assert_invalid_grant(&cookie_refresh(&app, &s).await, "a replayed old cookie");
    assert_invalid_grant(&cookie_refresh(&app, &third).await, "the session ended with it");
}

#[tokio::test]
async fn preflights_answer_allowed_origins_only() {
    let app = app();
    for path in ["/api/token", "/api/refresh", "/api/revoke", "/api/jwks"] {
        let headers = vec![
            ("Origin".to_string(), APP.to_string()),
            ("Access-Control-Request-Method".to_string(), "POST".to_string()),
            ("Access-Control-Request-Headers".to_string(), "content-type, x-xsrf-token".to_string()),
        ];
        let r = app.request("OPTIONS", path, &headers, Vec::new()).await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("access-control-allow-origin").as_deref(), Some(APP), "{path}");
        assert_eq!(r.header("access-control-allow-credentials").as_deref(), Some("true"), "{path}");
        assert_eq!(
            r.header("access-control-allow-headers").as_deref(),
            Some("Content-Type, Authorization, X-XSRF-TOKEN, X-Token-Transport, DPoP")
        );
        assert!(r.header("access-control-max-age").is_some(), "{path}");
        assert_eq!(r.header("vary").as_deref(), Some("Origin"), "{path}");
        let allow = r.header("access-control-allow-methods").unwrap();
        let refused = app.raw("PUT", path, Some("application/json"), "{}", None).await;
        assert_eq!(refused.header("allow").as_deref(), Some(allow.as_str()), "{path}: one table for CORS and 405");
    }
    let headers = vec![("Origin".to_string(), "https://evil.example".to_string())];
    let r = app.request("OPTIONS", "/api/token", &headers, Vec::new()).await;
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none(), "no CORS headers for another origin");
    let r = app.request("POST", "/api/token", &headers, b"{}".to_vec()).await;
    assert!(r.header("access-control-allow-origin").is_none());
    let ok = vec![
        ("Origin".to_string(), "https://app.example.com".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let r = app.request("POST", "/api/refresh", &ok, br#"{"refresh_token":"x"}"#.to_vec()).await;
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(
        r.header("access-control-expose-headers").as_deref(),
        Some("X-XSRF-TOKEN, Token-Expired, WWW-Authenticate, Retry-After, DPoP-Nonce")
    );
}

#[tokio::test]
async fn body_transport_is_unchanged_and_a_bad_transport_is_refused() {
    let app = app();
    let pair: Value = app.login("alice", PASSWORD).await;
    assert!(pair["refresh_token"].is_string());
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Token-Transport".to_string(), "carrier-pigeon".to_string()),
    ];
    let body = json!({"username": "alice", "password": PASSWORD}).to_string().into_bytes();
    assert_invalid_request(&app.request("POST", "/api/token", &headers, body).await, "unknown transport");
    let r = app.request("POST", "/api/refresh", &[], Vec::new()).await;
    assert_invalid_request(&r, "no body and no cookie");
}

#[tokio::test]
async fn cookie_mode_login_and_sign_up_need_an_allowed_origin_and_set_no_cookie_without_one() {
    let app = TestApp::spawn(&[(ORIGINS, APP), ("JwtRefreshToken__Registration__Mode", "open")]);
    app.add_user("alice", PASSWORD, &[]);
    let body = |user: &str| json!({"username": user, "password": PASSWORD}).to_string().into_bytes();
    for (path, user) in [("/api/token", "alice"), ("/api/register", "newcomer")] {
        for origin in [None, Some("https://evil.example"), Some("null")] {
            let mut headers = vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("X-Token-Transport".to_string(), "cookie".to_string()),
            ];
            if let Some(o) = origin {
                headers.push(("Origin".to_string(), o.to_string()));
            }
            let r = app.request("POST", path, &headers, body(user)).await;
            assert_error(&r, 403, "access_denied", &format!("{path} with Origin {origin:?}"));
            assert!(set_cookies(&r).is_empty(), "{path} with Origin {origin:?} sets no cookie");
        }
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Token-Transport".to_string(), "cookie".to_string()),
            ("Origin".to_string(), APP.to_string()),
        ];
        let r = app.request("POST", path, &headers, body(user)).await;
        assert!(r.status == 200 || r.status == 201, "{path} from the allowed origin: {}", r.text());
        session_of(&r);
    }
    // Nothing was created by the refused sign-ups before the allowed one: the name was still free.
    let r = app.post_json("/api/register", &json!({"username": "newcomer", "password": PASSWORD})).await;
    assert_error(&r, 400, "invalid_request", "the allowed sign-up created the account once");
    assert!(r.text().contains("taken"), "{}", r.text());
}

#[tokio::test]
async fn the_device_cookie_lives_as_long_as_the_configured_device_token_lifetime() {
    for (days, max_age) in [(None, 365 * 86_400), (Some("2"), 2 * 86_400)] {
        let mut env = vec![(ORIGINS, APP)];
        if let Some(days) = days {
            env.push(("JwtRefreshToken__Login__DeviceTokenLifetimeDays", days));
        }
        let app = TestApp::spawn(&env);
        app.add_user("alice", PASSWORD, &[]);
        let r = cookie_login(&app).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cookies = set_cookies(&r);
        let (_, device, attrs) = cookies.iter().find(|c| c.0 == "__Host-device").unwrap();
        assert!(!device.is_empty());
        assert_eq!(attrs, &format!("HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"), "{days:?}");
    }
    for bad in ["0", "3651", "a year"] {
        let out = run_to_exit(&Config::new().env("JwtRefreshToken__Login__DeviceTokenLifetimeDays", bad));
        assert!(out.stderr.contains("JwtRefreshToken__Login__DeviceTokenLifetimeDays"), "{bad}: {}", out.stderr);
    }
}
