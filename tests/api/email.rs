//! E-mail: addresses and their verification, password recovery, security notices, the queue and
//! the ACS transport. Mail goes to the `outbox` transport (one `.eml` file per message), read
//! back here as a person or a script would: the `Code: …` line of the plain-text part.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::acs_endpoint::{self, AcsEndpoint};
use crate::helpers::{PASSWORD, Reply, TestApp, assert_error, assert_token_pair};
use jwt_refresh_token::settings::names;

/// A service with open sign-up and the outbox in `outbox`, plus `extra` settings.
fn app_with(outbox: &Path, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(&str, &str)> = vec![
        (names::REGISTRATION_MODE, "open"),
        (names::REGISTRATION_MAX_PER_ADDRESS, "1000"),
        (names::EMAIL_TRANSPORT, "outbox"),
        (names::EMAIL_FROM, "no-reply@service.test"),
        (names::EMAIL_PRODUCT_NAME, "Acme"),
        (names::EMAIL_RESET_URL, "https://app.test/reset"),
        (names::EMAIL_OUTBOX_PATH, outbox.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn(&env)
}

/// A mail read from the outbox.
#[derive(Debug, Clone)]
struct Mail {
    path: PathBuf,
    raw: String,
}

impl Mail {
    fn to(&self) -> String {
        self.raw.lines().find_map(|l| l.strip_prefix("To: ")).unwrap_or_default().trim().to_string()
    }

    fn subject(&self) -> String {
        self.raw.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().trim().to_string()
    }

    /// The text with quoted-printable undone (soft breaks and `=3D`), as a mail reader shows it.
    fn decoded(&self) -> String {
        self.raw.replace("=\r\n", "").replace("=3D", "=")
    }

    /// The code on its own `Code: …` line.
    fn code(&self) -> String {
        self.raw
            .lines()
            .find_map(|l| l.strip_prefix("Code: "))
            .unwrap_or_else(|| panic!("no Code: line in {}", self.raw))
            .trim()
            .to_string()
    }
}

/// Every mail in `outbox`.
fn mails(outbox: &Path) -> Vec<Mail> {
    let mut found: Vec<Mail> = std::fs::read_dir(outbox)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|path| Mail { raw: std::fs::read_to_string(&path).unwrap(), path })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|m| std::fs::metadata(&m.path).and_then(|m| m.modified()).ok());
    found
}

/// Waits (10 s at most) for the `n`th mail to `to` whose subject holds `subject`.
async fn wait_for_mail(outbox: &Path, to: &str, subject: &str, n: usize) -> Mail {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let matching: Vec<Mail> =
            mails(outbox).into_iter().filter(|m| m.to() == to && m.subject().contains(subject)).collect();
        if let Some(mail) = matching.get(n - 1) {
            return mail.clone();
        }
        assert!(Instant::now() < deadline, "no mail {n} to {to} about {subject:?}; outbox: {:?}", mails(outbox));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many mails to `to` about `subject`, after waiting `settle` for stragglers.
async fn count_mails(outbox: &Path, to: &str, subject: &str, settle: Duration) -> usize {
    tokio::time::sleep(settle).await;
    mails(outbox).iter().filter(|m| m.to() == to && m.subject().contains(subject)).count()
}

/// A sign-up's answer: 201 and a token pair.
fn signed_up(r: &Reply, context: &str) -> Value {
    assert_eq!(r.status, 201, "{context}: {}", r.text());
    let pair = r.json();
    assert!(pair["access_token"].is_string() && pair["refresh_token"].is_string(), "{context}: {pair}");
    pair
}

async fn bearer(app: &TestApp, method: &str, path: &str, body: &Value, token: &str) -> Reply {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let ct = (!body.is_empty()).then_some("application/json");
    app.raw(method, path, ct, body, Some(token)).await
}

fn access(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_string()
}

/// An admin's access token (a user `root` with the admin role).
async fn admin(app: &TestApp) -> String {
    app.add_user("root", PASSWORD, &["admin"]);
    access(&app.login("root", PASSWORD).await)
}

/// Gives `user` the verified `address` as an admin does.
async fn verified(app: &TestApp, admin: &str, user: &str, address: &str) {
    let body = json!({"email": address, "email_verified": true});
    let r =
        app.raw("PATCH", &format!("/api/users/{user}"), Some("application/json"), body.to_string(), Some(admin)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["email"].clone(), r.json()["email_verified"].clone()), (json!(address), json!(true)));
}

#[tokio::test]
async fn sign_up_with_an_address_mails_a_code_that_verifies_it_once() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[]);
    let body = json!({"username": "eve", "password": PASSWORD, "email": " Eve@Example.COM "});
    let r = app.post_json("/api/register", &body).await;
    let pair = signed_up(&r, "sign-up with an address");
    let token = access(&pair);
    let mail = wait_for_mail(outbox.path(), "eve@example.com", "confirm your e-mail address", 1).await;
    assert!(mail.raw.contains("text/html") && mail.raw.contains("From: Acme <no-reply@service.test>"), "{}", mail.raw);
    let code = mail.code();
    assert_eq!(code.len(), 6, "six digits by default");
    let state = bearer(&app, "GET", "/api/email", &Value::Null, &token).await;
    assert_eq!(state.json(), json!({"email": "eve@example.com", "verified": false, "verification_sent": false}));
    // Malformed: refused before anything is counted.
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": "12ab"}), &token).await;
    assert_error(&r, 400, "invalid_request", "a malformed code");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": wrong}), &token).await;
    assert_error(&r, 400, "invalid_grant", "a wrong code");
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": code}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["verified"], true);
    // Replayed: used up.
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": code}), &token).await;
    assert_error(&r, 400, "invalid_grant", "a replayed code");
    // Without a token, or with a bad address.
    let r = app.post_json("/api/email", &json!({"email": "x@example.com"})).await;
    assert_eq!(r.status, 401);
    for bad in ["not-an-address", "a@b", "\"q\"@example.com", "x@example.com\r\nBcc: y@example.com"] {
        let r = bearer(&app, "POST", "/api/email", &json!({"email": bad}), &token).await;
        assert_error(&r, 400, "invalid_request", bad);
    }
    let r = app.post_json("/api/register", &json!({"username": "eve2", "password": PASSWORD, "email": "nope"})).await;
    assert_error(&r, 400, "invalid_request", "sign-up with a bad address creates no account");
    assert_eq!(app.try_login("eve2", PASSWORD).await.status, 400);
}

#[tokio::test]
async fn wrong_tries_void_a_code_and_a_new_code_replaces_the_old() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[(names::EMAIL_CODE_ATTEMPTS, "3"), (names::EMAIL_CODE_LENGTH, "8")]);
    app.add_user("fay", PASSWORD, &[]);
    let token = access(&app.login("fay", PASSWORD).await);
    let r = bearer(&app, "POST", "/api/email", &json!({"email": "fay@example.com"}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["verification_sent"], true);
    let first = wait_for_mail(outbox.path(), "fay@example.com", "confirm", 1).await.code();
    assert_eq!(first.len(), 8);
    let wrong = if first == "00000000" { "11111111" } else { "00000000" };
    for _ in 0..3 {
        let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": wrong}), &token).await;
        assert_error(&r, 400, "invalid_grant", "wrong");
    }
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": first}), &token).await;
    assert_error(&r, 400, "invalid_grant", "the right code after the last allowed wrong try");
    // Asking again sends a new code; the old one stays void.
    bearer(&app, "POST", "/api/email", &json!({"email": "fay@example.com"}), &token).await;
    let second = wait_for_mail(outbox.path(), "fay@example.com", "confirm", 2).await.code();
    if second != first {
        let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": first}), &token).await;
        assert_error(&r, 400, "invalid_grant", "the replaced code");
    }
    // Spaces and dashes as people type them.
    let typed = format!("{}-{} ", &second[..4], &second[4..]);
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": typed}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn expired_codes_are_refused_and_sends_are_budgeted() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[(names::EMAIL_CODE_LIFETIME, "1000"), (names::EMAIL_CODES_PER_HOUR, "2")]);
    app.add_user("gil", PASSWORD, &[]);
    let token = access(&app.login("gil", PASSWORD).await);
    bearer(&app, "POST", "/api/email", &json!({"email": "gil@example.com"}), &token).await;
    let code = wait_for_mail(outbox.path(), "gil@example.com", "confirm", 1).await.code();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": code}), &token).await;
    assert_error(&r, 400, "invalid_grant", "an expired code");
    let r = bearer(&app, "POST", "/api/email", &json!({"email": "gil@example.com"}), &token).await;
    assert_eq!(r.status, 200);
    let r = bearer(&app, "POST", "/api/email", &json!({"email": "gil@example.com"}), &token).await;
    assert_error(&r, 429, "temporarily_unavailable", "the third code within the hour");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn a_verified_address_belongs_to_one_account() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[]);
    let root = admin(&app).await;
    app.add_user("hal", PASSWORD, &[]);
    app.add_user("ida", PASSWORD, &[]);
    verified(&app, &root, "hal", "shared@example.com").await;
    let body = json!({"email": "SHARED@example.com", "email_verified": true});
    let r = app.raw("PATCH", "/api/users/ida", Some("application/json"), body.to_string(), Some(&root)).await;
    assert_error(&r, 409, "conflict", "an admin cannot give a verified address to a second account");
    // Ida may ask for it, but proving it does not take it from Hal.
    let token = access(&app.login("ida", PASSWORD).await);
    bearer(&app, "POST", "/api/email", &json!({"email": "shared@example.com"}), &token).await;
    let code = wait_for_mail(outbox.path(), "shared@example.com", "confirm", 1).await.code();
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": code}), &token).await;
    assert_error(&r, 409, "conflict", "the address is Hal's");
    // Once Hal moves to another address, the old one is free.
    let hal = access(&app.login("hal", PASSWORD).await);
    bearer(&app, "POST", "/api/email", &json!({"email": "hal@example.com"}), &hal).await;
    let notice = wait_for_mail(outbox.path(), "shared@example.com", "address was changed", 1).await;
    assert!(notice.raw.contains("Hello hal"), "{}", notice.raw);
    bearer(&app, "POST", "/api/email", &json!({"email": "shared@example.com"}), &token).await;
    let code = wait_for_mail(outbox.path(), "shared@example.com", "confirm", 2).await.code();
    let r = bearer(&app, "POST", "/api/email/verify", &json!({"code": code}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The median of `samples`.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn forgot_answers_alike_for_every_account_in_body_and_time() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(
        outbox.path(),
        &[(names::EMAIL_CODES_PER_HOUR, "100"), (names::EMAIL_MAILS_PER_ADDRESS_PER_HOUR, "1000")],
    );
    let root = admin(&app).await;
    app.add_user("jon", PASSWORD, &[]);
    verified(&app, &root, "jon", "jon@example.com").await;
    app.add_user("kim", PASSWORD, &[]);
    let asks = [
        json!({"username": "jon"}),
        json!({"email": "jon@example.com"}),
        json!({"username": "kim"}),
        json!({"username": "nobody-at-all"}),
        json!({"email": "nobody@example.com"}),
    ];
    let first = app.post_json("/api/password/forgot", &asks[0]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    for ask in &asks {
        let r = app.post_json("/api/password/forgot", ask).await;
        assert_eq!((r.status, r.body.clone()), (first.status, first.body.clone()), "{ask}");
        assert_eq!(r.header("content-type"), first.header("content-type"));
    }
    wait_for_mail(outbox.path(), "jon@example.com", "password reset code", 2).await;
    // Timing: 200 tries of a known account and of an unknown one, interleaved.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..400 {
        let ask = if i % 2 == 0 { &asks[0] } else { &asks[3] };
        let started = Instant::now();
        let r = app.post_json("/api/password/forgot", ask).await;
        let took = started.elapsed();
        assert_eq!(r.status, 202);
        if i % 2 == 0 { known.push(took) } else { unknown.push(took) }
    }
    let (k, u) = (median(&mut known), median(&mut unknown));
    let spread = known[known.len() * 3 / 4].saturating_sub(known[known.len() / 4]).max(Duration::from_millis(1));
    let gap = k.abs_diff(u);
    assert!(gap <= spread, "median {k:?} for a known account, {u:?} for an unknown one (spread {spread:?})");
    // Bad requests are told so, whoever they name.
    assert_error(&app.post_json("/api/password/forgot", &json!({})).await, 400, "invalid_request", "nobody named");
    let both = json!({"username": "jon", "email": "jon@example.com"});
    assert_error(&app.post_json("/api/password/forgot", &both).await, 400, "invalid_request", "both");
}

#[tokio::test]
async fn a_reset_sets_the_password_once_and_ends_every_session() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[]);
    let root = admin(&app).await;
    app.add_user("lea", PASSWORD, &[]);
    verified(&app, &root, "lea", "lea@example.com").await;
    let sessions = [app.login("lea", PASSWORD).await, app.login("lea", PASSWORD).await];
    let r = app.post_json("/api/password/forgot", &json!({"email": "LEA@example.com"})).await;
    assert_eq!(r.status, 202);
    let mail = wait_for_mail(outbox.path(), "lea@example.com", "password reset code", 1).await;
    let code = mail.code();
    assert!(mail.decoded().contains(&format!("https://app.test/reset#code={code}")), "{}", mail.raw);
    let new_password = "plum umbrella cactus 1987";
    // Without the code, nothing tells this account from one that does not exist.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for who in [json!("lea"), json!("nobody-at-all")] {
        let guess = json!({"username": who, "code": wrong, "password": "password"});
        assert_error(
            &app.post_json("/api/password/reset", &guess).await,
            400,
            "invalid_grant",
            "no code, weak password",
        );
    }
    let weak = json!({"username": "lea", "code": code, "password": "password"});
    assert_error(&app.post_json("/api/password/reset", &weak).await, 400, "invalid_request", "the password policy");
    let wrong_user = json!({"username": "kim", "code": code, "password": new_password});
    assert_error(&app.post_json("/api/password/reset", &wrong_user).await, 400, "invalid_grant", "another account");
    let reset = json!({"email": "lea@example.com", "code": code, "password": new_password});
    let r = app.post_json("/api/password/reset", &reset).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sessions_ended"], 2);
    for pair in &sessions {
        assert_eq!(app.refresh(pair["refresh_token"].as_str().unwrap()).await.status, 400, "every session ended");
    }
    assert_eq!(app.try_login("lea", PASSWORD).await.status, 400, "the old password is gone");
    app.login("lea", new_password).await;
    let again = json!({"username": "lea", "code": code, "password": "another fine password 42"});
    assert_error(&app.post_json("/api/password/reset", &again).await, 400, "invalid_grant", "the code works once");
    wait_for_mail(outbox.path(), "lea@example.com", "password was changed", 1).await;
}

/// An authenticator app's code for base32 `secret` now.
fn totp_now(secret: &str) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).unwrap().as_bytes().to_vec();
    let totp = totp_rs::Builder::new().with_secret(bytes).with_account_name("x").build().unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    totp.generate(now).to_string()
}

#[tokio::test]
async fn a_reset_of_an_account_with_a_second_factor_needs_it_and_notices_tell_the_owner() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[]);
    let root = admin(&app).await;
    app.add_user("max", PASSWORD, &[]);
    verified(&app, &root, "max", "max@example.com").await;
    // A first login: no device token yet, so a new device.
    let pair = app.login("max", PASSWORD).await;
    let notice = wait_for_mail(outbox.path(), "max@example.com", "new sign-in", 1).await;
    assert!(notice.raw.contains("When: "), "{}", notice.raw);
    // The same device again (its token): no new notice.
    let device = pair["device_token"].as_str().unwrap();
    let r =
        app.post_json("/api/token", &json!({"username": "max", "password": PASSWORD, "device_token": device})).await;
    let token = access(&assert_token_pair(&r, "login from the known device"));
    // Enrol an authenticator: a notice.
    let enrolment = bearer(&app, "POST", "/api/mfa/totp", &Value::Null, &token).await.json();
    let secret = enrolment["secret"].as_str().unwrap().to_string();
    let r = bearer(&app, "POST", "/api/mfa/totp/verify", &json!({"code": totp_now(&secret)}), &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let recovery: Vec<String> = serde_json::from_value(r.json()["recovery_codes"].clone()).unwrap();
    wait_for_mail(outbox.path(), "max@example.com", "sign-in method was added", 1).await;
    assert_eq!(count_mails(outbox.path(), "max@example.com", "new sign-in", Duration::from_millis(300)).await, 1);
    // The reset: without the factor, the code is checked, kept, and the factor asked for.
    app.post_json("/api/password/forgot", &json!({"username": "max"})).await;
    let code = wait_for_mail(outbox.path(), "max@example.com", "password reset code", 1).await.code();
    let new_password = "plum umbrella cactus 1987";
    let bare = json!({"username": "max", "code": code, "password": new_password});
    let r = app.post_json("/api/password/reset", &bare).await;
    assert_error(&r, 400, "invalid_request", "a second factor is needed");
    assert!(r.text().contains("recovery_code"), "{}", r.text());
    let with_recovery =
        json!({"username": "max", "code": code, "password": new_password, "recovery_code": recovery[0]});
    let r = app.post_json("/api/password/reset", &with_recovery).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.try_login("max", new_password).await;
    assert_eq!((r.status, r.json()["error"].clone()), (401, json!("mfa_required")), "the factor still stands");
    wait_for_mail(outbox.path(), "max@example.com", "password was changed", 1).await;
    // An admin disables the account: a notice.
    let body = json!({"disabled": true});
    let r = app.raw("PATCH", "/api/users/max", Some("application/json"), body.to_string(), Some(&root)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_mail(outbox.path(), "max@example.com", "account was disabled", 1).await;
}

#[tokio::test]
async fn each_notice_has_its_own_switch() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(
        outbox.path(),
        &[(names::EMAIL_NOTIFY_NEW_DEVICE, "false"), (names::EMAIL_NOTIFY_PASSWORD_CHANGED, "true")],
    );
    let root = admin(&app).await;
    app.add_user("ned", PASSWORD, &[]);
    verified(&app, &root, "ned", "ned@example.com").await;
    let pair = app.login("ned", PASSWORD).await;
    let body = json!({"current_password": PASSWORD, "new_password": "plum umbrella cactus 1987"});
    let r = bearer(&app, "POST", "/api/password", &body, &access(&pair)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_mail(outbox.path(), "ned@example.com", "password was changed", 1).await;
    assert_eq!(count_mails(outbox.path(), "ned@example.com", "new sign-in", Duration::from_millis(300)).await, 0);
}

#[tokio::test]
async fn a_full_or_failing_queue_never_changes_the_answer() {
    // A relay that accepts connections and never says a word: every delivery hangs.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = relay.local_addr().unwrap().port().to_string();
    let held = std::thread::spawn(move || relay.incoming().take(64).filter_map(Result::ok).collect::<Vec<_>>());
    let app = TestApp::spawn(&[
        (names::REGISTRATION_MODE, "open"),
        (names::REGISTRATION_MAX_PER_ADDRESS, "1000"),
        (names::EMAIL_TRANSPORT, "smtp"),
        (names::EMAIL_FROM, "no-reply@service.test"),
        (names::EMAIL_SMTP_HOST, "127.0.0.1"),
        (names::EMAIL_SMTP_PORT, &port),
        (names::EMAIL_SMTP_SECURITY, "none"),
        (names::EMAIL_SEND_TIMEOUT, "60000"),
        (names::EMAIL_QUEUE_CAPACITY, "1"),
    ]);
    let mut answers = Vec::new();
    for i in 0..8 {
        let body = json!({"username": format!("q{i}"), "password": PASSWORD, "email": format!("q{i}@example.com")});
        let started = Instant::now();
        let r = app.post_json("/api/register", &body).await;
        answers.push(started.elapsed());
        signed_up(&r, "sign-up while the queue is full");
        let r = app.post_json("/api/password/forgot", &json!({"username": format!("q{i}")})).await;
        assert_eq!(r.status, 202);
    }
    let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains("e-mail queue full"))).await;
    assert!(logs.iter().any(|l| l.contains("mail dropped")), "a dropped mail is logged");
    assert!(answers.iter().all(|t| *t < Duration::from_secs(5)), "no answer waited for the relay: {answers:?}");
    drop(app);
    drop(held);
    // A relay that refuses: every try fails, the answers do not change.
    let outbox = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&[
        (names::REGISTRATION_MODE, "open"),
        (names::EMAIL_TRANSPORT, "smtp"),
        (names::EMAIL_FROM, "no-reply@service.test"),
        (names::EMAIL_SMTP_HOST, "127.0.0.1"),
        (names::EMAIL_SMTP_PORT, "1"),
        (names::EMAIL_SMTP_SECURITY, "none"),
        (names::EMAIL_MAX_ATTEMPTS, "2"),
        (names::EMAIL_RETRY_BASE, "10"),
        (names::EMAIL_OUTBOX_PATH, outbox.path().to_str().unwrap()),
    ]);
    let body = json!({"username": "rex", "password": PASSWORD, "email": "rex@example.com"});
    let pair = signed_up(&app.post_json("/api/register", &body).await, "sign-up with a failing relay");
    let r = bearer(&app, "GET", "/api/email", &Value::Null, &access(&pair)).await;
    assert_eq!(r.json()["email"], "rex@example.com");
    let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains("every try failed"))).await;
    assert!(!logs.iter().any(|l| l.contains("rex@example.com")), "logs never name the address");
}

#[tokio::test]
async fn the_acs_transport_sends_with_the_managed_identity_retries_and_follows_the_operation() {
    // Throttled, then unavailable, then accepted; the operation runs for two polls.
    let acs = AcsEndpoint::start(&[(429, 1), (503, 1)], 2).await;
    let app = TestApp::spawn(&[
        (names::REGISTRATION_MODE, "open"),
        (names::EMAIL_TRANSPORT, "acs"),
        (names::EMAIL_FROM, "DoNotReply@test.azurecomm.net"),
        (names::EMAIL_ACS_ENDPOINT, &acs.endpoint()),
        (names::EMAIL_ALLOW_HTTP_LOOPBACK, "true"),
        (names::EMAIL_RETRY_BASE, "100"),
        (names::IDENTITY_ENDPOINT, &acs.identity_endpoint()),
        (names::IDENTITY_HEADER, acs_endpoint::IDENTITY_HEADER),
    ]);
    let body = json!({"username": "sam", "password": PASSWORD, "email": "sam@example.com"});
    signed_up(&app.post_json("/api/register", &body).await, "sign-up through ACS");
    // The 202 comes a second after the 429 and another after the 503: the answer came first.
    assert!(acs.seen().iter().all(|s| s.status != 202), "the answer does not wait for ACS: {:?}", acs.seen());
    let deadline = Instant::now() + Duration::from_secs(20);
    while acs.succeeded().is_empty() {
        assert!(Instant::now() < deadline, "the operation was not followed: {:?}", acs.seen());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acs.problems().is_empty(), "{:?}", acs.problems());
    let seen = acs.seen();
    let identity: Vec<_> = seen.iter().filter(|s| s.uri.starts_with("/msi/token")).collect();
    assert!(!identity.is_empty() && identity.iter().all(|s| s.status == 200), "{identity:?}");
    let sends: Vec<_> = seen.iter().filter(|s| s.uri.starts_with("/emails:send")).collect();
    assert_eq!(sends.iter().map(|s| s.status).collect::<Vec<_>>(), [429, 503, 202], "{sends:?}");
    assert!(sends.iter().all(|s| s.authorization.as_deref() == Some(&format!("Bearer {}", acs_endpoint::TOKEN))));
    let operation = sends[0].operation_id.clone().expect("Operation-Id");
    assert!(sends.iter().all(|s| s.operation_id.as_ref() == Some(&operation)), "one operation id for every try");
    let message = &sends[2].body;
    assert_eq!(message["senderAddress"], "DoNotReply@test.azurecomm.net");
    assert_eq!(message["recipients"]["to"][0]["address"], "sam@example.com");
    let text = message["content"]["plainText"].as_str().unwrap();
    assert!(text.lines().any(|l| l.starts_with("Code: ")), "{text}");
    let polls = seen.iter().filter(|s| s.uri.starts_with(&format!("/emails/operations/{operation}"))).count();
    assert_eq!(polls, 3, "two Running polls, then Succeeded");
    let logs = app.wait_for_logs(|lines| lines.iter().any(|l| l.contains("mail sent"))).await;
    assert!(!logs.iter().any(|l| l.contains(acs_endpoint::TOKEN)), "the token is never logged");
}

#[tokio::test]
async fn dev_mode_writes_mail_to_the_outbox_of_its_store_and_says_where() {
    if crate::helpers::backend() == crate::helpers::Backend::Cosmos {
        // `--dev` keeps the outbox beside the embedded store; the Cosmos runs set it explicitly.
        return;
    }
    let config = crate::helpers::Config::new()
        .arg("--dev")
        .without(crate::helpers::ISSUER_SETTING)
        .without(crate::helpers::AUDIENCE_SETTING)
        .without(crate::helpers::KEY_SETTING);
    let app = TestApp::start(config);
    let outbox = app.store_dir().join("outbox");
    let wanted = format!("e-mail is written to {}", outbox.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.stderr().iter().any(|l| l.contains(&wanted)) {
        assert!(Instant::now() < deadline, "{wanted:?} not in {:?}", app.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({"username": "dev-user", "password": PASSWORD, "email": "dev@example.com"});
    signed_up(&app.post_json("/api/register", &body).await, "sign-up in dev mode");
    let mail = wait_for_mail(&outbox, "dev@example.com", "confirm your e-mail address", 1).await;
    assert_eq!(mail.code().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_verifying_one_address_for_two_accounts_give_it_to_one() {
    let outbox = tempfile::tempdir().unwrap();
    let one = app_with(outbox.path(), &[]);
    let two = one.second_instance();
    one.add_user("una", PASSWORD, &[]);
    one.add_user("ugo", PASSWORD, &[]);
    let una = access(&one.login("una", PASSWORD).await);
    let ugo = access(&two.login("ugo", PASSWORD).await);
    bearer(&one, "POST", "/api/email", &json!({"email": "both@example.com"}), &una).await;
    bearer(&two, "POST", "/api/email", &json!({"email": "both@example.com"}), &ugo).await;
    wait_for_mail(outbox.path(), "both@example.com", "confirm", 2).await;
    let code_for = |name: &str| {
        let greeting = format!("Hello {name},");
        mails(outbox.path()).into_iter().find(|m| m.raw.contains(&greeting)).unwrap().code()
    };
    let (for_una, for_ugo) = (json!({"code": code_for("una")}), json!({"code": code_for("ugo")}));
    let (a, b) = tokio::join!(
        bearer(&one, "POST", "/api/email/verify", &for_una, &una),
        bearer(&two, "POST", "/api/email/verify", &for_ugo, &ugo),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "exactly one account gets the address: {} / {}", a.text(), b.text());
    let winner = if a.status == 200 { (&one, &una) } else { (&two, &ugo) };
    let state = bearer(winner.0, "GET", "/api/email", &Value::Null, winner.1).await.json();
    assert_eq!(state["verified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_recovery_requests_stays_bounded_and_other_routes_answer() {
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(outbox.path(), &[]);
    let root = admin(&app).await;
    app.add_user("vic", PASSWORD, &[]);
    verified(&app, &root, "vic", "vic@example.com").await;
    // The same two requests at rest, for comparison.
    let started = Instant::now();
    assert_token_pair(&app.try_login("vic", PASSWORD).await, "a login at rest");
    let idle_login_ms = started.elapsed().as_millis();
    let started = Instant::now();
    assert_eq!(app.raw("GET", "/api/jwks", None, Vec::new(), None).await.status, 200);
    let idle_jwks_ms = started.elapsed().as_millis();
    let base_kib = app.memory_kib("VmRSS");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (client, url) = (reqwest::Client::new(), app.url("/api/password/forgot"));
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for j in 0..50 {
                let body = if (i + j) % 4 == 0 {
                    json!({"username": "vic"})
                } else {
                    json!({"email": format!("x{i}-{j}@example.com")})
                };
                let r = client.post(&url).json(&body).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    // While it runs, an unrelated route answers (its latency is reported, not asserted).
    let started = Instant::now();
    let login = app.try_login("vic", PASSWORD).await;
    let login_ms = started.elapsed().as_millis();
    assert_token_pair(&login, "a login during the flood");
    let started = Instant::now();
    assert_eq!(app.raw("GET", "/api/jwks", None, Vec::new(), None).await.status, 200);
    let jwks_ms = started.elapsed().as_millis();
    let mut answered = 0;
    while let Some(statuses) = clients.join_next().await {
        for status in statuses.unwrap() {
            assert_eq!(status, 202);
            answered += 1;
        }
    }
    let peak_kib = app.memory_kib("VmHWM");
    eprintln!(
        "recovery flood: {answered} answers from 64 clients, base {base_kib} KiB, peak {peak_kib} KiB, \
         a login {login_ms} ms (at rest {idle_login_ms} ms) and GET /api/jwks {jwks_ms} ms (at rest \
         {idle_jwks_ms} ms) during it"
    );
    assert!(peak_kib <= base_kib + 64 * 1024, "peak {peak_kib} KiB over base {base_kib} KiB + 64 MiB");
    // The per-account budget held: at most `CodesPerHour` (5) reset codes went to the address.
    let sent = count_mails(outbox.path(), "vic@example.com", "password reset code", Duration::from_secs(1)).await;
    assert!((1..=5).contains(&sent), "{sent} reset codes");
}

#[tokio::test]
async fn without_a_transport_e_mail_is_refused_plainly() {
    let app = TestApp::spawn(&[(names::REGISTRATION_MODE, "open")]);
    let body = json!({"username": "wes", "password": PASSWORD, "email": "wes@example.com"});
    assert_error(&app.post_json("/api/register", &body).await, 400, "invalid_request", "sign-up with an address");
    let pair =
        signed_up(&app.post_json("/api/register", &json!({"username": "wes", "password": PASSWORD})).await, "sign-up");
    let r = bearer(&app, "POST", "/api/email", &json!({"email": "wes@example.com"}), &access(&pair)).await;
    assert_error(&r, 404, "not_found", "setting an address");
    assert_error(&app.post_json("/api/password/forgot", &json!({"username": "wes"})).await, 404, "not_found", "forgot");
}

#[tokio::test]
async fn adding_and_removing_factors_and_passkeys_and_an_admin_reset_each_send_a_notice() {
    use crate::soft_authenticator::SoftAuthenticator;
    const ORIGIN: &str = "https://app.example.test";
    let outbox = tempfile::tempdir().unwrap();
    let app = app_with(
        outbox.path(),
        &[("JwtRefreshToken__Passkeys__RpId", "example.test"), ("JwtRefreshToken__Passkeys__Origins", ORIGIN)],
    );
    let root = admin(&app).await;
    app.add_user("zoe", PASSWORD, &[]);
    verified(&app, &root, "zoe", "zoe@example.com").await;
    let token = access(&app.login("zoe", PASSWORD).await);
    // A passkey: added, then removed.
    let mut key = SoftAuthenticator::new(true, false);
    let start = bearer(&app, "POST", "/api/passkeys/register/start", &json!({}), &token).await.json();
    let credential = key.register(&start["options"], ORIGIN);
    let body = json!({"ceremony": start["ceremony"], "credential": credential, "name": "laptop"});
    let r = bearer(&app, "POST", "/api/passkeys/register/finish", &body, &token).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["passkey"]["id"].as_str().unwrap().to_string();
    let added = wait_for_mail(outbox.path(), "zoe@example.com", "sign-in method was added", 1).await;
    assert!(added.decoded().contains("The passkey \"laptop\""), "{}", added.raw);
    let r = bearer(&app, "DELETE", &format!("/api/passkeys/{id}"), &Value::Null, &token).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let removed = wait_for_mail(outbox.path(), "zoe@example.com", "sign-in method was removed", 1).await;
    assert!(removed.decoded().contains("The passkey \"laptop\""), "{}", removed.raw);
    // An authenticator app: added, then removed with a recovery code.
    let enrolment = bearer(&app, "POST", "/api/mfa/totp", &Value::Null, &token).await.json();
    let r = bearer(
        &app,
        "POST",
        "/api/mfa/totp/verify",
        &json!({"code": totp_now(enrolment["secret"].as_str().unwrap())}),
        &token,
    )
    .await;
    let recovery = r.json()["recovery_codes"][0].as_str().unwrap().to_string();
    wait_for_mail(outbox.path(), "zoe@example.com", "sign-in method was added", 2).await;
    let r = bearer(&app, "DELETE", "/api/mfa/totp", &json!({"code": recovery}), &token).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let removed = wait_for_mail(outbox.path(), "zoe@example.com", "sign-in method was removed", 2).await;
    assert!(removed.decoded().contains("The authenticator app"), "{}", removed.raw);
    // An admin's reset of the factors.
    let r = app
        .raw("PATCH", "/api/users/zoe", Some("application/json"), json!({"reset_mfa": true}).to_string(), Some(&root))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_mail(outbox.path(), "zoe@example.com", "second factors were removed", 1).await;
}
