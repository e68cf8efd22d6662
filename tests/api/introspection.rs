//! Token introspection (RFC 7662) for resource servers: `POST /api/introspect` authenticated with
//! `client_secret_basic`, answering from the store — every way a token stops being active reads as
//! `{"active":false}` and nothing else. Run on both stores.

use serde_json::{Value, json};

use crate::helpers::*;

const STRONG: &str = "plum umbrella cactus 1987";

/// An inactive answer: 200, `no-store`, exactly `{"active":false}`.
fn assert_inactive(r: &Reply, context: &str) {
    assert_eq!(r.status, 200, "{context}: {}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"), "{context}");
    assert_eq!(r.json(), json!({"active": false}), "{context}: only that field");
}

/// An active answer: 200, `no-store`, `active: true`; returns the body.
fn assert_active(r: &Reply, context: &str) -> Value {
    assert_eq!(r.status, 200, "{context}: {}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"), "{context}");
    let body = r.json();
    assert_eq!(body["active"], true, "{context}: {body}");
    body
}

/// A 401 `invalid_client` with a Basic challenge.
fn assert_invalid_client(r: &Reply, context: &str) {
    assert_error(r, 401, "invalid_client", context);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm=\""), "{context}: WWW-Authenticate {challenge:?}");
}

#[tokio::test]
async fn an_active_token_answers_its_claims_with_the_sessions_username_and_roles() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("Alice", PASSWORD, &["reader", "writer"]);
    let (client, secret) = app.add_client("orders-api");
    assert_eq!(client, "orders-api");
    let pair = app.login("alice", PASSWORD).await;
    let token = access_token(&pair);
    let claims = jwt_claims(&token);
    let body = assert_active(&app.introspect(&token, &client, &secret).await, "a fresh access token");
    assert_eq!(body["sub"], id.as_str());
    assert_eq!(body["username"], "Alice");
    assert_eq!(body["scope"], "reader writer", "roles, space-separated");
    assert_eq!(body["roles"], json!(["reader", "writer"]));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["iss"], ISSUER);
    assert_eq!(body["aud"], AUDIENCE);
    for field in ["exp", "iat", "sid", "jti"] {
        assert_eq!(body[field], claims[field], "{field} as in the token");
    }
    assert!(body.get("cnf").is_none(), "a bearer token has no confirmation: {body}");
    // JSON bodies are accepted as on the other POST routes, with the optional hint.
    let headers = [
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Authorization".to_string(), basic(&client, &secret)),
    ];
    let json_body = json!({"token": token, "token_type_hint": "access_token"}).to_string().into_bytes();
    let r = app.request("POST", "/api/introspect", &headers, json_body).await;
    assert_eq!(assert_active(&r, "JSON body")["sub"], id.as_str());
    // The request lines name the token's user and session, never the secret or the token.
    let lines =
        app.wait_for_logs(|l| l.iter().filter(|x| x.contains("\"function\":\"introspect\"")).count() >= 2).await;
    let requests: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request" && v["function"] == "introspect")
        .collect();
    assert_eq!(requests.len(), 2, "{lines:#?}");
    for line in &requests {
        assert_eq!((&line["span"]["user_id"], &line["span"]["session_id"]), (&json!(id), &claims["sid"]), "{line}");
    }
    let all = lines.join("\n");
    assert!(!all.contains(&secret) && !all.contains(&token), "no secret or token in the logs");
}

#[tokio::test]
async fn every_way_a_token_ends_reads_as_inactive_and_nothing_more() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    app.add_user("carol", PASSWORD, &[]);
    let (client, secret) = app.add_client("rs");
    let check = |token: String, context: &'static str| {
        let (app, client, secret) = (&app, &client, &secret);
        async move { assert_inactive(&app.introspect(&token, client, secret).await, context) }
    };
    // A revoked session.
    let revoked = app.login("alice", PASSWORD).await;
    assert_eq!(app.revoke(&refresh_token(&revoked)).await.status, 200);
    check(access_token(&revoked), "revoked session").await;
    // A disabled user (disabling ends the user's sessions).
    let disabled = app.login("bob", PASSWORD).await;
    assert_active(&app.introspect(&access_token(&disabled), &client, &secret).await, "before disable");
    app.disable_user("bob");
    check(access_token(&disabled), "disabled user").await;
    // A password change ends the user's other sessions, not the one it was made from.
    let kept = app.login("carol", PASSWORD).await;
    let other = app.login("carol", PASSWORD).await;
    let change = json!({"current_password": PASSWORD, "new_password": STRONG});
    let r = app.post_json_bearer("/api/password", &change, &access_token(&kept)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check(access_token(&other), "other session after a password change").await;
    assert_active(&app.introspect(&access_token(&kept), &client, &secret).await, "the changing session stays");
    // A refresh token, even a live one, is not introspected here.
    let live = app.login("alice", PASSWORD).await;
    check(refresh_token(&live), "refresh token").await;
    // Forged, malformed and foreign tokens.
    let token = access_token(&live);
    let signature_at = token.rfind('.').unwrap() + 3;
    check(tamper(&token, signature_at), "forged signature").await;
    check(
        forge_hs256(&jwt_claims(&token), jwt_header(&token)["kid"].as_str().unwrap(), "another secret of 32+ bytes!!"),
        "foreign key",
    )
    .await;
    check("not-a-token".to_string(), "malformed").await;
    check("a.b.c".to_string(), "three garbage parts").await;
    check("x".repeat(9_000), "longer than any token of ours").await;
    // The live access token is still active: the checks above changed nothing.
    assert_active(&app.introspect(&token, &client, &secret).await, "live token");
}

#[tokio::test]
async fn revoke_everyone_makes_every_earlier_token_inactive() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("alice", PASSWORD, &[]);
    let (client, secret) = app.add_client("rs");
    let alice = app.login("alice", PASSWORD).await;
    let root = app.login("root", PASSWORD).await;
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "everyone"}), &access_token(&root)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (pair, who) in [(&alice, "alice"), (&root, "the admin who asked")] {
        assert_inactive(&app.introspect(&access_token(pair), &client, &secret).await, who);
    }
    let later = app.login("alice", PASSWORD).await;
    assert_active(&app.introspect(&access_token(&later), &client, &secret).await, "a session begun afterwards");
}

#[tokio::test]
async fn an_expired_access_token_is_inactive() {
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Expires__CreateExpiresInMs", "1000"),
        ("JwtRefreshToken__Descriptor__ClockSkewMs", "0"),
    ]);
    app.add_user("alice", PASSWORD, &[]);
    let (client, secret) = app.add_client("rs");
    let pair = app.login("alice", PASSWORD).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_inactive(&app.introspect(&access_token(&pair), &client, &secret).await, "expired");
    // Its session lives on: a refresh gives an active token again.
    let next = app.refresh_ok(&refresh_token(&pair)).await;
    assert_active(&app.introspect(&access_token(&next), &client, &secret).await, "after refresh");
}

#[tokio::test]
async fn client_authentication_is_basic_form_encoded_and_every_failure_is_invalid_client() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let (client, secret) = app.add_client("orders-api");
    let token = access_token(&app.login("alice", PASSWORD).await);
    let form = |auth: Option<String>| {
        let mut headers = vec![("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string())];
        headers.extend(auth.map(|a| ("Authorization".to_string(), a)));
        headers
    };
    let body = || format!("token={token}").into_bytes();
    let b64 = |raw: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    // RFC 6749 §2.3.1: the id may arrive percent-encoded; it is decoded before the lookup.
    let encoded = format!("Basic {}", b64(&format!("orders%2Dapi:{secret}")));
    let r = app.request("POST", "/api/introspect", &form(Some(encoded)), body()).await;
    assert_active(&r, "percent-encoded client id");
    let rows: [(Option<String>, &str); 8] = [
        (None, "no Authorization header"),
        (Some(format!("Bearer {token}")), "a Bearer token instead of client credentials"),
        (Some(basic(&client, "wrong-secret")), "wrong secret"),
        (Some(basic("unknown-api", &secret)), "unknown client"),
        (Some(basic(&client, "")), "empty secret"),
        (Some("Basic !!!not-base64".to_string()), "not base64"),
        (Some(format!("Basic {}", b64("no-colon"))), "no colon"),
        (Some(format!("Basic {}", b64(&format!("orders-api:{secret}%zz")))), "broken percent escape"),
    ];
    for (auth, context) in rows {
        let r = app.request("POST", "/api/introspect", &form(auth), body()).await;
        assert_invalid_client(&r, context);
    }
    // Credentials in the body (client_secret_post) are not offered.
    let post = format!("token={token}&client_id={client}&client_secret={secret}").into_bytes();
    assert_invalid_client(&app.request("POST", "/api/introspect", &form(None), post).await, "client_secret_post");
    // Authenticated but without a token: a plain invalid_request.
    let r = app
        .request("POST", "/api/introspect", &form(Some(basic(&client, &secret))), b"token_type_hint=x".to_vec())
        .await;
    assert_invalid_request(&r, "no token");
}

#[tokio::test]
async fn a_removed_client_is_refused_and_clients_are_listed_without_secrets() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let (kept, kept_secret) = app.add_client("kept");
    let (gone, gone_secret) = app.add_client("gone");
    let list = app.run_cli(&["clients", "list"], "");
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success(), "{list:?}");
    assert!(listed.starts_with("gone\t") && listed.contains("\nkept\t"), "{listed}");
    assert!(!listed.contains(&kept_secret) && !listed.contains(&gone_secret), "never a secret: {listed}");
    let out = app.run_cli(&["clients", "remove", "gone"], "");
    assert!(out.status.success(), "{out:?}");
    let token = access_token(&app.login("alice", PASSWORD).await);
    assert_invalid_client(&app.introspect(&token, &gone, &gone_secret).await, "removed client");
    assert_active(&app.introspect(&token, &kept, &kept_secret).await, "the other client");
}

#[tokio::test]
async fn a_client_over_its_minute_budget_gets_429_with_retry_after() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Introspection__MaxPerMinute", "2")]);
    app.add_user("alice", PASSWORD, &[]);
    let (busy, busy_secret) = app.add_client("busy");
    let (calm, calm_secret) = app.add_client("calm");
    let token = access_token(&app.login("alice", PASSWORD).await);
    for n in 0..2 {
        assert_active(&app.introspect(&token, &busy, &busy_secret).await, &format!("request {n}"));
    }
    let r = app.introspect(&token, &busy, &busy_secret).await;
    assert_error(&r, 429, "temporarily_unavailable", "third request in the minute");
    let retry: u64 = r.header("retry-after").unwrap_or_default().parse().unwrap();
    assert!((1..=30).contains(&retry), "one of two per minute comes back within 30 s: {retry}");
    assert_active(&app.introspect(&token, &calm, &calm_secret).await, "another client has its own budget");
    assert_invalid_client(
        &app.introspect(&token, &busy, "wrong").await,
        "bad credentials are refused before the limit",
    );
}

#[tokio::test]
async fn introspection_answers_in_invocation_mode_and_only_to_post() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("alice", PASSWORD, &[]);
    let (client, secret) = app.add_client("rs");
    let token = access_token(&app.login("alice", PASSWORD).await);
    let headers = json!({
        "Content-Type": ["application/x-www-form-urlencoded"],
        "Authorization": [basic(&client, &secret)],
    });
    let (status, outer) = app.invoke("introspect", "POST", headers, &format!("token={token}")).await;
    assert_eq!(status, 200, "{outer}");
    let (inner_status, inner_headers, body) = inner(&outer);
    assert_eq!(inner_status, 200, "{outer}");
    assert_eq!(inner_headers["Cache-Control"], "no-store", "{outer}");
    assert_eq!((body["active"].clone(), body["sub"].clone()), (json!(true), json!(id)), "{outer}");
    let (_, outer) = app.invoke("introspect", "POST", json_headers(), &json!({"token": token}).to_string()).await;
    let (inner_status, inner_headers, body) = inner(&outer);
    assert_eq!((inner_status, body["error"].clone()), (401, json!("invalid_client")), "{outer}");
    assert!(inner_headers["WWW-Authenticate"].as_str().unwrap_or_default().starts_with("Basic"), "{outer}");
    for method in ["GET", "HEAD", "PATCH"] {
        let r = app.request(method, "/api/introspect", &[], vec![]).await;
        assert_eq!(r.status, 405, "{method}: {}", r.text());
        assert_eq!(r.header("allow").as_deref(), Some("POST"), "{method}");
        if method != "HEAD" {
            assert_eq!(r.json()["error"], "method_not_allowed", "{method}");
        }
        let (_, outer) = app.invoke("introspect", method, json_headers(), "").await;
        let (inner_status, inner_headers, _) = inner(&outer);
        assert_eq!((inner_status, inner_headers["Allow"].clone()), (405, json!("POST")), "{method}: {outer}");
    }
}

#[tokio::test]
async fn a_role_change_reaches_the_scope_at_once_while_the_token_keeps_its_claims() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &["reader"]);
    let (client, secret) = app.add_client("rs");
    let token = access_token(&app.login("alice", PASSWORD).await);
    let out = app.run_cli(&["user", "role", "alice", "--add", "writer", "--remove", "reader"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(jwt_claims(&token)["roles"], json!(["reader"]), "the JWT itself cannot change");
    let body = assert_active(&app.introspect(&token, &client, &secret).await, "after the role change");
    assert_eq!((&body["scope"], &body["roles"]), (&json!("writer"), &json!(["writer"])), "{body}");
}
