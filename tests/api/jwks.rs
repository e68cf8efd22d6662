//! `GET /api/jwks` for each algorithm, previous keys, and Bearer tokens signed by old or unknown keys.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{Value, json};

use crate::helpers::*;

fn verify_with_jwks(token: &str, jwks: &Value, algorithm: Algorithm) -> Value {
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWK set");
    let kid = jwt_header(token)["kid"].as_str().expect("kid").to_string();
    let jwk: &Jwk = set.find(&kid).unwrap_or_else(|| panic!("kid {kid} is not in {jwks}"));
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let key = DecodingKey::from_jwk(jwk).expect("decoding key from JWK");
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the published key verifies the token").claims
}

async fn jwks(app: &TestApp) -> Value {
    let r = app.raw("GET", "/api/jwks", None, Vec::new(), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"));
    r.json()
}

#[tokio::test]
async fn jwks_is_empty_for_hs256() {
    let app = TestApp::spawn(&[]);
    assert_eq!(jwks(&app).await, json!({"keys": []}));
}

#[tokio::test]
async fn es256_jwks_publishes_one_ec_public_key_that_verifies_access_tokens() {
    let app = TestApp::spawn(&[(ALGORITHM_SETTING, "ES256"), (KEY_SETTING, &fixture("es256-private.pem"))]);
    app.add_user("alice", PASSWORD, &[]);
    let doc = jwks(&app).await;
    let keys = doc["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1, "{doc}");
    let key = &keys[0];
    assert_eq!(key["kty"], "EC", "{key}");
    assert_eq!(key["crv"], "P-256", "{key}");
    for field in ["kid", "x", "y"] {
        assert!(key[field].as_str().is_some_and(|v| !v.is_empty()), "{field} missing: {key}");
    }
    assert!(key.get("d").is_none(), "the private part must never be published: {key}");
    let token = access_token(&app.login("alice", PASSWORD).await);
    let header = jwt_header(&token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], key["kid"]);
    let claims = verify_with_jwks(&token, &doc, Algorithm::ES256);
    assert_eq!(claims["name"], "alice");
}

#[tokio::test]
async fn eddsa_jwks_publishes_one_okp_public_key_that_verifies_access_tokens() {
    let app = TestApp::spawn(&[(ALGORITHM_SETTING, "EdDSA"), (KEY_SETTING, &fixture("ed25519-private.pem"))]);
    app.add_user("alice", PASSWORD, &[]);
    let doc = jwks(&app).await;
    let keys = doc["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1, "{doc}");
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP", "{key}");
    assert_eq!(key["crv"], "Ed25519", "{key}");
    for field in ["kid", "x"] {
        assert!(key[field].as_str().is_some_and(|v| !v.is_empty()), "{field} missing: {key}");
    }
    assert!(key.get("d").is_none(), "the private part must never be published: {key}");
    let token = access_token(&app.login("alice", PASSWORD).await);
    assert_eq!(jwt_header(&token)["alg"], "EdDSA");
    assert_eq!(jwt_header(&token)["kid"], key["kid"]);
    verify_with_jwks(&token, &doc, Algorithm::EdDSA);
}

fn es256_with_previous_key() -> TestApp {
    TestApp::spawn(&[
        (ALGORITHM_SETTING, "ES256"),
        (KEY_SETTING, &fixture("es256-private.pem")),
        ("JwtRefreshToken__Descriptor__PreviousKeys__0", &fixture("es256-old-public.pem")),
    ])
}

#[tokio::test]
async fn previous_public_keys_are_published_too() {
    let app = es256_with_previous_key();
    app.add_user("alice", PASSWORD, &[]);
    let doc = jwks(&app).await;
    let keys = doc["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 2, "{doc}");
    assert_ne!(keys[0]["kid"], keys[1]["kid"]);
    for key in keys {
        assert_eq!(key["kty"], "EC", "{key}");
        assert!(key.get("d").is_none(), "{key}");
    }
    let current = jwt_header(&access_token(&app.login("alice", PASSWORD).await))["kid"].clone();
    assert!(keys.iter().any(|k| k["kid"] == current), "the signing key is listed");
}

#[tokio::test]
async fn a_bearer_signed_with_a_previous_key_is_accepted_and_an_unknown_key_is_not() {
    let app = es256_with_previous_key();
    app.add_user("alice", PASSWORD, &[]);
    let doc = jwks(&app).await;
    let mine = app.login("alice", PASSWORD).await;
    let other = app.login("alice", PASSWORD).await;
    let real = access_token(&mine);
    let current_kid = jwt_header(&real)["kid"].as_str().unwrap().to_string();
    let old_kid = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .find(|k| *k != current_kid)
        .expect("the previous key's kid");
    let claims = with_claims(&jwt_claims(&real), &json!({"jti": "signed-with-the-old-key"}));
    let old_private = EncodingKey::from_ec_pem(fixture("es256-old-private.pem").as_bytes()).expect("old key");
    let current_private = EncodingKey::from_ec_pem(fixture("es256-private.pem").as_bytes()).expect("current key");
    let ed_private = EncodingKey::from_ed_pem(fixture("ed25519-private.pem").as_bytes()).expect("ed25519 key");

    let refused = [
        (
            "old key claiming the current kid",
            forge(Algorithm::ES256, Some("at+jwt"), Some(&current_kid), &claims, &old_private),
        ),
        (
            "current key claiming the old kid",
            forge(Algorithm::ES256, Some("at+jwt"), Some(&old_kid), &claims, &current_private),
        ),
        (
            "old key under an unknown kid",
            forge(Algorithm::ES256, Some("at+jwt"), Some("unknown-kid"), &claims, &old_private),
        ),
        (
            "unknown Ed25519 key under its own kid",
            forge(Algorithm::EdDSA, Some("at+jwt"), Some("ed25519-kid"), &claims, &ed_private),
        ),
        (
            "unknown Ed25519 key claiming the current kid",
            forge(Algorithm::EdDSA, Some("at+jwt"), Some(&current_kid), &claims, &ed_private),
        ),
        (
            "HS256 keyed with a published JWK claiming the old kid",
            forge_hs256(&claims, &old_kid, &doc["keys"][1].to_string()),
        ),
        (
            "old key, wrong audience",
            forge(
                Algorithm::ES256,
                Some("at+jwt"),
                Some(&old_kid),
                &with_claims(&claims, &json!({"aud": "api://other"})),
                &old_private,
            ),
        ),
    ];
    for (why, token) in &refused {
        let r = app.post_json_bearer("/api/revoke", &json!({"scope": "others"}), token).await;
        assert_error(&r, 401, "invalid_token", why);
        assert!(r.header("www-authenticate").unwrap_or_default().contains(r#"error="invalid_token""#), "{why}");
    }
    assert_token_pair(&app.refresh(&refresh_token(&other)).await, "no refused token ended a session");

    let old_signed = forge(Algorithm::ES256, Some("at+jwt"), Some(&old_kid), &claims, &old_private);
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "others"}), &old_signed).await;
    assert_eq!(r.status, 200, "a token signed with the previous key is accepted: {}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 1}));
    assert_invalid_grant(&app.refresh(&refresh_token(&other)).await, "the other session ended");
    assert_token_pair(&app.refresh(&refresh_token(&mine)).await, "the caller's session is kept");
}
