//! Hostile traffic: login floods, maximal bodies, tokens of ended sessions, lockout aimed at an
//! owner, parallel guesses, weak keys, and connections that stall. Each test watches what matters
//! besides the answer (memory, the session afterwards, other clients).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
const WORKERS: &str = "JwtRefreshToken__Login__HashWorkers";
const QUEUE: &str = "JwtRefreshToken__Login__HashQueueLength";
const QUEUE_TIMEOUT: &str = "JwtRefreshToken__Login__HashQueueTimeoutMs";
const ARGON2_MIB: u64 = 19;

fn from(address: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Forwarded-For".to_string(), address.to_string()),
    ]
}

async fn login_from(app: &TestApp, address: &str, username: &str, password: &str) -> Reply {
    let body = json!({ "username": username, "password": password }).to_string().into_bytes();
    app.request("POST", "/api/token", &from(address), body).await
}

async fn post(client: reqwest::Client, url: String, body: Value) -> (u16, Option<String>, Duration) {
    let started = Instant::now();
    let resp = client.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
    let _ = resp.bytes().await;
    (status, retry_after, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_keeps_resident_memory_within_the_worker_bound() {
    let app = TestApp::spawn(&[(WORKERS, "2"), (QUEUE, "64")]);
    app.add_user("alice", PASSWORD, &[]);
    let base_kib = app.memory_kib("VmRSS");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = JoinSet::new();
    for i in 0..64 {
        let (client, url) = (app.client.clone(), app.url("/api/token"));
        let password = if i % 2 == 0 { PASSWORD.to_string() } else { format!("wrong-{i}") };
        clients.spawn(async move {
            let mut statuses = Vec::new();
            while Instant::now() < deadline {
                let body = json!({ "username": format!("user{}", i % 8), "password": password });
                statuses.push(post(client.clone(), url.clone(), body).await.0);
            }
            statuses
        });
    }
    let mut answered = 0;
    while let Some(statuses) = clients.join_next().await {
        for s in statuses.expect("client") {
            assert!([400, 429, 503].contains(&s), "unexpected status {s}");
            answered += 1;
        }
    }
    let peak_kib = app.memory_kib("VmHWM");
    let bound_kib = base_kib + 2 * ARGON2_MIB * 1024 + 32 * 1024;
    eprintln!("flood: {answered} answers, base {base_kib} KiB, peak {peak_kib} KiB, bound {bound_kib} KiB");
    assert!(answered > 64, "the flood ran ({answered} answers)");
    assert!(peak_kib <= bound_kib, "peak {peak_kib} KiB exceeds base {base_kib} KiB + 2 × 19 MiB + 32 MiB");
    assert_token_pair(&app.try_login("alice", PASSWORD).await, "a login after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_hashing_queue_answers_503_with_retry_after_at_once() {
    let app = TestApp::spawn(&[(WORKERS, "1"), (QUEUE, "1"), (QUEUE_TIMEOUT, "60000")]);
    let mut clients = JoinSet::new();
    for i in 0..24 {
        let body = json!({ "username": format!("u{i}"), "password": "wrong-password" });
        clients.spawn(post(app.client.clone(), app.url("/api/token"), body));
    }
    let mut refused = 0;
    while let Some(r) = clients.join_next().await {
        let (status, retry_after, took) = r.expect("client");
        if status == 503 {
            refused += 1;
            assert_eq!(retry_after.as_deref(), Some("1"), "503 carries Retry-After");
            assert!(took < Duration::from_secs(5), "a refusal waits for nothing ({took:?})");
        } else {
            assert_eq!(status, 400, "the others are evaluated");
        }
    }
    assert!(refused >= 10, "only {refused} of 24 refused with one worker and a queue of one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn correct_logins_succeed_while_other_clients_send_maximal_forms() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let form: String = (0..4_000).map(|i| format!("p{i}=")).collect::<Vec<_>>().join("&");
    let form = form[..form.len().min(16 * 1024 - 1)].to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut attackers = JoinSet::new();
    for _ in 0..32 {
        let (client, url, form) = (app.client.clone(), app.url("/api/token"), form.clone());
        attackers.spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form.clone())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status().as_u16(), 400, "a form with thousands of names is refused");
                n += 1;
            }
            n
        });
    }
    for i in 0..5 {
        assert_token_pair(&app.try_login("alice", PASSWORD).await, &format!("login {i} during the attack"));
    }
    let mut sent = 0;
    while let Some(n) = attackers.join_next().await {
        sent += n.expect("attacker");
    }
    assert!(sent > 32, "the attack ran ({sent} forms)");
}

#[tokio::test]
async fn bodies_are_strict_about_repeats_and_counts() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let dup = format!(r#"{{"username":"mallory","username":"alice","password":"{PASSWORD}"}}"#);
    let r = app.raw("POST", "/api/token", Some("application/json"), dup, None).await;
    assert_invalid_request(&r, "a repeated JSON key");
    assert!(r.json()["error_description"].as_str().unwrap().contains("repeated"), "{}", r.text());
    let many: Value = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>().into();
    assert_invalid_request(&app.post_json("/api/token", &many).await, "65 JSON keys");
    let pairs: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let form = serde_urlencoded::to_string(&pairs).unwrap();
    let r = app.raw("POST", "/api/token", Some("application/x-www-form-urlencoded"), form, None).await;
    assert_invalid_request(&r, "65 form parameters");
}

async fn scope_revoke(app: &TestApp, bearer: &str, body: Value) -> Reply {
    app.post_json_bearer("/api/revoke", &body, bearer).await
}

#[tokio::test]
async fn a_disabled_admin_cannot_revoke_anything() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    // Another admin: the last enabled admin cannot be disabled.
    app.add_user("root2", PASSWORD, &["admin"]);
    app.add_user("bob", PASSWORD, &[]);
    let root = app.login("root", PASSWORD).await;
    let bob = app.login("bob", PASSWORD).await;
    app.disable_user("root");
    let r = scope_revoke(&app, &access_token(&root), json!({"scope": "global", "username": "bob"})).await;
    assert_error(&r, 401, "invalid_token", "a disabled admin's access token");
    app.refresh_ok(&refresh_token(&bob)).await;
}

#[tokio::test]
async fn an_ended_sessions_access_token_cannot_end_new_sessions() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let a = app.login("alice", PASSWORD).await;
    app.login("alice", PASSWORD).await;
    let r = scope_revoke(&app, &access_token(&a), json!({"scope": "global"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked_sessions"], 2);
    let fresh = app.login("alice", PASSWORD).await;
    let r = scope_revoke(&app, &access_token(&a), json!({"scope": "others"})).await;
    assert_error(&r, 401, "invalid_token", "the access token of a session ended by 'log out everywhere'");
    app.refresh_ok(&refresh_token(&fresh)).await;
}

#[tokio::test]
async fn a_token_for_a_user_who_does_not_exist_is_refused_even_with_the_admin_role() {
    let app = TestApp::spawn(&[]);
    app.add_user("bob", PASSWORD, &[]);
    let bob = app.login("bob", PASSWORD).await;
    let claims =
        with_claims(&jwt_claims(&access_token(&bob)), &json!({"sub": "nobody", "roles": ["admin"], "sid": "0000"}));
    let kid = jwt_header(&access_token(&bob))["kid"].as_str().unwrap().to_string();
    let forged = forge_hs256(&claims, &kid, KEY);
    let r = scope_revoke(&app, &forged, json!({"scope": "global", "username": "bob"})).await;
    assert_error(&r, 401, "invalid_token", "a validly signed token of nobody");
    app.refresh_ok(&refresh_token(&bob)).await;
}

#[tokio::test]
async fn the_owner_logs_in_from_another_address_while_the_attackers_is_locked() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "3")]);
    app.add_user("alice", PASSWORD, &[]);
    for _ in 0..3 {
        assert_invalid_grant(&login_from(&app, "203.0.113.5:51234", "alice", "guess").await, "attacker");
    }
    let r = login_from(&app, "203.0.113.5", "alice", PASSWORD).await;
    assert_error(&r, 429, "temporarily_unavailable", "the attacker's address is locked");
    assert_token_pair(&login_from(&app, "198.51.100.7:443", "alice", PASSWORD).await, "the owner elsewhere");
    assert_token_pair(&login_from(&app, "[2001:db8::7]:443", "alice", PASSWORD).await, "the owner on IPv6");
    let lines = app.wait_for_logs(|l| l.iter().any(|x| x.contains("login locked"))).await;
    let lock = lines.iter().find(|l| l.contains("login locked")).unwrap();
    // The username only as its keyed pseudonym (people type passwords there), with the user id.
    assert!(lock.contains("203.0.113.5") && lock.contains("\"username\":\"u-"), "{lock}");
    assert!(!lock.contains("alice"), "{lock}");
    assert!(!lock.contains("guess"), "no password in the log: {lock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_never_get_more_than_max_failures_evaluations() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "5")]);
    app.add_user("alice", PASSWORD, &[]);
    let mut guesses = JoinSet::new();
    for i in 0..40 {
        let body = json!({ "username": "alice", "password": format!("guess-{i}") });
        guesses.spawn(post(app.client.clone(), app.url("/api/token"), body));
    }
    let (mut evaluated, mut locked) = (0, 0);
    while let Some(r) = guesses.join_next().await {
        match r.expect("guess").0 {
            400 => evaluated += 1,
            429 => locked += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(evaluated, 5, "exactly MaxFailures guesses were checked ({locked} locked)");
    assert_eq!(locked, 35);
}

#[tokio::test]
async fn user_unlock_lets_the_owner_back_in() {
    let app = TestApp::spawn(&[(MAX_FAILURES, "2")]);
    app.add_user("alice", PASSWORD, &[]);
    for _ in 0..2 {
        assert_invalid_grant(&app.try_login("alice", "guess").await, "failure");
    }
    assert_error(&app.try_login("alice", PASSWORD).await, 429, "temporarily_unavailable", "locked");
    let out = app.run_cli(&["user", "unlock", "ALICE"], "");
    assert!(out.status.success(), "{out:?}");
    assert_token_pair(&app.try_login("alice", PASSWORD).await, "after unlock");
    let out = app.run_cli(&["user", "unlock", "nobody"], "");
    assert!(!out.status.success(), "unlocking an unknown user fails: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_zero_grace_sixteen_parallel_refreshes_share_one_successor_and_keep_the_session() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Rotation__ReuseGraceMs", "0")]);
    app.add_user("alice", PASSWORD, &[]);
    for round in 0..5 {
        let token = refresh_token(&app.login("alice", PASSWORD).await);
        // Sixteen clients with their connections open, released at once.
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = JoinSet::new();
        for _ in 0..16 {
            let client = reqwest::Client::builder().no_proxy().build().expect("client");
            let (url, token, barrier) = (app.url("/api/refresh"), token.clone(), barrier.clone());
            let ready = app.url("/");
            tasks.spawn(async move {
                client.get(ready).send().await.expect("warm-up").bytes().await.expect("body");
                barrier.wait().await;
                let resp = client.post(url).json(&json!({"refresh_token": token})).send().await.expect("request");
                (resp.status().as_u16(), resp.json::<Value>().await.expect("json"))
            });
        }
        let mut successors = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (status, body) = r.expect("task");
            assert_eq!(status, 200, "round {round}: {body}");
            successors.push(refresh_token(&body));
        }
        assert!(successors.iter().all(|s| *s == successors[0]), "round {round}: one successor");
        app.refresh_ok(&successors[0]).await;
    }
}

#[tokio::test]
async fn the_store_directory_and_files_are_private() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.login("alice", PASSWORD).await;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = app.store_dir();
    if backend() == Backend::Embedded {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        }
    }
    let fresh = dir.join("nested").join("store");
    let config = Config::new().env("JwtRefreshToken__Embedded__Path", fresh.to_str().unwrap());
    if backend() == Backend::Embedded {
        let other = TestApp::start(config);
        assert_eq!(other.request("GET", "/", &[], vec![]).await.status, 200);
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(fresh.join("store.db")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    let bearer = access_token(&app.login("root", PASSWORD).await);
    let auth = [("authorization".to_string(), format!("Bearer {bearer}"))];
    for (path, headers) in
        [("/", &[][..]), ("/api/jwks", &[][..]), ("/api/sessions", &auth[..]), ("/api/users", &auth[..])]
    {
        let get = app.request("GET", path, headers, vec![]).await;
        let head = app.request("HEAD", path, headers, vec![]).await;
        assert_eq!(head.status, get.status, "HEAD {path} answers as GET does");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has no body");
        assert_eq!(head.header("content-type"), get.header("content-type"), "HEAD {path}");
        assert_eq!(head.header("cache-control"), get.header("cache-control"), "HEAD {path}");
    }
    let unauthenticated = app.request("HEAD", "/api/sessions", &[], vec![]).await;
    assert_eq!(unauthenticated.status, 401, "HEAD needs the same credentials as GET");
}

#[tokio::test]
async fn stalled_and_idle_connections_are_closed_and_a_vanished_client_is_no_error() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Http__HeaderReadTimeoutMs", "300"),
        ("JwtRefreshToken__Http__IdleTimeoutMs", "600"),
    ]);
    let addr = format!("127.0.0.1:{}", app.port);
    // Half a request line, then nothing: closed after the header-read timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "a stalled request is cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A keep-alive connection with nothing to do: closed after the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    assert!(tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await.is_ok(), "idle closed");
    // A client that goes away mid-body.
    let mut gone = tokio::net::TcpStream::connect(&addr).await.unwrap();
    gone.write_all(
        b"POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\"",
    )
    .await
    .unwrap();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.request("GET", "/", &[], vec![]).await.status, 200);
    let errors: Vec<String> = app.logs().into_iter().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert!(errors.is_empty(), "no ERROR lines: {errors:?}");
}

#[tokio::test]
async fn weak_keys_stop_start_up_naming_the_setting() {
    for (setting, value) in [
        (KEY_SETTING, "k".repeat(48)),
        (KEY_SETTING, "password".repeat(4)),
        ("JwtRefreshToken__Rotation__Secret", "correct-horse-battery-staple-0123456789".to_string()),
    ] {
        let out = run_to_exit(&Config::new().env(setting, &value));
        assert_eq!(out.status.code(), Some(2), "{setting}={value}: {out:?}");
        assert!(out.stderr.starts_with(&format!("error: setting {setting}: ")), "{}", out.stderr);
        assert!(out.stderr.contains("handler keys generate"), "{}", out.stderr);
        assert!(!out.stderr.contains(&value), "the value is not printed");
    }
}

#[tokio::test]
async fn keys_generate_output_starts_the_handler_for_each_algorithm() {
    for algorithm in ["HS256", "ES256", "EdDSA"] {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public.pem");
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["keys", "generate", "--algorithm", algorithm]);
        if algorithm != "HS256" {
            cmd.args(["--public-key-file", public.to_str().unwrap()]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{algorithm}: {out:?}");
        let key = String::from_utf8(out.stdout).unwrap();
        let key = key.trim_end_matches('\n');
        let app = TestApp::start(Config::new().env(ALGORITHM_SETTING, algorithm).env(KEY_SETTING, key));
        app.add_user("alice", PASSWORD, &[]);
        let pair = app.login("alice", PASSWORD).await;
        assert_eq!(jwt_header(&access_token(&pair))["alg"], algorithm);
        if algorithm != "HS256" {
            let pem = std::fs::read_to_string(&public).unwrap();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
            let jwks = app.request("GET", "/api/jwks", &[], vec![]).await.json();
            assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{algorithm}: {jwks}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_racing_user_disable_never_leaves_a_session_over_many_rounds() {
    let app = TestApp::spawn(&[]);
    for round in 0..6 {
        let name = format!("racer{round}");
        app.add_user(&name, PASSWORD, &[]);
        let mut logins = JoinSet::new();
        for i in 0..6 {
            let (client, url) = (app.client.clone(), app.url("/api/token"));
            let name = name.clone();
            logins.spawn(async move {
                let resp = client
                    .post(url)
                    .header("X-Forwarded-For", format!("192.0.2.{i}"))
                    .json(&json!({"username": name, "password": PASSWORD}))
                    .send()
                    .await
                    .expect("request");
                (resp.status().as_u16(), resp.json::<Value>().await.expect("json"))
            });
        }
        app.disable_user(&name);
        while let Some(r) = logins.join_next().await {
            let (status, body) = r.expect("login");
            if status == 200 {
                let again = app.refresh(&refresh_token(&body)).await;
                assert_invalid_grant(&again, &format!("round {round}: a session outlived the disable"));
            }
        }
    }
}

#[tokio::test]
async fn warnings_carry_the_request_span() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Rotation__ReuseGraceMs", "0")]);
    let id = app.add_user("alice", PASSWORD, &[]);
    let first = refresh_token(&app.login("alice", PASSWORD).await);
    app.refresh_ok(&first).await;
    // Past the grace (0) and the 100 ms allowance for requests sent together.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_invalid_grant(&app.refresh(&first).await, "a replay after the grace");
    let lines = app.wait_for_logs(|l| l.iter().any(|x| x.contains("reuse detected"))).await;
    let warning = lines.iter().find(|l| l.contains("reuse detected")).unwrap();
    let v: Value = serde_json::from_str(warning).unwrap();
    assert_eq!(v["span"]["user_id"], id.as_str(), "{warning}");
    assert_eq!(v["span"]["function"], "refresh", "{warning}");
    assert!(v["span"]["session_id"].is_string(), "{warning}");
}

#[tokio::test]
async fn a_dictionary_key_found_after_the_port_answers_serves_no_request() {
    // The guessing-pattern score runs after the port answers: until it passed, requests wait, and
    // when it fails they are answered 503 and the process stops naming the setting.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let key = "correct-horse-battery-staple-orange-0123456789";
    let config = Config::new().env(KEY_SETTING, key).env("FUNCTIONS_CUSTOMHANDLER_PORT", &port.to_string());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let body = "grant_type=password&username=alice&password=whatever-it-is";
            let request = format!(
                "POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let mut answer = String::new();
                if s.write_all(request.as_bytes()).is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && let Some(status) = answer.get(9..12)
                {
                    statuses.push(status.to_string());
                }
            }
            statuses
        })
    };
    let out = run_to_exit(&config);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = hammer.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.starts_with(&format!("error: setting {KEY_SETTING}: is too easy to guess")), "{}", out.stderr);
    assert!(!out.stderr.contains(key), "the value is not printed");
    assert!(!statuses.is_empty(), "a request reached the server while its key was being scored");
    assert!(statuses.iter().all(|s| s == "503"), "only 503 while the key was unchecked: {statuses:?}");
}

#[test]
fn the_scoring_child_answers_the_scores_the_server_expects() {
    // The server falls back to scoring in process when its child fails, so nothing else would
    // notice if the hidden subcommand stopped answering: call it as the server does.
    use std::io::Write as _;
    let mut child = std::process::Command::new(BIN)
        .args(jwt_refresh_token::startup::SCORE_SECRETS_ARGS)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let secrets = [KEY, "correct-horse-battery-staple-orange-0123456789"];
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&secrets).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let scores: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<f64> = secrets.iter().map(|s| jwt_refresh_token::settings::entropy::pattern_bits(s)).collect();
    assert_eq!(scores, expected);
    assert!(scores[0] >= 128.0 && scores[1] < 128.0, "{scores:?}");
    let garbage = std::process::Command::new(BIN)
        .args(jwt_refresh_token::startup::SCORE_SECRETS_ARGS)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!garbage.status.success(), "no input is an error, not a score");
}

#[tokio::test]
async fn headers_and_bodies_sent_a_byte_at_a_time_are_cut_at_their_own_deadlines() {
    use tokio::io::AsyncReadExt as _;
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Http__HeaderReadTimeoutMs", "1000"),
        ("JwtRefreshToken__Http__BodyReadTimeoutMs", "1000"),
        ("JwtRefreshToken__Http__IdleTimeoutMs", "20000"),
    ]);
    let addr = format!("127.0.0.1:{}", app.port);
    // Headers at 10 bytes/s: closed about a second after the first byte, long before the idle timeout.
    let mut slow_headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let headers = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (mut read, mut write) = slow_headers.split();
    let mut answer = Vec::new();
    let reading = read.read_to_end(&mut answer);
    let writing = async {
        use tokio::io::AsyncWriteExt as _;
        for b in headers {
            if write.write_all(std::slice::from_ref(b)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = reading => {}
        () = writing => panic!("all headers were sent at 10 bytes/s without the connection being cut"),
    }
    let cut_after = started.elapsed();
    assert!(cut_after < Duration::from_secs(4), "the header deadline counts from the first byte: {cut_after:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "no answer to the slow request");

    // A body at 10 bytes/s: 408, JSON, and the connection closed, about a second after the headers.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        slow_body
            .write_all(
                b"POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    let (mut read, mut write) = slow_body.split();
    let mut answer = Vec::new();
    let reading = read.read_to_end(&mut answer);
    let writing = async {
        use tokio::io::AsyncWriteExt as _;
        for _ in 0..200 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = reading => {}
        () = writing => panic!("a 200-byte body at 10 bytes/s was read to the end"),
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
    assert_eq!(app.request("GET", "/", &[], vec![]).await.status, 200, "the service is unaffected");
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_get_503() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn(&[
        ("JwtRefreshToken__Http__MaxConnections", "20"),
        ("JwtRefreshToken__Http__HeaderReadTimeoutMs", "30000"),
        ("JwtRefreshToken__Http__IdleTimeoutMs", "30000"),
    ]);
    let addr = format!("127.0.0.1:{}", app.port);
    let rss_before = app.memory_kib("VmRSS");
    // 200 idle connections: far over the cap, and a new GET / is still answered at once.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = app.request("GET", "/", &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once: {:?}", started.elapsed());
    let mut closed = 0;
    for s in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 180, "idle connections were closed to make room: {closed} of 200");
    drop(idle);
    // 20 connections in the middle of a request: none is idle, so the next one is refused.
    let mut busy = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        busy.push(s);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Retry-After: 1") && text.contains("temporarily_unavailable"), "{text}");
    drop(busy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.request("GET", "/", &[], vec![]).await.status, 200, "room again once they left");
    let rss_after = app.memory_kib("VmRSS");
    assert!(rss_after < rss_before + 20 * 1024, "resident memory stays bounded: {rss_before} → {rss_after} KiB");
}
