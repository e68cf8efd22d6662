//! Black-box tests of the `handler user …` and `handler sessions …` commands on their own, without a
//! running service: they refuse a store that does not exist, and they apply the password policy of
//! the HTTP routes.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use jwt_refresh_token::settings::names;

const BIN: &str = env!("CARGO_BIN_EXE_handler");
const STRONG: &str = "plum umbrella cactus 1987";

/// Runs `handler <args>` on the embedded store in `store`, with `stdin`, and only the settings given.
fn handler(store: &Path, args: &[&str], stdin: &str, extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // Settings are matched without case: nothing of the test runner's environment may leak in.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_lowercase().starts_with("jwtrefreshtoken") {
            cmd.env_remove(&name);
        }
    }
    cmd.env(names::EMBEDDED_PATH, store).envs(extra.iter().copied());
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The command may exit before reading (usage errors): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn commands_refuse_a_store_that_does_not_exist_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let line = format!("{STRONG}\n");
    for (args, stdin) in [
        (&["user", "list"][..], ""),
        (&["user", "unlock", "alice"][..], ""),
        (&["user", "add", "alice", "--password-stdin"][..], line.as_str()),
        (&["sessions", "revoke-all"][..], ""),
    ] {
        let out = handler(&missing, args, stdin, &[]);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let expected = format!("no store at {}; serve creates one, or pass --create", missing.display());
        assert!(stderr(&out).contains(&expected), "{args:?}: {}", stderr(&out));
        assert!(!missing.exists(), "{args:?} created the store");
    }
}

#[test]
fn create_makes_the_store_and_later_commands_find_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = handler(&store, &["user", "add", "alice", "--create", "--password-stdin"], &format!("{STRONG}\n"), &[]);
    assert!(out.status.success(), "{out:?}");
    let out = handler(&store, &["user", "list"], "", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).starts_with("alice\t"), "{}", stdout(&out));
    let out = handler(&dir.path().join("other"), &["sessions", "revoke-all", "--create"], "", &[]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn user_add_and_password_apply_the_http_password_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = handler(&store, &["user", "add", "bob", "--create", "--password-stdin"], "password123\n", &[]);
    assert!(!out.status.success(), "a weak password is refused: {out:?}");
    assert!(stderr(&out).contains("password is too easy to guess"), "{}", stderr(&out));
    let out = handler(&store, &["user", "add", "bob", "--create", "--password-stdin"], &format!("{STRONG}\n"), &[]);
    assert!(out.status.success(), "{out:?}");
    let out = handler(&store, &["user", "password", "bob", "--password-stdin"], "qwertyuiop\n", &[]);
    assert!(!out.status.success(), "a weak new password is refused: {out:?}");
    assert!(stderr(&out).contains("password is too easy to guess"), "{}", stderr(&out));
    let min = [(names::PASSWORD_MIN_LENGTH, "30")];
    let out = handler(&store, &["user", "password", "bob", "--password-stdin"], &format!("{STRONG}\n"), &min);
    assert!(!out.status.success(), "the minimum length setting applies: {out:?}");
    assert!(stderr(&out).contains("at least 30 characters"), "{}", stderr(&out));
}

#[test]
fn allow_weak_password_lets_a_fixture_through_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = ["user", "add", "carol", "--create", "--allow-weak-password", "--password-stdin"];
    let out = handler(&store, &args, "password123\n", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("warning: --allow-weak-password"), "{}", stderr(&out));
    let args = ["user", "password", "carol", "--allow-weak-password", "--password-stdin"];
    let out = handler(&store, &args, "short\n", &[]);
    assert!(!out.status.success(), "the flag still requires 8 characters: {out:?}");
    let out = handler(&store, &args, "qwertyuiop\n", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("warning: --allow-weak-password"), "{}", stderr(&out));
}
