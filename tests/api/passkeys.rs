//! Passkeys against a software authenticator: registration, passwordless sign-in, a passkey as
//! the second factor, the ceremony's single use, another origin, a cloned authenticator, one
//! account per credential, removal and the last way to sign in.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Reply, TestApp, assert_error, assert_token_pair, jwt_claims};
use crate::soft_authenticator::SoftAuthenticator;

const ORIGIN: &str = "https://app.example.test";

fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("JwtRefreshToken__Passkeys__RpId", "example.test"),
        ("JwtRefreshToken__Passkeys__Origins", ORIGIN),
        ("JwtRefreshToken__Passkeys__RpName", "Example"),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn(&env)
}

async fn post(app: &TestApp, path: &str, body: &Value, bearer: Option<&str>) -> Reply {
    app.raw("POST", path, Some("application/json"), body.to_string(), bearer).await
}

/// Registers `authenticator` for the holder of `bearer`; returns the finish answer.
async fn register(app: &TestApp, bearer: &str, authenticator: &mut SoftAuthenticator, name: &str) -> Reply {
    let start = post(app, "/api/passkeys/register/start", &json!({}), Some(bearer)).await;
    assert_eq!(start.status, 200, "{}", start.text());
    let start = start.json();
    let selection = &start["options"]["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required", "a discoverable credential: {selection}");
    assert_eq!(selection["userVerification"], "required");
    let credential = authenticator.register(&start["options"], ORIGIN);
    let body = json!({"ceremony": start["ceremony"], "credential": credential, "name": name});
    post(app, "/api/passkeys/register/finish", &body, Some(bearer)).await
}

/// A passwordless sign-in with `authenticator` on a page of `origin`.
async fn sign_in(app: &TestApp, authenticator: &mut SoftAuthenticator, origin: &str) -> Reply {
    let start = post(app, "/api/passkeys/login/start", &json!({}), None).await;
    assert_eq!(start.status, 200, "{}", start.text());
    let start = start.json();
    assert!(start["options"]["publicKey"]["allowCredentials"].as_array().is_none_or(Vec::is_empty), "discoverable");
    let credential = authenticator.assert(&start["options"], origin);
    post(app, "/api/passkeys/login/finish", &json!({"ceremony": start["ceremony"], "credential": credential}), None)
        .await
}

fn amr(pair: &Value) -> Value {
    jwt_claims(pair["access_token"].as_str().unwrap())["amr"].clone()
}

#[tokio::test]
async fn a_registered_passkey_signs_in_without_a_password_and_becomes_the_second_factor() {
    let app = spawn(&[]);
    let user_id = app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let bearer = pair["access_token"].as_str().unwrap().to_string();
    let mut key = SoftAuthenticator::new(true, false);
    let r = register(&app, &bearer, &mut key, "laptop").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let registered = r.json();
    assert_eq!(registered["passkey"]["name"], "laptop");
    assert_eq!(registered["recovery_codes"].as_array().unwrap().len(), 10, "the first second factor");
    // Passwordless: no username, no password.
    let signed_in = assert_token_pair(&sign_in(&app, &mut key, ORIGIN).await, "passkey sign-in");
    assert_eq!(jwt_claims(signed_in["access_token"].as_str().unwrap())["sub"], user_id.as_str());
    assert_eq!(amr(&signed_in), json!(["hwk", "mfa"]), "a device-bound key");
    // A password is no longer enough: the passkey is the second factor.
    let r = app.try_login("alice", PASSWORD).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["factors"], json!(["webauthn", "recovery_code"]));
    let mfa_token = r.json()["mfa_token"].as_str().unwrap().to_string();
    let start = post(&app, "/api/passkeys/login/start", &json!({"mfa_token": mfa_token}), None).await.json();
    let allowed = start["options"]["publicKey"]["allowCredentials"].as_array().unwrap().clone();
    assert_eq!(allowed.len(), 1, "the user's passkey is named: {allowed:?}");
    let credential = key.assert(&start["options"], ORIGIN);
    let body = json!({"ceremony": start["ceremony"], "credential": credential, "mfa_token": mfa_token});
    let second = assert_token_pair(&post(&app, "/api/passkeys/login/finish", &body, None).await, "second factor");
    assert_eq!(amr(&second), json!(["pwd", "hwk", "mfa"]));
    // The list shows the counter and last use.
    let list = app.raw("GET", "/api/passkeys", None, "", Some(&bearer)).await.json();
    assert_eq!(list["passkeys"][0]["counter"], 2);
    assert!(list["passkeys"][0]["last_used_at"].is_i64());
}

#[tokio::test]
async fn ceremonies_are_single_use_and_bound_to_their_origin_and_authenticators_to_their_counter() {
    let app = spawn(&[]);
    app.add_user("bob", PASSWORD, &[]);
    let bearer = app.login("bob", PASSWORD).await["access_token"].as_str().unwrap().to_string();
    let mut key = SoftAuthenticator::new(true, true);
    assert_eq!(register(&app, &bearer, &mut key, "phone").await.status, 201);
    // An assertion made on another origin (a phishing page) is refused.
    assert_error(
        &sign_in(&app, &mut key, "https://app.example.test.evil.example").await,
        400,
        "invalid_grant",
        "origin",
    );
    // A finished ceremony cannot be finished again.
    let start = post(&app, "/api/passkeys/login/start", &json!({}), None).await.json();
    let credential = key.assert(&start["options"], ORIGIN);
    let body = json!({"ceremony": start["ceremony"], "credential": credential});
    let pair = assert_token_pair(&post(&app, "/api/passkeys/login/finish", &body, None).await, "first finish");
    assert_eq!(amr(&pair), json!(["swk", "mfa"]), "a synced passkey");
    assert_error(&post(&app, "/api/passkeys/login/finish", &body, None).await, 400, "invalid_grant", "replayed");
    // A forged or altered ceremony is refused.
    let body = json!({"ceremony": "forged", "credential": key.assert(&start["options"], ORIGIN)});
    assert_error(&post(&app, "/api/passkeys/login/finish", &body, None).await, 400, "invalid_grant", "forged ceremony");
    // A copy of the authenticator that lags behind is refused as a clone.
    let mut clone = key.clone();
    clone.counter = 0;
    assert_token_pair(&sign_in(&app, &mut key, ORIGIN).await, "the original moves on");
    assert_error(&sign_in(&app, &mut clone, ORIGIN).await, 400, "invalid_grant", "cloned authenticator");
    // Registration answers are checked too: another origin, and a ceremony of another user.
    let start = post(&app, "/api/passkeys/register/start", &json!({}), Some(&bearer)).await.json();
    let mut other = SoftAuthenticator::new(true, false);
    let credential = other.register(&start["options"], "https://evil.example");
    let body = json!({"ceremony": start["ceremony"], "credential": credential});
    assert_error(
        &post(&app, "/api/passkeys/register/finish", &body, Some(&bearer)).await,
        400,
        "invalid_grant",
        "other origin",
    );
    app.add_user("mallory", PASSWORD, &[]);
    let mallory = app.login("mallory", PASSWORD).await["access_token"].as_str().unwrap().to_string();
    let start = post(&app, "/api/passkeys/register/start", &json!({}), Some(&bearer)).await.json();
    let credential = other.register(&start["options"], ORIGIN);
    let body = json!({"ceremony": start["ceremony"], "credential": credential});
    assert_error(
        &post(&app, "/api/passkeys/register/finish", &body, Some(&mallory)).await,
        400,
        "invalid_grant",
        "bob's ceremony",
    );
}

#[tokio::test]
async fn a_credential_belongs_to_one_account_and_the_last_way_in_stays() {
    let app = spawn(&[("JwtRefreshToken__Registration__Mode", "open")]);
    app.add_user("carol", PASSWORD, &[]);
    app.add_user("dave", PASSWORD, &[]);
    let carol = app.login("carol", PASSWORD).await["access_token"].as_str().unwrap().to_string();
    let dave = app.login("dave", PASSWORD).await["access_token"].as_str().unwrap().to_string();
    let mut key = SoftAuthenticator::new(false, false);
    assert_eq!(register(&app, &carol, &mut key, "key").await.status, 201);
    let mut same = key.clone();
    assert_error(&register(&app, &dave, &mut same, "same key").await, 409, "conflict", "registered to carol");
    // Removing: carol has a password, so her only passkey may go; then it signs in nowhere.
    let id = app.raw("GET", "/api/passkeys", None, "", Some(&carol)).await.json()["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gone = app.raw("DELETE", &format!("/api/passkeys/{id}"), None, "", Some(&carol)).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_error(&sign_in(&app, &mut key, ORIGIN).await, 400, "invalid_grant", "removed passkey");
    assert_token_pair(&app.try_login("carol", PASSWORD).await, "no second factor left");
    assert_error(
        &app.raw("DELETE", &format!("/api/passkeys/{id}"), None, "", Some(&carol)).await,
        404,
        "not_found",
        "twice",
    );
    // Dave may register it now that it is free.
    assert_eq!(register(&app, &dave, &mut key, "key").await.status, 201);
    // Not signed in: no registration.
    let r = post(&app, "/api/passkeys/register/start", &json!({}), None).await;
    assert_eq!(r.status, 401);
    let r = post(&app, "/api/passkeys/login/finish", &json!({"ceremony": "x"}), None).await;
    assert_error(&r, 400, "invalid_request", "no credential");
}
