//! Latency benchmark over loopback: the service in-process on the embedded store, driven by one
//! HTTP/1.1 client. Reports p50/p99 per operation and the ratio to the readiness probe (`GET /`,
//! no work) measured in the same run, since absolute numbers drift on a shared machine.
//!
//! `cargo run --release --example bench -- [rounds]`
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jwt_refresh_token::accounts::{AccountService, Actor, PasswordCheck};
use jwt_refresh_token::clock::SystemClock;
use jwt_refresh_token::secret::Password;
use jwt_refresh_token::settings::{Env, Mode, Settings};
use jwt_refresh_token::startup::Application;
use jwt_refresh_token::store::embedded::EmbeddedStore;
use jwt_refresh_token::users::PasswordHasher;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>, baseline: Option<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    let p99 = percentile(&samples, 0.99);
    let ratio =
        baseline.map_or(String::new(), |b| format!("  p50 = {:.1}x readiness", p50.as_secs_f64() / b.as_secs_f64()));
    println!("{name:<22} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms{ratio}", samples.len(), ms(p50), ms(p99));
    p50
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir()?;
    let env = Env::from_pairs([
        ("JwtRefreshToken__Descriptor__Issuer", "https://bench"),
        ("JwtRefreshToken__Descriptor__Audience", "bench"),
        (
            "JwtRefreshToken__Descriptor__AlgorithmKey",
            "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw",
        ),
        ("JwtRefreshToken__Embedded__Path", dir.path().to_str().ok_or("path")?),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
    ]);
    let settings = Settings::load(&env, Mode::Production)?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let password = Password::new("bench-password");
    let accounts = AccountService::new(store, PasswordHasher::start(&Default::default())?, Arc::new(SystemClock), 8);
    // The benchmark's own fixture password: its strength is not what is measured.
    accounts.create_user(Actor::Operator, "bench", &password, &[], PasswordCheck::AllowWeak).await?;
    drop(accounts);
    let app = Application::build(&settings, Arc::new(SystemClock)).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::builder().http1_only().build()?;

    let mut ready = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        client.get(format!("{base}/")).send().await?.bytes().await?;
        ready.push(t.elapsed());
    }
    let baseline = report("GET / (baseline)", ready, None);

    let mut jwks = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        client.get(format!("{base}/api/jwks")).send().await?.bytes().await?;
        jwks.push(t.elapsed());
    }
    report("GET /api/jwks", jwks, Some(baseline));

    let login_body = serde_json::json!({"username": "bench", "password": password.expose()});
    let mut logins = Vec::new();
    let mut refresh_token = String::new();
    for _ in 0..(rounds / 10).max(10) {
        let t = Instant::now();
        let r: serde_json::Value =
            client.post(format!("{base}/api/token")).json(&login_body).send().await?.json().await?;
        logins.push(t.elapsed());
        refresh_token = r["refresh_token"].as_str().ok_or("login failed")?.to_string();
    }
    report("POST /api/token login", logins, Some(baseline));

    let mut refreshes = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let r: serde_json::Value = client
            .post(format!("{base}/api/refresh"))
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .send()
            .await?
            .json()
            .await?;
        refreshes.push(t.elapsed());
        refresh_token = r["refresh_token"].as_str().ok_or("refresh failed")?.to_string();
    }
    report("POST /api/refresh", refreshes, Some(baseline));

    let mut bad = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        client
            .post(format!("{base}/api/refresh"))
            .json(&serde_json::json!({"refresh_token": "garbage"}))
            .send()
            .await?;
        bad.push(t.elapsed());
    }
    report("refresh with garbage", bad, Some(baseline));
    Ok(())
}
