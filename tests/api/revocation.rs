//! `/api/revoke`: by refresh token (RFC 7009) and by scope with a Bearer access token.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn revoking_with_the_current_refresh_token_ends_the_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let r = app.revoke(&refresh_token(&pair)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "refresh after revoke");
}

#[tokio::test]
async fn revoking_with_the_previous_refresh_token_ends_the_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    let r = app.revoke(&refresh_token(&first)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_invalid_grant(&app.refresh(&refresh_token(&second)).await, "the current token after revoking the previous");
}

#[tokio::test]
async fn revoking_with_a_form_token_parameter_ends_the_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let r =
        app.post_form("/api/revoke", &[("token", &refresh_token(&pair)), ("token_type_hint", "refresh_token")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "refresh after RFC 7009 revoke");
}

#[tokio::test]
async fn revoking_with_patch_and_a_json_token_field_ends_the_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let r = app.patch_json("/api/revoke", &json!({"token": refresh_token(&pair)})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "refresh after PATCH revoke");
}

#[tokio::test]
async fn revoking_with_an_access_token_ends_its_session_only() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let other = app.login("alice", PASSWORD).await;
    let r = app.post_form("/api/revoke", &[("token", &access_token(&pair)), ("token_type_hint", "access_token")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "the access token's session");
    assert_token_pair(&app.refresh(&refresh_token(&other)).await, "another session of the same user");
}

#[tokio::test]
async fn revoking_unknown_or_garbage_tokens_succeeds_and_changes_nothing() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let token = refresh_token(&pair);
    let ended = app.login("alice", PASSWORD).await;
    assert_eq!(app.revoke(&refresh_token(&ended)).await.status, 200);
    let live_access = access_token(&pair);
    let kid = jwt_header(&live_access)["kid"].as_str().unwrap().to_string();
    let claims = jwt_claims(&live_access);
    let iat = claims["iat"].as_i64().unwrap();
    let expired = with_claims(&claims, &json!({"iat": iat - 7200, "nbf": iat - 7200, "exp": iat - 3600}));
    let rows: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("truncated", token[..token.len() - 3].to_string()),
        ("tampered in the middle", tamper(&token, token.len() / 2)),
        ("tampered session id", tamper(&token, 5)),
        ("an already revoked session", refresh_token(&ended)),
        ("the access token of an already revoked session", access_token(&ended)),
        (
            "an access token signed with another key",
            forge_hs256(&claims, &kid, "another-signing-key-0123456789-abcdefghij"),
        ),
        ("an expired access token", forge_hs256(&expired, &kid, KEY)),
        ("a JWT that is not an access token", unsigned_jwt(&json!({"alg": "none"}), &claims, "")),
    ];
    for (why, candidate) in &rows {
        let r = app.revoke(candidate).await;
        assert_eq!(r.status, 200, "{why}: {}", r.text());
        assert_eq!(r.json(), json!({}), "{why}");
        let form = app.post_form("/api/revoke", &[("token", candidate.as_str())]).await;
        assert_eq!(form.status, 200, "{why} (form): {}", form.text());
        assert_eq!(form.json(), json!({}), "{why} (form)");
    }
    assert_token_pair(&app.refresh(&token).await, "the real session survives every bogus revoke");
}

#[tokio::test]
async fn bad_revoke_bodies_are_invalid_requests() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let token = refresh_token(&pair);
    let bearer = access_token(&pair);
    let rows = [
        ("empty object", json!({})),
        ("both refresh_token and token", json!({"refresh_token": token, "token": token})),
        ("token and scope", json!({"refresh_token": token, "scope": "global"})),
        ("unknown scope", json!({"scope": "everything"})),
        ("number scope", json!({"scope": 1})),
        ("empty scope", json!({"scope": ""})),
        ("username with scope others", json!({"scope": "others", "username": "alice"})),
        ("username with a token", json!({"refresh_token": token, "username": "alice"})),
        ("number refresh_token", json!({"refresh_token": 5})),
        ("empty refresh_token", json!({"refresh_token": ""})),
    ];
    for (why, body) in &rows {
        let r = app.post_json_bearer("/api/revoke", body, &bearer).await;
        assert_invalid_request(&r, why);
    }
    let r = app.raw("POST", "/api/revoke", Some("application/json"), "[]", None).await;
    assert_invalid_request(&r, "JSON array");
    let r = app
        .raw(
            "POST",
            "/api/revoke",
            Some("application/x-www-form-urlencoded"),
            format!("token={token}&token={token}"),
            None,
        )
        .await;
    assert_invalid_request(&r, "repeated form token");
    assert_token_pair(&app.refresh(&token).await, "nothing was revoked");
}

#[tokio::test]
async fn scope_others_keeps_the_callers_session_and_ends_the_rest() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let mine = app.login("alice", PASSWORD).await;
    let second = app.login("alice", PASSWORD).await;
    let third = app.login("alice", PASSWORD).await;
    let bobs = app.login("bob", PASSWORD).await;
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "others"}), &access_token(&mine)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 2}));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_token_pair(&app.refresh(&refresh_token(&mine)).await, "the caller's session");
    assert_invalid_grant(&app.refresh(&refresh_token(&second)).await, "second session");
    assert_invalid_grant(&app.refresh(&refresh_token(&third)).await, "third session");
    assert_token_pair(&app.refresh(&refresh_token(&bobs)).await, "another user's session");
}

#[tokio::test]
async fn scope_global_ends_every_session_of_the_caller_only() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let mine = app.login("alice", PASSWORD).await;
    let second = app.login("alice", PASSWORD).await;
    let bobs = app.login("bob", PASSWORD).await;
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "global"}), &access_token(&mine)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 2}));
    assert_invalid_grant(&app.refresh(&refresh_token(&mine)).await, "the caller's own session");
    assert_invalid_grant(&app.refresh(&refresh_token(&second)).await, "second session");
    assert_token_pair(&app.refresh(&refresh_token(&bobs)).await, "another user's session");
    let again = app.post_json_bearer("/api/revoke", &json!({"scope": "global"}), &access_token(&mine)).await;
    // The caller's own session ended too, so its access token authorises nothing more.
    assert_error(&again, 401, "invalid_token", "an access token of an ended session");
}

#[tokio::test]
async fn scope_revoke_accepts_a_form_body() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let r = app
        .raw(
            "POST",
            "/api/revoke",
            Some("application/x-www-form-urlencoded"),
            "scope=global",
            Some(&access_token(&pair)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 1}));
}

#[tokio::test]
async fn an_admin_ends_another_users_sessions() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("bob", PASSWORD, &[]);
    let admin = app.login("root", PASSWORD).await;
    let bob1 = app.login("bob", PASSWORD).await;
    let bob2 = app.login("bob", PASSWORD).await;
    let r = app
        .post_json_bearer("/api/revoke", &json!({"scope": "global", "username": "BOB"}), &access_token(&admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 2}));
    assert_invalid_grant(&app.refresh(&refresh_token(&bob1)).await, "bob's first session");
    assert_invalid_grant(&app.refresh(&refresh_token(&bob2)).await, "bob's second session");
    assert_token_pair(&app.refresh(&refresh_token(&admin)).await, "the admin's own session");
}

#[tokio::test]
async fn a_non_admin_naming_a_user_is_403_insufficient_scope() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &["ops"]);
    app.add_user("bob", PASSWORD, &[]);
    let alice = app.login("alice", PASSWORD).await;
    let bob = app.login("bob", PASSWORD).await;
    for target in ["bob", "alice", "nobody"] {
        let r = app
            .post_json_bearer("/api/revoke", &json!({"scope": "global", "username": target}), &access_token(&alice))
            .await;
        assert_error(&r, 403, "insufficient_scope", target);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
    }
    assert_token_pair(&app.refresh(&refresh_token(&bob)).await, "bob's session survives");
    assert_token_pair(&app.refresh(&refresh_token(&alice)).await, "alice's session survives");
}

#[tokio::test]
async fn an_admin_naming_an_unknown_user_gets_404() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    let admin = app.login("root", PASSWORD).await;
    let r = app
        .post_json_bearer("/api/revoke", &json!({"scope": "global", "username": "ghost"}), &access_token(&admin))
        .await;
    assert_error(&r, 404, "not_found", "unknown username");
    assert_token_pair(&app.refresh(&refresh_token(&admin)).await, "the admin's session survives");
}
