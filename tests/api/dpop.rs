//! DPoP (RFC 9449): token requests with a proof get tokens bound to the proof key; a bound session
//! refreshes only with that key and is never burnt by a request without it; every refused proof is
//! 400 `invalid_dpop_proof` at the token endpoint and a DPoP challenge on resource routes; nonces
//! and `Dpop__Required` by setting. Run on both stores.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::dpop_client::ProofKey;
use crate::helpers::*;

const STRONG: &str = "plum umbrella cactus 1987";
const TOKEN_URL: &str = "https://issuer.test/api/token";
const REFRESH_URL: &str = "https://issuer.test/api/refresh";
const SESSIONS_URL: &str = "https://issuer.test/api/sessions";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch on this machine (the handler under test reads the same clock).
#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Proofs at this machine's time.
trait ProofNow {
    fn proof(&self, method: &str, url: &str, access_token: Option<&str>, nonce: Option<&str>) -> String;
}

impl ProofNow for ProofKey {
    fn proof(&self, method: &str, url: &str, access_token: Option<&str>, nonce: Option<&str>) -> String {
        self.proof_at(method, url, now_s(), access_token, nonce)
    }
}

fn json_with(proof: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(p) = proof {
        headers.push(("DPoP".to_string(), p.to_string()));
    }
    headers
}

async fn login_with(app: &TestApp, proof: Option<&str>) -> Reply {
    let body = json!({"username": "alice", "password": STRONG}).to_string().into_bytes();
    app.request("POST", "/api/token", &json_with(proof), body).await
}

async fn refresh_with(app: &TestApp, refresh_token: &str, proof: Option<&str>) -> Reply {
    let body = json!({ "refresh_token": refresh_token }).to_string().into_bytes();
    app.request("POST", "/api/refresh", &json_with(proof), body).await
}

async fn sessions_with(app: &TestApp, authorization: &str, proof: Option<&str>) -> Reply {
    let mut headers = vec![("Authorization".to_string(), authorization.to_string())];
    if let Some(p) = proof {
        headers.push(("DPoP".to_string(), p.to_string()));
    }
    app.request("GET", "/api/sessions", &headers, Vec::new()).await
}

fn assert_bound(r: &Reply, key: &ProofKey, context: &str) -> Value {
    let pair = assert_token_pair(r, context);
    assert_eq!(pair["token_type"], "DPoP", "{context}");
    assert_eq!(jwt_claims(&access_token(&pair))["cnf"], json!({"jkt": key.jkt()}), "{context}");
    pair
}

fn assert_bad_proof(r: &Reply, context: &str) {
    assert_error(r, 400, "invalid_dpop_proof", context);
}

fn assert_challenge(r: &Reply, error: &str, context: &str) {
    assert_eq!(r.status, 401, "{context}: {}", r.text());
    assert_eq!(r.json()["error"], error, "{context}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with(&format!("DPoP error=\"{error}\"")), "{context}: {challenge:?}");
    assert!(challenge.contains("algs=\"ES256 EdDSA RS256\""), "{context}: {challenge:?}");
}

#[tokio::test]
async fn a_login_with_a_proof_binds_the_session_and_only_that_key_refreshes_it() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let pair = assert_bound(&login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, None))).await, &key, "login");
    let refresh = refresh_token(&pair);

    // Without a proof, or with another key's: 400, and nothing changes — the same refresh token
    // still works afterwards (the session was neither rotated nor ended).
    assert_bad_proof(&refresh_with(&app, &refresh, None).await, "no proof");
    let thief = ProofKey::new();
    assert_bad_proof(&refresh_with(&app, &refresh, Some(&thief.proof("POST", REFRESH_URL, None, None))).await, "thief");
    let next = refresh_with(&app, &refresh, Some(&key.proof("POST", REFRESH_URL, None, None))).await;
    let next = assert_bound(&next, &key, "the owner's refresh");
    assert_ne!(refresh_token(&next), refresh);

    // PATCH /api/token (the .NET route) checks the proof against its own method and URL.
    let body = json!({ "refresh_token": refresh_token(&next) }).to_string().into_bytes();
    let patched =
        app.request("PATCH", "/api/token", &json_with(Some(&key.proof("PATCH", TOKEN_URL, None, None))), body).await;
    assert_bound(&patched, &key, "PATCH /api/token");
}

#[tokio::test]
async fn every_proof_check_refuses_at_the_token_endpoint() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let claims = |htm: &str, htu: &str, iat: i64| json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": htm, "htu": htu, "iat": iat});
    let now = now_s();
    let mut private = key.jwk.clone();
    private["d"] = json!(b64([1u8; 32]));
    let header = |h: Value| b64(h.to_string());
    let body = b64(claims("POST", TOKEN_URL, now).to_string());
    let cases: Vec<(&str, String)> = vec![
        ("wrong htm", key.sign(&claims("GET", TOKEN_URL, now), &key.jwk)),
        ("wrong htu", key.sign(&claims("POST", REFRESH_URL, now), &key.jwk)),
        ("htu of another host", key.sign(&claims("POST", "https://evil.test/api/token", now), &key.jwk)),
        ("iat too old", key.sign(&claims("POST", TOKEN_URL, now - 120), &key.jwk)),
        ("iat in the future", key.sign(&claims("POST", TOKEN_URL, now + 120), &key.jwk)),
        ("another key's jwk", key.sign(&claims("POST", TOKEN_URL, now), &ProofKey::new().jwk)),
        ("alg none", format!("{}.{body}.", header(json!({"typ":"dpop+jwt","alg":"none","jwk":key.jwk})))),
        (
            "alg HS256",
            format!("{}.{body}.AAAA", header(json!({"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}))),
        ),
        ("not a JWT", "garbage".to_string()),
        ("too long", "a".repeat(5000)),
    ];
    for (what, proof) in &cases {
        assert_bad_proof(&login_with(&app, Some(proof)).await, what);
    }
    // A header whose jwk carries the private key is refused for that, before any signature check.
    let genuine = key.proof("POST", TOKEN_URL, None, None);
    let (_, signed_rest) = genuine.split_once('.').unwrap();
    let leaky = format!("{}.{signed_rest}", header(json!({"typ":"dpop+jwt","alg":"ES256","jwk":private})));
    let r = login_with(&app, Some(&leaky)).await;
    assert_bad_proof(&r, "private key in jwk");
    assert_eq!(r.json()["error_description"], "proof jwk holds private key material");
    // A proof is good once: the replay is refused.
    let proof = key.proof("POST", TOKEN_URL, None, None);
    assert_bound(&login_with(&app, Some(&proof)).await, &key, "first use");
    assert_bad_proof(&login_with(&app, Some(&proof)).await, "replayed proof");
    // Two DPoP headers are refused.
    let mut headers = json_with(Some(&key.proof("POST", TOKEN_URL, None, None)));
    headers.push(("DPoP".into(), key.proof("POST", TOKEN_URL, None, None)));
    let body = json!({"username": "alice", "password": STRONG}).to_string().into_bytes();
    assert_bad_proof(&app.request("POST", "/api/token", &headers, body).await, "two DPoP headers");
    // A bad proof with a wrong password is still a proof error: nothing about the password leaks,
    // and no failed login is counted.
    let body = json!({"username": "alice", "password": "wrong"}).to_string().into_bytes();
    let r = app.request("POST", "/api/token", &json_with(Some("garbage")), body).await;
    assert_bad_proof(&r, "bad proof, bad password");
}

#[tokio::test]
async fn bound_access_tokens_need_the_dpop_scheme_and_a_proof_with_ath() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let pair = assert_bound(&login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, None))).await, &key, "login");
    let access = access_token(&pair);

    assert_challenge(&sessions_with(&app, &format!("Bearer {access}"), None).await, "invalid_token", "as Bearer");
    let scheme = format!("DPoP {access}");
    let ok = sessions_with(&app, &scheme, Some(&key.proof("GET", SESSIONS_URL, Some(&access), None))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["sessions"].as_array().unwrap().len(), 1);

    let no_proof = sessions_with(&app, &scheme, None).await;
    assert_challenge(&no_proof, "invalid_dpop_proof", "no proof");
    let no_ath = sessions_with(&app, &scheme, Some(&key.proof("GET", SESSIONS_URL, None, None))).await;
    assert_challenge(&no_ath, "invalid_dpop_proof", "no ath");
    let other_ath = key.proof("GET", SESSIONS_URL, Some("another token"), None);
    assert_challenge(&sessions_with(&app, &scheme, Some(&other_ath)).await, "invalid_dpop_proof", "wrong ath");
    let thief = ProofKey::new().proof("GET", SESSIONS_URL, Some(&access), None);
    assert_challenge(&sessions_with(&app, &scheme, Some(&thief)).await, "invalid_dpop_proof", "other key");
    let wrong_route = key.proof("GET", "https://issuer.test/api/users", Some(&access), None);
    assert_challenge(&sessions_with(&app, &scheme, Some(&wrong_route)).await, "invalid_dpop_proof", "other route");

    // An unbound token under the DPoP scheme is refused too.
    let bearer = app.login("alice", STRONG).await;
    let unbound = access_token(&bearer);
    let proof = key.proof("GET", SESSIONS_URL, Some(&unbound), None);
    assert_challenge(&sessions_with(&app, &format!("DPoP {unbound}"), Some(&proof)).await, "invalid_token", "unbound");
    // ...and keeps working as Bearer.
    assert_eq!(sessions_with(&app, &format!("Bearer {unbound}"), None).await.status, 200);
}

#[tokio::test]
async fn an_unbound_session_refreshed_with_a_proof_becomes_bound() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", STRONG, &[]);
    let pair = app.login("alice", STRONG).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert!(jwt_claims(&access_token(&pair)).get("cnf").is_none());
    let key = ProofKey::new();
    let bound = refresh_with(&app, &refresh_token(&pair), Some(&key.proof("POST", REFRESH_URL, None, None))).await;
    let bound = assert_bound(&bound, &key, "refresh with a proof");
    assert_bad_proof(&refresh_with(&app, &refresh_token(&bound), None).await, "now bound");
}

#[tokio::test]
async fn sign_up_with_a_proof_is_bound_and_introspection_reports_the_binding() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Registration__Mode", "open")]);
    let key = ProofKey::new();
    let body = json!({"username": "newcomer", "password": STRONG}).to_string().into_bytes();
    let register = "https://issuer.test/api/register";
    let r =
        app.request("POST", "/api/register", &json_with(Some(&key.proof("POST", register, None, None))), body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["token_type"], "DPoP");
    let access = r.json()["access_token"].as_str().unwrap().to_string();

    let (id, secret) = app.add_client("orders-api");
    let answer = app.introspect(&access, &id, &secret).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(body["cnf"], json!({"jkt": key.jkt()}));

    // A refused proof at sign-up creates no account.
    let body = json!({"username": "second", "password": STRONG}).to_string().into_bytes();
    assert_bad_proof(&app.request("POST", "/api/register", &json_with(Some("garbage")), body).await, "sign-up");
    let r = app.try_login("second", STRONG).await;
    assert_invalid_grant(&r, "no account was created");
}

#[tokio::test]
async fn with_dpop_required_a_token_request_without_a_proof_is_refused() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Dpop__Required", "true")]);
    app.add_user("alice", STRONG, &[]);
    assert_bad_proof(&login_with(&app, None).await, "login without a proof");
    let key = ProofKey::new();
    let pair = assert_bound(&login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, None))).await, &key, "login");
    assert_bad_proof(&refresh_with(&app, &refresh_token(&pair), None).await, "refresh without a proof");
}

#[tokio::test]
async fn nonces_when_required_are_handed_out_and_then_accepted() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Dpop__RequireNonce", "true")]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let first = login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, None))).await;
    assert_error(&first, 400, "use_dpop_nonce", "no nonce");
    let nonce = first.header("dpop-nonce").expect("DPoP-Nonce with use_dpop_nonce");
    let made_up = login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, Some("made-up")))).await;
    assert_error(&made_up, 400, "use_dpop_nonce", "a nonce of our own");
    let ok = login_with(&app, Some(&key.proof("POST", TOKEN_URL, None, Some(&nonce)))).await;
    let pair = assert_bound(&ok, &key, "with the nonce");
    assert!(ok.header("dpop-nonce").is_some(), "the answer carries the nonce for the next proof");

    // Resource routes: a proof without the nonce gets a challenge carrying it.
    let access = access_token(&pair);
    let scheme = format!("DPoP {access}");
    let r = sessions_with(&app, &scheme, Some(&key.proof("GET", SESSIONS_URL, Some(&access), None))).await;
    assert_challenge(&r, "use_dpop_nonce", "resource without nonce");
    let nonce = r.header("dpop-nonce").expect("nonce");
    let proof = key.proof("GET", SESSIONS_URL, Some(&access), Some(&nonce));
    assert_eq!(sessions_with(&app, &format!("DPoP {access}"), Some(&proof)).await.status, 200);
}

#[tokio::test]
async fn the_proof_url_is_the_issuers_in_invocation_mode_too() {
    // The Functions host delivers the request as an invocation payload whose URL is the host's own
    // (`https://h/api/token`); the proof names the public URL, which the Issuer gives.
    let app = TestApp::spawn(&[]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let headers = json!({
        "Content-Type": ["application/json"],
        "DPoP": [key.proof("POST", TOKEN_URL, None, None)],
    });
    let body = json!({"username": "alice", "password": STRONG}).to_string();
    let (status, outer) = app.invoke("token", "POST", headers, &body).await;
    assert_eq!(status, 200);
    let (inner_status, _, inner_body) = inner(&outer);
    assert_eq!(inner_status, 200, "{inner_body}");
    assert_eq!(inner_body["token_type"], "DPoP");
    assert_eq!(jwt_claims(inner_body["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());
}

#[tokio::test]
async fn a_cookie_refresh_of_a_bound_session_without_the_key_keeps_the_cookies() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Cors__AllowedOrigins", "https://app.example")]);
    app.add_user("alice", STRONG, &[]);
    let key = ProofKey::new();
    let mut headers = json_with(Some(&key.proof("POST", TOKEN_URL, None, None)));
    headers.push(("X-Token-Transport".into(), "cookie".into()));
    headers.push(("Origin".into(), "https://app.example".into()));
    let body = json!({"username": "alice", "password": STRONG}).to_string().into_bytes();
    let login = app.request("POST", "/api/token", &headers, body).await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert_eq!(login.json()["token_type"], "DPoP");
    let cookies: Vec<String> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let xsrf = login.header("x-xsrf-token").expect("xsrf");
    let cookie_refresh = |proof: Option<String>| {
        let mut h = vec![
            ("Cookie".to_string(), cookies.join("; ")),
            ("X-XSRF-TOKEN".to_string(), xsrf.clone()),
            ("Origin".to_string(), "https://app.example".to_string()),
        ];
        if let Some(p) = proof {
            h.push(("DPoP".to_string(), p));
        }
        h
    };
    // A copied cookie and XSRF value without the key: refused, and the cookies are not cleared.
    let stolen = app.request("POST", "/api/refresh", &cookie_refresh(None), Vec::new()).await;
    assert_bad_proof(&stolen, "cookie without proof");
    assert!(stolen.headers.get_all("set-cookie").iter().next().is_none(), "cookies kept");
    let owner = app
        .request("POST", "/api/refresh", &cookie_refresh(Some(key.proof("POST", REFRESH_URL, None, None))), Vec::new())
        .await;
    assert_eq!(owner.status, 200, "{}", owner.text());
    assert_eq!(owner.json()["token_type"], "DPoP");
}
