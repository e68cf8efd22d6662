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

#[path = "../tests/support/dpop_client.rs"]
mod dpop_client;

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

/// Seconds since the epoch (a proof's `iat`).
#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
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
    let bearer = report("POST /api/refresh", refreshes, Some(baseline));

    // The same refresh of a DPoP-bound session: each request carries a fresh proof (signed before
    // the clock starts, as a client signs it before sending), so the difference is the server's
    // proof check — one ES256 verification, the thumbprint and the replay-cache entry.
    let key = dpop_client::ProofKey::new();
    let token_url = "https://bench/api/token";
    let refresh_url = "https://bench/api/refresh";
    let login: serde_json::Value = client
        .post(format!("{base}/api/token"))
        .header("DPoP", key.proof_at("POST", token_url, now_s(), None, None))
        .json(&login_body)
        .send()
        .await?
        .json()
        .await?;
    let mut bound_token = login["refresh_token"].as_str().ok_or("DPoP login failed")?.to_string();
    let mut bound = Vec::new();
    for _ in 0..rounds {
        let proof = key.proof_at("POST", refresh_url, now_s(), None, None);
        let t = Instant::now();
        let r: serde_json::Value = client
            .post(format!("{base}/api/refresh"))
            .header("DPoP", proof)
            .json(&serde_json::json!({ "refresh_token": bound_token }))
            .send()
            .await?
            .json()
            .await?;
        bound.push(t.elapsed());
        if r["token_type"] != "DPoP" {
            return Err(format!("DPoP refresh failed: {r}").into());
        }
        bound_token = r["refresh_token"].as_str().ok_or("DPoP refresh failed")?.to_string();
    }
    let dpop = report("POST /api/refresh DPoP", bound, Some(baseline));
    println!("DPoP refresh / bearer refresh (p50): {:.2}x", dpop.as_secs_f64() / bearer.as_secs_f64());

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
