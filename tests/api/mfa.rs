//! Second factors: TOTP enrolment and confirmation, recovery codes, the `mfa_required` login and
//! its mfa-otp second step, removal, the admin reset, and the `amr`/`auth_time` claims.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Reply, TestApp, assert_error, assert_token_pair, jwt_claims};

const MFA_OTP: &str = "urn:ietf:params:oauth:grant-type:mfa-otp";

/// The wall clock: the handler reads it too.
#[allow(clippy::disallowed_methods)]
fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The authenticator app: codes of `secret` (base32) at time step `step`.
struct App(totp_rs::Totp);

impl App {
    fn new(secret: &str) -> Self {
        let bytes = totp_rs::Secret::try_from_base32(secret).unwrap().as_bytes().to_vec();
        let totp = totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(30)
            .with_secret(bytes)
            .with_account_name("test")
            .build()
            .unwrap();
        Self(totp)
    }

    fn code(&self, step: u64) -> String {
        self.0.generate(step * 30).to_string()
    }
}

fn step() -> u64 {
    now_s() / 30
}

async fn bearer_json(app: &TestApp, method: &str, path: &str, body: &Value, bearer: &str) -> Reply {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let ct = (!body.is_empty()).then_some("application/json");
    app.raw(method, path, ct, body, Some(bearer)).await
}

/// Enrols and confirms an authenticator for `user`; returns the app, the step confirmed at and
/// the recovery codes.
async fn enrol(app: &TestApp, user: &str) -> (App, u64, Vec<String>) {
    let pair = app.login(user, PASSWORD).await;
    let bearer = pair["access_token"].as_str().unwrap().to_string();
    let r = bearer_json(app, "POST", "/api/mfa/totp", &Value::Null, &bearer).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let enrolment = r.json();
    assert!(enrolment["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"), "{enrolment}");
    assert!(enrolment["otpauth_uri"].as_str().unwrap().contains("issuer="), "{enrolment}");
    assert!(enrolment["qr_svg"].as_str().unwrap().contains("<svg"), "an SVG QR code");
    let authenticator = App::new(enrolment["secret"].as_str().unwrap());
    let state = bearer_json(app, "GET", "/api/mfa", &Value::Null, &bearer).await.json();
    assert_eq!((state["totp"].clone(), state["totp_pending"].clone()), (json!(false), json!(true)));
    // Until it is confirmed, a login needs no code.
    assert_token_pair(&app.try_login(user, PASSWORD).await, "pending authenticator");
    let wrong = bearer_json(app, "POST", "/api/mfa/totp/verify", &json!({"code": "000000"}), &bearer).await;
    if wrong.status != 200 {
        assert_error(&wrong, 400, "invalid_grant", "a wrong confirmation code");
    }
    let at = step();
    let r = bearer_json(app, "POST", "/api/mfa/totp/verify", &json!({"code": authenticator.code(at)}), &bearer).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let codes: Vec<String> =
        r.json()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    (authenticator, at, codes)
}

/// A password login of `user` that must answer `mfa_required`; returns its `mfa_token`.
async fn first_step(app: &TestApp, user: &str) -> String {
    let r = app.try_login(user, PASSWORD).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "mfa_required");
    assert_eq!(body["factors"], json!(["totp", "recovery_code"]));
    assert!(r.header("cache-control").is_some_and(|c| c == "no-store"));
    body["mfa_token"].as_str().unwrap().to_string()
}

async fn second_step(app: &TestApp, mfa_token: &str, field: &str, code: &str) -> Reply {
    app.post_json("/api/token", &json!({"grant_type": MFA_OTP, "mfa_token": mfa_token, field: code})).await
}

#[tokio::test]
async fn a_confirmed_authenticator_makes_login_two_steps_and_each_code_works_once() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let (authenticator, at, _) = enrol(&app, "alice").await;
    let token = first_step(&app, "alice").await;
    // The code just used to confirm is refused (RFC 6238 §5.2); the next step's works.
    let r = second_step(&app, &token, "otp", &authenticator.code(at)).await;
    assert_error(&r, 400, "invalid_grant", "the confirmation's code again");
    let token = first_step(&app, "alice").await;
    let pair = assert_token_pair(&second_step(&app, &token, "otp", &authenticator.code(at + 1)).await, "second step");
    let claims = jwt_claims(pair["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    // The session refreshes with the same amr and auth_time.
    let next = app.refresh_ok(pair["refresh_token"].as_str().unwrap()).await;
    let refreshed = jwt_claims(next["access_token"].as_str().unwrap());
    assert_eq!(
        (refreshed["amr"].clone(), refreshed["auth_time"].clone()),
        (claims["amr"].clone(), claims["auth_time"].clone())
    );
    // The mfa_token is single-use, and a used code stays used with a fresh one.
    assert_error(
        &second_step(&app, &token, "otp", &authenticator.code(at + 1)).await,
        400,
        "invalid_grant",
        "token reused",
    );
    let token = first_step(&app, "alice").await;
    assert_error(
        &second_step(&app, &token, "otp", &authenticator.code(at + 1)).await,
        400,
        "invalid_grant",
        "code reused",
    );
    // Malformed requests.
    let token = first_step(&app, "alice").await;
    let both = app
        .post_json("/api/token", &json!({"grant_type": MFA_OTP, "mfa_token": token, "otp": "1", "recovery_code": "2"}))
        .await;
    assert_error(&both, 400, "invalid_request", "both factors");
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_error(&second_step(&app, &forged, "otp", &authenticator.code(at + 2)).await, 400, "invalid_grant", "forged");
    assert_error(&second_step(&app, "garbage", "otp", "123456").await, 400, "invalid_grant", "garbage");
    // Introspection reports how the user authenticated.
    let (id, secret) = app.add_client("orders-api");
    let found = app.introspect(pair["access_token"].as_str().unwrap(), &id, &secret).await.json();
    assert_eq!(found["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(found["auth_time"], claims["auth_time"]);
}

#[tokio::test]
async fn recovery_codes_work_exactly_once_and_removal_needs_a_code() {
    let app = TestApp::spawn(&[]);
    app.add_user("bob", PASSWORD, &[]);
    let (authenticator, at, codes) = enrol(&app, "bob").await;
    let token = first_step(&app, "bob").await;
    let typed = codes[0].to_uppercase();
    let pair = assert_token_pair(&second_step(&app, &token, "recovery_code", &typed).await, "recovery code");
    assert_eq!(jwt_claims(pair["access_token"].as_str().unwrap())["amr"], json!(["pwd", "mfa"]));
    let token = first_step(&app, "bob").await;
    assert_error(&second_step(&app, &token, "recovery_code", &codes[0]).await, 400, "invalid_grant", "used code");
    let bearer = pair["access_token"].as_str().unwrap();
    let state = bearer_json(&app, "GET", "/api/mfa", &Value::Null, bearer).await.json();
    assert_eq!(state["recovery_codes_left"], 9);
    // Removal: a wrong code changes nothing, a current code removes the authenticator.
    let wrong = bearer_json(&app, "DELETE", "/api/mfa/totp", &json!({"code": "zzzzz-zzzzz"}), bearer).await;
    assert_error(&wrong, 400, "invalid_grant", "wrong removal code");
    let gone = bearer_json(&app, "DELETE", "/api/mfa/totp", &json!({"code": authenticator.code(at + 1)}), bearer).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_token_pair(&app.try_login("bob", PASSWORD).await, "no second factor any more");
    let again = bearer_json(&app, "DELETE", "/api/mfa/totp", &json!({"code": codes[1]}), bearer).await;
    assert_error(&again, 404, "not_found", "nothing to remove");
}

#[tokio::test]
async fn an_mfa_token_is_bound_to_its_user_and_password_and_wrong_codes_lock_out() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Login__MaxFailures", "3")]);
    app.add_user("carol", PASSWORD, &[]);
    app.add_user("dave", PASSWORD, &[]);
    let (_, _, carol_codes) = enrol(&app, "carol").await;
    let (_, _, dave_codes) = enrol(&app, "dave").await;
    // Dave's recovery code does not complete Carol's login.
    let token = first_step(&app, "carol").await;
    assert_error(
        &second_step(&app, &token, "recovery_code", &dave_codes[0]).await,
        400,
        "invalid_grant",
        "other user's",
    );
    // A password set since the first step voids its token.
    let token = first_step(&app, "carol").await;
    let out = app.run_cli(&["user", "password", "carol", "--password-stdin"], "a whole new passphrase 77\n");
    assert!(out.status.success(), "{out:?}");
    assert_error(
        &second_step(&app, &token, "recovery_code", &carol_codes[0]).await,
        400,
        "invalid_grant",
        "password changed",
    );
    // Wrong codes count as failed logins: Dave is locked after three.
    for _ in 0..2 {
        let token = first_step(&app, "dave").await;
        assert_error(&second_step(&app, &token, "otp", "000000").await, 400, "invalid_grant", "wrong code");
    }
    let token = first_step(&app, "dave").await;
    let r = second_step(&app, &token, "otp", "999999").await;
    assert!(r.status == 400 || r.status == 429, "{}", r.text());
    let locked = app.try_login("dave", PASSWORD).await;
    assert_error(&locked, 429, "temporarily_unavailable", "locked by wrong codes");
}

#[tokio::test]
async fn an_admin_reset_removes_the_factors_and_ends_the_sessions() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("erin", PASSWORD, &[]);
    let (authenticator, at, _) = enrol(&app, "erin").await;
    let token = first_step(&app, "erin").await;
    let erin = assert_token_pair(&second_step(&app, &token, "otp", &authenticator.code(at + 1)).await, "erin");
    let admin = app.login("root", PASSWORD).await;
    let bearer = admin["access_token"].as_str().unwrap();
    let users = bearer_json(&app, "GET", "/api/users", &Value::Null, bearer).await.json();
    let listed = users["users"].as_array().unwrap().iter().find(|u| u["username"] == "erin").unwrap().clone();
    assert_eq!(listed["second_factors"], json!(["totp", "recovery_code"]), "admins see the factors: {listed}");
    let r = bearer_json(&app, "PATCH", "/api/users/erin", &json!({"reset_mfa": true}), bearer).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["second_factors"], json!([]), "{}", r.text());
    assert!(app.refresh(erin["refresh_token"].as_str().unwrap()).await.status >= 400, "sessions ended");
    assert_token_pair(&app.try_login("erin", PASSWORD).await, "no second factor after the reset");
    // Not for non-admins.
    let pair = app.login("erin", PASSWORD).await;
    let r = bearer_json(
        &app,
        "PATCH",
        "/api/users/root",
        &json!({"reset_mfa": true}),
        pair["access_token"].as_str().unwrap(),
    )
    .await;
    assert_error(&r, 403, "insufficient_scope", "not an admin");
    // The command line does the same.
    enrol(&app, "erin").await;
    let out = app.run_cli(&["user", "reset-mfa", "erin"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed the second factors of erin"));
    assert_token_pair(&app.try_login("erin", PASSWORD).await, "after the command line reset");
}

#[tokio::test]
async fn a_federated_sign_in_honours_the_second_factor_unless_a_trusted_provider_asserts_mfa() {
    use crate::oidc_provider::Provider;
    let provider = Provider::start().await;
    let p = "JwtRefreshToken__Federation__Providers";
    let pairs = [
        ("JwtRefreshToken__Federation__AllowHttpLoopback".to_string(), "true".to_string()),
        (format!("{p}__corp__Issuer"), provider.issuer()),
        (format!("{p}__corp__Audiences__0"), "client-a".to_string()),
        (format!("{p}__corp__NonceMode"), "none".to_string()),
        (format!("{p}__trusted__Issuer"), provider.issuer()),
        (format!("{p}__trusted__Audiences__0"), "client-a".to_string()),
        (format!("{p}__trusted__NonceMode"), "none".to_string()),
        (format!("{p}__trusted__TrustMfa"), "true".to_string()),
    ];
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = TestApp::spawn(&refs);
    app.add_user("fiona", PASSWORD, &[]);
    let pair = app.login("fiona", PASSWORD).await;
    let bearer = pair["access_token"].as_str().unwrap().to_string();
    let token = |sub: &str, amr: Value| {
        let mut c = provider.claims("client-a", sub);
        c["amr"] = amr;
        c["jti"] = json!(format!("{}", now_s() as u128 * 1000 + u128::from(rand_u16())));
        provider.id_token(c)
    };
    for name in ["corp", "trusted"] {
        let body = json!({"provider": name, "id_token": token(&format!("f-{name}"), json!(["pwd"]))});
        let r = app.post_json_bearer("/api/identities", &body, &bearer).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (authenticator, at, _) = enrol(&app, "fiona").await;
    let exchange = |provider: &str, id_token: String| {
        json!({
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": id_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "provider": provider,
        })
    };
    // The provider's word is not taken by default: the authenticator is asked for.
    let r = app.post_json("/api/token", &exchange("corp", token("f-corp", json!(["pwd", "mfa"])))).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let mfa_token = r.json()["mfa_token"].as_str().unwrap().to_string();
    let done = assert_token_pair(&second_step(&app, &mfa_token, "otp", &authenticator.code(at + 1)).await, "fed + otp");
    assert_eq!(jwt_claims(done["access_token"].as_str().unwrap())["amr"], json!(["fed", "otp", "mfa"]));
    // A trusted provider asserting MFA passes; without the assertion it does not.
    let r = app.post_json("/api/token", &exchange("trusted", token("f-trusted", json!(["pwd", "mfa"])))).await;
    let trusted = assert_token_pair(&r, "trusted provider asserting mfa");
    assert_eq!(jwt_claims(trusted["access_token"].as_str().unwrap())["amr"], json!(["fed", "mfa"]));
    let r = app.post_json("/api/token", &exchange("trusted", token("f-trusted", json!(["pwd"])))).await;
    assert_eq!(r.status, 401, "no mfa in amr: {}", r.text());
}

fn rand_u16() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
