//! The benchmark's load driver (run by `scripts/bench.sh`, which builds everything first).
//!
//! Starts the release `handler` on the durable embedded store and `examples/memory_server` on the
//! in-memory one, and drives each with a fixed number of keep-alive HTTP/1.1 virtual clients (raw
//! tokio TCP, so the driver costs little of the shared CPU). Each refresh client holds its own
//! session and chains its refreshes as a real client does. Every answer counted is verified (status,
//! and the token pair for logins and refreshes); a server error or a broken chain aborts the run.
//!
//! Measures, all in one run: the no-op `GET /`, login, refresh and revoke throughput with
//! p50/p99/p99.9 latency; refresh at half of its peak rate (open loop); the raw argon2id rate with
//! the server's parameters and worker count; resident memory idle and the peak under each load; cold
//! start (exec → first `200`, exec → first login) next to a bare exec of `/bin/true`; release binary
//! size; server and driver CPU per operation (from `/proc/<pid>/stat`). Then the Cosmos DB store
//! through the local test peer (`emulator/`): document requests per login, refresh and revoke
//! against the budgets (over budget fails the run), refresh latency, cold start and idle memory.
//! Criterion's estimates for the micro-benchmarks (`benches/primitives.rs`) are read from
//! `target/criterion`. Writes `bench/results.json`, `bench/results.md` and `bench/latency.png`.
//!
//! `target/release/examples/load <handler> <memory_server> [seconds=5] [clients=8]`
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[path = "support/procfs.rs"]
mod procfs;
use procfs::{cpu_ms, free_port, memory_kib};

type Error = Box<dyn std::error::Error + Send + Sync>;

const KEY: &str = "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw";
/// Each virtual client logs in as a user of its own: one user's logins from one address take
/// turns by design (the lockout counts every attempt), and a login burst is many users.
fn user(client: usize) -> String {
    format!("bench{client}")
}
const PASSWORD: &str = "bench-password-0123";
const COLD_STARTS: usize = 20;
/// Most virtual clients (each has a user of its own).
const MAX_CLIENTS: usize = 64;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: &str) -> Self {
        Self { addr: addr.to_string(), stream: None, buf: Vec::with_capacity(4096) }
    }

    /// Sends one request and reads its whole answer: (status, body).
    async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Vec<u8>), Error> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(format!("{head}{body}").as_bytes()).await?;
        self.buf.clear();
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                self.stream = None;
                return Err("connection closed by the server".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..end])?.to_ascii_lowercase();
        let status: u16 = head.get(9..12).ok_or("short status line")?.parse()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse())
            .transpose()?
            .ok_or("an answer without Content-Length")?;
        let close = head.contains("\r\nconnection: close");
        while self.buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err("connection closed mid-body".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[end..end + length].to_vec();
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn login(conn: &mut Conn, user: &str) -> Result<String, Error> {
    let body = json!({"username": user, "password": PASSWORD}).to_string();
    let (status, answer) = conn.request("POST", "/api/token", Some(&body)).await?;
    let v = json_of(&answer);
    match (status, v["access_token"].as_str(), v["refresh_token"].as_str()) {
        (200, Some(_), Some(refresh)) => Ok(refresh.to_string()),
        _ => Err(format!("login answered {status}: {v}").into()),
    }
}

async fn refresh(conn: &mut Conn, token: &str) -> Result<String, Error> {
    let body = json!({ "refresh_token": token }).to_string();
    let (status, answer) = conn.request("POST", "/api/refresh", Some(&body)).await?;
    let v = json_of(&answer);
    match (status, v["access_token"].as_str(), v["refresh_token"].as_str()) {
        (200, Some(_), Some(next)) if next != token => Ok(next.to_string()),
        _ => Err(format!("the refresh chain broke: {status}: {v}").into()),
    }
}

async fn revoke(conn: &mut Conn, token: &str) -> Result<(), Error> {
    revoke_only(conn, token).await?;
    refused(conn, token).await
}

async fn revoke_only(conn: &mut Conn, token: &str) -> Result<(), Error> {
    let body = json!({ "refresh_token": token }).to_string();
    let (status, answer) = conn.request("POST", "/api/revoke", Some(&body)).await?;
    if status != 200 {
        return Err(format!("revoke answered {status}: {}", String::from_utf8_lossy(&answer)).into());
    }
    Ok(())
}

/// The session is gone: its token must no longer refresh.
async fn refused(conn: &mut Conn, token: &str) -> Result<(), Error> {
    let body = json!({ "refresh_token": token }).to_string();
    let (status, _) = conn.request("POST", "/api/refresh", Some(&body)).await?;
    if status != 400 {
        return Err(format!("a revoked session still refreshes ({status})").into());
    }
    Ok(())
}

async fn noop(conn: &mut Conn) -> Result<(), Error> {
    let (status, _) = conn.request("GET", "/", None).await?;
    if status != 200 {
        return Err(format!("GET / answered {status}").into());
    }
    Ok(())
}

/// What one load phase measured.
#[derive(Debug, Clone)]
struct Phase {
    ops: usize,
    seconds: f64,
    /// Sorted latencies in microseconds.
    micros: Vec<u32>,
    peak_rss_kib: u64,
    /// CPU time (user + system) the server and this driver spent during the phase.
    cpu: Cpu,
}

/// CPU milliseconds of the server and of the driver over one phase.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server_ms: f64,
    driver_ms: f64,
}

impl Cpu {
    /// Starts counting: call [`Cpu::since`] at the end of the phase.
    fn now(server: &Server) -> Self {
        Self { server_ms: cpu_ms(&server.pid().to_string()), driver_ms: cpu_ms("self") }
    }
    fn since(self, server: &Server) -> Self {
        let end = Self::now(server);
        Self { server_ms: end.server_ms - self.server_ms, driver_ms: end.driver_ms - self.driver_ms }
    }
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
    /// CPU microseconds per operation: (server, driver).
    fn cpu_per_op_us(&self) -> (f64, f64) {
        let n = self.ops.max(1) as f64;
        (self.cpu.server_ms * 1000.0 / n, self.cpu.driver_ms * 1000.0 / n)
    }
    fn json(&self) -> Value {
        let (server_us, driver_us) = self.cpu_per_op_us();
        json!({
            "ops": self.ops, "seconds": self.seconds, "per_second": self.rate(),
            "p50_ms": self.percentile_ms(0.5), "p99_ms": self.percentile_ms(0.99),
            "p999_ms": self.percentile_ms(0.999), "peak_rss_mib": self.peak_rss_kib as f64 / 1024.0,
            "server_cpu_us_per_op": server_us, "driver_cpu_us_per_op": driver_us,
        })
    }
}

/// A running server process.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn memory_kib(&self, field: &str) -> u64 {
        memory_kib(self.pid(), field)
    }
    /// Resets the peak resident size (`VmHWM`) so the next phase reports its own peak.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

/// The store a server uses: the embedded one in `path` (or `:memory:`), or Cosmos DB through the
/// local test peer when `cosmos` holds a connection string and a database name.
struct Target {
    path: PathBuf,
    cosmos: Option<(String, String)>,
}

impl Target {
    fn embedded(path: &Path) -> Self {
        Self { path: path.to_path_buf(), cosmos: None }
    }
}

fn server_command(bin: &Path, target: &Target, port: u16) -> Command {
    let store = &target.path;
    let mut c = Command::new(bin);
    c.env_clear()
        .env("JwtRefreshToken__Descriptor__Issuer", "https://bench")
        .env("JwtRefreshToken__Descriptor__Audience", "bench")
        .env("JwtRefreshToken__Descriptor__AlgorithmKey", KEY)
        .env("JwtRefreshToken__Embedded__Path", store)
        .env("JwtRefreshToken__Login__MaxFailures", "1000")
        .env("JwtRefreshToken__Login__MaxFailuresPerUsername", "1000")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("BENCH_USERS", (0..MAX_CLIENTS).map(user).collect::<Vec<_>>().join(","))
        .env("BENCH_PASSWORD", PASSWORD)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some((connection, database)) = &target.cosmos {
        c.env("JwtRefreshToken__Cosmos__ConnectionString", connection)
            .env("JwtRefreshToken__Cosmos__DatabaseName", database);
    }
    c
}

fn add_user(handler: &Path, store: &Target, name: &str) -> Result<(), Error> {
    let mut add = server_command(handler, store, 0)
        .args(["user", "add", name, "--create", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = add.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(format!("{PASSWORD}\n").as_bytes())?;
    }
    if !add.wait()?.success() {
        return Err("user add failed".into());
    }
    Ok(())
}

/// Starts `bin` and waits for `GET /` to answer 200; returns it and the time from exec to that 200.
async fn start(bin: &Path, store: &Target) -> Result<(Server, Duration), Error> {
    let port = free_port()?;
    let mut command = server_command(bin, store, port);
    let t = Instant::now();
    let child = command.spawn()?;
    let server = Server { child, addr: format!("127.0.0.1:{port}") };
    loop {
        let mut conn = Conn::new(&server.addr);
        if noop(&mut conn).await.is_ok() {
            return Ok((server, t.elapsed()));
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err(format!("{} did not start", bin.display()).into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Closed loop: `clients` virtual clients each repeating `step` on its own connection until the
/// deadline; each step returns the latency of the operation it counts.
async fn closed_loop<S, F, Fut>(
    server: &Server,
    clients: usize,
    seconds: f64,
    states: Vec<S>,
    step: F,
) -> Result<(Phase, Vec<S>), Error>
where
    S: Send + 'static,
    F: Fn(Conn, S) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Result<(Conn, Option<S>, Duration), Error>> + Send,
{
    server.reset_peak();
    let cpu = Cpu::now(server);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut states = states.into_iter();
    for _ in 0..clients {
        let Some(first) = states.next() else { break };
        let addr = server.addr.clone();
        tasks.spawn(async move {
            let (mut conn, mut state, mut micros) = (Conn::new(&addr), Some(first), Vec::new());
            while Instant::now() < deadline {
                let Some(s) = state.take() else { break };
                let (c, next, took) = step(conn, s).await?;
                conn = c;
                state = next;
                micros.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Ok::<_, Error>((micros, state))
        });
    }
    let (phase, last) = gather(server, cpu, started, tasks).await?;
    Ok((phase, last.into_iter().flatten().collect()))
}

/// Waits for every virtual client of a phase (each answers its latencies and its final state) and
/// makes the phase of them: rate over the time it took, latencies sorted, peak memory, CPU.
async fn gather<S: 'static>(
    server: &Server,
    cpu: Cpu,
    started: Instant,
    mut tasks: tokio::task::JoinSet<Result<(Vec<u32>, S), Error>>,
) -> Result<(Phase, Vec<S>), Error> {
    let (mut all, mut states) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (micros, state) = done??;
        all.extend(micros);
        states.push(state);
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let cpu = cpu.since(server);
    Ok((Phase { ops: all.len(), seconds, micros: all, peak_rss_kib: server.memory_kib("VmHWM"), cpu }, states))
}

async fn noop_phase(server: &Server, clients: usize, seconds: f64) -> Result<Phase, Error> {
    closed_loop(server, clients, seconds, vec![(); clients], |mut conn, ()| async move {
        let t = Instant::now();
        noop(&mut conn).await?;
        Ok((conn, Some(()), t.elapsed()))
    })
    .await
    .map(|(phase, _)| phase)
}

/// Logins from every client; the refresh tokens of the sessions they made go to `sessions`.
async fn login_phase(server: &Server, clients: usize, seconds: f64) -> Result<(Phase, Vec<String>), Error> {
    let made = Arc::new(std::sync::Mutex::new(Vec::new()));
    let states = (0..clients).map(|i| (user(i), Arc::clone(&made))).collect();
    let (phase, _) = closed_loop(server, clients, seconds, states, |mut conn, (name, made)| async move {
        let t = Instant::now();
        let token = login(&mut conn, &name).await?;
        let took = t.elapsed();
        made.lock().map_err(|_| "poisoned")?.push(token);
        Ok((conn, Some((name, made)), took))
    })
    .await?;
    let sessions = std::mem::take(&mut *made.lock().map_err(|_| "poisoned")?);
    Ok((phase, sessions))
}

async fn refresh_phase(server: &Server, seconds: f64, sessions: Vec<String>) -> Result<(Phase, Vec<String>), Error> {
    let clients = sessions.len();
    let (phase, chains) = closed_loop(server, clients, seconds, sessions, |mut conn, token: String| async move {
        let t = Instant::now();
        let next = refresh(&mut conn, &token).await?;
        Ok((conn, Some(next), t.elapsed()))
    })
    .await?;
    if chains.len() != clients {
        return Err(format!("{} of {clients} refresh chains finished", chains.len()).into());
    }
    Ok((phase, chains))
}

/// Open loop at `rate` refreshes per second in total, spread over the sessions' clients.
async fn paced_refresh_phase(
    server: &Server,
    seconds: f64,
    sessions: Vec<String>,
    rate: f64,
) -> Result<(Phase, Vec<String>), Error> {
    server.reset_peak();
    let cpu = Cpu::now(server);
    let clients = sessions.len();
    let interval = Duration::from_secs_f64(clients as f64 / rate);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut token) in sessions.into_iter().enumerate() {
        let addr = server.addr.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(&addr);
            let mut micros = Vec::new();
            // Clients start evenly spread over one interval. A request whose predecessor answered
            // late is timed from when it was due, so a server that falls behind shows it in the
            // latency; one that waited for its turn is timed from when the timer woke it (tokio's
            // timer ticks in whole milliseconds: its lateness is the driver's, not the server's).
            let mut due = started + interval.mul_f64(i as f64 / clients as f64);
            while due < deadline {
                let sent = if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                token = refresh(&mut conn, &token).await?;
                micros.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                due += interval;
            }
            Ok::<_, Error>((micros, token))
        });
    }
    gather(server, cpu, started, tasks).await
}

async fn revoke_phase(server: &Server, clients: usize, sessions: Vec<String>) -> Result<Phase, Error> {
    let per_client = sessions.len().div_ceil(clients.max(1)).max(1);
    let states: Vec<Vec<String>> = sessions.chunks(per_client).map(<[String]>::to_vec).collect();
    let n = states.len();
    closed_loop(server, n, 3600.0, states, |mut conn, mut left: Vec<String>| async move {
        let token = left.pop().ok_or("no session left")?;
        let t = Instant::now();
        revoke(&mut conn, &token).await?;
        let took = t.elapsed();
        Ok((conn, if left.is_empty() { None } else { Some(left) }, took))
    })
    .await
    .map(|(phase, _)| phase)
}

/// The raw argon2id rate: `workers` threads verifying with the OWASP parameters for `seconds`.
fn argon2_rate(workers: usize, seconds: f64) -> f64 {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            std::thread::spawn(move || {
                let params = Params::default();
                let mut blocks = vec![Block::default(); params.block_count()];
                let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let mut out = [0u8; 32];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if hasher
                        .hash_password_into_with_memory(PASSWORD.as_bytes(), b"saltsaltsaltsalt", &mut out, &mut blocks)
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Cold start: exec → first `200` on `GET /`, and exec → first successful login, medians.
async fn cold_start(handler: &Path, store: &Target) -> Result<Value, Error> {
    let (mut bare, mut ready, mut first_login) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..COLD_STARTS {
        let t = Instant::now();
        Command::new("/bin/true").status()?;
        bare.push(t.elapsed());
        let t = Instant::now();
        let (server, to_ready) = start(handler, store).await?;
        ready.push(to_ready);
        login(&mut Conn::new(&server.addr), &user(0)).await?;
        first_login.push(t.elapsed());
    }
    Ok(json!({
        "starts": COLD_STARTS,
        "bare_exec_ms": median(bare),
        "ready_ms": median(ready),
        "first_login_ms": median(first_login),
    }))
}

/// Every phase on one server: the driver's whole measurement of one backend.
async fn backend(
    server: &Server,
    seconds: f64,
    clients: usize,
    workers: usize,
) -> Result<BTreeMap<&'static str, Phase>, Error> {
    let mut phases = BTreeMap::new();
    // Warm up connections and the dummy hash.
    noop_phase(server, clients, 0.5).await?;
    phases.insert("noop", noop_phase(server, clients, seconds).await?);
    // The raw argon2id rate right before and after the logins (the machine is shared: a rate from
    // another minute is not comparable), with the server's parameters and worker count.
    let before = argon2_rate(workers, seconds / 2.0);
    let (logins, mut sessions) = login_phase(server, clients, seconds).await?;
    let raw = (before + argon2_rate(workers, seconds / 2.0)) / 2.0;
    phases.insert("login", logins);
    phases.insert(
        "raw_argon2id",
        Phase { ops: (raw * seconds) as usize, seconds, micros: Vec::new(), peak_rss_kib: 0, cpu: Cpu::default() },
    );
    if sessions.len() < clients * 2 {
        return Err(format!("only {} logins in {seconds} s", sessions.len()).into());
    }
    let chains: Vec<String> = sessions.drain(..clients).collect();
    let (refreshes, chains) = refresh_phase(server, seconds, chains).await?;
    let half = refreshes.rate() / 2.0;
    phases.insert("refresh", refreshes);
    let (paced, chains) = paced_refresh_phase(server, seconds, chains, half).await?;
    phases.insert("refresh_half_load", paced);
    // The chains are still intact after both phases: each last token refreshes once more.
    let mut conn = Conn::new(&server.addr);
    for token in &chains {
        refresh(&mut conn, token).await?;
    }
    phases.insert("revoke", revoke_phase(server, clients, sessions).await?);
    Ok(phases)
}

/// The Cosmos DB test peer (`emulator/start.js`, Node.js), stopped on drop.
struct Emulator {
    child: Child,
    addr: String,
    endpoint: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    fn start() -> Result<Self, Error> {
        use std::io::BufRead as _;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulator");
        if !dir.join("node_modules/@vercel/cosmosdb-server/package.json").exists() {
            return Err(
                "the Cosmos test peer is not installed: run `npm ci` in emulator/ (scripts/bench.sh does)".into()
            );
        }
        let mut child = Command::new("node")
            .args(["start.js", "--http", "--port", "0", "--exit-with-stdin"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the Cosmos test peer with node: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout from the Cosmos test peer")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let endpoint =
            json_of(line.as_bytes())["endpoint"].as_str().ok_or("the Cosmos test peer named no endpoint")?.to_string();
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
        Ok(Self { child, addr, endpoint })
    }

    async fn control(&self, method: &str, path: &str) -> Result<Value, Error> {
        let (status, body) = Conn::new(&self.addr).request(method, &format!("/__emulator/{path}"), None).await?;
        if status != 200 {
            return Err(format!("Cosmos test peer {path} answered {status}").into());
        }
        Ok(json_of(&body))
    }

    /// Document requests (reads, writes, queries, batches; metadata excluded) that `op` sends.
    async fn requests_of(&self, op: impl std::future::Future<Output = Result<(), Error>>) -> Result<u64, Error> {
        self.control("POST", "reset-stats").await?;
        op.await?;
        let kinds = &self.control("GET", "stats").await?["byKind"];
        Ok(["read", "replace", "create", "upsert", "delete", "query", "batch"]
            .iter()
            .map(|k| kinds[*k].as_u64().unwrap_or(0))
            .sum())
    }
}

/// Round trips to Cosmos DB each operation may make (the same budgets `tests/cosmos.rs` enforces).
const COSMOS_BUDGETS: [(&str, u64); 3] = [("login", 3), ("refresh", 2), ("revoke", 2)];

/// The Cosmos store through the test peer: cold start (readiness does not wait for Cosmos),
/// requests sent per operation against the budgets, refresh latency, idle memory.
async fn cosmos_backend(handler: &Path, dir: &Path, seconds: f64, clients: usize) -> Result<Value, Error> {
    let peer = Emulator::start()?;
    let connection = format!(
        "AccountEndpoint={};AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;",
        peer.endpoint
    );
    let target = Target { path: dir.join("unused"), cosmos: Some((connection, "bench".into())) };
    for i in 0..clients {
        add_user(handler, &target, &user(i))?;
    }
    let cold = cold_start(handler, &target).await?;
    let (server, _) = start(handler, &target).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = server.memory_kib("VmRSS");
    // The server also reads one record every 2 s (the revoke-everyone epoch): each operation is
    // counted three times and the least count kept.
    let mut conn = Conn::new(&server.addr);
    let mut token = login(&mut conn, &user(0)).await?;
    let (mut logins, mut refreshes, mut revokes) = (u64::MAX, u64::MAX, u64::MAX);
    for _ in 0..3 {
        logins = logins.min(peer.requests_of(async { login(&mut conn, &user(0)).await.map(drop) }).await?);
        let mut next = String::new();
        refreshes = refreshes.min(
            peer.requests_of(async {
                next = refresh(&mut conn, &token).await?;
                Ok(())
            })
            .await?,
        );
        token = next;
        let victim = login(&mut conn, &user(0)).await?;
        revokes = revokes.min(peer.requests_of(revoke_only(&mut conn, &victim)).await?);
        refused(&mut conn, &victim).await?;
    }
    let mut counts = serde_json::Map::new();
    counts.insert("login".into(), logins.into());
    counts.insert("refresh".into(), refreshes.into());
    counts.insert("revoke".into(), revokes.into());
    for (op, budget) in COSMOS_BUDGETS {
        let n = counts.get(op).and_then(Value::as_u64).unwrap_or(u64::MAX);
        if n > budget {
            return Err(format!("{op} sent {n} requests to Cosmos DB, over its budget of {budget}").into());
        }
    }
    let noop = noop_phase(&server, clients, seconds).await?;
    let (_, sessions) = login_phase(&server, clients, seconds.min(2.0)).await?;
    if sessions.len() < clients {
        return Err(format!("only {} logins on Cosmos", sessions.len()).into());
    }
    let (refreshes, _) = refresh_phase(&server, seconds, sessions.into_iter().take(clients).collect()).await?;
    Ok(json!({
        "cold_start": cold,
        "idle_mib": idle as f64 / 1024.0,
        "requests": counts,
        "budgets": COSMOS_BUDGETS.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "noop": noop.json(),
        "refresh": refreshes.json(),
    }))
}

fn criterion_estimates(root: &Path) -> Value {
    let mut out = serde_json::Map::new();
    let Ok(groups) = std::fs::read_dir(root) else { return Value::Object(out) };
    let mut paths: Vec<PathBuf> = Vec::new();
    for group in groups.flatten() {
        if let Ok(benches) = std::fs::read_dir(group.path()) {
            paths.extend(benches.flatten().map(|b| b.path().join("new/estimates.json")).filter(|p| p.exists()));
        }
    }
    paths.sort();
    for p in paths {
        let Some(name) = p.parent().and_then(Path::parent).and_then(|b| {
            let bench = b.file_name()?.to_str()?;
            let group = b.parent()?.file_name()?.to_str()?;
            Some(format!("{group}/{bench}"))
        }) else {
            continue;
        };
        let ns = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64());
        if let Some(ns) = ns {
            out.insert(name, json!({"mean_ns": ns, "per_second_one_core": 1e9 / ns}));
        }
    }
    Value::Object(out)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: load <handler> <memory_server> [seconds] [clients]";
    let handler = PathBuf::from(args.get(1).ok_or(usage)?);
    let memory_server = PathBuf::from(args.get(2).ok_or(usage)?);
    let seconds: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let clients: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(8);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if clients == 0 || clients > MAX_CLIENTS {
        return Err(format!("clients must be 1 to {MAX_CLIENTS}").into());
    }
    let dir = tempfile::tempdir()?;
    let durable_store = Target::embedded(dir.path());
    for i in 0..clients {
        add_user(&handler, &durable_store, &user(i))?;
    }

    eprintln!("cold start ({COLD_STARTS} starts)");
    let cold = cold_start(&handler, &durable_store).await?;
    if std::env::var_os("LOAD_COLD_START_ONLY").is_some() {
        // For profiling start-up alone: `LOAD_COLD_START_ONLY=1 load <handler> <memory_server>`.
        println!("{}", serde_json::to_string_pretty(&cold)?);
        return Ok(());
    }

    eprintln!("durable embedded store");
    let (durable_server, _) = start(&handler, &durable_store).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let durable_idle = durable_server.memory_kib("VmRSS");
    let durable = backend(&durable_server, seconds, clients, workers).await?;
    drop(durable_server);

    eprintln!("in-memory embedded store");
    let (memory, _) = start(&memory_server, &Target::embedded(Path::new(":memory:"))).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let memory_idle = memory.memory_kib("VmRSS");
    let in_memory = backend(&memory, seconds, clients, workers).await?;
    drop(memory);

    eprintln!("Cosmos DB through the local test peer");
    let cosmos = cosmos_backend(&handler, dir.path(), seconds, clients).await?;

    let ratio = |phases: &BTreeMap<&str, Phase>, a: &str| {
        phases.get(a).map_or(0.0, Phase::rate) / phases.get("noop").map_or(1.0, Phase::rate)
    };
    let micro = criterion_estimates(Path::new("target/criterion"));
    let binary_bytes = std::fs::metadata(&handler)?.len();
    let memory_bound_mib = durable_idle as f64 / 1024.0 + workers as f64 * 19.0 + 32.0;
    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(1, |n| n.get()), "clients": clients, "seconds_per_phase": seconds, "hash_workers": workers},
        "durable": durable.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
        "in_memory": in_memory.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
        "ratios": {
            "durable_refresh_over_noop": ratio(&durable, "refresh"),
            "in_memory_refresh_over_noop": ratio(&in_memory, "refresh"),
            "durable_login_over_raw_argon2": ratio(&durable, "login") / ratio(&durable, "raw_argon2id"),
            "in_memory_login_over_raw_argon2": ratio(&in_memory, "login") / ratio(&in_memory, "raw_argon2id"),
        },
        "raw": {"micro": micro},
        "cold_start": cold,
        "memory": {
            "durable_idle_mib": durable_idle as f64 / 1024.0,
            "in_memory_idle_mib": memory_idle as f64 / 1024.0,
            "bound_mib": memory_bound_mib,
        },
        "release_binary_bytes": binary_bytes,
        "cosmos": cosmos,
    });
    std::fs::create_dir_all("bench")?;
    std::fs::write("bench/results.json", serde_json::to_string_pretty(&results)? + "\n")?;
    std::fs::write("bench/results.md", markdown(&results))?;
    plot(Path::new("bench/latency.png"), &durable, &in_memory)?;
    print!("{}", markdown(&results));
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s += &format!(
        "{} cores, driver on the same machine, {} keep-alive clients, {} s per phase, {} hashing workers.\n\n",
        m["cores"], m["clients"], m["seconds_per_phase"], m["hash_workers"]
    );
    s += "| store | operation | per second | × no-op | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | server CPU µs/op | driver CPU µs/op |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (store, label) in [("durable", "durable (WAL, FULL sync)"), ("in_memory", "in-memory")] {
        let noop = f(&r[store]["noop"]["per_second"]);
        for op in ["noop", "login", "refresh", "refresh_half_load", "revoke"] {
            let p = &r[store][op];
            if p.is_null() {
                continue;
            }
            s += &format!(
                "| {label} | {} | {:.0} | {:.3} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |\n",
                match op {
                    "noop" => "`GET /` (no-op)",
                    "login" => "login",
                    "refresh" => "refresh (chained)",
                    "refresh_half_load" => "refresh at ½ peak (open loop)",
                    _ => "revoke",
                },
                f(&p["per_second"]),
                f(&p["per_second"]) / noop,
                f(&p["p50_ms"]),
                f(&p["p99_ms"]),
                f(&p["p999_ms"]),
                f(&p["peak_rss_mib"]),
                f(&p["server_cpu_us_per_op"]),
                f(&p["driver_cpu_us_per_op"])
            );
        }
    }
    let raw = &r["raw"];
    s += &format!(
        "\n| raw limit (same run) | value |\n|---|---:|\n| argon2id m=19456 t=2 p=1, {} workers, around the durable / in-memory logins | {:.1} / {:.1} /s |\n",
        m["hash_workers"],
        f(&r["durable"]["raw_argon2id"]["per_second"]),
        f(&r["in_memory"]["raw_argon2id"]["per_second"])
    );
    if let Some(micro) = raw["micro"].as_object() {
        for (name, v) in micro {
            s += &format!(
                "| {name} (criterion, one core) | {:.0} /s ({:.1} µs) |\n",
                f(&v["per_second_one_core"]),
                f(&v["mean_ns"]) / 1000.0
            );
        }
    }
    let ratios = &r["ratios"];
    let c = &r["cold_start"];
    let mem = &r["memory"];
    s += &format!(
        "\n| check | measured | target |\n|---|---:|---:|\n\
         | durable refresh / no-op | {:.3} | ≥ 0.25 |\n\
         | in-memory refresh / no-op | {:.3} | ≥ 0.5 |\n\
         | durable refresh p99 at ½ peak | {:.2} ms | ≤ 2 ms |\n\
         | login / raw argon2id (durable, in-memory) | {:.2}, {:.2} | ≥ 0.9 |\n\
         | cold start exec → first 200 (median of {}) | {:.2} ms (bare exec {:.2} ms) | ≤ 5 ms |\n\
         | cold start exec → first login | {:.2} ms | |\n\
         | idle RSS (durable, in-memory) | {:.1}, {:.1} MiB | ≤ 12 MiB |\n\
         | peak RSS, any load (durable) | {:.1} MiB | ≤ {:.1} MiB |\n\
         | release binary | {:.1} MiB | |\n",
        f(&ratios["durable_refresh_over_noop"]),
        f(&ratios["in_memory_refresh_over_noop"]),
        f(&r["durable"]["refresh_half_load"]["p99_ms"]),
        f(&ratios["durable_login_over_raw_argon2"]),
        f(&ratios["in_memory_login_over_raw_argon2"]),
        c["starts"],
        f(&c["ready_ms"]),
        f(&c["bare_exec_ms"]),
        f(&c["first_login_ms"]),
        f(&mem["durable_idle_mib"]),
        f(&mem["in_memory_idle_mib"]),
        ["noop", "login", "refresh", "refresh_half_load", "revoke"]
            .iter()
            .map(|op| f(&r["durable"][op]["peak_rss_mib"]))
            .fold(0.0, f64::max),
        f(&mem["bound_mib"]),
        f(&r["release_binary_bytes"]) / 1048576.0,
    );
    let cosmos = &r["cosmos"];
    if !cosmos.is_null() {
        let cc = &cosmos["cold_start"];
        s += &format!(
            "\nCosmos DB through the local test peer (`emulator/`, one Node.js process on the same cores, \
             so latencies are the peer's, not Azure's):\n\n\
             | Cosmos DB | measured | budget / target |\n|---|---:|---:|\n\
             | document requests per login | {} | ≤ {} |\n\
             | document requests per refresh | {} | ≤ {} |\n\
             | document requests per revoke | {} | ≤ {} |\n\
             | refresh (chained, {} clients) | {:.0} /s, p50 {:.2} ms, p99 {:.2} ms | |\n\
             | `GET /` (no-op) of the same server | {:.0} /s | |\n\
             | cold start exec → first 200 (median of {}) | {:.2} ms | ≤ 5 ms |\n\
             | cold start exec → first login | {:.2} ms | |\n\
             | idle RSS | {:.1} MiB | ≤ 12 MiB |\n",
            cosmos["requests"]["login"],
            cosmos["budgets"]["login"],
            cosmos["requests"]["refresh"],
            cosmos["budgets"]["refresh"],
            cosmos["requests"]["revoke"],
            cosmos["budgets"]["revoke"],
            r["machine"]["clients"],
            f(&cosmos["refresh"]["per_second"]),
            f(&cosmos["refresh"]["p50_ms"]),
            f(&cosmos["refresh"]["p99_ms"]),
            f(&cosmos["noop"]["per_second"]),
            cc["starts"],
            f(&cc["ready_ms"]),
            f(&cc["first_login_ms"]),
            f(&cosmos["idle_mib"]),
        );
    }
    s
}

/// Latency distribution (CDF) of refresh, login-free operations and the no-op on both stores. No
/// text is drawn (the bitmap backend has no fonts here); the axes are explained in results.md.
fn plot(path: &Path, durable: &BTreeMap<&str, Phase>, memory: &BTreeMap<&str, Phase>) -> Result<(), Error> {
    use plotters::prelude::*;
    let series: Vec<(&Phase, RGBColor)> = [
        (durable.get("noop"), RGBColor(150, 150, 150)),
        (durable.get("refresh"), RGBColor(200, 30, 30)),
        (durable.get("refresh_half_load"), RGBColor(240, 140, 0)),
        (durable.get("revoke"), RGBColor(120, 60, 160)),
        (memory.get("refresh"), RGBColor(30, 90, 200)),
        (memory.get("refresh_half_load"), RGBColor(0, 160, 90)),
    ]
    .into_iter()
    .filter_map(|(p, c)| Some((p?, c)))
    .collect();
    let x_max = series.iter().map(|(p, _)| p.percentile_ms(0.999)).fold(1.0, f64::max).ceil();
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root).margin(20).build_cartesian_2d(0.0..x_max, 0.0..1.0)?;
    // Grid: a vertical line every millisecond, a horizontal one every 10 %, 50/99 % darker.
    for ms in 0..=(x_max as usize) {
        chart.draw_series(LineSeries::new([(ms as f64, 0.0), (ms as f64, 1.0)], RGBColor(225, 225, 225)))?;
    }
    for tenth in 0..=10 {
        let y = f64::from(tenth) / 10.0;
        chart.draw_series(LineSeries::new([(0.0, y), (x_max, y)], RGBColor(225, 225, 225)))?;
    }
    for y in [0.5, 0.99] {
        chart.draw_series(LineSeries::new([(0.0, y), (x_max, y)], RGBColor(120, 120, 120)))?;
    }
    for (phase, color) in series {
        let n = phase.micros.len().max(1) as f64;
        let step = (phase.micros.len() / 2000).max(1);
        let points = phase
            .micros
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, us)| ((f64::from(*us) / 1000.0).min(x_max), (i + 1) as f64 / n));
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}
