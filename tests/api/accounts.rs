//! Accounts and sessions over HTTP: sign-up (modes, policies, races), password change, "my
//! devices", admin user management, revoke-everyone. Run on both stores.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::*;

const OPEN: (&str, &str) = ("JwtRefreshToken__Registration__Mode", "open");
const STRONG: &str = "plum umbrella cactus 1987";

async fn register(app: &TestApp, username: &str, password: &str) -> Reply {
    app.post_json("/api/register", &json!({"username": username, "password": password})).await
}

async fn bearer(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let content = body.as_ref().map(|_| "application/json");
    app.raw(method, path, content, body.map(|b| b.to_string()).unwrap_or_default(), Some(token)).await
}

#[tokio::test]
async fn sign_up_is_closed_by_default_and_open_when_configured() {
    let closed = TestApp::spawn(&[]);
    assert_error(&register(&closed, "newbie", STRONG).await, 403, "access_denied", "registration closed");
    let app = TestApp::spawn(&[OPEN]);
    let r = register(&app, "newbie", STRONG).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pair = r.json();
    assert!(pair["access_token"].is_string() && pair["refresh_token"].is_string(), "{pair}");
    app.refresh_ok(&refresh_token(&pair)).await;
    assert_token_pair(&app.try_login("NEWBIE", STRONG).await, "the new account logs in");
    let taken = register(&app, "Newbie", STRONG).await;
    assert_invalid_request(&taken, "a taken username");
    assert!(taken.json()["error_description"].as_str().unwrap().contains("taken"), "{}", taken.text());
}

#[tokio::test]
async fn sign_up_refuses_weak_passwords_and_confusable_names_saying_what_to_change() {
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1000")]);
    for (username, password, expect) in [
        ("carol", "short", "at least 8 characters"),
        ("carol", "password123", "too easy to guess"),
        ("carol", "qwertyuiop", "too easy to guess"),
        ("carol", "carolcarol1", "too easy to guess"),
        ("\u{430}dmin", STRONG, "one script"),
        ("ad\u{200B}min", STRONG, "invisible"),
        ("", STRONG, "must not be empty"),
    ] {
        let r = register(&app, username, password).await;
        assert_invalid_request(&r, &format!("{username:?}/{password:?}"));
        let text = r.json()["error_description"].as_str().unwrap().to_string();
        assert!(text.contains(expect), "{username:?}/{password:?}: {text}");
    }
    let wrong_type = app.post_json("/api/register", &json!({"username": 5, "password": STRONG})).await;
    assert_invalid_request(&wrong_type, "a number for a username");
    assert_eq!(register(&app, "Ｃａｒｏｌ", STRONG).await.status, 201, "full-width is mapped");
    assert_invalid_request(&register(&app, "carol", STRONG).await, "the same name after width mapping");
}

#[tokio::test]
async fn sign_ups_are_throttled_per_client_address() {
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "2")]);
    let from = |addr: &str| {
        vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Forwarded-For".to_string(), addr.to_string()),
        ]
    };
    for (i, expect) in [201, 201, 429].into_iter().enumerate() {
        let body = json!({"username": format!("bulk{i}"), "password": STRONG}).to_string().into_bytes();
        let r = app.request("POST", "/api/register", &from("203.0.113.9"), body).await;
        assert_eq!(r.status, expect, "sign-up {i}: {}", r.text());
    }
    let body = json!({"username": "elsewhere", "password": STRONG}).to_string().into_bytes();
    assert_eq!(app.request("POST", "/api/register", &from("198.51.100.1"), body).await.status, 201);
}

#[tokio::test]
async fn sign_ups_from_many_addresses_stop_at_the_instance_wide_minute_budget() {
    let app = TestApp::spawn(&[
        OPEN,
        ("JwtRefreshToken__Registration__MaxPerAddress", "1000"),
        ("JwtRefreshToken__Registration__MaxPerMinute", "3"),
    ]);
    for i in 0..4 {
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Forwarded-For".to_string(), format!("198.51.100.{i}")),
        ];
        let body = json!({"username": format!("wave{i}"), "password": STRONG}).to_string().into_bytes();
        let r = app.request("POST", "/api/register", &headers, body).await;
        if i < 3 {
            assert_eq!(r.status, 201, "sign-up {i}: {}", r.text());
        } else {
            assert_error(&r, 429, "temporarily_unavailable", "a fourth address in the same minute");
            let wait: u64 = r.header("retry-after").unwrap_or_default().parse().unwrap_or_default();
            assert!((1..=60).contains(&wait), "Retry-After within the minute: {wait}");
        }
    }
}

#[tokio::test]
async fn look_alike_and_styled_usernames_are_refused_and_every_script_registers() {
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1000")]);
    for (name, expect) in [
        ("\u{1D41A}lice", "ordinary letters"),
        ("\u{24D0}lice", "ordinary letters"),
        ("\u{01C5}emal", "ordinary letters"),
        ("\u{3164}", "ordinary letters"),
        ("\u{430}\u{4CF}\u{456}\u{441}\u{435}", "another script"),
    ] {
        let r = register(&app, name, STRONG).await;
        assert_invalid_request(&r, &format!("{name:?}"));
        let text = r.json()["error_description"].as_str().unwrap_or_default().to_string();
        assert!(text.contains(expect), "{name:?}: {text}");
    }
    for name in ["müller", "张伟", "иван", "o'brien-2"] {
        assert_eq!(register(&app, name, STRONG).await.status, 201, "{name} registers");
    }
    // A name whose UTS #39 skeleton is a registered name looks the same: refused.
    assert_eq!(register(&app, "rn", STRONG).await.status, 201);
    let r = register(&app, "m", STRONG).await;
    assert_invalid_request(&r, "m looks like rn");
    assert!(r.text().contains("too similar"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_parallel_sign_ups_of_one_name_create_one_account() {
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1000")]);
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let (client, url) = (app.client.clone(), app.url("/api/register"));
        tasks.spawn(async move {
            let body = json!({"username": "racer", "password": format!("{STRONG} {i}")});
            client.post(url).json(&body).send().await.expect("request").status().as_u16()
        });
    }
    let mut created = 0;
    while let Some(s) = tasks.join_next().await {
        match s.expect("task") {
            201 => created += 1,
            400 | 503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 1, "one account");
    let out = app.run_cli(&["user", "list"], "");
    let listed = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("racer\t")).count();
    assert_eq!(listed, 1);
}

#[tokio::test]
async fn a_password_change_keeps_the_calling_session_and_ends_the_others() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let here = app.login("alice", PASSWORD).await;
    let phone = app.login("alice", PASSWORD).await;
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let r = bearer(&app, "POST", "/api/password", &access_token(&here), Some(change("wrong-password", STRONG))).await;
    assert_invalid_grant(&r, "a wrong current password");
    let r = bearer(&app, "POST", "/api/password", &access_token(&here), Some(change(PASSWORD, "password1"))).await;
    assert_invalid_request(&r, "a weak new password");
    app.refresh_ok(&refresh_token(&phone)).await;
    let r = bearer(&app, "POST", "/api/password", &access_token(&here), Some(change(PASSWORD, STRONG))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["other_sessions_ended"], 1);
    assert_invalid_grant(&app.refresh(&refresh_token(&phone)).await, "the other session ended");
    app.refresh_ok(&refresh_token(&here)).await;
    assert_invalid_grant(&app.try_login("alice", PASSWORD).await, "the old password");
    assert_token_pair(&app.try_login("alice", STRONG).await, "the new password");
    let r =
        app.raw("POST", "/api/password", Some("application/json"), change(STRONG, PASSWORD).to_string(), None).await;
    assert_error(&r, 401, "unauthorized", "no Bearer");
}

#[tokio::test]
async fn wrong_current_passwords_count_toward_lockout() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Login__MaxFailures", "2")]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let body = json!({"current_password": "nope-nope", "new_password": STRONG});
    for _ in 0..2 {
        assert_invalid_grant(
            &bearer(&app, "POST", "/api/password", &access_token(&pair), Some(body.clone())).await,
            "guess",
        );
    }
    assert_error(&app.try_login("alice", PASSWORD).await, 429, "temporarily_unavailable", "locked by the guesses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_racing_a_refresh_of_another_session_leaves_that_session_ended() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    for round in 0..4 {
        let password = if round % 2 == 0 { PASSWORD } else { STRONG };
        let next = if round % 2 == 0 { STRONG } else { PASSWORD };
        let here = app.login("alice", password).await;
        let other = refresh_token(&app.login("alice", password).await);
        let refresher = {
            let (client, url) = (app.client.clone(), app.url("/api/refresh"));
            tokio::spawn(async move {
                let mut token = other;
                for _ in 0..20 {
                    let resp = client.post(&url).json(&json!({"refresh_token": token})).send().await.expect("request");
                    if resp.status() != 200 {
                        return None;
                    }
                    token = resp.json::<Value>().await.expect("json")["refresh_token"].as_str().unwrap().to_string();
                }
                Some(token)
            })
        };
        let body = json!({"current_password": password, "new_password": next});
        let r = bearer(&app, "POST", "/api/password", &access_token(&here), Some(body)).await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        if let Some(survivor) = refresher.await.expect("refresher") {
            assert_invalid_grant(&app.refresh(&survivor).await, &format!("round {round}: the other session ended"));
        }
    }
}

#[tokio::test]
async fn my_sessions_lists_newest_first_and_ends_only_my_own() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let login_as = |ua: &'static str| {
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("User-Agent".to_string(), ua.to_string()),
            ("X-Forwarded-For".to_string(), "198.51.100.4:5555".to_string()),
        ];
        let body = json!({"username": "alice", "password": PASSWORD}).to_string().into_bytes();
        (headers, body)
    };
    let (h, b) = login_as("Phone/1.0");
    let phone = app.request("POST", "/api/token", &h, b).await.json();
    let long_agent: &'static str = Box::leak("L".repeat(1000).into_boxed_str());
    let (h, b) = login_as(long_agent);
    let laptop = app.request("POST", "/api/token", &h, b).await.json();
    let bobs = app.login("bob", PASSWORD).await;
    let list = bearer(&app, "GET", "/api/sessions", &access_token(&laptop), None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let sessions = list.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[0]["current"], true, "newest first, and it is the caller's");
    assert_eq!(sessions[1]["user_agent"], "Phone/1.0");
    assert_eq!(sessions[0]["user_agent"].as_str().unwrap().len(), 256, "truncated");
    assert_eq!(sessions[1]["client_address"], "198.51.100.4");
    for s in &sessions {
        for field in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(!s[field].is_null(), "{field} in {s}");
        }
        assert!(s["expires_at"].as_i64() > s["created_at"].as_i64());
    }
    let phone_id = sessions[1]["id"].as_str().unwrap().to_string();
    let bobs_id = jwt_claims(&access_token(&bobs))["sid"].as_str().unwrap().to_string();
    let r = bearer(&app, "DELETE", &format!("/api/sessions/{bobs_id}"), &access_token(&laptop), None).await;
    assert_error(&r, 404, "not_found", "another user's session");
    app.refresh_ok(&refresh_token(&bobs)).await;
    let r = bearer(&app, "DELETE", &format!("/api/sessions/{phone_id}"), &access_token(&laptop), None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_invalid_grant(&app.refresh(&refresh_token(&phone)).await, "the phone was signed out");
    let r = bearer(&app, "DELETE", "/api/sessions", &access_token(&laptop), None).await;
    assert_error(&r, 404, "not_found", "DELETE without an id");
    let r = app.raw("GET", "/api/sessions", None, "", None).await;
    assert_error(&r, 401, "unauthorized", "no Bearer");
}

#[tokio::test]
async fn admins_manage_users_and_non_admins_cannot() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("bob", PASSWORD, &[]);
    let root = access_token(&app.login("root", PASSWORD).await);
    let bob_pair = app.login("bob", PASSWORD).await;
    let bob = access_token(&bob_pair);
    let new_user = json!({"username": "dave", "password": STRONG, "roles": ["support"]});
    let r = bearer(&app, "POST", "/api/users", &bob, Some(new_user.clone())).await;
    assert_error(&r, 403, "insufficient_scope", "a non-admin creating a user");
    let r = bearer(&app, "POST", "/api/users", &root, Some(new_user.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["username"], "dave");
    assert_eq!(created["roles"], json!(["support"]));
    assert!(created["id"].is_string());
    assert_invalid_request(&bearer(&app, "POST", "/api/users", &root, Some(new_user)).await, "taken");
    let weak = json!({"username": "erin", "password": "12345678"});
    assert_invalid_request(&bearer(&app, "POST", "/api/users", &root, Some(weak)).await, "weak password");
    let bad_roles = json!({"username": "erin", "password": STRONG, "roles": "admin"});
    assert_invalid_request(&bearer(&app, "POST", "/api/users", &root, Some(bad_roles)).await, "roles not an array");
    // Listing, paged, without hashes.
    let r = bearer(&app, "GET", "/api/users?limit=2", &root, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert!(!r.text().contains("argon2"), "no hashes: {}", r.text());
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = bearer(&app, "GET", &format!("/api/users?limit=2&cursor={cursor}"), &root, None).await.json();
    let names: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["users"].as_array().unwrap())
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "dave", "root"]);
    assert!(rest["next_cursor"].is_null(), "the last page says null: {rest}");
    assert_error(
        &bearer(&app, "GET", "/api/users", &bob, None).await,
        403,
        "insufficient_scope",
        "a non-admin listing",
    );
    assert_invalid_request(&bearer(&app, "GET", "/api/users?limit=0", &root, None).await, "limit 0");
    // Changing: roles reach the next refresh; disabling ends sessions at once.
    let r = bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({"roles": ["editor"]}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["roles"], json!(["editor"]));
    let refreshed = app.refresh_ok(&refresh_token(&bob_pair)).await;
    assert_eq!(
        jwt_claims(&access_token(&refreshed))["roles"],
        json!(["editor"]),
        "the next refresh carries the new roles"
    );
    let r = bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({"disabled": true}))).await;
    assert_eq!(r.json()["disabled"], true);
    assert_invalid_grant(&app.refresh(&refresh_token(&refreshed)).await, "a disabled user's session ended");
    assert_invalid_grant(&app.try_login("bob", PASSWORD).await, "a disabled user cannot log in");
    let r = bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({"disabled": false, "unlock": true}))).await;
    assert_eq!(r.status, 200);
    assert_token_pair(&app.try_login("bob", PASSWORD).await, "enabled again");
    assert_error(
        &bearer(&app, "PATCH", "/api/users/nobody", &root, Some(json!({"unlock": true}))).await,
        404,
        "not_found",
        "unknown user",
    );
    assert_invalid_request(&bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({}))).await, "nothing to change");
    assert_invalid_request(
        &bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({"disabled": "yes"}))).await,
        "wrong type",
    );
    assert_invalid_request(
        &bearer(&app, "PATCH", "/api/users/bob", &root, Some(json!({"password": "x"}))).await,
        "unknown field",
    );
}

#[tokio::test]
async fn a_disabled_admin_cannot_manage_users() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("root2", PASSWORD, &["admin"]);
    // A third admin: the last enabled admin cannot be disabled.
    app.add_user("root3", PASSWORD, &["admin"]);
    let root = access_token(&app.login("root", PASSWORD).await);
    let root2 = access_token(&app.login("root2", PASSWORD).await);
    let r = bearer(&app, "PATCH", "/api/users/root", &root2, Some(json!({"roles": []}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // root's token still says admin, but root's account no longer does.
    let r = bearer(&app, "GET", "/api/users", &root, None).await;
    assert_error(&r, 403, "insufficient_scope", "an admin whose role was removed");
    app.disable_user("root2");
    let r = bearer(&app, "GET", "/api/users", &root2, None).await;
    assert_error(&r, 401, "invalid_token", "a disabled admin's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_everyone_ends_every_session_including_the_callers_even_racing_refreshes() {
    let app = TestApp::spawn(&[]);
    app.add_user("root", PASSWORD, &["admin"]);
    app.add_user("alice", PASSWORD, &[]);
    let root = app.login("root", PASSWORD).await;
    let mut chains = JoinSet::new();
    for _ in 0..4 {
        let token = refresh_token(&app.login("alice", PASSWORD).await);
        let (client, url) = (app.client.clone(), app.url("/api/refresh"));
        chains.spawn(async move {
            let mut token = token;
            for _ in 0..30 {
                let resp = client.post(&url).json(&json!({"refresh_token": token})).send().await.expect("request");
                if resp.status() != 200 {
                    break;
                }
                token = resp.json::<Value>().await.expect("json")["refresh_token"].as_str().unwrap().to_string();
            }
            token
        });
    }
    let alice = access_token(&app.login("alice", PASSWORD).await);
    let r = bearer(&app, "POST", "/api/revoke", &alice, Some(json!({"scope": "everyone"}))).await;
    assert_error(&r, 403, "insufficient_scope", "a non-admin");
    let r = bearer(&app, "POST", "/api/revoke", &access_token(&root), Some(json!({"scope": "everyone"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["own_session_ended"], true);
    while let Some(last) = chains.join_next().await {
        assert_invalid_grant(&app.refresh(&last.expect("chain")).await, "no refresh chain survives");
    }
    assert_invalid_grant(&app.refresh(&refresh_token(&root)).await, "the caller's own session");
    assert_token_pair(&app.try_login("alice", PASSWORD).await, "new sessions start as usual");
}

#[tokio::test]
async fn revoke_all_from_the_cli_reaches_a_running_instance_within_seconds() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let out = app.run_cli(&["sessions", "revoke-all"], "");
    assert!(out.status.success(), "{out:?}");
    let started = std::time::Instant::now();
    loop {
        let r = app.refresh(&refresh_token(&pair)).await;
        if r.status == 400 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "still refreshing after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn user_password_from_the_cli_sets_it_and_ends_every_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let pair = app.login("alice", PASSWORD).await;
    let out = app.run_cli(&["user", "password", "alice", "--password-stdin"], &format!("{STRONG}\n"));
    assert!(out.status.success(), "{out:?}");
    assert_invalid_grant(&app.refresh(&refresh_token(&pair)).await, "sessions ended");
    assert_token_pair(&app.try_login("alice", STRONG).await, "the new password");
}

#[tokio::test]
async fn invocation_sign_ups_without_a_forwarded_address_share_no_per_address_bucket() {
    // Before the fix every client without an address was the one address "unknown": the first
    // sign-up used it up for all of them.
    let app = TestApp::spawn(&[
        OPEN,
        ("JwtRefreshToken__Registration__MaxPerAddress", "1"),
        ("JwtRefreshToken__Registration__MaxPerMinute", "3"),
    ]);
    for (i, expect) in [201, 201, 201, 429].into_iter().enumerate() {
        let body = json!({"username": format!("nobody{i}"), "password": STRONG}).to_string();
        let (status, outer) = app.invoke("register", "POST", json_headers(), &body).await;
        assert_eq!(status, 200, "{outer}");
        let (inner_status, _, answer) = inner(&outer);
        assert_eq!(inner_status, expect, "sign-up {i} (the fourth meets the minute budget): {answer}");
    }
    // With a forwarded address the per-address count applies as before.
    let from = json!({"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.7"});
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1")]);
    for (i, expect) in [201, 429].into_iter().enumerate() {
        let body = json!({"username": format!("somebody{i}"), "password": STRONG}).to_string();
        let (_, outer) = app.invoke("register", "POST", from.clone(), &body).await;
        assert_eq!(inner(&outer).0, expect, "forwarded sign-up {i}: {outer}");
    }
}

#[tokio::test]
async fn a_name_whose_skeleton_equals_a_registered_names_skeleton_is_refused_in_either_order() {
    // `m` and `rn` share the UTS #39 skeleton `rn`. Before the claim records only a new name whose
    // skeleton was an existing *key* was caught: `rnarta` after `marta` got through.
    let app = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1000")]);
    assert_eq!(register(&app, "marta", STRONG).await.status, 201);
    let r = register(&app, "rnarta", STRONG).await;
    assert_invalid_request(&r, "rnarta after marta");
    assert!(r.text().contains("too similar"), "{}", r.text());
    assert_eq!(register(&app, "rnoritz", STRONG).await.status, 201);
    assert_invalid_request(&register(&app, "moritz", STRONG).await, "moritz after rnoritz");
    // Names that only share letters still register, and a CLI-created user claims its skeleton too.
    assert_eq!(register(&app, "martin", STRONG).await.status, 201);
    app.add_user("emma", STRONG, &[]);
    assert_invalid_request(&register(&app, "ernrna", STRONG).await, "ernrna after the CLI's emma");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn look_alike_names_signed_up_at_once_on_two_instances_create_one_account() {
    let first = TestApp::spawn(&[OPEN, ("JwtRefreshToken__Registration__MaxPerAddress", "1000")]);
    let second = first.second_instance();
    for round in 0..6 {
        let (a, b) = (format!("mia{round}"), format!("rnia{round}"));
        let (ra, rb) = tokio::join!(register(&first, &a, STRONG), register(&second, &b, STRONG));
        let created = [ra.status, rb.status].iter().filter(|s| **s == 201).count();
        assert_eq!(created, 1, "round {round}: {} / {}", ra.text(), rb.text());
        for r in [&ra, &rb].into_iter().filter(|r| r.status != 201) {
            assert_invalid_request(r, "the look-alike that lost");
        }
    }
}
