//! Durability under load: the real `handler` binary on the embedded store, parallel clients each
//! chaining refreshes of its own session, SIGKILL in the middle of it, restart on the same store.
//!
//! Every refresh answered `200` is an acknowledged rotation of its session to the generation of the
//! token it returned. Group commit answers only after the commit, so after the crash each session
//! must be at the generation of its chain's last acknowledged token `g`, or at `g + 1` when the
//! refresh in flight at the kill was committed but not answered — never below `g` (a lost
//! acknowledged rotation), which this test checks in the store itself and through the API: the
//! last acknowledged token must refresh (at `g` it rotates, at `g + 1` it is the previous token
//! within the grace and gets the same successor), and the token that returns must refresh again.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jwt_refresh_token::secret::SecretBytes;
use jwt_refresh_token::store::SessionStore as _;
use jwt_refresh_token::store::embedded::EmbeddedStore;
use jwt_refresh_token::tokens::refresh::RefreshTokens;

const CLIENTS: usize = 6;
const KEY: &str = "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw";
const PASSWORD: &str = "crash-test-password-0123";
/// Acknowledged rotations to wait for before the kill (the load must be well under way).
const ACKS_BEFORE_KILL: u64 = 300;

struct Handler {
    child: Child,
    base: String,
}

fn command(dir: &std::path::Path, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_handler"));
    c.args(args)
        .env_clear()
        .env("JwtRefreshToken__Descriptor__Issuer", "https://crash")
        .env("JwtRefreshToken__Descriptor__Audience", "crash")
        .env("JwtRefreshToken__Descriptor__AlgorithmKey", KEY)
        .env("JwtRefreshToken__Embedded__Path", dir)
        .env("JwtRefreshToken__Rotation__ReuseGraceMs", "300000")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

async fn start(dir: &std::path::Path, client: &reqwest::Client) -> Handler {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = command(dir, port, &[]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while client.get(&base).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(20), "the handler did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Handler { child, base }
}

async fn refresh(client: &reqwest::Client, base: &str, token: &str) -> Result<(u16, String), reqwest::Error> {
    let resp =
        client.post(format!("{base}/api/refresh")).json(&serde_json::json!({ "refresh_token": token })).send().await?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await?;
    Ok((status, body["refresh_token"].as_str().unwrap_or_default().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_handler_keeps_every_acknowledged_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut add = command(dir.path(), 0, &["user", "add", "crash", "--create", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    }
    assert!(add.wait().unwrap().success(), "user add failed");

    let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let mut handler = start(dir.path(), &client).await;
    let mut chains = Vec::new();
    for _ in 0..CLIENTS {
        let resp = client
            .post(format!("{}/api/token", handler.base))
            .json(&serde_json::json!({"username": "crash", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        chains.push(body["refresh_token"].as_str().unwrap().to_string());
    }

    // Each client chains its own session's refreshes until the handler dies under it.
    let acks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for first in chains {
        let (client, base, acks) = (client.clone(), handler.base.clone(), Arc::clone(&acks));
        tasks.push(tokio::spawn(async move {
            let mut last_acknowledged = first;
            loop {
                match refresh(&client, &base, &last_acknowledged).await {
                    Ok((200, next)) => {
                        assert!(!next.is_empty(), "a 200 refresh without a refresh token");
                        last_acknowledged = next;
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, _)) => panic!("the chain broke before the crash: {status}"),
                    Err(_) => return last_acknowledged, // the handler was killed
                }
            }
        }));
    }
    let started = Instant::now();
    while acks.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
        assert!(started.elapsed() < Duration::from_secs(60), "too few refreshes were acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handler.child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    handler.child.wait().unwrap();
    let mut last = Vec::new();
    for task in tasks {
        last.push(task.await.unwrap());
    }

    // In the store: every session at its last acknowledged generation, or one past it.
    let parser = RefreshTokens::new(SecretBytes::new(vec![0u8; 32])); // parsing needs no secret
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for token in &last {
            let parts = parser.parse(token).unwrap();
            let session = store.get_session(&parts.user_id, &parts.session_id).await.unwrap();
            let stored = session.expect("an acknowledged session is gone after the crash").value.generation;
            assert!(
                stored == parts.generation || stored == parts.generation + 1,
                "acknowledged generation {}, stored {stored} after the crash",
                parts.generation
            );
        }
    }

    // Through the API after a restart on the same store: each chain goes on.
    let handler = start(dir.path(), &reqwest::Client::new()).await;
    let client = reqwest::Client::new();
    for token in &last {
        let (status, next) = refresh(&client, &handler.base, token).await.unwrap();
        assert_eq!(status, 200, "the last acknowledged token no longer refreshes");
        let (status, _) = refresh(&client, &handler.base, &next).await.unwrap();
        assert_eq!(status, 200, "the token it returned does not refresh");
    }
    let mut child = handler.child;
    child.kill().unwrap();
    child.wait().unwrap();
}
