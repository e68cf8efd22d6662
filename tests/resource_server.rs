//! End to end: the example resource server (`examples/resource-server`) in front of the real
//! `handler` (ES256, embedded store, Issuer = its own reachable URL). It configures itself from
//! discovery, validates tokens with the JWKS, enforces DPoP `cnf.jkt`, and introspects on its
//! sensitive route.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../examples/resource-server/server.rs"]
#[allow(dead_code)]
mod server;

#[path = "support/dpop_client.rs"]
mod dpop_client;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dpop_client::ProofKey;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_handler");
const PASSWORD: &str = "plum umbrella cactus 1987";
const AUDIENCE: &str = "orders";

#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Handler {
    child: Child,
    issuer: String,
    _store: tempfile::TempDir,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(envs: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().to_ascii_lowercase().starts_with("jwtrefreshtoken") {
            cmd.env_remove(&name);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

fn run(envs: &[(String, String)], args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut child =
        command(envs, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The handler with ES256 on a fresh store, user alice, and an introspection client.
async fn handler() -> (Handler, (String, String)) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}/api");
    let store = tempfile::tempdir().unwrap();
    let key = run(&[], &["keys", "generate", "--algorithm", "ES256"], "");
    let envs: Vec<(String, String)> = [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string()),
        ("JwtRefreshToken__Descriptor__Issuer", issuer.clone()),
        ("JwtRefreshToken__Descriptor__Audience", AUDIENCE.to_string()),
        ("JwtRefreshToken__Descriptor__Algorithm", "ES256".to_string()),
        ("JwtRefreshToken__Descriptor__AlgorithmKey", key),
        ("JwtRefreshToken__Embedded__Path", store.path().to_str().unwrap().to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    run(&envs, &["user", "add", "alice", "--password-stdin", "--create"], &format!("{PASSWORD}\n"));
    let printed = run(&envs, &["clients", "add", "orders-api"], "");
    let fields: std::collections::HashMap<&str, &str> =
        printed.trim().split(' ').filter_map(|f| f.split_once('=')).collect();
    let client = (fields["client_id"].to_string(), fields["client_secret"].to_string());
    let child = command(&envs, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let handler = Handler { child, issuer, _store: store };
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{port}/")).await.is_ok_and(|r| r.status().is_success()) {
            return (handler, client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the handler did not start");
}

/// The resource server in-process on a free port; returns its base URL.
async fn resource_server(issuer: &str, audience: &str, client: Option<(String, String)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", listener.local_addr().unwrap());
    let config = server::Config {
        issuer: issuer.to_string(),
        audience: audience.to_string(),
        public_url: public_url.clone(),
        introspection: client,
    };
    let rs = Arc::new(server::ResourceServer::discover(config).await.expect("discovery"));
    tokio::spawn(server::serve(rs, listener));
    public_url
}

async fn login(issuer: &str, proof: Option<String>) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .json(&json!({"username": "alice", "password": PASSWORD}));
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn get(url: &str, authorization: &str, proof: Option<&str>) -> (u16, Value, String) {
    let mut req = reqwest::Client::new().get(url).header("Authorization", authorization);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, r.json().await.unwrap(), challenge)
}

#[tokio::test]
async fn bearer_tokens_are_validated_locally_and_the_sensitive_route_follows_revocation() {
    let (handler, client) = handler().await;
    let rs = resource_server(&handler.issuer, AUDIENCE, Some(client)).await;
    let pair = login(&handler.issuer, None).await;
    let access = pair["access_token"].as_str().unwrap();
    let bearer = format!("Bearer {access}");
    let (status, body, _) = get(&format!("{rs}/me"), &bearer, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "alice");
    assert_eq!(get(&format!("{rs}/payments"), &bearer, None).await.0, 200);

    // Forged, garbage and missing tokens.
    let mut forged = access.to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for (what, authorization) in
        [("forged", format!("Bearer {forged}")), ("garbage", "Bearer abc".to_string()), ("none", String::new())]
    {
        let (status, body, challenge) = get(&format!("{rs}/me"), &authorization, None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(challenge.starts_with("Bearer error="), "{what}: {challenge}");
    }
    // An API of another audience refuses the token.
    let other = resource_server(&handler.issuer, "payments-api", None).await;
    let (status, body, _) = get(&format!("{other}/me"), &bearer, None).await;
    assert_eq!(status, 401, "{body}");

    // After the session is revoked: the introspecting route refuses at once, the local one keeps
    // accepting the token until it expires (keep access tokens short-lived).
    let revoked = reqwest::Client::new()
        .post(format!("{}/revoke", handler.issuer))
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (status, body, _) = get(&format!("{rs}/payments"), &bearer, None).await;
    assert_eq!((status, body["error_description"].as_str()), (401, Some("the session has ended")));
    assert_eq!(get(&format!("{rs}/me"), &bearer, None).await.0, 200);
}

#[tokio::test]
async fn dpop_bound_tokens_need_a_proof_of_their_key_for_this_request() {
    let (handler, client) = handler().await;
    let rs = resource_server(&handler.issuer, AUDIENCE, Some(client)).await;
    let key = ProofKey::new();
    let pair =
        login(&handler.issuer, Some(key.proof_at("POST", &format!("{}/token", handler.issuer), now_s(), None, None)))
            .await;
    assert_eq!(pair["token_type"], "DPoP");
    let access = pair["access_token"].as_str().unwrap();
    let me = format!("{rs}/me");
    let (status, _, challenge) = get(&me, &format!("Bearer {access}"), None).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("DPoP error=\"invalid_token\""), "{challenge}");

    let scheme = format!("DPoP {access}");
    let proof = key.proof_at("GET", &me, now_s(), Some(access), None);
    let (status, body, _) = get(&me, &scheme, Some(&proof)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(
            &format!("{rs}/payments"),
            &scheme,
            Some(&key.proof_at("GET", &format!("{rs}/payments"), now_s(), Some(access), None))
        )
        .await
        .0,
        200
    );

    let refusals = [
        ("replayed proof", proof.clone()),
        ("no ath", key.proof_at("GET", &me, now_s(), None, None)),
        ("another route", key.proof_at("GET", &format!("{rs}/payments"), now_s(), Some(access), None)),
        ("another method", key.proof_at("POST", &me, now_s(), Some(access), None)),
        ("stale", key.proof_at("GET", &me, now_s() - 300, Some(access), None)),
        ("another key", ProofKey::new().proof_at("GET", &me, now_s(), Some(access), None)),
    ];
    for (what, proof) in refusals {
        let (status, body, challenge) = get(&me, &scheme, Some(&proof)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(challenge.starts_with("DPoP error=\"invalid_dpop_proof\""), "{what}: {challenge}");
    }
    let (status, _, _) = get(&me, &scheme, None).await;
    assert_eq!(status, 401, "no proof");
}

#[tokio::test]
async fn a_discovery_document_of_another_issuer_stops_start_up() {
    let (handler, _) = handler().await;
    let config = server::Config {
        issuer: format!("{}/", handler.issuer),
        audience: AUDIENCE.into(),
        public_url: "http://127.0.0.1:1".into(),
        introspection: None,
    };
    let refused = server::ResourceServer::discover(config).await;
    assert!(matches!(refused, Err(server::StartError::IssuerMismatch { .. })), "{refused:?}");
    let unreachable = server::Config {
        issuer: "http://127.0.0.1:1/api".into(),
        audience: AUDIENCE.into(),
        public_url: "http://127.0.0.1:1".into(),
        introspection: None,
    };
    assert!(matches!(server::ResourceServer::discover(unreachable).await, Err(server::StartError::Discovery { .. })));
}
