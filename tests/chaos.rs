//! Chaos: eight clients each chain refreshes through the real handler on the Cosmos store while
//! the test peer fails about 10 % of document requests with seeded faults (429, 503, 408 and 449
//! with `x-ms-retry-after-ms`, added latency, connection resets, writes applied and then dropped)
//! and is down once for a second. No answer may be a 500, every 503 must carry `Retry-After`, and
//! no session may end: after the faults stop, each client's last acknowledged refresh token still
//! refreshes. Bounded: 12 s of chaos, a cap on requests per client, a timeout on each request.
//!
//! `JRT_CHAOS_SEED=N cargo test --test chaos` replays a seed (the summary line prints it). The
//! peer's draws follow the seed; the order in which concurrent requests meet them does not, so a
//! failing seed makes the failure likely, not certain.

// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jwt_refresh_token::settings::names;
use serde_json::json;
use tokio::task::JoinSet;

/// The handler gets its Cosmos settings explicitly (a private test peer), not from the harness.
const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "support/emulator.rs"]
mod emulator;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::{Config, PASSWORD, TestApp, refresh_token};

const DEFAULT_SEED: u64 = 20_261_202;
const CLIENTS: usize = 8;
const FAULT_RATE: f64 = 0.1;
const CHAOS: Duration = Duration::from_secs(12);
/// The outage starts this far into the run and lasts `OUTAGE_SECONDS` (well inside the 10 s reuse
/// grace, so a rotation whose answer was lost just before it can still be retried).
const OUTAGE_AT: Duration = Duration::from_secs(5);
const OUTAGE_SECONDS: f64 = 1.0;
/// Upper bound on requests per client, whatever the timing.
const MAX_REQUESTS_PER_CLIENT: usize = 5_000;
/// A client waits this long after a 503 (less than its `Retry-After`, to keep the chains busy).
const BACKOFF_AFTER_503: Duration = Duration::from_millis(20);

/// What one client saw.
#[derive(Debug, Default)]
struct Chain {
    /// Answers by status.
    statuses: BTreeMap<u16, u64>,
    /// Problems, each with enough to act on.
    problems: Vec<String>,
    /// The refresh token of the last 200.
    last_token: String,
    rotations: u64,
}

async fn chain(client: reqwest::Client, url: String, id: usize, first: String, until: Instant) -> Chain {
    let mut seen = Chain { last_token: first, ..Chain::default() };
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if Instant::now() >= until {
            break;
        }
        let sent = client.post(&url).json(&json!({ "refresh_token": seen.last_token })).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                seen.problems.push(format!("client {id}: no answer from the handler: {e}"));
                break;
            }
        };
        let status = response.status().as_u16();
        *seen.statuses.entry(status).or_default() += 1;
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        match status {
            200 => {
                let pair: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                match pair["refresh_token"].as_str() {
                    Some(next) => {
                        seen.last_token = next.to_owned();
                        seen.rotations += 1;
                    }
                    None => seen.problems.push(format!("client {id}: 200 without a refresh token: {body}")),
                }
            }
            503 => {
                if retry_after.as_deref().and_then(|v| v.parse::<u64>().ok()).is_none_or(|s| s == 0) {
                    seen.problems.push(format!("client {id}: 503 without a usable Retry-After ({retry_after:?})"));
                }
                tokio::time::sleep(BACKOFF_AFTER_503).await;
            }
            _ => {
                // A 400 here means the session ended (or the token was refused): the chain is broken.
                seen.problems.push(format!("client {id}: {status} {body}"));
                if status < 500 {
                    break;
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_refresh_chains_survive_seeded_store_faults_without_a_500_or_an_ended_session() {
    let seed: u64 = std::env::var("JRT_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let started = Instant::now();
    let peer = emulator::Private::start();
    let app = TestApp::start(
        Config::new()
            .env(names::COSMOS_CONNECTION_STRING, &peer.connection_string())
            .env(names::COSMOS_DATABASE, "chaos"),
    );
    app.add_user("chaos", PASSWORD, &[]);
    let mut firsts = Vec::new();
    for _ in 0..CLIENTS {
        firsts.push(refresh_token(&app.login("chaos", PASSWORD).await));
    }

    peer.start_chaos(json!({ "seed": seed, "rate": FAULT_RATE })).await;
    let chaos_started = Instant::now();
    let until = chaos_started + CHAOS;
    let mut clients = JoinSet::new();
    for (id, first) in firsts.into_iter().enumerate() {
        clients.spawn(chain(app.client.clone(), app.url("/api/refresh"), id, first, until));
    }
    tokio::time::sleep(OUTAGE_AT).await;
    peer.outage(OUTAGE_SECONDS).await;
    let mut chains = Vec::new();
    while let Some(joined) = clients.join_next().await {
        chains.push(joined.expect("client task"));
    }
    let chaos_took = chaos_started.elapsed();
    let last = peer.calm().await;
    let faults = peer.stats().await["faults"].clone();

    // With the faults off, every chain must still be alive.
    let mut problems: Vec<String> = chains.iter().flat_map(|c| c.problems.clone()).collect();
    for (id, c) in chains.iter().enumerate() {
        let r = app.refresh(&c.last_token).await;
        if r.status != 200 {
            problems.push(format!(
                "client {id}: final refresh with its last acknowledged token: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for c in &chains {
        for (status, n) in &c.statuses {
            *statuses.entry(*status).or_default() += n;
        }
    }
    let rotations: Vec<u64> = chains.iter().map(|c| c.rotations).collect();
    let injected: u64 = faults.as_object().map(|m| m.values().filter_map(serde_json::Value::as_u64).sum()).unwrap_or(0);
    println!(
        "chaos seed={seed} clients={CLIENTS} rate={FAULT_RATE} chaos={chaos_took:.1?} total={:.1?}: answers {statuses:?}, \
         rotations per client {rotations:?}, faults injected {injected} {faults} over {} draws",
        started.elapsed(),
        last["draws"],
    );

    assert!(problems.is_empty(), "seed {seed} (JRT_CHAOS_SEED={seed} to replay): {problems:#?}");
    assert!(injected > 0, "seed {seed}: no fault was injected, the test proved nothing: {faults}");
    assert!(rotations.iter().all(|n| *n > 0), "seed {seed}: a client never rotated: {rotations:?}");
}
