//! `POST /api/token`: the password grant (JSON and form), the refresh grant on the same route, and
//! the shape of the tokens.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn json_login_returns_an_uncacheable_bearer_token_pair() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r = app.try_login("alice", PASSWORD).await;
    let pair = assert_token_pair(&r, "json login");
    assert_eq!(pair["expires_in"], 300, "default access-token lifetime is 300 s");
    assert_eq!(pair["refresh_expires_in"], 604_800, "default session lifetime is 7 days");
    let fields: HashSet<&str> = pair.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: HashSet<&str> =
        ["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in", "device_token"]
            .into_iter()
            .collect();
    assert_eq!(fields, expected, "{pair}");
}

#[tokio::test]
async fn json_login_accepts_an_explicit_password_grant_type() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r = app
        .post_json("/api/token", &json!({"grant_type": "password", "username": "alice", "password": PASSWORD}))
        .await;
    assert_token_pair(&r, "json login with grant_type=password");
}

#[tokio::test]
async fn form_login_with_password_grant_returns_a_token_pair() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r =
        app.post_form("/api/token", &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_token_pair(&r, "form login");
}

#[tokio::test]
async fn login_matches_the_username_without_case() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("Alice", PASSWORD, &[]);
    let pair = app.login("ALICE", PASSWORD).await;
    let claims = jwt_claims(&access_token(&pair));
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["name"], "Alice", "name is the username as it was added");
}

#[tokio::test]
async fn access_token_header_has_type_at_jwt_and_a_key_id() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let header = jwt_header(&access_token(&pair));
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "HS256", "{header}");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()), "{header}");
    assert!(!header["kid"].as_str().unwrap().contains(KEY), "the kid does not reveal the key");
}

#[tokio::test]
async fn access_token_claims_name_the_user_by_id_session_and_roles() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("root", PASSWORD, &["admin", "ops"]);
    let pair = app.login("root", PASSWORD).await;
    let claims = jwt_claims(&access_token(&pair));
    assert_eq!(claims["iss"], ISSUER, "{claims}");
    assert_eq!(claims["aud"], AUDIENCE, "{claims}");
    assert_eq!(claims["sub"], id.as_str(), "sub is the user id printed by `user add`, not the username");
    assert_ne!(claims["sub"], "root");
    assert_eq!(claims["name"], "root", "{claims}");
    assert_eq!(claims["roles"], json!(["admin", "ops"]), "{claims}");
    let (iat, nbf, exp) =
        (claims["iat"].as_i64().unwrap(), claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(nbf, iat, "{claims}");
    assert_eq!(exp - iat, 300, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()), "{claims}");
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()), "{claims}");
}

#[tokio::test]
async fn a_user_without_roles_gets_an_empty_roles_claim() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let claims = jwt_claims(&access_token(&app.login("alice", PASSWORD).await));
    assert_eq!(claims["roles"], json!([]), "{claims}");
}

#[tokio::test]
async fn every_access_token_has_a_unique_jti_and_each_login_a_new_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let first = app.login("alice", PASSWORD).await;
    let second = app.login("alice", PASSWORD).await;
    let refreshed = app.refresh_ok(&refresh_token(&first)).await;
    let claims: Vec<_> = [&first, &second, &refreshed].iter().map(|p| jwt_claims(&access_token(p))).collect();
    let jtis: HashSet<String> = claims.iter().map(|c| c["jti"].as_str().unwrap().to_string()).collect();
    assert_eq!(jtis.len(), 3, "jti values repeat: {jtis:?}");
    assert_ne!(claims[0]["sid"], claims[1]["sid"], "two logins are two sessions");
    assert_eq!(claims[0]["sid"], claims[2]["sid"], "a refresh stays in its session");
    assert_ne!(refresh_token(&first), refresh_token(&second));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_byte_identical_invalid_grant() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let wrong_password = app.try_login("alice", "not the password").await;
    let unknown_user = app.try_login("nobody", "not the password").await;
    assert_invalid_grant(&wrong_password, "wrong password");
    assert_invalid_grant(&unknown_user, "unknown user");
    assert_eq!(wrong_password.body, unknown_user.body, "the answers must not tell which usernames exist");
    assert_eq!(wrong_password.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test]
async fn refresh_token_grant_on_the_token_endpoint_rotates_by_form_and_json() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let form =
        app.post_form("/api/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token(&pair))]).await;
    let second = assert_token_pair(&form, "form refresh_token grant");
    assert_ne!(refresh_token(&second), refresh_token(&pair));
    let json_grant = app
        .post_json("/api/token", &json!({"grant_type": "refresh_token", "refresh_token": refresh_token(&second)}))
        .await;
    let third = assert_token_pair(&json_grant, "json refresh_token grant");
    assert_ne!(refresh_token(&third), refresh_token(&second));
}

#[tokio::test]
async fn patch_token_refreshes_the_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let r = app.patch_json("/api/token", &json!({"refresh_token": refresh_token(&pair)})).await;
    let next = assert_token_pair(&r, "PATCH /api/token");
    assert_ne!(refresh_token(&next), refresh_token(&pair));
    assert_eq!(jwt_claims(&access_token(&next))["sid"], jwt_claims(&access_token(&pair))["sid"]);
}

#[tokio::test]
async fn other_grant_types_are_unsupported() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let form_client_credentials =
        app.post_form("/api/token", &[("grant_type", "client_credentials"), ("client_id", "x")]).await;
    assert_error(&form_client_credentials, 400, "unsupported_grant_type", "form grant_type=client_credentials");
    let json_code = app
        .post_json(
            "/api/token",
            &json!({"grant_type": "authorization_code", "username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_error(&json_code, 400, "unsupported_grant_type", "json grant_type=authorization_code");
}

#[tokio::test]
async fn form_login_without_grant_type_is_an_invalid_request() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let r = app.post_form("/api/token", &[("username", "alice"), ("password", PASSWORD)]).await;
    assert_invalid_request(&r, "form without grant_type");
}

#[tokio::test]
async fn form_and_json_logins_decode_special_characters_in_credentials() {
    let app = TestApp::spawn(&[]);
    let password = "p@ss+w&rd=%20 \"ü€\"\\";
    let id = app.add_user("Émile", password, &[]);
    let form =
        app.post_form("/api/token", &[("grant_type", "password"), ("username", "ÉMILE"), ("password", password)]).await;
    let pair = assert_token_pair(&form, "form login with + & = % and non-ASCII");
    assert_eq!(jwt_claims(&access_token(&pair))["sub"], id.as_str());
    let raw_form = "grant_type=password&username=%C3%A9mile&password=p%40ss%2Bw%26rd%3D%2520+%22%C3%BC%E2%82%AC%22%5C";
    let r = app.raw("POST", "/api/token", Some("application/x-www-form-urlencoded"), raw_form, None).await;
    assert_token_pair(&r, "hand-encoded form, '+' is a space");
    let json = app.try_login("émile", password).await;
    assert_token_pair(&json, "json login with escapes");
    let escaped = r#"{"username":"\u00c9mile","password":"p@ss+w&rd=%20 \"\u00fc\u20ac\"\\"}"#;
    let r = app.raw("POST", "/api/token", Some("application/json"), escaped, None).await;
    assert_token_pair(&r, "json with unicode escapes");
    assert_invalid_grant(&app.try_login("emile", password).await, "a different name is a different user");
}
