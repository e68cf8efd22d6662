//! Login flood benchmark (not a test): starts a `handler` binary on the embedded store, floods it
//! with logins from N keep-alive clients for T seconds, and reports login throughput (every answer
//! counted is checked: 200 with a token pair, 400 `invalid_grant`, 429 or 503 — anything else
//! aborts the run), the refused share, and the process's resident memory: idle before the flood and
//! its peak (`VmHWM`) during it. Point it at an older build to compare.
//!
//! `cargo run --release --example login_flood -- <handler binary> [clients=64] [seconds=10] [workers]`
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/procfs.rs"]
#[allow(dead_code)] // shared with load.rs, which also reads CPU time
mod procfs;
use procfs::{free_port, memory_kib};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).ok_or("usage: login_flood <handler binary> [clients] [seconds] [workers]")?.clone();
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let workers = args.get(4).cloned();
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let key = "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw";
    let command = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(args)
            .env("JwtRefreshToken__Descriptor__Issuer", "https://bench")
            .env("JwtRefreshToken__Descriptor__Audience", "bench")
            .env("JwtRefreshToken__Descriptor__AlgorithmKey", key)
            .env("JwtRefreshToken__Embedded__Path", dir.path())
            .env("JwtRefreshToken__Login__MaxFailures", "1000")
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("RUST_LOG", "warn");
        if let Some(w) = &workers {
            c.env("JwtRefreshToken__Login__HashWorkers", w);
        }
        c
    };
    let mut add = command(&["user", "add", "bench", "--create", "--password-stdin"]).stdin(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = add.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(b"bench-password-0123\n")?;
    }
    if !add.wait()?.success() {
        return Err("user add failed".into());
    }
    let mut server = command(&[]).stdout(Stdio::null()).spawn()?;
    let pid = server.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(clients).build()?;
    let started = Instant::now();
    while client.get(&base).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the handler did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Warm up (the dummy hash, connections), then let the memory settle.
    let url = format!("{base}/api/token");
    client.post(&url).json(&serde_json::json!({"username": "bench", "password": "bench-password-0123"})).send().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = memory_kib(pid, "VmRSS");
    let flood = Instant::now();
    let deadline = flood + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let (mut ok, mut wrong, mut refused) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let password = if i % 4 == 0 { "wrong-password" } else { "bench-password-0123" };
                let body = serde_json::json!({"username": "bench", "password": password});
                let resp = client.post(&url).json(&body).send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let value: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                match status {
                    200 if value["access_token"].is_string() && value["refresh_token"].is_string() => ok += 1,
                    400 if value["error"] == "invalid_grant" => wrong += 1,
                    429 | 503 if value["error"] == "temporarily_unavailable" => refused += 1,
                    _ => return Err(format!("unexpected answer {status}: {value}")),
                }
            }
            Ok::<_, String>((ok, wrong, refused))
        });
    }
    let (mut ok, mut wrong, mut refused) = (0u64, 0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (a, b, c) = r??;
        ok += a;
        wrong += b;
        refused += c;
    }
    let elapsed = flood.elapsed().as_secs_f64();
    let peak_kib = memory_kib(pid, "VmHWM");
    tokio::time::sleep(Duration::from_secs(35)).await;
    let after_kib = memory_kib(pid, "VmRSS");
    let _ = server.kill();
    let _ = server.wait();
    let evaluated = ok + wrong;
    println!(
        "{bin}: {clients} clients, {seconds} s: {evaluated} logins evaluated ({:.1}/s; {ok} ok, {wrong} wrong), \
         {refused} refused (503/429); resident: idle {:.1} MiB, peak {:.1} MiB, 35 s after {:.1} MiB",
        evaluated as f64 / elapsed,
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        after_kib as f64 / 1024.0,
    );
    Ok(())
}
