//! A test OpenID Connect provider on loopback, for "sign in with an ID token" (RFC 8693 token
//! exchange). Included with `#[path]` by the tests that need one: [`Provider::start`] binds
//! `127.0.0.1:0`, publishes one RS256 key `k1`, and answers
//!
//! - `GET /.well-known/openid-configuration`: the discovery document (OpenID Connect Discovery 1.0
//!   §3) naming the issuer and `jwks_uri`;
//! - `GET /jwks`: `{"keys": [...]}` (RFC 7517 §5) with a `Cache-Control` header;
//! - anything else: 404 (405 for another method on those two paths).
//!
//! [`Mode`] makes it fail: closed connections, slow answers, an 8 MiB JWKS, error statuses. The
//! published keys can be replaced at any time ([`Provider::publish`]) to test rotation, and the
//! provider counts the discovery and JWKS requests it receives so a test can check caching.
//!
//! The vendor helpers ([`apple_claims`], [`google_claims`], [`microsoft_claims`] with
//! [`apple_header`], [`google_header`], [`microsoft_header`]) give the shape of the ID tokens Apple,
//! Google and Microsoft issue. All three vendors sign with `alg: RS256` and name the key with a
//! `kid`; Google and Microsoft also send `typ: "JWT"`, Apple sends no `typ`. Sign them with an RS256
//! [`SigningKey`]: `key.sign(&apple_header(), &apple_claims(..))`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The path of the key set.
pub const JWKS_PATH: &str = "/jwks";
/// The `Cache-Control` of the JWKS answer until [`Provider::set_cache_control`] changes it.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=3600";
/// The least size of the JWKS answer in [`Mode::HugeJwks`]: 8 MiB.
pub const HUGE_JWKS_BYTES: usize = 8 * 1024 * 1024;
/// The size of each frame of a streamed answer.
const CHUNK_BYTES: usize = 64 * 1024;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The OpenID Connect `at_hash`/`c_hash` of `value` for RS256: the left half of its SHA-256,
/// base64url (OpenID Connect Core 1.0 §3.1.3.6, §3.3.2.11).
fn half_hash(value: &str) -> String {
    b64(&Sha256::digest(value.as_bytes())[..16])
}

/// Lowercase hex of the SHA-256 of `value`.
fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        write!(hex, "{byte:02x}").unwrap();
        hex
    })
}

/// Seconds since the epoch on this machine (the handler under test reads the same clock).
#[allow(clippy::disallowed_methods)]
fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock must not take the provider down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A provider's signing key with its `kid`: RS256 (2048-bit RSA) or ES256 (P-256).
#[derive(Clone, Debug)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn rs256(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let jwk = json!({
            "kty": "RSA",
            "kid": kid,
            "alg": "RS256",
            "use": "sig",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        });
        // jsonwebtoken reads RSA DER as PKCS#1 only; the PEM route takes the PKCS#8 aws-lc-rs makes.
        let pkcs8 = base64::engine::general_purpose::STANDARD.encode(pair.as_der().unwrap().as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in pkcs8.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        Self { kid: kid.to_owned(), alg: Algorithm::RS256, encoding, jwk }
    }

    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC",
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
            "crv": "P-256",
            "x": b64(&public[1..33]),
            "y": b64(&public[33..65]),
        });
        Self { kid: kid.to_owned(), alg: Algorithm::ES256, encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm this key signs with: `"RS256"` or `"ES256"`.
    pub fn alg(&self) -> &'static str {
        match self.alg {
            Algorithm::ES256 => "ES256",
            _ => "RS256",
        }
    }

    /// The public JWK as published: `kid`, `alg`, `use: "sig"`, `kty` and `n`/`e` or
    /// `crv`/`x`/`y`.
    pub fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A compact JWS of `claims` (used as given) with the header `{alg, kid, typ: "JWT"}` merged
    /// with `header_extra` (a JSON object, or `null` for none): each member replaces or adds that
    /// header parameter, and a `null` member removes it. The signature is always this key's own
    /// algorithm, so a header whose `alg` was overridden lies about it.
    pub fn sign(&self, header_extra: &Value, claims: &Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!(self.alg()));
        header.insert("kid".into(), json!(self.kid));
        header.insert("typ".into(), json!("JWT"));
        match header_extra {
            Value::Null => {}
            Value::Object(extra) => {
                for (name, value) in extra {
                    if value.is_null() {
                        header.remove(name);
                    } else {
                        header.insert(name.clone(), value.clone());
                    }
                }
            }
            other => panic!("header_extra must be a JSON object or null, not {other}"),
        }
        let signing_input =
            format!("{}.{}", b64(serde_json::to_vec(&header).unwrap()), b64(serde_json::to_vec(claims).unwrap()));
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{signing_input}.{signature}")
    }
}

/// How the provider answers. Every mode but [`Mode::HugeJwks`] applies to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally.
    Normal,
    /// Accept connections, read the request and close the connection without an answer.
    Down,
    /// Wait this long before answering normally.
    Slow(Duration),
    /// Answer `GET /jwks` with a valid JSON key set of at least [`HUGE_JWKS_BYTES`]: the published
    /// keys followed by bogus RSA keys, streamed in chunks without a `Content-Length`.
    HugeJwks,
    /// Answer every request with this status and a JSON error body.
    Status(u16),
}

/// The state the server tasks share with the [`Provider`] handle.
#[derive(Debug)]
struct Shared {
    issuer: String,
    mode: Mutex<Mode>,
    keys: Mutex<Vec<SigningKey>>,
    cache_control: Mutex<Option<String>>,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

/// A running provider on `127.0.0.1`. Dropping it stops the server and its connections.
#[derive(Debug)]
pub struct Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Provider {
    /// Starts a provider on `127.0.0.1:0` that publishes one fresh RS256 key, `k1`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            mode: Mutex::new(Mode::Normal),
            keys: Mutex::new(vec![SigningKey::rs256("k1")]),
            cache_control: Mutex::new(Some(DEFAULT_CACHE_CONTROL.to_owned())),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Self { addr, shared, server }
    }

    /// The issuer: `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The socket address the provider listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The discovery document's URL: the issuer + `/.well-known/openid-configuration`.
    pub fn discovery_uri(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.shared.issuer)
    }

    /// The key set's URL: the issuer + `/jwks`.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.shared.issuer)
    }

    /// Answers the following requests in `mode`. Panics on a [`Mode::Status`] that is not an HTTP
    /// status code (100..=999).
    pub fn set_mode(&self, mode: Mode) {
        if let Mode::Status(code) = mode {
            StatusCode::from_u16(code).unwrap();
        }
        *lock(&self.shared.mode) = mode;
    }

    /// Replaces the published key set (a rotation); the first key signs [`Provider::id_token`].
    pub fn publish(&self, keys: Vec<SigningKey>) {
        *lock(&self.shared.keys) = keys;
    }

    /// The first published key. Panics when none is published.
    pub fn key(&self) -> SigningKey {
        lock(&self.shared.keys).first().cloned().expect("the provider publishes no key")
    }

    /// Sets the `Cache-Control` header of the JWKS answer; `None` sends none. The default is
    /// [`DEFAULT_CACHE_CONTROL`].
    pub fn set_cache_control(&self, value: Option<&str>) {
        *lock(&self.shared.cache_control) = value.map(str::to_owned);
    }

    /// How many `GET /jwks` requests the provider received, in any mode (counted before a
    /// [`Mode::Down`] close, a [`Mode::Slow`] wait or a [`Mode::Status`] answer).
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// How many `GET /.well-known/openid-configuration` requests the provider received, counted
    /// as [`Provider::jwks_requests`] are.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// An ID token of `claims` (used as given) signed by the first published key, with the header
    /// `{alg, kid, typ: "JWT"}`.
    pub fn id_token(&self, claims: Value) -> String {
        self.key().sign(&Value::Null, &claims)
    }

    /// Valid claims for `aud` and `sub` now: this issuer, `iat` now, `exp` in ten minutes,
    /// `email` `<sub>@example.com`, `email_verified: true`.
    pub fn claims(&self, aud: &str, sub: &str) -> Value {
        let now = now_s();
        json!({
            "iss": self.shared.issuer,
            "aud": aud,
            "sub": sub,
            "iat": now,
            "exp": now + 600,
            "email": format!("{sub}@example.com"),
            "email_verified": true,
        })
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet: aborting it aborts them too.
        self.server.abort();
    }
}

/// Accepts connections until aborted, each served in its own task.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: let the machine breathe.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&shared), request));
                    // A closed or refused connection is the client's business.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One request's answer; an `Err` makes hyper close the connection without one.
async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Payload>, std::io::Error> {
    let get = request.method() == Method::GET;
    let path = request.uri().path();
    let known = path == DISCOVERY_PATH || path == JWKS_PATH;
    if get && path == DISCOVERY_PATH {
        shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    }
    if get && path == JWKS_PATH {
        shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    }
    let mode = *lock(&shared.mode);
    match mode {
        Mode::Down => return Err(std::io::Error::other("the test provider is down")),
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"error": "server_error", "error_description": format!("test provider answers {code}")});
            return Ok(json_response(status, &body));
        }
        Mode::Normal | Mode::HugeJwks => {}
    }
    Ok(match (known, get, path) {
        (false, _, _) => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        (true, false, _) => {
            let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method_not_allowed"}));
            response.headers_mut().insert(ALLOW, "GET".parse().unwrap());
            response
        }
        (true, true, DISCOVERY_PATH) => json_response(StatusCode::OK, &discovery(&shared.issuer)),
        (true, true, _) => {
            let keys: Vec<Value> = lock(&shared.keys).iter().map(SigningKey::public_jwk).collect();
            let mut response = if mode == Mode::HugeJwks {
                let mut response = Response::new(Payload::streamed(huge_jwks(&keys)));
                response.headers_mut().insert(CONTENT_TYPE, "application/json".parse().unwrap());
                response
            } else {
                json_response(StatusCode::OK, &json!({"keys": keys}))
            };
            if let Some(value) = lock(&shared.cache_control).as_deref() {
                response.headers_mut().insert(CACHE_CONTROL, value.parse().unwrap());
            }
            response
        }
    })
}

/// The discovery document (OpenID Connect Discovery 1.0 §3).
fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Payload> {
    let mut response = Response::new(Payload::sized(serde_json::to_vec(body).unwrap().into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

/// `{"keys": [...]}` of at least [`HUGE_JWKS_BYTES`]: `keys`, then bogus 2048-bit RSA keys.
fn huge_jwks(keys: &[Value]) -> Bytes {
    let mut body = String::with_capacity(HUGE_JWKS_BYTES + 1024);
    body.push_str(r#"{"keys":["#);
    for (index, key) in keys.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&key.to_string());
    }
    let modulus = b64([0xA5_u8; 256]);
    let mut index = 0_usize;
    while body.len() < HUGE_JWKS_BYTES {
        if index > 0 || !keys.is_empty() {
            body.push(',');
        }
        write!(
            body,
            r#"{{"kty":"RSA","kid":"bogus-{index:06}","alg":"RS256","use":"sig","n":"{modulus}","e":"AQAB"}}"#
        )
        .unwrap();
        index += 1;
    }
    body.push_str("]}");
    body.into()
}

/// A response body: one frame with a `Content-Length`, or frames of [`CHUNK_BYTES`] without one
/// (chunked transfer coding).
#[derive(Debug)]
struct Payload {
    rest: Bytes,
    chunk: usize,
    sized: bool,
}

impl Payload {
    fn sized(bytes: Bytes) -> Self {
        Self { chunk: bytes.len().max(1), rest: bytes, sized: true }
    }

    fn streamed(bytes: Bytes) -> Self {
        Self { rest: bytes, chunk: CHUNK_BYTES, sized: false }
    }
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let take = this.chunk.min(this.rest.len());
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized { SizeHint::with_exact(self.rest.len() as u64) } else { SizeHint::default() }
    }
}

/// The header parameters to merge for an Apple ID token: `{alg: RS256, kid}` and no `typ`, as
/// Apple sends them (keys at <https://appleid.apple.com/auth/keys>).
pub fn apple_header() -> Value {
    json!({"typ": null})
}

/// The claims of a Sign in with Apple ID token for a user who hid their email, as
/// <https://developer.apple.com/documentation/signinwithapple/authenticating-users-with-sign-in-with-apple>
/// describes them ("Retrieve the user's information from Apple ID servers"). Apple's quirks are
/// kept: `email_verified` and `is_private_email` are the strings `"true"`, and `nonce` is the
/// lowercase hex SHA-256 of `raw_nonce` (the client sends Apple the hash and keeps the raw value,
/// <https://firebase.google.com/docs/auth/ios/apple>). `sub` is shaped like
/// `001234.0123456789abcdef0123456789abcdef.1234`; `real_user_status` 2 is "likely real".
pub fn apple_claims(aud: &str, sub: &str, raw_nonce: &str, now: i64) -> Value {
    json!({
        "iss": "https://appleid.apple.com",
        "aud": aud,
        "exp": now + 600,
        "iat": now,
        "sub": sub,
        "c_hash": half_hash(&format!("c{}.0.{}.apple-authorization-code", sha256_hex(sub), now)),
        "email": "x@privaterelay.appleid.com",
        "email_verified": "true",
        "is_private_email": "true",
        "auth_time": now,
        "nonce_supported": true,
        "nonce": sha256_hex(raw_nonce),
        "real_user_status": 2,
    })
}

/// The header parameters to merge for a Google ID token: none, the default
/// `{alg: RS256, kid, typ: "JWT"}` is what Google sends
/// (<https://developers.google.com/identity/openid-connect/openid-connect#obtainuserinfo>).
pub fn google_header() -> Value {
    json!({})
}

/// The claims of a Google ID token, as "An ID token's payload" on
/// <https://developers.google.com/identity/openid-connect/openid-connect#an-id-tokens-payload>
/// lists them: `azp` is the client that asked, `aud` the one it is for (the same for most apps),
/// `sub` is 21 digits, `email_verified` a boolean, `exp` an hour after `iat`.
pub fn google_claims(aud: &str, azp: &str, sub: &str, nonce: &str, now: i64) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "azp": azp,
        "aud": aud,
        "sub": sub,
        "email": "someone@gmail.com",
        "email_verified": true,
        "at_hash": half_hash(&format!("ya29.a0{}{now}", sha256_hex(sub))),
        "nonce": nonce,
        "name": "Someone Example",
        "picture": "https://lh3.googleusercontent.com/a/ACg8ocIbQ2R7wL0S9kZ3nJ5fX8mT1yV4uH6dP2eG0cB7aK9s=s96-c",
        "given_name": "Someone",
        "family_name": "Example",
        "iat": now,
        "exp": now + 3600,
    })
}

/// The header parameters to merge for a Microsoft identity platform v2.0 ID token: none, the
/// default `{typ: "JWT", alg: RS256, kid}` is what it sends (v2.0 drops the v1.0 `x5t`).
pub fn microsoft_header() -> Value {
    json!({})
}

/// The claims of a Microsoft identity platform v2.0 ID token for tenant `tid` and user `oid`, as
/// <https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference> lists
/// them: `sub` is pairwise (an opaque string per user and application, derived here from `tid`,
/// `oid` and `aud`), `aio`, `uti` and `rh` are opaque internal claims, `exp` an hour after `iat`.
pub fn microsoft_claims(aud: &str, tid: &str, oid: &str, nonce: &str, now: i64) -> Value {
    let pairwise = b64(Sha256::digest(format!("{tid}/{oid}/{aud}").as_bytes()));
    let uti = b64(&Sha256::digest(format!("{oid}/{nonce}/{now}").as_bytes())[..16]);
    json!({
        "ver": "2.0",
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "sub": pairwise,
        "aud": aud,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "name": "Someone Example",
        "preferred_username": "someone@contoso.onmicrosoft.com",
        "oid": oid,
        "tid": tid,
        "nonce": nonce,
        "aio": "AWQAm/8ZAAAAd1M2QxYzTk5cUl9wbzRkR1FvVjhmS3dFc1B6Nk1tT3lKaEx0Rmc3WnNQZkJhMkVqVnE5eA==",
        "uti": uti,
        "rh": format!("0.ARoA{}AAAAAAAAAAAAAA.", b64(&Sha256::digest(aud.as_bytes())[..16])),
        "email": "someone@contoso.com",
    })
}
