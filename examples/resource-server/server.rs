//! An example resource server: an API that trusts jwt-refresh-token's access tokens without being
//! configured by hand, and without calling the token service for every request.
//!
//! - **Discovery.** At start it reads `{issuer}/.well-known/openid-configuration`, refuses a
//!   document whose `issuer` is not exactly the configured one (OpenID Connect Discovery §4.3),
//!   and takes `jwks_uri` and `introspection_endpoint` from it.
//! - **Local validation** (RFC 9068 §4, RFC 8725): signature with a key of the JWKS named by `kid`
//!   (ES256 or EdDSA only: an HS256 service publishes no key, and its tokens cannot be checked by a
//!   third party), `typ: at+jwt`, `iss`, `aud`, `exp` and `nbf` with a small leeway. The JWKS is
//!   cached; an unknown `kid` refetches it at most once per [`JWKS_REFETCH`], so forged `kid`s
//!   cannot make this server hammer the token service.
//! - **DPoP** (RFC 9449 §7): a token carrying `cnf.jkt` is accepted only as `Authorization: DPoP`
//!   with a proof for this very request (its method and this server's public URL), carrying `ath`,
//!   signed by the key whose thumbprint is `cnf.jkt`; the proof checks are the token service's own
//!   (`jwt_refresh_token::tokens::dpop`), including the single-use `jti` cache. Such a token sent
//!   as `Bearer` is refused with a `DPoP` challenge.
//! - **Introspection** (RFC 7662) for routes that must see a revocation at once: `GET /payments`
//!   also asks the token service whether the session is still live, authenticating with
//!   `client_secret_basic` (id and secret form-encoded before Basic encoding, RFC 6749 §2.3.1).
//!   `GET /me` validates locally only, so it keeps accepting a revoked session's token until `exp`
//!   — the trade-off that keeps access tokens short-lived.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use jwt_refresh_token::tokens::dpop::{ProofError, Proofs, Target};
use serde_json::{Value, json};

/// An unknown `kid` refetches the JWKS at most this often.
pub const JWKS_REFETCH: Duration = Duration::from_secs(30);
/// Leeway for `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 30;
/// How far a DPoP proof's `iat` may be from this server's clock.
const PROOF_MAX_AGE_MS: i64 = 60_000;

/// What the resource server is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The token service's Issuer, exactly (`https://<app>.azurewebsites.net/api`).
    pub issuer: String,
    /// The audience this API accepts (`Descriptor__Audience` of the token service).
    pub audience: String,
    /// This server's public base URL, which DPoP proofs name (`https://orders.example.com`).
    pub public_url: String,
    /// Credentials of an introspection client (`handler clients add NAME`), for `/payments`.
    pub introspection: Option<(String, String)>,
}

/// Why a start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The discovery document could not be fetched or read.
    #[error("discovery at {url}: {reason}")]
    Discovery {
        /// The URL fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document names another issuer (a misconfiguration or a spoofed document).
    #[error("the discovery document names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's.
        found: String,
    },
}

/// A refusal: 401 with a challenge (RFC 6750 §3, RFC 9449 §7.1).
#[derive(Debug)]
struct Refusal {
    scheme: &'static str,
    error: &'static str,
    description: String,
}

fn refuse(scheme: &'static str, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal { scheme, error, description: description.into() }
}

struct Keys {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

/// The resource server: configuration from discovery, the JWKS cache, the DPoP proof checker.
pub struct ResourceServer {
    config: Config,
    jwks_uri: String,
    introspection_endpoint: Option<String>,
    http: reqwest::Client,
    keys: Mutex<Keys>,
    proofs: Proofs,
}

impl std::fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceServer").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)] // an example outside the service: the system clock is the clock
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A string member of a JSON object.
fn text<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut key).unwrap_or_default();
    key
}

impl ResourceServer {
    /// Configures itself from the issuer's discovery document.
    pub async fn discover(config: Config) -> Result<Self, StartError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StartError::Discovery { url: String::new(), reason: e.to_string() })?;
        let url = format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'));
        let failed = |reason: String| StartError::Discovery { url: url.clone(), reason };
        let response = http.get(&url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status())));
        }
        let document: Value = response.json().await.map_err(|e| failed(e.to_string()))?;
        let found = text(&document, "issuer").unwrap_or_default();
        if found != config.issuer {
            return Err(StartError::IssuerMismatch { expected: config.issuer.clone(), found: found.to_string() });
        }
        let jwks_uri = text(&document, "jwks_uri").ok_or_else(|| failed("no jwks_uri".into()))?.to_string();
        let introspection_endpoint = text(&document, "introspection_endpoint").map(str::to_string);
        let proofs = Proofs::new(PROOF_MAX_AGE_MS, false, random_key());
        let keys = Mutex::new(Keys { by_kid: HashMap::new(), fetched: None });
        Ok(Self { config, jwks_uri, introspection_endpoint, http, keys, proofs })
    }

    /// The key for `kid`, refetching the JWKS when it is unknown (at most once per [`JWKS_REFETCH`]).
    async fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let stale = {
            let keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(found) = keys.by_kid.get(kid) {
                return Some(found.clone());
            }
            keys.fetched.is_none_or(|at| at.elapsed() >= JWKS_REFETCH)
        };
        if !stale {
            return None;
        }
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fetched = Some(Instant::now());
        let set: JwkSet = self.http.get(&self.jwks_uri).send().await.ok()?.json().await.ok()?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
                Some("ES256") => Algorithm::ES256,
                Some("EdDSA") => Algorithm::EdDSA,
                _ => continue, // only the asymmetric algorithms the service signs with
            };
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                by_kid.insert(kid.clone(), (algorithm, key));
            }
        }
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.by_kid = by_kid;
        keys.by_kid.get(kid).cloned()
    }

    /// The verified claims of the request's access token (Bearer, or DPoP with its proof).
    async fn authenticate(&self, req: &Request<Incoming>) -> Result<Value, Refusal> {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (scheme, token) = authorization.split_once(' ').unwrap_or((authorization, ""));
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => "Bearer",
            "dpop" => "DPoP",
            _ => return Err(refuse("Bearer", "invalid_request", "an access token is required")),
        };
        let token = token.trim();
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refuse(scheme, "invalid_token", "malformed token"))?;
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return Err(refuse(scheme, "invalid_token", "not an access token (typ)"));
        }
        let kid = header.kid.ok_or_else(|| refuse(scheme, "invalid_token", "no kid"))?;
        let (algorithm, key) = self.key(&kid).await.ok_or_else(|| refuse(scheme, "invalid_token", "unknown key"))?;
        if header.alg != algorithm {
            return Err(refuse(scheme, "invalid_token", "algorithm does not match the key"));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| refuse(scheme, "invalid_token", e.to_string()))?
            .claims;
        match (claims.get("cnf").and_then(|c| text(c, "jkt")), scheme) {
            (None, "Bearer") => Ok(claims),
            (None, _) => Err(refuse("DPoP", "invalid_token", "the token is not DPoP-bound")),
            (Some(_), "Bearer") => Err(refuse("DPoP", "invalid_token", "a DPoP-bound token needs the DPoP scheme")),
            (Some(jkt), _) => {
                self.check_proof(req, token, jkt)?;
                Ok(claims)
            }
        }
    }

    /// The request's single `DPoP` proof, for this request and this token, signed by the bound key.
    fn check_proof(&self, req: &Request<Incoming>, token: &str, jkt: &str) -> Result<(), Refusal> {
        let bad = |why: &str| refuse("DPoP", "invalid_dpop_proof", why);
        let mut proofs = req.headers().get_all("dpop").iter();
        let proof = proofs.next().and_then(|p| p.to_str().ok()).ok_or_else(|| bad("a DPoP proof is required"))?;
        if proofs.next().is_some() {
            return Err(bad("send exactly one DPoP proof"));
        }
        let url = format!("{}{}", self.config.public_url.trim_end_matches('/'), req.uri().path());
        let target = Target { method: req.method().as_str(), url: &url, access_token: Some(token) };
        let verified = self.proofs.verify(proof, target, now_ms()).map_err(|e| match e {
            ProofError::Invalid(why) => bad(why),
            ProofError::UseNonce | ProofError::Busy => bad("proof refused; retry"),
        })?;
        if verified.jkt != jkt {
            return Err(bad("the proof key is not the key the token is bound to"));
        }
        Ok(())
    }

    /// Introspection (RFC 7662): whether the token's session is still live at the token service.
    async fn still_active(&self, token: &str) -> Result<bool, Refusal> {
        let unavailable = || refuse("Bearer", "invalid_token", "introspection is not configured or not reachable");
        let (Some(endpoint), Some((id, secret))) = (&self.introspection_endpoint, &self.config.introspection) else {
            return Err(unavailable());
        };
        // RFC 6749 §2.3.1: each part form-encoded, then joined and Basic-encoded.
        let form =
            |v: &str| serde_urlencoded::to_string([("", v)]).unwrap_or_default().trim_start_matches('=').to_string();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", form(id), form(secret)));
        let answer: Value = self
            .http
            .post(endpoint)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|_| unavailable())?
            .json()
            .await
            .map_err(|_| unavailable())?;
        Ok(answer.get("active") == Some(&Value::Bool(true)))
    }

    /// Answers one request: `GET /me` (local validation) and `GET /payments` (plus introspection).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let sensitive = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/me") => false,
            ("GET", "/payments") => true,
            _ => return Ok(reply(StatusCode::NOT_FOUND, &json!({"error": "not_found"}), None)),
        };
        let claims = match self.authenticate(&req).await {
            Ok(claims) => claims,
            Err(refusal) => return Ok(refused(&refusal)),
        };
        if sensitive {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .map_or("", |(_, t)| t.trim());
            match self.still_active(token).await {
                Ok(true) => {}
                Ok(false) => return Ok(refused(&refuse("Bearer", "invalid_token", "the session has ended"))),
                Err(refusal) => return Ok(refused(&refusal)),
            }
        }
        Ok(reply(
            StatusCode::OK,
            &json!({ "sub": claims.get("sub"), "name": claims.get("name"), "sid": claims.get("sid") }),
            None,
        ))
    }
}

fn reply(status: StatusCode, body: &Value, challenge: Option<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    if let Some(value) = challenge.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn refused(r: &Refusal) -> Response<Full<Bytes>> {
    let description = r.description.replace('"', "'");
    let algs = if r.scheme == "DPoP" { ", algs=\"ES256 EdDSA RS256\"" } else { "" };
    let challenge = format!("{} error=\"{}\", error_description=\"{description}\"{algs}", r.scheme, r.error);
    reply(StatusCode::UNAUTHORIZED, &json!({"error": r.error, "error_description": r.description}), Some(challenge))
}

/// Serves `server` on `listener` until the task is dropped.
pub async fn serve(server: Arc<ResourceServer>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| Arc::clone(&server).handle(req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
