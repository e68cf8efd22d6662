//! The local Cosmos DB test peer (`emulator/start.js`), started once per test binary.
//!
//! `JRT_COSMOS_ENDPOINT` points the tests at an emulator that is already running; otherwise the
//! first test that needs one installs the pinned npm package (`npm ci`, once) and starts it with
//! `--exit-with-stdin`, so it ends with the test binary. If it cannot start, the Cosmos tests fail —
//! they never pass silently.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Microsoft's documented emulator key (the test peer accepts any key).
pub const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

struct Running {
    endpoint: String,
    // Kept open: the emulator exits when this pipe closes (the test binary ended).
    _stdin: Option<Mutex<ChildStdin>>,
    _child: Option<Mutex<Child>>,
}

static EMULATOR: OnceLock<Running> = OnceLock::new();

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn install() {
    let marker = repo().join("emulator/node_modules/@vercel/cosmosdb-server/package.json");
    if marker.exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(repo().join("emulator"))
        .status()
        .expect("run `npm ci` in emulator/ (is Node.js with npm installed?)");
    assert!(status.success(), "`npm ci` in emulator/ failed: {status}");
}

/// Starts an emulator process; it exits when the returned stdin is closed.
fn launch() -> (String, Child, ChildStdin) {
    install();
    let mut child = Command::new("node")
        .args(["start.js", "--http", "--port", "0", "--exit-with-stdin"])
        .current_dir(repo().join("emulator"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Cosmos emulator with node (is Node.js installed?)");
    let stdout = child.stdout.take().expect("emulator stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("the Cosmos emulator did not report its port in 30 s");
    let parsed: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("emulator said {line:?}: {e}"));
    let endpoint = parsed["endpoint"].as_str().expect("endpoint in the emulator's first line").to_string();
    let stdin = child.stdin.take().expect("emulator stdin");
    (endpoint, child, stdin)
}

fn start() -> Running {
    if let Ok(endpoint) = std::env::var("JRT_COSMOS_ENDPOINT") {
        return Running { endpoint, _stdin: None, _child: None };
    }
    let (endpoint, child, stdin) = launch();
    Running { endpoint, _stdin: Some(Mutex::new(stdin)), _child: Some(Mutex::new(child)) }
}

/// An emulator of one test's own (for fault injection that must not disturb other tests);
/// stopped on drop.
pub struct Private {
    /// Its endpoint.
    pub endpoint: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Private {
    /// Starts one.
    pub fn start() -> Self {
        let (endpoint, child, stdin) = launch();
        Self { endpoint, child, stdin: Some(stdin) }
    }

    /// A connection string for it.
    pub fn connection_string(&self) -> String {
        format!("AccountEndpoint={};AccountKey={EMULATOR_KEY};", self.endpoint)
    }

    /// Queues a fault rule on it.
    pub async fn inject(&self, rule: serde_json::Value) {
        self.control(reqwest::Method::POST, "faults", Some(rule)).await;
    }

    /// Calls one of its test controls (see emulator/README.md).
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        control_at(&self.endpoint, method, path, body).await
    }

    /// Starts seeded random faults (`{"seed":…,"rate":…}`, see emulator/README.md).
    pub async fn start_chaos(&self, config: serde_json::Value) {
        self.control(reqwest::Method::POST, "chaos", Some(config)).await;
    }

    /// Stops the random faults, ends any outage and clears queued rules; returns the last chaos state.
    pub async fn calm(&self) -> serde_json::Value {
        let last = self.control(reqwest::Method::DELETE, "chaos", None).await;
        self.control(reqwest::Method::DELETE, "outage", None).await;
        self.control(reqwest::Method::DELETE, "faults", None).await;
        last
    }

    /// Drops every data-plane request for `seconds`.
    pub async fn outage(&self, seconds: f64) {
        self.control(reqwest::Method::POST, "outage", Some(serde_json::json!({ "seconds": seconds }))).await;
    }

    /// Its request counters, including `faults` (injected faults by label).
    pub async fn stats(&self) -> serde_json::Value {
        self.control(reqwest::Method::GET, "stats", None).await
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulator's endpoint, e.g. `http://127.0.0.1:40323/`.
pub fn endpoint() -> &'static str {
    &EMULATOR.get_or_init(start).endpoint
}

/// A connection string for the emulator.
pub fn connection_string() -> String {
    format!("AccountEndpoint={};AccountKey={EMULATOR_KEY};", endpoint())
}

/// A database name no other test uses.
pub fn unique_database(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Calls a test control (`stats`, `reset-stats`, `advance-clock`, `faults`, …) of the shared emulator.
pub async fn control(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    control_at(endpoint(), method, path, body).await
}

async fn control_at(
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut request = client.request(method, format!("{endpoint}__emulator/{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("emulator control request");
    assert!(response.status().is_success(), "emulator control {path}: {}", response.status());
    response.json().await.unwrap_or(serde_json::Value::Null)
}

/// Document requests (reads, writes, queries, batches) counted since the last reset, by kind.
pub async fn document_requests() -> serde_json::Value {
    control(reqwest::Method::GET, "stats", None).await["byKind"].clone()
}

/// Total document requests (metadata excluded) since the last reset.
pub async fn document_request_total() -> u64 {
    let by_kind = document_requests().await;
    ["read", "replace", "create", "upsert", "delete", "query", "batch"]
        .iter()
        .map(|k| by_kind[*k].as_u64().unwrap_or(0))
        .sum()
}

/// Zeroes the request counters.
pub async fn reset_stats() {
    control(reqwest::Method::POST, "reset-stats", None).await;
}

/// Moves the emulator's TTL clock forward.
pub async fn advance_clock(seconds: u64) {
    control(reqwest::Method::POST, "advance-clock", Some(serde_json::json!({ "seconds": seconds }))).await;
}

/// Queues a fault rule (see emulator/README.md).
pub async fn inject(rule: serde_json::Value) {
    control(reqwest::Method::POST, "faults", Some(rule)).await;
}

/// Clears every queued fault rule.
pub async fn clear_faults() {
    control(reqwest::Method::DELETE, "faults", None).await;
}
