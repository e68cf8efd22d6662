//! Refresh-token rotation: successors, the reuse grace, reuse detection, tampering, the optional
//! `access_token`, and the absolute session lifetime.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_refresh_returns_a_new_refresh_token_and_access_token() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let r = app.refresh(&refresh_token(&first)).await;
    let second = assert_token_pair(&r, "first refresh");
    let third = app.refresh_ok(&refresh_token(&second)).await;
    let tokens = [refresh_token(&first), refresh_token(&second), refresh_token(&third)];
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
    assert_ne!(tokens[0], tokens[2]);
    assert_ne!(access_token(&first), access_token(&second));
    let (a, b) = (jwt_claims(&access_token(&first)), jwt_claims(&access_token(&third)));
    assert_eq!(a["sub"], b["sub"]);
    assert_eq!(a["sid"], b["sid"]);
}

#[tokio::test]
async fn previous_token_within_the_grace_returns_the_same_successor() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    let retry = app.refresh(&refresh_token(&first)).await;
    let retried = assert_token_pair(&retry, "retry with the previous token");
    assert_eq!(refresh_token(&retried), refresh_token(&second), "a retry gets the very successor it lost");
    let third = app.refresh_ok(&refresh_token(&second)).await;
    assert_ne!(refresh_token(&third), refresh_token(&second), "the successor still rotates");
}

#[tokio::test]
async fn refresh_with_previous_token_after_grace_ends_session() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Rotation__ReuseGraceMs", "300")]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_invalid_grant(&app.refresh(&refresh_token(&first)).await, "previous token after the grace");
    assert_invalid_grant(&app.refresh(&refresh_token(&second)).await, "the current token after reuse was detected");
}

#[tokio::test]
async fn refresh_with_a_token_two_generations_old_ends_session_at_once() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    let third = app.refresh_ok(&refresh_token(&second)).await;
    assert_invalid_grant(&app.refresh(&refresh_token(&first)).await, "token two generations old");
    assert_invalid_grant(&app.refresh(&refresh_token(&third)).await, "the current token after reuse was detected");
    assert_invalid_grant(&app.refresh(&refresh_token(&second)).await, "the previous token after reuse was detected");
}

#[tokio::test]
async fn a_tampered_refresh_token_is_refused_and_the_real_one_still_works() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let token = refresh_token(&first);
    for index in [token.len() / 2, 1, 24, 40, 60, 75, token.len() - 8] {
        let forged = tamper(&token, index);
        assert_ne!(forged, token);
        assert_invalid_grant(&app.refresh(&forged).await, &format!("tampered at {index}"));
    }
    let second = app.refresh_ok(&token).await;
    // Tampering with an older token of a live session ends nothing either.
    let old_forged = tamper(&token, token.len() / 2);
    assert_invalid_grant(&app.refresh(&old_forged).await, "tampered previous token");
    assert_token_pair(&app.refresh(&refresh_token(&second)).await, "nobody can end a session by guessing");
}

#[tokio::test]
async fn refresh_with_an_access_token_of_the_same_user_works() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let r = app
        .post_json(
            "/api/refresh",
            &json!({"refresh_token": refresh_token(&first), "access_token": access_token(&first)}),
        )
        .await;
    assert_token_pair(&r, "refresh with the matching access token");
}

#[tokio::test]
async fn refresh_with_an_expired_access_token_of_the_same_user_works() {
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Expires__CreateExpiresInMs", "1000"),
        ("JwtRefreshToken__Descriptor__ClockSkewMs", "0"),
    ]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    assert_eq!(first["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let expired = access_token(&first);
    let bearer = app.post_json_bearer("/api/revoke", &json!({"scope": "others"}), &expired).await;
    assert_error(&bearer, 401, "invalid_token", "the access token has expired by now");
    assert_eq!(bearer.header("token-expired").as_deref(), Some("true"));
    let r =
        app.post_json("/api/refresh", &json!({"refresh_token": refresh_token(&first), "access_token": expired})).await;
    assert_token_pair(&r, "refresh with the expired access token of the same user");
}

#[tokio::test]
async fn refresh_with_an_access_token_of_another_user_is_invalid_grant() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let alice = app.login("alice", PASSWORD).await;
    let bob = app.login("bob", PASSWORD).await;
    let rows = [
        ("bob's access token", access_token(&bob)),
        ("garbage", "garbage".to_string()),
        ("alice's token signed with another key", {
            let token = access_token(&alice);
            let kid = jwt_header(&token)["kid"].as_str().unwrap().to_string();
            forge_hs256(&jwt_claims(&token), &kid, "another-signing-key-0123456789-abcdefghij")
        }),
        ("a refresh token in place of the access token", refresh_token(&alice)),
    ];
    for (why, access) in &rows {
        let r = app
            .post_json("/api/refresh", &json!({"refresh_token": refresh_token(&alice), "access_token": access}))
            .await;
        assert_invalid_grant(&r, why);
    }
    assert_token_pair(&app.refresh(&refresh_token(&alice)).await, "alice's session is untouched");
}

#[tokio::test]
async fn session_lifetime_is_absolute_and_never_extended_by_rotation() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Expires__RefreshExpiresInMs", "1500")]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let at_login = first["refresh_expires_in"].as_i64().unwrap();
    assert_eq!(at_login, 2, "1500 ms rounds up to 2 s");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = app.refresh_ok(&refresh_token(&first)).await;
    let after_rotation = second["refresh_expires_in"].as_i64().unwrap();
    assert!(after_rotation < at_login, "refresh_expires_in must decrease: {at_login} then {after_rotation}");
    let third = app.refresh_ok(&refresh_token(&second)).await;
    assert!(third["refresh_expires_in"].as_i64().unwrap() <= after_rotation, "never grows: {third}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_invalid_grant(&app.refresh(&refresh_token(&third)).await, "refresh after the session expired");
}
