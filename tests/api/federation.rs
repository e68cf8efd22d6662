//! Sign-in with a provider's ID token (RFC 8693 token exchange) and linked identities, against a
//! test OpenID provider on loopback (its own keys and discovery document; no network).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, Reply, TestApp, assert_error, assert_token_pair, inner, jwt_claims, tamper, with_claims,
};
use crate::oidc_provider::{self, Mode, Provider, SigningKey};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const AUD: &str = "client-a";
const P: &str = "JwtRefreshToken__Federation__Providers";

/// The wall clock: the handler under test and the provider read it too.
#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// Settings for a provider `test` at `provider` (nonce mode raw), sign-up `open` or not.
fn settings(provider: &Provider, open: bool, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("JwtRefreshToken__Federation__AllowHttpLoopback".to_string(), "true".to_string()),
        ("JwtRefreshToken__Federation__KeyRefetchIntervalMs".to_string(), "1000".to_string()),
        ("JwtRefreshToken__Federation__FetchTimeoutMs".to_string(), "1000".to_string()),
        (format!("{P}__test__Issuer"), provider.issuer()),
        (format!("{P}__test__Audiences__0"), AUD.to_string()),
        (format!("{P}__test__Audiences__1"), "client-b".to_string()),
        (format!("{P}__test__AllowedAlgorithms"), "RS256,ES256".to_string()),
        ("JwtRefreshToken__Registration__Mode".to_string(), if open { "open" } else { "closed" }.to_string()),
    ];
    pairs.extend(extra.iter().cloned());
    pairs
}

fn spawn(provider: &Provider, open: bool, extra: &[(String, String)]) -> TestApp {
    let pairs = settings(provider, open, extra);
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    TestApp::spawn(&refs)
}

/// Claims of the test provider for `sub` with a raw nonce `n-<sub>` and a unique `jti`.
fn claims(provider: &Provider, sub: &str) -> Value {
    let mut c = provider.claims(AUD, sub);
    c["nonce"] = json!(format!("n-{sub}"));
    c["jti"] = json!(uuid_like());
    c
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now(), N.fetch_add(1, Ordering::SeqCst))
}

async fn exchange(app: &TestApp, provider: &str, token: &str, nonce: Option<&str>) -> Reply {
    let mut body =
        json!({"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN, "provider": provider});
    if let Some(n) = nonce {
        body["nonce"] = json!(n);
    }
    app.post_json("/api/token", &body).await
}

async fn sign_in(app: &TestApp, provider: &Provider, sub: &str) -> Reply {
    exchange(app, "test", &provider.id_token(claims(provider, sub)), Some(&format!("n-{sub}"))).await
}

fn subject_of(pair: &Value) -> String {
    jwt_claims(pair["access_token"].as_str().unwrap())["sub"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_id_token_signs_in_creating_the_account_once_and_the_session_rotates() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    let first = assert_token_pair(&sign_in(&app, &provider, "p-1").await, "first sign-in");
    assert_eq!(first["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(first["account_created"], true);
    let again = assert_token_pair(&sign_in(&app, &provider, "p-1").await, "returning sign-in");
    assert_eq!(again["account_created"], false);
    assert_eq!(subject_of(&first), subject_of(&again), "one account for one identity");
    let name = jwt_claims(first["access_token"].as_str().unwrap())["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("p-1"), "derived from the e-mail's local part: {name}");
    let next = app.refresh_ok(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(subject_of(&next), subject_of(&first));
    // A form body works as well as JSON.
    let token = provider.id_token(claims(&provider, "p-1"));
    let form = app
        .post_form(
            "/api/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &token),
                ("subject_token_type", ID_TOKEN),
                ("provider", "test"),
                ("nonce", "n-p-1"),
            ],
        )
        .await;
    assert_eq!(subject_of(&assert_token_pair(&form, "form body")), subject_of(&first));
    // The identity is listed for its owner.
    let list = app.raw("GET", "/api/identities", None, "", Some(first["access_token"].as_str().unwrap())).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["identities"][0]["provider"], "test");
    assert_eq!(list.json()["identities"][0]["subject"], "p-1");
}

#[tokio::test]
async fn every_failed_check_is_invalid_grant_and_changes_nothing() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    let good = claims(&provider, "p-2");
    let key = provider.key();
    let other_key = SigningKey::rs256("k1");
    let t = now();
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("wrong aud", provider.id_token(with_claims(&good, &json!({"aud": "someone-else"}))), Some("n-p-2")),
        ("wrong iss", provider.id_token(with_claims(&good, &json!({"iss": "https://evil.example"}))), Some("n-p-2")),
        ("azp not an audience", provider.id_token(with_claims(&good, &json!({"azp": "stranger"}))), Some("n-p-2")),
        ("expired", provider.id_token(with_claims(&good, &json!({"exp": t - 600, "iat": t - 1200}))), Some("n-p-2")),
        ("issued in the future", provider.id_token(with_claims(&good, &json!({"iat": t + 3600}))), Some("n-p-2")),
        ("not yet valid", provider.id_token(with_claims(&good, &json!({"nbf": t + 3600}))), Some("n-p-2")),
        ("no sub", provider.id_token(with_claims(&good, &json!({"sub": null}))), Some("n-p-2")),
        ("bad signature", tamper(&provider.id_token(good.clone()), 2), Some("n-p-2")),
        ("signed by another key with the same kid", other_key.sign(&json!({}), &good), Some("n-p-2")),
        ("alg none", key.sign(&json!({"alg": "none"}), &good), Some("n-p-2")),
        ("alg HS256", key.sign(&json!({"alg": "HS256"}), &good), Some("n-p-2")),
        ("alg not allowed (PS256)", key.sign(&json!({"alg": "PS256"}), &good), Some("n-p-2")),
        ("unknown kid", key.sign(&json!({"kid": "nobody"}), &good), Some("n-p-2")),
        ("nonce missing", provider.id_token(good.clone()), None),
        ("nonce mismatched", provider.id_token(good.clone()), Some("n-other")),
        ("nonce missing in the token", provider.id_token(with_claims(&good, &json!({"nonce": null}))), Some("n-p-2")),
        ("not a JWT", "abc.def".to_string(), Some("n-p-2")),
    ];
    for (context, token, nonce) in &cases {
        let r = exchange(&app, "test", token, *nonce).await;
        assert_error(&r, 400, "invalid_grant", context);
    }
    assert_error(
        &exchange(&app, "nobody", &provider.id_token(good.clone()), Some("n-p-2")).await,
        400,
        "invalid_grant",
        "unknown provider",
    );
    let wrong_type = app
        .post_json("/api/token", &json!({"grant_type": EXCHANGE, "subject_token": "x.y.z", "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "provider": "test"}))
        .await;
    assert_error(&wrong_type, 400, "invalid_request", "another subject_token_type");
    let missing = app.post_json("/api/token", &json!({"grant_type": EXCHANGE, "provider": "test"})).await;
    assert_error(&missing, 400, "invalid_request", "no subject_token");
    // None of it made an account: the good token still creates one.
    let r = exchange(&app, "test", &provider.id_token(good), Some("n-p-2")).await;
    assert_eq!(assert_token_pair(&r, "the good token")["account_created"], true);
}

#[tokio::test]
async fn a_replayed_id_token_is_refused_even_on_another_instance() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    let other = app.second_instance();
    let token = provider.id_token(claims(&provider, "p-3"));
    assert_token_pair(&exchange(&app, "test", &token, Some("n-p-3")).await, "first use");
    assert_error(&exchange(&app, "test", &token, Some("n-p-3")).await, 400, "invalid_grant", "replay");
    assert_error(&exchange(&other, "test", &token, Some("n-p-3")).await, 400, "invalid_grant", "replay elsewhere");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_random_kids_cannot_amplify() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[("JwtRefreshToken__Federation__MaxFailures".to_string(), "1000".to_string())]);
    assert_token_pair(&sign_in(&app, &provider, "p-4").await, "with the first key");
    let fetched = provider.jwks_requests();
    assert_eq!(fetched, 1, "one fetch, then the cache");
    // Forty tokens with random key ids within a second: at most one refetch.
    let key = provider.key();
    for i in 0..40 {
        let token = key.sign(&json!({"kid": format!("random-{i}")}), &claims(&provider, "p-4"));
        assert_error(&exchange(&app, "test", &token, Some("n-p-4")).await, 400, "invalid_grant", "unknown kid");
    }
    assert!(
        provider.jwks_requests() <= fetched + 1,
        "unknown kids refetched {} times",
        provider.jwks_requests() - fetched
    );
    // The provider rotates to an ES256 key: after the interval, its first token refetches once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    provider.publish(vec![SigningKey::es256("k2")]);
    let before = provider.jwks_requests();
    assert_token_pair(&sign_in(&app, &provider, "p-4").await, "with the rotated key");
    assert_eq!(provider.jwks_requests(), before + 1);
}

#[tokio::test]
async fn an_unreachable_slow_or_huge_provider_is_503_and_other_routes_are_unaffected() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    for (mode, context) in [
        (Mode::Down, "down"),
        (Mode::Status(500), "answering 500"),
        (Mode::Slow(Duration::from_secs(3)), "slow"),
        (Mode::HugeJwks, "an 8 MiB key set"),
    ] {
        let app = spawn(&provider, true, &[]);
        provider.set_mode(mode);
        let started = Instant::now();
        let r = sign_in(&app, &provider, "p-5").await;
        assert_error(&r, 503, "temporarily_unavailable", context);
        assert!(r.header("retry-after").is_some(), "{context}: Retry-After");
        assert!(started.elapsed() < Duration::from_secs(3), "{context}: answered within the fetch timeout");
        assert!(app.memory_kib("VmHWM") < 200 * 1024, "{context}: memory bounded");
    }
    provider.set_mode(Mode::Slow(Duration::from_secs(2)));
    let slow = tokio::spawn({
        let token = provider.id_token(claims(&provider, "p-6"));
        let base = app.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/token"))
                .json(&json!({"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN, "provider": "test", "nonce": "n-p-6"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let jwks = app.raw("GET", "/api/jwks", None, "", None).await;
    assert_eq!(jwks.status, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "an unrelated route waits for no provider");
    assert_eq!(slow.await.unwrap().unwrap(), 503);
    provider.set_mode(Mode::Normal);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_token_pair(&sign_in(&app, &provider, "p-6").await, "the provider is back");
}

#[tokio::test]
async fn sixteen_parallel_first_sign_ins_of_one_person_make_one_account() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    let other = app.second_instance();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let token = provider.id_token(claims(&provider, "p-7"));
        let base = if i % 2 == 0 { app.base.clone() } else { other.base.clone() };
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/token"))
                .json(&json!({"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN, "provider": "test", "nonce": "n-p-7"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut subjects = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        subjects.insert(subject_of(&body));
        created += usize::from(body["account_created"] == true);
    }
    assert_eq!(subjects.len(), 1, "one account: {subjects:?}");
    assert_eq!(created, 1, "created once");
    app.add_user("root", PASSWORD, &["admin"]);
    let token = app.login("root", PASSWORD).await;
    let users = app.raw("GET", "/api/users", None, "", Some(token["access_token"].as_str().unwrap())).await;
    let listed = users.json();
    let with_identity: Vec<&Value> =
        listed["users"].as_array().unwrap().iter().filter(|u| u["identities"][0]["subject"] == "p-7").collect();
    assert_eq!(with_identity.len(), 1, "{}", users.text());
    assert_eq!(with_identity[0]["has_password"], false);
}

#[tokio::test]
async fn identities_link_only_explicitly_and_never_by_email() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[]);
    app.add_user("marta", PASSWORD, &[]);
    let marta = app.login("marta", PASSWORD).await;
    let bearer = marta["access_token"].as_str().unwrap().to_string();
    // An identity whose verified address is marta's own name makes a new account: never hers.
    let mut c = claims(&provider, "p-8");
    c["email"] = json!("marta@example.com");
    let other = assert_token_pair(&exchange(&app, "test", &provider.id_token(c), Some("n-p-8")).await, "by e-mail");
    assert_ne!(subject_of(&other), subject_of(&marta), "no automatic linking by e-mail");
    // Marta links an identity of her own explicitly.
    let link = |sub: &str| json!({"provider": "test", "id_token": provider.id_token(claims(&provider, sub)), "nonce": format!("n-{sub}")});
    let r = app.post_json_bearer("/api/identities", &link("p-9"), &bearer).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["subject"], "p-9");
    let signed_in = assert_token_pair(&sign_in(&app, &provider, "p-9").await, "the linked identity");
    assert_eq!(subject_of(&signed_in), subject_of(&marta), "signs in to marta");
    // The identity of another account, and a second identity of the same provider, conflict.
    assert_error(&app.post_json_bearer("/api/identities", &link("p-8"), &bearer).await, 409, "conflict", "another's");
    assert_error(&app.post_json_bearer("/api/identities", &link("p-10"), &bearer).await, 409, "conflict", "second");
    // A linking token is single-use like any other.
    let token = provider.id_token(claims(&provider, "p-11"));
    let body = json!({"provider": "test", "id_token": token, "nonce": "n-p-11"});
    assert_token_pair(&exchange(&app, "test", &token, Some("n-p-11")).await, "used to sign in");
    assert_error(&app.post_json_bearer("/api/identities", &body, &bearer).await, 400, "invalid_grant", "replayed");
    // Unlink: marta keeps her password, so it is allowed; then the identity signs in elsewhere.
    let gone = app.raw("DELETE", "/api/identities/test", None, "", Some(&bearer)).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_error(&app.raw("DELETE", "/api/identities/test", None, "", Some(&bearer)).await, 404, "not_found", "twice");
    let after = assert_token_pair(&sign_in(&app, &provider, "p-9").await, "after unlinking");
    assert_ne!(subject_of(&after), subject_of(&marta));
    // A provider-only account cannot unlink its only way in.
    let only = other["access_token"].as_str().unwrap();
    assert_error(&app.raw("DELETE", "/api/identities/test", None, "", Some(only)).await, 409, "conflict", "last way");
}

#[tokio::test]
async fn closed_registration_refuses_unknown_identities_and_a_disabled_account_ends_its_sessions() {
    let provider = Provider::start().await;
    let app = spawn(&provider, false, &[]);
    assert_error(&sign_in(&app, &provider, "p-12").await, 403, "access_denied", "closed registration");
    app.add_user("ana", PASSWORD, &[]);
    let ana = app.login("ana", PASSWORD).await;
    let body = json!({"provider": "test", "id_token": provider.id_token(claims(&provider, "p-13")), "nonce": "n-p-13"});
    let r = app.post_json_bearer("/api/identities", &body, ana["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let federated =
        assert_token_pair(&sign_in(&app, &provider, "p-13").await, "linked identity with registration closed");
    app.disable_user("ana");
    assert!(app.refresh(federated["refresh_token"].as_str().unwrap()).await.status >= 400, "federated session ended");
    assert_error(&sign_in(&app, &provider, "p-13").await, 400, "invalid_grant", "disabled");
}

#[tokio::test]
async fn required_verified_email_and_the_failure_throttle() {
    let provider = Provider::start().await;
    let extra = [
        (format!("{P}__test__RequireEmailVerified"), "true".to_string()),
        ("JwtRefreshToken__Federation__MaxFailures".to_string(), "3".to_string()),
    ];
    let app = spawn(&provider, true, &extra);
    let unverified = with_claims(&claims(&provider, "p-14"), &json!({"email_verified": false}));
    assert_error(
        &exchange(&app, "test", &provider.id_token(unverified), Some("n-p-14")).await,
        400,
        "invalid_grant",
        "unverified",
    );
    let as_string = with_claims(&claims(&provider, "p-14"), &json!({"email_verified": "true"}));
    assert_token_pair(
        &exchange(&app, "test", &provider.id_token(as_string), Some("n-p-14")).await,
        "\"true\" as Apple sends it",
    );
    for _ in 0..2 {
        assert_error(&exchange(&app, "test", "a.b.c", Some("x")).await, 400, "invalid_grant", "garbage");
    }
    let r = sign_in(&app, &provider, "p-15").await;
    assert_error(&r, 429, "temporarily_unavailable", "three refusals from this address");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn the_presets_accept_real_shaped_tokens_of_apple_google_and_microsoft() {
    let provider = Provider::start().await;
    let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let extra = [
        (format!("{P}__apple__Audiences__0"), "com.example.app".to_string()),
        (format!("{P}__apple__JwksUri"), provider.jwks_uri()),
        (format!("{P}__google__Audiences__0"), "web.apps.googleusercontent.com".to_string()),
        (format!("{P}__google__Audiences__1"), "android.apps.googleusercontent.com".to_string()),
        (format!("{P}__google__JwksUri"), provider.jwks_uri()),
        (format!("{P}__microsoft__Audiences__0"), "6731de76-14a6-49ae-97bc-6eba6914391e".to_string()),
        (format!("{P}__microsoft__Tenants__0"), tid.to_string()),
        (format!("{P}__microsoft__JwksUri"), provider.jwks_uri()),
    ];
    let app = spawn(&provider, true, &extra);
    let key = provider.key();
    let t = now();
    let apple = key.sign(
        &oidc_provider::apple_header(),
        &oidc_provider::apple_claims("com.example.app", "001234.abc.1234", "raw-n", t),
    );
    assert_token_pair(&exchange(&app, "apple", &apple, Some("raw-n")).await, "apple, nonce hashed");
    let apple = key.sign(
        &oidc_provider::apple_header(),
        &oidc_provider::apple_claims("com.example.app", "001234.abc.1234", "raw-n", t + 1),
    );
    assert_error(&exchange(&app, "apple", &apple, Some("other")).await, 400, "invalid_grant", "apple, other nonce");
    let google = key.sign(
        &oidc_provider::google_header(),
        &oidc_provider::google_claims(
            "web.apps.googleusercontent.com",
            "android.apps.googleusercontent.com",
            "110169484474386276334",
            "g-n",
            t,
        ),
    );
    assert_token_pair(&exchange(&app, "google", &google, Some("g-n")).await, "google with azp");
    let google = key.sign(
        &oidc_provider::google_header(),
        &with_claims(
            &oidc_provider::google_claims(
                "web.apps.googleusercontent.com",
                "android.apps.googleusercontent.com",
                "1101",
                "g-n",
                t,
            ),
            &json!({"iss": "accounts.google.com"}),
        ),
    );
    assert_token_pair(&exchange(&app, "google", &google, Some("g-n")).await, "google's bare issuer");
    let ms = |tid: &str, n: i64| {
        key.sign(
            &oidc_provider::microsoft_header(),
            &oidc_provider::microsoft_claims(
                "6731de76-14a6-49ae-97bc-6eba6914391e",
                tid,
                "00000000-0000-0000-66f3-3332eca7ea81",
                "m-n",
                t + n,
            ),
        )
    };
    assert_token_pair(&exchange(&app, "microsoft", &ms(tid, 0), Some("m-n")).await, "microsoft, allowed tenant");
    let other_tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    assert_error(
        &exchange(&app, "microsoft", &ms(other_tenant, 1), Some("m-n")).await,
        400,
        "invalid_grant",
        "other tenant",
    );
    // Discovery lists the exchange grant once providers are configured.
    let meta = app.raw("GET", "/api/.well-known/openid-configuration", None, "", None).await;
    let grants = meta.json()["grant_types_supported"].clone();
    assert!(grants.as_array().unwrap().iter().any(|g| g == EXCHANGE), "{grants}");
}

#[tokio::test]
async fn invocation_mode_without_a_forwarded_address_shares_no_failure_bucket() {
    let provider = Provider::start().await;
    let app = spawn(&provider, true, &[("JwtRefreshToken__Federation__MaxFailures".to_string(), "2".to_string())]);
    let headers = json!({"Content-Type": ["application/json"]});
    let body = |token: &str, nonce: &str| {
        json!({"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN, "provider": "test", "nonce": nonce})
            .to_string()
    };
    // Someone sends garbage through the host with no forwarded address…
    for _ in 0..3 {
        let (_, outer) = app.invoke("token", "POST", headers.clone(), &body("a.b.c", "x")).await;
        assert_eq!(inner(&outer).0, 400, "{outer}");
    }
    // …and another client without one still signs in.
    let token = provider.id_token(claims(&provider, "p-20"));
    let (_, outer) = app.invoke("token", "POST", headers, &body(&token, "n-p-20")).await;
    assert_eq!(inner(&outer).0, 200, "{outer}");
}
