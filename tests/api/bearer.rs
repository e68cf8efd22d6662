//! Bearer access tokens on the scope revocations: missing, invalid and expired tokens.

use jsonwebtoken::Algorithm::{HS256, HS384};
use jsonwebtoken::EncodingKey;
use serde_json::{Value, json};

use crate::helpers::*;

async fn scope_revoke_with_authorization(app: &TestApp, authorization: Option<&str>) -> Reply {
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(value) = authorization {
        headers.push(("Authorization".to_string(), value.to_string()));
    }
    app.request("POST", "/api/revoke", &headers, json!({"scope": "global"}).to_string().into_bytes()).await
}

#[tokio::test]
async fn scope_revoke_without_credentials_is_401_with_a_bare_bearer_challenge() {
    let app = TestApp::spawn(&[]);
    let rows = [
        (None, "no Authorization header"),
        (Some("Basic YWxpY2U6cGFzc3dvcmQ="), "Basic credentials"),
        (Some("Token abc.def.ghi"), "another scheme"),
    ];
    for (authorization, why) in rows {
        let r = scope_revoke_with_authorization(&app, authorization).await;
        assert_error(&r, 401, "unauthorized", why);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"), "{why}: no error= without credentials");
        assert_eq!(r.header("token-expired"), None, "{why}");
    }
}

struct Forgery {
    kid: String,
    claims: Value,
}

async fn real_token(app: &TestApp) -> (Value, Forgery) {
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let token = access_token(&pair);
    let kid = jwt_header(&token)["kid"].as_str().expect("kid").to_string();
    (pair, Forgery { kid, claims: jwt_claims(&token) })
}

#[tokio::test]
async fn invalid_bearer_tokens_are_401_invalid_token() {
    let app = TestApp::spawn(&[]);
    let (pair, real) = real_token(&app).await;
    let iat = real.claims["iat"].as_i64().unwrap();
    let kid = real.kid.as_str();
    let claims = &real.claims;
    let other_key = "another-signing-key-0123456789-abcdefghij";
    let hs = |c: &Value| forge_hs256(c, kid, KEY);
    let sign = |alg, typ: Option<&str>, kid: Option<&str>, c: &Value| {
        forge(alg, typ, kid, c, &EncodingKey::from_secret(KEY.as_bytes()))
    };
    let rows: Vec<(&str, String)> = vec![
        ("empty token", "Bearer ".into()),
        ("not a JWT", "Bearer garbage".into()),
        ("three empty parts", "Bearer ..".into()),
        ("refresh token as bearer", format!("Bearer {}", refresh_token(&pair))),
        ("signed with another secret", format!("Bearer {}", forge_hs256(claims, kid, other_key))),
        ("wrong issuer", format!("Bearer {}", hs(&with_claims(claims, &json!({"iss": "https://evil.test"}))))),
        ("wrong audience", format!("Bearer {}", hs(&with_claims(claims, &json!({"aud": "api://other"}))))),
        ("no audience", format!("Bearer {}", hs(&with_claims(claims, &json!({"aud": null}))))),
        ("no subject", format!("Bearer {}", hs(&with_claims(claims, &json!({"sub": null}))))),
        ("no session id", format!("Bearer {}", hs(&with_claims(claims, &json!({"sid": null}))))),
        ("not valid for an hour", format!("Bearer {}", hs(&with_claims(claims, &json!({"nbf": iat + 3600}))))),
        (
            "issued an hour from now",
            format!("Bearer {}", hs(&with_claims(claims, &json!({"iat": iat + 3600, "nbf": iat + 3600})))),
        ),
        ("typ JWT instead of at+jwt", format!("Bearer {}", sign(HS256, Some("JWT"), Some(kid), claims))),
        ("no typ", format!("Bearer {}", sign(HS256, None, Some(kid), claims))),
        ("no kid", format!("Bearer {}", sign(HS256, Some("at+jwt"), None, claims))),
        ("unknown kid", format!("Bearer {}", forge_hs256(claims, "no-such-kid", KEY))),
        ("HS384 with the right key", format!("Bearer {}", sign(HS384, Some("at+jwt"), Some(kid), claims))),
        (
            "alg none",
            format!("Bearer {}", unsigned_jwt(&json!({"alg": "none", "typ": "at+jwt", "kid": kid}), claims, "")),
        ),
        (
            "expired and signed with another secret",
            format!(
                "Bearer {}",
                forge_hs256(
                    &with_claims(claims, &json!({"iat": iat - 7200, "nbf": iat - 7200, "exp": iat - 3600})),
                    kid,
                    other_key
                )
            ),
        ),
        ("signature of another token", {
            let token = access_token(&pair);
            let forged = hs(&with_claims(claims, &json!({"roles": ["admin"]})));
            let (head, _) = forged.rsplit_once('.').unwrap();
            let (_, sig) = token.rsplit_once('.').unwrap();
            format!("Bearer {head}.{sig}")
        }),
    ];
    for (why, authorization) in &rows {
        let r = scope_revoke_with_authorization(&app, Some(authorization)).await;
        assert_error(&r, 401, "invalid_token", why);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{why}: {challenge}");
        assert!(challenge.contains(r#"error="invalid_token""#), "{why}: {challenge}");
        assert_eq!(r.header("token-expired"), None, "{why}: only an expired valid token says Token-Expired");
    }
    // None of them ended the session.
    assert_token_pair(&app.refresh(&refresh_token(&pair)).await, "session still alive");
}

#[tokio::test]
async fn an_expired_bearer_is_401_with_token_expired() {
    let app = TestApp::spawn(&[]);
    let (pair, real) = real_token(&app).await;
    let iat = real.claims["iat"].as_i64().unwrap();
    let expired = with_claims(&real.claims, &json!({"iat": iat - 7200, "nbf": iat - 7200, "exp": iat - 3600}));
    let token = forge_hs256(&expired, &real.kid, KEY);
    let r = scope_revoke_with_authorization(&app, Some(&format!("Bearer {token}"))).await;
    assert_error(&r, 401, "invalid_token", "expired token");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    assert_eq!(r.header("token-expired").as_deref(), Some("true"));
    assert_token_pair(&app.refresh(&refresh_token(&pair)).await, "session still alive");
}

#[tokio::test]
async fn a_token_forged_with_the_real_key_is_accepted_so_the_forgeries_are_sound() {
    let app = TestApp::spawn(&[]);
    let (pair, real) = real_token(&app).await;
    let token = forge_hs256(&with_claims(&real.claims, &json!({"jti": "forged-but-valid"})), &real.kid, KEY);
    let r = app.post_json_bearer("/api/revoke", &json!({"scope": "global"}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 1}));
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "the session was ended");
}

#[tokio::test]
async fn bearer_scheme_is_matched_without_case() {
    let app = TestApp::spawn(&[]);
    let (pair, _) = real_token(&app).await;
    let r = scope_revoke_with_authorization(&app, Some(&format!("bearer {}", access_token(&pair)))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"revoked_sessions": 1}));
}
