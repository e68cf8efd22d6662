//! The `handler user …` commands against a running service.

use crate::helpers::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_disabled_user_can_neither_log_in_nor_refresh_an_existing_session() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let session = app.login("alice", PASSWORD).await;
    let bobs = app.login("bob", PASSWORD).await;
    app.disable_user("alice");
    let r = app.try_login("alice", PASSWORD).await;
    assert_invalid_grant(&r, "login of a disabled user");
    assert_eq!(r.body, app.try_login("nobody", PASSWORD).await.body, "a disabled account looks like a bad password");
    assert_invalid_grant(&app.refresh(&refresh_token(&session)).await, "refresh of a disabled user's session");
    assert_token_pair(&app.refresh(&refresh_token(&bobs)).await, "other users are unaffected");
}

#[tokio::test]
async fn disabling_an_unknown_user_fails() {
    let app = TestApp::spawn(&[]);
    let out = app.run_cli(&["user", "disable", "ghost"], "");
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{out:?}");
}

#[tokio::test]
async fn adding_an_existing_username_in_another_case_fails_and_keeps_the_original() {
    let app = TestApp::spawn(&[]);
    let id = app.add_user("alice", PASSWORD, &[]);
    let out = app.run_cli(&["user", "add", "ALICE", "--password-stdin"], "another-password\n");
    assert!(!out.status.success(), "a second ALICE must be refused: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{out:?}");
    let pair = app.login("alice", PASSWORD).await;
    assert_eq!(jwt_claims(&access_token(&pair))["sub"], id.as_str(), "the original account is untouched");
    assert_invalid_grant(&app.try_login("alice", "another-password").await, "the refused password was not stored");
}

#[tokio::test]
async fn user_add_refuses_bad_input() {
    let app = TestApp::spawn(&[]);
    let rows: [(&[&str], &str, &str); 4] = [
        (&["user", "add", "carol"], "long-enough-password\n", "without --password-stdin"),
        (&["user", "add", "carol", "--password-stdin"], "short\n", "a password under 8 characters"),
        (
            &["user", "add", "carol", "--role", "bad role", "--password-stdin"],
            "long-enough-password\n",
            "a role with a space",
        ),
        (&["user", "add", " carol", "--password-stdin"], "long-enough-password\n", "a username with a leading space"),
    ];
    for (args, stdin, why) in rows {
        let out = app.run_cli(args, stdin);
        assert!(!out.status.success(), "{why}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{why}: {out:?}");
    }
    assert_invalid_grant(&app.try_login("carol", "long-enough-password").await, "no carol was created");
}

#[tokio::test]
async fn user_list_prints_usernames_and_never_password_hashes() {
    let app = TestApp::spawn(&[]);
    let alice = app.add_user("alice", PASSWORD, &["admin"]);
    app.add_user("bob", PASSWORD, &[]);
    app.disable_user("bob");
    let out = app.run_cli(&["user", "list"], "");
    assert!(out.status.success(), "{out:?}");
    let listing = stdout(&out);
    assert!(listing.contains("alice"), "{listing}");
    assert!(listing.contains("bob"), "{listing}");
    assert!(listing.contains(&alice), "the listing shows ids: {listing}");
    assert!(!listing.contains("$argon2"), "{listing}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("$argon2"));
    assert!(!listing.contains(PASSWORD), "{listing}");
}

#[tokio::test]
async fn the_trailing_newline_of_a_password_is_not_part_of_it() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]); // writes PASSWORD + "\n"
    app.login("alice", PASSWORD).await;
    assert_invalid_grant(&app.try_login("alice", &format!("{PASSWORD}\n")).await, "the newline is not in the password");
    let out = app.run_cli(&["user", "add", "bob", "--password-stdin"], &format!("{PASSWORD}\r\n"));
    assert!(out.status.success(), "{out:?}");
    app.login("bob", PASSWORD).await;
    assert_invalid_grant(&app.try_login("bob", &format!("{PASSWORD}\r")).await, "a CRLF ending is not in the password");
}

#[tokio::test]
async fn user_add_prints_the_id_and_roles() {
    let app = TestApp::spawn(&[]);
    let out = app.run_cli(
        &["user", "add", "root", "--role", "admin", "--role", "ops", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("root"), "{text}");
    assert!(text.contains("admin"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains("$argon2"), "{text}");
    let claims = jwt_claims(&access_token(&app.login("root", PASSWORD).await));
    assert!(text.contains(claims["sub"].as_str().unwrap()), "the printed id is the sub claim: {text}");
}
