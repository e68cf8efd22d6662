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
        (&["clients", "list"][..], ""),
        (&["clients", "add", "orders-api"][..], ""),
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

#[test]
fn clients_add_prints_the_secret_once_list_shows_ids_only_and_remove_ends_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = handler(&store, &["clients", "add", "orders-api", "--create"], "", &[]);
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields.len(), 2, "{printed}");
    assert_eq!(fields[0], "client_id=orders-api");
    let secret = fields[1].strip_prefix("client_secret=").unwrap();
    assert_eq!(secret.len(), 43, "32 random bytes, base64url: {secret}");
    assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{secret}");
    let again = handler(&store, &["clients", "add", "orders-api"], "", &[]);
    assert!(!again.status.success(), "a taken id is refused: {again:?}");
    assert!(stderr(&again).contains("a client with this id exists"), "{}", stderr(&again));
    let bad = handler(&store, &["clients", "add", "no spaces/please"], "", &[]);
    assert!(!bad.status.success(), "{bad:?}");
    assert!(stderr(&bad).contains("letters, digits"), "{}", stderr(&bad));
    let out = handler(&store, &["clients", "add", "billing"], "", &[]);
    assert!(out.status.success(), "{out:?}");
    let list = handler(&store, &["clients", "list"], "", &[]);
    assert!(list.status.success(), "{list:?}");
    let lines: Vec<String> = stdout(&list).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("billing\tcreated_at=") && lines[1].starts_with("orders-api\tcreated_at="),
        "{lines:?}"
    );
    assert!(!stdout(&list).contains(secret), "never a secret");
    let db = std::fs::read(store.join("store.db")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "the store holds no secret");
    let out = handler(&store, &["clients", "remove", "orders-api"], "", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("within 60 s"), "{}", stdout(&out));
    let out = handler(&store, &["clients", "remove", "orders-api"], "", &[]);
    assert!(!out.status.success(), "removing twice fails: {out:?}");
    assert!(stderr(&out).contains("no such client"), "{}", stderr(&out));
    assert!(stdout(&handler(&store, &["clients", "list"], "", &[])).starts_with("billing\t"));
}
