//! The harness: runs the real `handler` binary on a free port with a store of its own, talks HTTP
//! to it, runs its `user` commands, and collects its log lines.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jwt_refresh_token::settings::names;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Which store the handler under test uses; each test binary sets `crate::BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the test's temporary directory.
    Embedded,
    /// The local Cosmos DB test peer, one database per test store.
    Cosmos,
}

/// The store of this test binary.
pub fn backend() -> Backend {
    crate::BACKEND
}

/// Setting that selects Cosmos with an account key.
pub const CONNECTION_STRING_SETTING: &str = names::COSMOS_CONNECTION_STRING;

/// The Cosmos database of a test store: named after its temporary directory, so a restarted or a
/// second handler on the same store shares it.
pub fn database_for(store: &Path) -> String {
    let name: String = store
        .file_name()
        .map(|n| n.to_string_lossy().chars().filter(char::is_ascii_alphanumeric).collect())
        .unwrap_or_default();
    format!("api-{name}")
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_handler");
/// `iss` the service is configured with.
pub const ISSUER: &str = "https://issuer.test";
/// `aud` the service is configured with.
pub const AUDIENCE: &str = "api://test";
/// The HS256 signing key (40 ASCII bytes).
pub const KEY: &str = "kGI1AHvA0_6VFRKRKVydffGkrU8arDL70Jro3QxZbalR_L_u-0h_2zlP0AW5YW6G";
/// Password of the users the tests create.
pub const PASSWORD: &str = "correct horse battery staple";

pub const ISSUER_SETTING: &str = names::ISSUER;
pub const AUDIENCE_SETTING: &str = names::AUDIENCE;
pub const KEY_SETTING: &str = names::ALGORITHM_KEY;
pub const ALGORITHM_SETTING: &str = names::ALGORITHM;
pub const PATH_SETTING: &str = names::EMBEDDED_PATH;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// How to start the binary: extra settings (overriding the defaults), settings to leave unset, and
/// command-line arguments.
#[derive(Debug, Clone, Default)]
pub struct Config {
    env: Vec<(String, String)>,
    without: Vec<String>,
    args: Vec<String>,
}

impl Config {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or overrides) a setting.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets (or overrides) several settings.
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Self {
        self.env.extend(pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())));
        self
    }

    /// Leaves a default setting unset.
    pub fn without(mut self, name: &str) -> Self {
        self.without.push(name.to_string());
        self
    }

    /// Adds a command-line argument (before any subcommand).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// A command for the binary with these settings, on store directory `store`.
    fn command(&self, store: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args).args(args);
        // Settings are matched without case: nothing of the test runner's environment may leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().to_ascii_lowercase().starts_with("jwtrefreshtoken") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env(PATH_SETTING, store)
            .env(ISSUER_SETTING, ISSUER)
            .env(AUDIENCE_SETTING, AUDIENCE)
            .env(KEY_SETTING, KEY)
            .env("RUST_LOG", "info");
        if backend() == Backend::Cosmos {
            cmd.env(CONNECTION_STRING_SETTING, crate::emulator::connection_string())
                .env("JwtRefreshToken__Cosmos__DatabaseName", database_for(store));
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        for name in &self.without {
            cmd.env_remove(name);
        }
        cmd
    }
}

/// A process that ended on its own (start-up failures).
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Starts the binary with `config` and a fresh store, expecting it to exit by itself; kills it and
/// panics if it is still running after 15 s.
pub fn run_to_exit(config: &Config) -> Exited {
    let store = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = config
        .command(store.path(), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start handler");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for handler") {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the handler did not exit within {EXIT_TIMEOUT:?} ({config:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    Exited { status, stdout, stderr, elapsed }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics, showing the body, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?} (status {})", self.text(), self.status))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The (first) value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header").to_string())
    }
}

/// A running `handler` with a store of its own; killed on drop.
pub struct TestApp {
    child: Child,
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
    store: Arc<tempfile::TempDir>,
    config: Config,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("port", &self.port).field("config", &self.config).finish_non_exhaustive()
    }
}

struct Running {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn launch(config: &Config, store: &Path) -> Running {
    let mut child = config
        .command(store, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start handler");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    {
        let logs = Arc::clone(&logs);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = serde_json::from_str::<Value>(&line).ok();
                if let Some(port) = parsed.filter(|v| v["message"] == "listening").and_then(|v| v["port"].as_u64()) {
                    let _ = port_tx.send(u16::try_from(port).expect("port fits u16"));
                }
                logs.lock().expect("logs lock").push(line);
            }
        });
    }
    {
        let stderr_lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                stderr_lines.lock().expect("stderr lock").push(line);
            }
        });
    }
    match port_rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(port) => {
            // The Cosmos store connects after the port answers (requests before then get 503, as
            // the readiness tests show); a test of the routes waits for it, so a slow test peer
            // under a parallel suite cannot fail a test meant for something else. A handler that
            // never connects (an unreachable account, on purpose) is waited for at most 10 s.
            if backend() == Backend::Cosmos {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let connected = |logs: &Mutex<Vec<String>>| {
                    logs.lock().expect("logs lock").iter().any(|l| l.contains("connected to Cosmos DB"))
                };
                while !connected(&logs)
                    && std::time::Instant::now() < deadline
                    && child.try_wait().ok().flatten().is_none()
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Running { child, port, logs, stderr }
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
            panic!(
                "the handler did not report a port ({e}); stdout: {:?}; stderr: {:?}",
                logs.lock().expect("logs lock"),
                stderr.lock().expect("stderr lock")
            );
        }
    }
}

impl TestApp {
    /// A line of the handler's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Starts the service with the default settings plus `extra_env` (which override them).
    pub fn spawn(extra_env: &[(&str, &str)]) -> Self {
        Self::start(Config::new().envs(extra_env))
    }

    /// Starts the service with `config` on a fresh store.
    pub fn start(config: Config) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), config)
    }

    /// Starts the service with `config` on the store directory `store`.
    pub fn start_in(store: tempfile::TempDir, config: Config) -> Self {
        Self::start_on(Arc::new(store), config)
    }

    /// A second handler process with the same settings on the same store (a second instance of
    /// the Function App); both must behave as one.
    pub fn second_instance(&self) -> Self {
        Self::start_on(Arc::clone(&self.store), self.config.clone())
    }

    fn start_on(store: Arc<tempfile::TempDir>, config: Config) -> Self {
        let running = launch(&config, store.path());
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Self {
            child: running.child,
            port: running.port,
            base: format!("http://127.0.0.1:{}", running.port),
            client,
            store,
            config,
            logs: running.logs,
            stderr: running.stderr,
        }
    }

    /// Stops the process and starts a new one with the same settings on the same store.
    pub fn restart(mut self) -> Self {
        self.stop();
        let running = launch(&self.config, self.store.path());
        self.child = running.child;
        self.port = running.port;
        self.base = format!("http://127.0.0.1:{}", running.port);
        self.logs = running.logs;
        self.stderr = running.stderr;
        self
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every stdout line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs lock").clone()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits (up to 5 s) until the collected stdout lines satisfy `done`; returns them.
    pub async fn wait_for_logs(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines = self.logs();
            if done(&lines) || started.elapsed() > Duration::from_secs(5) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- the `user` commands -------------------------------------------------------------

    /// Runs `handler <args>` on this app's store, writing `stdin` to its standard input.
    pub fn run_cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .config
            .command(self.store.path(), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start handler CLI");
        {
            let mut input = child.stdin.take().expect("stdin");
            // The command may exit before reading (usage errors): ignore a broken pipe.
            let _ = input.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("wait for handler CLI")
    }

    /// `handler user add <name> [--role R]… --password-stdin`; returns the new user's id.
    pub fn add_user(&self, name: &str, password: &str, roles: &[&str]) -> String {
        let mut args = vec!["user", "add", name];
        for role in roles {
            args.extend(["--role", role]);
        }
        args.push("--password-stdin");
        let out = self.run_cli(&args, &format!("{password}\n"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "user add {name} failed: {out:?}");
        let id = stdout
            .split("(id ")
            .nth(1)
            .and_then(|rest| rest.split([',', ')']).next())
            .unwrap_or_else(|| panic!("no user id in {stdout:?}"));
        id.trim().to_string()
    }

    /// `handler user disable <name>`.
    pub fn disable_user(&self, name: &str) {
        let out = self.run_cli(&["user", "disable", name], "");
        assert!(out.status.success(), "user disable {name} failed: {out:?}");
    }

    /// `handler clients add <name>`; returns the client id and secret it printed.
    pub fn add_client(&self, name: &str) -> (String, String) {
        let out = self.run_cli(&["clients", "add", name], "");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "clients add {name} failed: {out:?}");
        let field = |key: &str| {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {stdout:?}"))
                .to_string()
        };
        (field("client_id="), field("client_secret="))
    }

    /// `POST /api/introspect` with a form `token=<token>` and Basic credentials `id:secret` (each
    /// form-encoded first, as RFC 6749 §2.3.1 says).
    pub async fn introspect(&self, token: &str, id: &str, secret: &str) -> Reply {
        let headers = [
            ("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("Authorization".to_string(), basic(id, secret)),
        ];
        let body = serde_urlencoded::to_string([("token", token)]).expect("form");
        self.request("POST", "/api/introspect", &headers, body.into_bytes()).await
    }

    // ----- HTTP ------------------------------------------------------------------------------

    /// Any request: `content_type` and `bearer` are sent when given.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
        bearer: Option<&str>,
    ) -> Reply {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        if let Some(token) = bearer {
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        self.request(method, path, &headers, body.into()).await
    }

    /// Any request with exactly the given headers.
    pub async fn request(&self, method: &str, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("response body").to_vec();
        Reply { status, headers, body }
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, value: &Value) -> Reply {
        self.raw("POST", path, Some("application/json"), value.to_string(), None).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, value: &Value) -> Reply {
        self.raw("PATCH", path, Some("application/json"), value.to_string(), None).await
    }

    /// `POST path` with a form body.
    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(pairs).expect("form");
        self.raw("POST", path, Some("application/x-www-form-urlencoded"), body, None).await
    }

    /// `POST path` with a JSON body and `Authorization: Bearer <bearer>`.
    pub async fn post_json_bearer(&self, path: &str, value: &Value, bearer: &str) -> Reply {
        self.raw("POST", path, Some("application/json"), value.to_string(), Some(bearer)).await
    }

    /// A JSON login.
    pub async fn try_login(&self, username: &str, password: &str) -> Reply {
        self.post_json("/api/token", &json!({ "username": username, "password": password })).await
    }

    /// A JSON login that must succeed; returns the token pair.
    pub async fn login(&self, username: &str, password: &str) -> Value {
        let r = self.try_login(username, password).await;
        assert_eq!(r.status, 200, "login of {username} failed: {}", r.text());
        r.json()
    }

    /// `POST /api/refresh {"refresh_token": …}`.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_json("/api/refresh", &json!({ "refresh_token": refresh_token })).await
    }

    /// A refresh that must succeed; returns the new pair.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Value {
        let r = self.refresh(refresh_token).await;
        assert_eq!(r.status, 200, "refresh failed: {}", r.text());
        r.json()
    }

    /// `POST /api/revoke {"refresh_token": …}`.
    pub async fn revoke(&self, refresh_token: &str) -> Reply {
        self.post_json("/api/revoke", &json!({ "refresh_token": refresh_token })).await
    }

    /// `POST /<function>` with an invocation payload whose request has `method`, `headers` (a JSON
    /// object) and `body` (JSON text); returns the outer status and the outer JSON.
    pub async fn invoke(&self, function: &str, method: &str, headers: Value, body: &str) -> (u16, Value) {
        self.invoke_with(function, method, headers, body, json!({}), json!({})).await
    }

    /// An invocation payload with route `params` and `query` as the host sends them.
    pub async fn invoke_with(
        &self,
        function: &str,
        method: &str,
        headers: Value,
        body: &str,
        params: Value,
        query: Value,
    ) -> (u16, Value) {
        let payload = json!({
            "Data": { "req": {
                "Url": format!("https://h/api/{function}"),
                "Method": method,
                "Query": query,
                "Headers": headers,
                "Params": params,
                "Body": body,
            }},
            "Metadata": { "sys": { "MethodName": function } },
        });
        let r = self.raw("POST", &format!("/{function}"), Some("application/json"), payload.to_string(), None).await;
        (r.status, r.json())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

// ----- invocation answers ----------------------------------------------------------------------

/// The inner response of an invocation answer: status, headers, body parsed as JSON.
pub fn inner(outer: &Value) -> (u16, Value, Value) {
    let res = &outer["Outputs"]["res"];
    let status = u16::try_from(res["statusCode"].as_u64().unwrap_or_else(|| panic!("no statusCode in {outer}")))
        .expect("status fits u16");
    let body_text = res["body"].as_str().unwrap_or_else(|| panic!("body is not a string in {outer}"));
    let body = serde_json::from_str(body_text).unwrap_or_else(|e| panic!("inner body is not JSON ({e}): {body_text}"));
    (status, res["headers"].clone(), body)
}

/// An `Authorization: Basic` value for `id` and `secret`, each form-encoded before the Basic
/// encoding (RFC 6749 §2.3.1).
pub fn basic(id: &str, secret: &str) -> String {
    let joined = format!("{}:{}", form_urlencoded(id), form_urlencoded(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(joined))
}

/// `value` form-encoded (`a b` as `a+b`).
pub fn form_urlencoded(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)]).expect("form").trim_start_matches("v=").to_string()
}

/// JSON headers in the `{"Name":["value"]}` form the host sends.
pub fn json_headers() -> Value {
    json!({ "Content-Type": ["application/json"] })
}

// ----- assertions ---------------------------------------------------------------------------------

/// An RFC 6749 error answer: `status`, JSON content type, exactly `error` and `error_description`.
pub fn assert_error(r: &Reply, status: u16, error: &str, context: &str) {
    assert_eq!(r.status, status, "{context}: status (body {})", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{context}: Content-Type {ct:?}");
    let body = r.json();
    let object = body.as_object().unwrap_or_else(|| panic!("{context}: body is not an object: {body}"));
    assert_eq!(object.len(), 2, "{context}: only error and error_description: {body}");
    assert_eq!(body["error"], error, "{context}: {body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "{context}: error_description must be a non-empty string: {body}");
}

/// 400 `invalid_grant`.
pub fn assert_invalid_grant(r: &Reply, context: &str) {
    assert_error(r, 400, "invalid_grant", context);
}

/// 400 `invalid_request`.
pub fn assert_invalid_request(r: &Reply, context: &str) {
    assert_error(r, 400, "invalid_request", context);
}

/// A successful token answer: 200, not cacheable, the five RFC 6749 fields.
pub fn assert_token_pair(r: &Reply, context: &str) -> Value {
    assert_eq!(r.status, 200, "{context}: {}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"), "{context}: Cache-Control");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{context}: Content-Type {ct:?}");
    let body = r.json();
    assert!(body["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3), "{context}: {body}");
    let bound = jwt_claims(body["access_token"].as_str().unwrap_or_default()).get("cnf").is_some();
    assert_eq!(body["token_type"], if bound { "DPoP" } else { "Bearer" }, "{context}: {body}");
    assert!(body["expires_in"].as_i64().is_some_and(|n| n > 0), "{context}: {body}");
    assert!(body["refresh_token"].as_str().is_some_and(|t| !t.is_empty()), "{context}: {body}");
    assert!(body["refresh_expires_in"].as_i64().is_some_and(|n| n > 0), "{context}: {body}");
    body
}

// ----- tokens ---------------------------------------------------------------------------------

/// `pair["refresh_token"]`.
pub fn refresh_token(pair: &Value) -> String {
    pair["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh_token in {pair}")).to_string()
}

/// `pair["access_token"]`.
pub fn access_token(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap_or_else(|| panic!("no access_token in {pair}")).to_string()
}

/// `token` with the character at `index` replaced by another base64url character.
pub fn tamper(token: &str, index: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[index] = if chars[index] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = b64url().decode(part).unwrap_or_else(|e| panic!("JWT part {index} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT part {index} is not JSON: {e}"))
}

/// The JOSE header of a JWT (not verified).
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

/// The claims of a JWT (not verified).
pub fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// Signs `claims` with `key` under a header of `alg`, `typ` and `kid` (each omitted when `None`).
pub fn forge(
    alg: jsonwebtoken::Algorithm,
    typ: Option<&str>,
    kid: Option<&str>,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.typ = typ.map(str::to_string);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign forged token")
}

/// An HS256 token signed with `secret`, typ `at+jwt`, key id `kid`.
pub fn forge_hs256(claims: &Value, kid: &str, secret: &str) -> String {
    forge(
        jsonwebtoken::Algorithm::HS256,
        Some("at+jwt"),
        Some(kid),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// A JWT with an arbitrary header and claims and the given signature part.
pub fn unsigned_jwt(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64url().encode(header.to_string()), b64url().encode(claims.to_string()))
}

/// `claims` with the fields of `changes` replaced (or added, or removed when `null`).
pub fn with_claims(claims: &Value, changes: &Value) -> Value {
    let mut out = claims.clone();
    let map = out.as_object_mut().expect("claims object");
    for (name, value) in changes.as_object().expect("changes object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    out
}

/// The contents of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
