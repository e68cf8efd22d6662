//! Typed, validated settings read from app settings (environment variables).
//!
//! Names follow the .NET package Jwt.Refresh.Token.Cosmos (`JwtRefreshToken:Descriptor:Issuer`), written
//! the way Azure app settings nest them (`JwtRefreshToken__Descriptor__Issuer`). Names are matched
//! without regard to case, and `:` is accepted in place of `__`. Every problem names its setting.

use std::path::PathBuf;

use crate::secret::SecretBytes;

mod cosmos;
pub mod email;
pub mod entropy;
mod env;
pub mod federation;
pub mod names;

pub use cosmos::{CosmosAuth, CosmosSettings, Identity, load_store};
pub use env::Env;
pub use names::DefaultValue;

/// Port used when the host did not set one (the same as `func start`).
pub const DEFAULT_PORT: u16 = 7071;

/// A setting that is missing or invalid. `Display` gives one line naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {setting}: {problem}")]
pub struct SettingsError {
    /// The full setting name, e.g. `JwtRefreshToken__Descriptor__Issuer`.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingsError {
    pub(crate) fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { setting: setting.into(), problem: problem.into() }
    }
}

/// Signing algorithms for access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// HMAC-SHA256 with the UTF-8 bytes of `AlgorithmKey` (at least 32 bytes), as the .NET package.
    Hs256,
    /// ECDSA P-256 with a PKCS#8 PEM private key.
    Es256,
    /// Ed25519 with a PKCS#8 PEM private key.
    EdDsa,
}

impl SigningAlgorithm {
    /// The JOSE name (`HS256`, `ES256`, `EdDSA`).
    pub fn jose_name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses `HS256`, `ES256` or `EdDSA` (and a few aliases), without case.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_uppercase().as_str() {
            "HS256" | "HMACSHA256" | "HMAC-SHA256" => Some(Self::Hs256),
            "ES256" => Some(Self::Es256),
            "EDDSA" | "ED25519" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// How access tokens are described and signed (`JwtRefreshToken__Descriptor__*`).
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// `iss` of every access token, and the only issuer accepted.
    pub issuer: String,
    /// `aud` of every access token, and the only audience accepted.
    pub audience: String,
    /// Signing algorithm.
    pub algorithm: SigningAlgorithm,
    /// HS256: the secret; ES256/EdDSA: the PKCS#8 PEM private key.
    pub algorithm_key: SecretBytes,
    /// Keys of earlier rotations, still accepted (and, when public, still published).
    pub previous_keys: Vec<SecretBytes>,
    /// Allowance for clock differences when checking `exp` and `nbf`.
    pub clock_skew_ms: i64,
}

/// Lifetimes (`JwtRefreshToken__Expires__*`).
#[derive(Debug, Clone, Copy)]
pub struct Expires {
    /// Access-token lifetime.
    pub create_expires_in_ms: i64,
    /// Absolute session lifetime; rotation never extends it.
    pub refresh_expires_in_ms: i64,
    /// Inactivity timeout: a session not refreshed for this long ends (0 = off).
    pub idle_expires_in_ms: i64,
    /// Most sessions per user; a login beyond it ends the least recently used ones.
    pub max_sessions_per_user: usize,
}

/// Who may create an account over HTTP (`JwtRefreshToken__Registration__Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    /// `POST /api/register` answers 403; admins create users (`POST /api/users`, the CLI).
    Closed,
    /// Anyone may sign up (throttled per client address).
    Open,
}

/// Sign-up and password rules (`JwtRefreshToken__Registration__*`, `JwtRefreshToken__Password__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounts {
    /// Whether sign-up is open.
    pub registration: RegistrationMode,
    /// Sign-ups accepted from one client address per window.
    pub max_signups_per_address: u32,
    /// The sign-up throttle's window.
    pub signup_window_ms: i64,
    /// Shortest new password, in characters.
    pub password_min_chars: usize,
    /// Sign-ups one instance accepts per minute from all addresses together.
    pub max_signups_per_minute: u32,
}

/// Refresh-token rotation (`JwtRefreshToken__Rotation__*`).
#[derive(Debug, Clone)]
pub struct Rotation {
    /// How long the immediately previous refresh token still yields the same successor.
    pub reuse_grace_ms: i64,
    /// Server-side secret mixed into every refresh token (HKDF of AlgorithmKey when unset).
    pub secret: Option<SecretBytes>,
}

/// Login throttling (`JwtRefreshToken__Login__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    /// Failures from one client address before the username is locked for that address.
    pub max_failures: u32,
    /// Failures from all addresses together before the username is locked everywhere (the
    /// backstop against guessing from many addresses).
    pub max_failures_per_username: u32,
    /// How long a lock lasts, and the window in which failures add up.
    pub lockout_ms: i64,
    /// How long a device token stays valid (`Login__DeviceTokenLifetimeDays`).
    pub device_token_ttl_ms: i64,
}

/// Password hashing (`JwtRefreshToken__Login__Hash*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashing {
    /// Hashing worker threads, each owning one argon2 memory block (19 MiB) for its lifetime.
    pub workers: usize,
    /// Hashing requests that may wait for a worker; more are refused at once with 503.
    pub queue_length: usize,
    /// Longest a request may wait for a worker before it is answered with 503.
    pub queue_timeout_ms: u64,
}

impl Default for Hashing {
    /// The defaults of the settings: one worker per core (at most 4), 64 waiting, 2 s.
    fn default() -> Self {
        Self { workers: default_hash_workers(), queue_length: 64, queue_timeout_ms: 2_000 }
    }
}

/// HTTP connection limits (`JwtRefreshToken__Http__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http {
    /// Time a client has to send a request's headers once it started a request.
    pub header_read_timeout_ms: u64,
    /// Time an idle keep-alive connection stays open.
    pub idle_timeout_ms: u64,
    /// Time a client has to send a request's whole body once its headers arrived.
    pub body_read_timeout_ms: u64,
    /// Open connections at most (idle ones are closed first to make room).
    pub max_connections: usize,
    /// Proxies that append to `X-Forwarded-For` (`Network__TrustedProxyHops`; see
    /// `http::client_address`).
    pub trusted_proxy_hops: usize,
}

/// Browser origins allowed to call the service with credentials (`JwtRefreshToken__Cors__*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), compared without case.
    pub allowed_origins: Vec<String>,
}

impl Cors {
    /// Whether `origin` is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim();
        self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether any origin is allowed.
    pub fn is_enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }
}

/// `https://host[:port]` or `http://…`, nothing else: credentials never go to a wildcard.
fn load_cors(env: &Env) -> Result<Cors, SettingsError> {
    let Some(raw) = env.get(CORS_ALLOWED_ORIGINS) else { return Ok(Cors::default()) };
    let mut allowed_origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        let valid = rest.is_some_and(|host| {
            !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
                && !host.starts_with(':')
        });
        if !valid {
            return Err(SettingsError::new(
                CORS_ALLOWED_ORIGINS,
                format!(
                    "must be a comma-separated list of exact origins like https://app.example.com (no path, no \
                     wildcard), got {:?}",
                    shorten(origin)
                ),
            ));
        }
        allowed_origins.push(origin.to_ascii_lowercase());
    }
    Ok(Cors { allowed_origins })
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// SQLite in WAL mode, in a directory of its own.
    Embedded {
        /// Directory holding the database (`JwtRefreshToken__Embedded__Path`); `:memory:` keeps
        /// the store in memory instead (tests, demos, measuring CPU cost apart from disk sync:
        /// nothing survives the process, and `user` commands of another process cannot reach it).
        path: PathBuf,
    },
    /// Azure Cosmos DB (NoSQL API).
    Cosmos(CosmosSettings),
}

/// Whether missing signing settings may be filled with development defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Issuer, Audience and AlgorithmKey must be set.
    Production,
    /// Missing Issuer and Audience get local defaults. The signing key must still be in the
    /// environment: start-up puts the development key there (see `startup::development_env`).
    Development,
}

/// All of the service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Token description and signing.
    pub descriptor: Descriptor,
    /// Lifetimes.
    pub expires: Expires,
    /// Rotation.
    pub rotation: Rotation,
    /// Login throttling.
    pub login: Login,
    /// Password hashing.
    pub hashing: Hashing,
    /// HTTP connection limits.
    pub http: Http,
    /// Browser origins (CORS and cookie transport).
    pub cors: Cors,
    /// Sign-up and password rules.
    pub accounts: Accounts,
    /// Introspection requests one client may make per minute on each instance.
    pub introspection_max_per_minute: u32,
    /// DPoP (RFC 9449) proofs.
    pub dpop: Dpop,
    /// The discovery documents' `service_documentation`, if set.
    pub service_documentation: Option<String>,
    /// Sign-in providers whose ID tokens are exchanged for sessions.
    pub federation: federation::Federation,
    /// The `issuer` of TOTP enrolments.
    pub totp_issuer: String,
    /// Passkeys (WebAuthn), when a relying party is configured.
    pub passkeys: Option<Passkeys>,
    /// E-mail: transport, templates, codes and notices.
    pub email: email::Email,
    /// State.
    pub store: StoreSettings,
    /// Listening port (0 picks a free one).
    pub port: u16,
    /// The mode the settings were loaded in.
    pub mode: Mode,
}

/// The WebAuthn relying party of passkeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkeys {
    /// The RP id (a registrable domain).
    pub rp_id: String,
    /// The RP name.
    pub rp_name: String,
    /// The allowed origins (at least one).
    pub origins: Vec<String>,
}

fn load_passkeys(env: &Env) -> Result<Option<Passkeys>, SettingsError> {
    use names::{PASSKEYS_ORIGINS, PASSKEYS_RP_ID, PASSKEYS_RP_NAME};
    let Some(rp_id) = env.get(PASSKEYS_RP_ID).map(|v| v.trim().to_ascii_lowercase()) else {
        return Ok(None);
    };
    if rp_id.contains(['/', ':', ' ']) || rp_id.is_empty() {
        return Err(SettingsError::new(
            PASSKEYS_RP_ID,
            format!("must be a domain name (no scheme, port or path), got {:?}", shorten(&rp_id)),
        ));
    }
    let origins: Vec<String> = env
        .get(PASSKEYS_ORIGINS)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    if origins.is_empty() {
        return Err(SettingsError::new(
            PASSKEYS_ORIGINS,
            "is missing: name the web app's origin, e.g. https://app.example.com",
        ));
    }
    for origin in &origins {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://").filter(|_| rp_id == "localhost"))
            .map(|rest| rest.split([':', '/']).next().unwrap_or_default());
        let under = host.is_some_and(|h| h == rp_id || h.ends_with(&format!(".{rp_id}")));
        if !under {
            return Err(SettingsError::new(
                PASSKEYS_ORIGINS,
                format!("{:?} is not an https origin at or under {rp_id}", shorten(origin)),
            ));
        }
    }
    let rp_name = env.get(PASSKEYS_RP_NAME).unwrap_or(names::text_default(PASSKEYS_RP_NAME)).trim().to_string();
    Ok(Some(Passkeys { rp_id, rp_name, origins }))
}

/// DPoP (RFC 9449) proof rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpop {
    /// Every token request must carry a proof (no bearer sessions).
    pub required: bool,
    /// Proofs must carry a current server nonce (`DPoP-Nonce`).
    pub require_nonce: bool,
    /// How far a proof's `iat` may be from now, either way.
    pub proof_max_age_ms: i64,
}

use env::shorten;
pub use names::DEFAULT_EMBEDDED_PATH;
use names::{
    ALGORITHM, ALGORITHM_KEY, AUDIENCE, BODY_READ_TIMEOUT, CLOCK_SKEW, CORS_ALLOWED_ORIGINS, COSMOS_CONNECTION_STRING,
    CREATE_EXPIRES, DEVICE_TOKEN_LIFETIME, DPOP_PROOF_MAX_AGE, DPOP_REQUIRE_NONCE, DPOP_REQUIRED, HASH_QUEUE,
    HASH_QUEUE_TIMEOUT, HASH_WORKERS, HEADER_READ_TIMEOUT, IDLE_EXPIRES, IDLE_TIMEOUT, INTROSPECTION_MAX_PER_MINUTE,
    ISSUER, LOCKOUT, MAX_CONNECTIONS, MAX_FAILURES, MAX_FAILURES_PER_USERNAME, PASSWORD_MIN_LENGTH, PORT,
    PREVIOUS_KEYS, REFRESH_EXPIRES, REGISTRATION_MAX_PER_ADDRESS, REGISTRATION_MAX_PER_MINUTE, REGISTRATION_MODE,
    REGISTRATION_WINDOW, REUSE_GRACE, ROTATION_SECRET, SERVICE_DOCUMENTATION, SESSIONS_MAX_PER_USER, STRICT_SETTINGS,
    TRUSTED_PROXY_HOPS,
};
/// Issuer used in development mode when none is set.
pub const DEV_ISSUER: &str = "http://localhost:7071";
/// Audience used in development mode when none is set.
pub const DEV_AUDIENCE: &str = "jwt-refresh-token-dev";
const MIN_HS256_KEY_BYTES: usize = 32;

/// Hashing workers when the setting is absent: one per core, at most 4 (76 MiB).
fn default_hash_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).clamp(1, 4)
}

/// A secret setting (HS256 key, rotation secret): long enough, and hard to guess by its character
/// statistics. Its guessing patterns are scored later, by [`Settings::secrets_to_score`] and
/// [`check_secret_scores`] (see [`entropy`] for why).
fn strong_secret(name: &str, value: &str) -> Result<SecretBytes, SettingsError> {
    if value.len() < MIN_HS256_KEY_BYTES {
        return Err(SettingsError::new(
            name,
            format!(
                "must be at least {MIN_HS256_KEY_BYTES} bytes, got {}; generate one with `handler keys generate --algorithm HS256`",
                value.len()
            ),
        ));
    }
    enough_bits(name, entropy::statistical_bits(value))?;
    Ok(SecretBytes::new(value.as_bytes().to_vec()))
}

fn enough_bits(name: &str, bits: f64) -> Result<(), SettingsError> {
    if bits < entropy::MIN_SECRET_BITS {
        return Err(SettingsError::new(
            name,
            format!(
                "is too easy to guess (about {bits:.0} bits, at least {} needed: repeated characters, a small alphabet or \
                 dictionary words); generate one with `handler keys generate --algorithm HS256`",
                entropy::MIN_SECRET_BITS
            ),
        ));
    }
    Ok(())
}

/// Checks the guessing-pattern scores (in bits, [`entropy::pattern_bits`]) of the secrets that
/// [`Settings::secrets_to_score`] listed; the first too low names its setting.
pub fn check_secret_scores(scores: &[(&'static str, f64)]) -> Result<(), SettingsError> {
    scores.iter().try_for_each(|&(name, bits)| enough_bits(name, bits))
}

impl Settings {
    /// The secret settings whose guessing patterns are still to be scored before a key is used:
    /// the HS256 signing key and the rotation secret, as (setting, value).
    pub fn secrets_to_score(&self) -> Vec<(&'static str, SecretBytes)> {
        let key = (self.descriptor.algorithm == SigningAlgorithm::Hs256)
            .then(|| (ALGORITHM_KEY, self.descriptor.algorithm_key.clone()));
        let rotation = self.rotation.secret.clone().map(|s| (ROTATION_SECRET, s));
        key.into_iter().chain(rotation).collect()
    }

    /// Loads and validates every setting. Pure: reads `env`, writes nothing. Every missing or
    /// invalid setting is reported, not only the first.
    pub fn load(env: &Env, mode: Mode) -> Result<Self, SettingsErrors> {
        let mut p = Problems::default();
        let store = p.take(load_store(env), || StoreSettings::Embedded { path: PathBuf::from(DEFAULT_EMBEDDED_PATH) });
        let port = p.int(env, PORT);
        let algorithm = p.take(algorithm(env), || SigningAlgorithm::Hs256);
        let issuer = p.take(required_or_dev(env, ISSUER, mode, DEV_ISSUER), String::new);
        let audience = p.take(required_or_dev(env, AUDIENCE, mode, DEV_AUDIENCE), String::new);
        for secret in [ALGORITHM_KEY, ROTATION_SECRET, COSMOS_CONNECTION_STRING] {
            p.take(unresolved_reference(env, secret), || ());
        }
        let algorithm_key = match (env.get(ALGORITHM_KEY), algorithm) {
            (None, _) => Err(SettingsError::new(ALGORITHM_KEY, "is missing")),
            (Some(key), SigningAlgorithm::Hs256) => strong_secret(ALGORITHM_KEY, key),
            (Some(key), _) => Ok(SecretBytes::new(key.as_bytes().to_vec())),
        };
        let algorithm_key = p.take(algorithm_key, || SecretBytes::new(Vec::new()));
        let previous_keys = (0..)
            .map_while(|i| env.get(&format!("{PREVIOUS_KEYS}__{i}")))
            .map(|k| SecretBytes::new(k.as_bytes().to_vec()))
            .collect();
        let descriptor = Descriptor {
            issuer,
            audience,
            algorithm,
            algorithm_key,
            previous_keys,
            clock_skew_ms: p.int(env, CLOCK_SKEW),
        };
        let refresh_expires_in_ms: i64 = p.int(env, REFRESH_EXPIRES);
        let idle_expires_in_ms: i64 = p.int(env, IDLE_EXPIRES);
        if idle_expires_in_ms > refresh_expires_in_ms {
            p.push(SettingsError::new(
                IDLE_EXPIRES,
                format!("must be at most {REFRESH_EXPIRES} ({refresh_expires_in_ms}), got {idle_expires_in_ms}"),
            ));
        }
        let expires = Expires {
            create_expires_in_ms: p.int(env, CREATE_EXPIRES),
            refresh_expires_in_ms,
            idle_expires_in_ms,
            max_sessions_per_user: p.int(env, SESSIONS_MAX_PER_USER),
        };
        let registration = p.take(registration_mode(env, mode), || RegistrationMode::Closed);
        let accounts = Accounts {
            registration,
            max_signups_per_address: p.int(env, REGISTRATION_MAX_PER_ADDRESS),
            signup_window_ms: p.int(env, REGISTRATION_WINDOW),
            password_min_chars: p.int(env, PASSWORD_MIN_LENGTH),
            max_signups_per_minute: p.int(env, REGISTRATION_MAX_PER_MINUTE),
        };
        let secret = env.get(ROTATION_SECRET).map(|s| strong_secret(ROTATION_SECRET, s)).transpose();
        let secret = p.take(secret, || None);
        let rotation = Rotation { reuse_grace_ms: p.int(env, REUSE_GRACE), secret };
        let max_failures: u32 = p.int(env, MAX_FAILURES);
        let per_username =
            env.int_or::<u32>(MAX_FAILURES_PER_USERNAME, i64::from(max_failures.saturating_mul(10))).and_then(|v| {
                if v < max_failures {
                    Err(SettingsError::new(
                        MAX_FAILURES_PER_USERNAME,
                        format!("must be at least {MAX_FAILURES} ({max_failures}), got {v}"),
                    ))
                } else {
                    Ok(v)
                }
            });
        let login = Login {
            max_failures,
            max_failures_per_username: p.take(per_username, || max_failures.saturating_mul(10)),
            lockout_ms: p.int(env, LOCKOUT),
            device_token_ttl_ms: p.int::<i64>(env, DEVICE_TOKEN_LIFETIME).saturating_mul(24 * 3_600_000),
        };
        let workers = env.int_or(HASH_WORKERS, i64::try_from(default_hash_workers()).unwrap_or(1));
        let hashing = Hashing {
            workers: p.take(workers, default_hash_workers),
            queue_length: p.int(env, HASH_QUEUE),
            queue_timeout_ms: p.int(env, HASH_QUEUE_TIMEOUT),
        };
        let http = Http {
            header_read_timeout_ms: p.int(env, HEADER_READ_TIMEOUT),
            idle_timeout_ms: p.int(env, IDLE_TIMEOUT),
            body_read_timeout_ms: p.int(env, BODY_READ_TIMEOUT),
            max_connections: p.int(env, MAX_CONNECTIONS),
            trusted_proxy_hops: p.int(env, TRUSTED_PROXY_HOPS),
        };
        let cors = p.take(load_cors(env), Cors::default);
        p.take(strict_flag(env), || false);
        let introspection_max_per_minute = p.int(env, INTROSPECTION_MAX_PER_MINUTE);
        let dpop = Dpop {
            required: p.take(flag(env, DPOP_REQUIRED), || false),
            require_nonce: p.take(flag(env, DPOP_REQUIRE_NONCE), || false),
            proof_max_age_ms: p.int(env, DPOP_PROOF_MAX_AGE),
        };
        let service_documentation = p.take(documentation_url(env), || None);
        let federation = federation::load(env, &mut p);
        let totp_issuer = env
            .get(names::MFA_TOTP_ISSUER)
            .unwrap_or(names::text_default(names::MFA_TOTP_ISSUER))
            .trim()
            .chars()
            .take(64)
            .collect::<String>();
        let passkeys = p.take(load_passkeys(env), || None);
        let email = email::load(env, mode, &store, &mut p);
        p.finish(Self {
            descriptor,
            expires,
            rotation,
            login,
            hashing,
            http,
            cors,
            accounts,
            introspection_max_per_minute,
            dpop,
            service_documentation,
            federation,
            totp_issuer,
            passkeys,
            email,
            store,
            port,
            mode,
        })
    }
}

/// Every problem found while loading, in table order: start-up prints one line for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl std::fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for SettingsErrors {}

impl From<SettingsError> for SettingsErrors {
    fn from(e: SettingsError) -> Self {
        Self(vec![e])
    }
}

impl SettingsErrors {
    /// Whether any of them is a required setting that is simply not set (the newcomer's case,
    /// which `--dev` or `local.settings.json.example` solves).
    pub fn any_missing(&self) -> bool {
        self.0.iter().any(|e| e.problem == "is missing")
    }
}

/// Collects the problems of one load, so that all of them are reported at once; each reader
/// gives a stand-in value after a problem so loading can go on.
#[derive(Default)]
struct Problems(Vec<SettingsError>);

impl Problems {
    fn push(&mut self, e: SettingsError) {
        self.0.push(e);
    }

    fn take<T>(&mut self, result: Result<T, SettingsError>, stand_in: impl FnOnce() -> T) -> T {
        result.unwrap_or_else(|e| {
            self.push(e);
            stand_in()
        })
    }

    /// An integer setting with its table default and bounds; a stand-in of the default.
    fn int<T: TryFrom<i64> + Copy + std::default::Default>(&mut self, env: &Env, name: &str) -> T {
        match env.int(name) {
            Ok(v) => v,
            Err(e) => {
                self.push(e);
                match names::Setting::find(name).map(|s| s.default) {
                    Some(names::DefaultValue::Int(d)) => T::try_from(d).unwrap_or_default(),
                    _ => T::default(),
                }
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, SettingsErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(SettingsErrors(self.0)) }
    }
}

fn algorithm(env: &Env) -> Result<SigningAlgorithm, SettingsError> {
    let raw = env.get(ALGORITHM).unwrap_or(names::text_default(ALGORITHM));
    SigningAlgorithm::parse(raw)
        .ok_or_else(|| SettingsError::new(ALGORITHM, format!("must be HS256, ES256 or EdDSA, got {:?}", shorten(raw))))
}

/// The signing algorithm the settings name (HS256 when unset), parsed as [`Settings::load`] does.
pub fn signing_algorithm(env: &Env) -> Result<SigningAlgorithm, SettingsError> {
    algorithm(env)
}

fn registration_mode(env: &Env, mode: Mode) -> Result<RegistrationMode, SettingsError> {
    match env.get(REGISTRATION_MODE).map(|m| m.trim().to_ascii_lowercase()) {
        None if mode == Mode::Development => Ok(RegistrationMode::Open),
        None => Ok(RegistrationMode::Closed),
        Some(m) if m == "closed" => Ok(RegistrationMode::Closed),
        Some(m) if m == "open" => Ok(RegistrationMode::Open),
        Some(m) => Err(SettingsError::new(REGISTRATION_MODE, format!("must be closed or open, got {:?}", shorten(&m)))),
    }
}

fn strict_flag(env: &Env) -> Result<bool, SettingsError> {
    flag(env, STRICT_SETTINGS)
}

/// `Discovery__ServiceDocumentation`: an absolute http(s) URL, if set.
fn documentation_url(env: &Env) -> Result<Option<String>, SettingsError> {
    let Some(raw) = env.get(SERVICE_DOCUMENTATION).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://")).unwrap_or_default();
    if rest.is_empty() || rest.starts_with('/') || raw.chars().any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        return Err(SettingsError::new(
            SERVICE_DOCUMENTATION,
            format!("must be an absolute http(s) URL, got {:?}", shorten(raw)),
        ));
    }
    Ok(Some(raw.to_string()))
}

/// A `true`/`false` setting (any case); unset is `false`.
fn flag(env: &Env, name: &str) -> Result<bool, SettingsError> {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(SettingsError::new(name, format!("must be true or false, got {:?}", shorten(&v)))),
    }
}

/// What is wrong with the Issuer as the base URL of the discovery document, if anything: resource
/// servers and OAuth clients fetch `{Issuer}/.well-known/openid-configuration` and then the
/// endpoints it names, so the Issuer must be the public `https://…/api` URL of the routes.
pub fn issuer_problem(issuer: &str) -> Option<String> {
    let Some(rest) = issuer.strip_prefix("https://") else {
        return Some(format!(
            "setting {ISSUER} is not an https URL ({issuer:?}): clients that configure themselves from \
             {{Issuer}}/.well-known/openid-configuration need the public https base URL, e.g. \
             https://<app>.azurewebsites.net/api"
        ));
    };
    let path = rest.split_once('/').map_or("", |(_, p)| p).trim_end_matches('/');
    (!path.eq_ignore_ascii_case("api")).then(|| {
        format!(
            "setting {ISSUER} ({issuer:?}) does not end in /api, where the routes are served: the endpoints the \
             discovery document names would not answer (use https://<host>/api)"
        )
    })
}

/// A `JwtRefreshToken__*` name that the table does not list, with the closest listed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSetting {
    /// The name as set (normalised: lower case, `__`).
    pub name: String,
    /// The closest listed name, when one is close enough to be a typo of it.
    pub suggestion: Option<&'static str>,
}

impl std::fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "setting {} is not one the handler reads", self.name)?;
        match self.suggestion {
            Some(s) => write!(f, "; did you mean {s}?"),
            None => write!(f, "; see docs/configuration.md"),
        }
    }
}

/// The `JwtRefreshToken__*` names in `env` that [`names::ALL`] does not list (a misspelt setting
/// is otherwise silently ignored), sorted, each with the closest listed name.
pub fn unknown_settings(env: &Env) -> Vec<UnknownSetting> {
    let prefix = names::PREFIX.to_ascii_lowercase();
    let numbered = |name: &str| {
        names::ALL.iter().filter(|s| s.kind == names::Kind::Numbered).any(|s| {
            let base = s.name.to_ascii_lowercase();
            name.strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix("__"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    let mut unknown: Vec<UnknownSetting> = env
        .names()
        .filter(|n| {
            n.starts_with(&prefix)
                && names::Setting::find(n).is_none()
                && !numbered(n)
                && !federation::is_provider_setting(n)
        })
        .map(|n| UnknownSetting { name: n.to_string(), suggestion: closest(n) })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}

/// The listed name nearest to `name` by edit distance, if it is within a typo's reach (a quarter
/// of the part after the prefix, at least 2 edits).
fn closest(name: &str) -> Option<&'static str> {
    let reach = (name.len().saturating_sub(names::PREFIX.len()) / 4).max(2);
    names::ALL
        .iter()
        .filter(|s| s.name.starts_with(names::PREFIX))
        .map(|s| (edit_distance(name, &s.name.to_ascii_lowercase()), s.name))
        .filter(|(d, _)| *d <= reach)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes (setting names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or_default();
            let left = row.get(j).copied().unwrap_or_default();
            let value = (diagonal + usize::from(ca != *cb)).min(above + 1).min(left + 1);
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}

/// Whether `JwtRefreshToken__StrictSettings` is `true` (an invalid value counts as not set here;
/// [`Settings::load`] reports it).
pub fn strict_settings(env: &Env) -> bool {
    strict_flag(env).unwrap_or(false)
}

/// App Service hands the literal `@Microsoft.KeyVault(…)` text to the app when it cannot resolve a
/// Key Vault reference; used as a key, that text would look valid. Refuse it.
pub(crate) fn unresolved_reference(env: &Env, name: &str) -> Result<(), SettingsError> {
    match env.get(name) {
        Some(v) if v.trim_start().to_ascii_lowercase().starts_with("@microsoft.keyvault(") => Err(SettingsError::new(
            name,
            "is an unresolved Key Vault reference: grant the app's identity 'Key Vault Secrets User' and check the secret URI",
        )),
        _ => Ok(()),
    }
}

fn required_or_dev(env: &Env, name: &str, mode: Mode, dev_default: &str) -> Result<String, SettingsError> {
    match (env.get(name), mode) {
        (Some(v), _) => Ok(v.trim().to_string()),
        (None, Mode::Development) => Ok(dev_default.to_string()),
        (None, Mode::Production) => Err(SettingsError::new(name, "is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::names::*;
    use super::*;

    /// A random 64-character base64url key, as `handler keys generate` prints.
    const KEY: &str = "v8Hq2Zk0Xw9RmT4bYc7NpL1sFdJ6gAeU3iKoQ5rVtWxBzC0yMnE9uHjG2fPaDl7S";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![(ISSUER, "https://issuer.example"), (AUDIENCE, "api://example"), (ALGORITHM_KEY, KEY)]
    }

    /// The one problem of a load that has exactly one.
    fn only(errors: SettingsErrors) -> SettingsError {
        assert_eq!(errors.0.len(), 1, "exactly one problem: {errors}");
        errors.0.into_iter().next().unwrap()
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Env {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_match_the_dotnet_package() {
        let s = Settings::load(&with(&[]), Mode::Production).unwrap();
        assert_eq!(s.expires.create_expires_in_ms, 300_000);
        assert_eq!(s.expires.refresh_expires_in_ms, 604_800_000);
        assert_eq!(s.descriptor.clock_skew_ms, 30_000);
        assert_eq!(s.rotation.reuse_grace_ms, 10_000);
        assert_eq!(s.login.max_failures, 5);
        assert_eq!(s.login.lockout_ms, 900_000);
        assert_eq!(s.port, 7071);
        assert_eq!(s.descriptor.algorithm, SigningAlgorithm::Hs256);
        assert_eq!(s.store, StoreSettings::Embedded { path: PathBuf::from("./.data") });
    }

    #[test]
    fn names_are_case_insensitive_and_accept_colons() {
        let env = Env::from_pairs([
            ("jwtrefreshtoken:descriptor:issuer", "i"),
            ("JWTREFRESHTOKEN__DESCRIPTOR__AUDIENCE", "a"),
            ("JwtRefreshToken:Descriptor:AlgorithmKey", KEY),
            ("JwtRefreshToken:Descriptor:ClockSkewMs", "0"),
        ]);
        let s = Settings::load(&env, Mode::Production).unwrap();
        assert_eq!(s.descriptor.issuer, "i");
        assert_eq!(s.descriptor.audience, "a");
        assert_eq!(s.descriptor.clock_skew_ms, 0);
    }

    #[test]
    fn each_bad_setting_is_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (&[(ISSUER, "")], ISSUER, "blank issuer counts as missing"),
            (&[(ALGORITHM_KEY, "short")], ALGORITHM_KEY, "HS256 key under 32 bytes"),
            (&[(ALGORITHM, "RS512")], ALGORITHM, "unsupported algorithm"),
            (&[(CLOCK_SKEW, "-1")], CLOCK_SKEW, "negative skew"),
            (&[(CLOCK_SKEW, "abc")], CLOCK_SKEW, "not a number"),
            (&[(CREATE_EXPIRES, "0")], CREATE_EXPIRES, "zero lifetime"),
            (&[(REFRESH_EXPIRES, "12.5")], REFRESH_EXPIRES, "fraction"),
            (&[(REUSE_GRACE, "999999999")], REUSE_GRACE, "grace beyond five minutes"),
            (&[(ROTATION_SECRET, "tooshort")], ROTATION_SECRET, "short rotation secret"),
            (
                &[(ALGORITHM_KEY, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk")],
                ALGORITHM_KEY,
                "one repeated character",
            ),
            (&[(ALGORITHM_KEY, "passwordpasswordpasswordpassword")], ALGORITHM_KEY, "a repeated word"),
            (&[(ROTATION_SECRET, "correct-horse-battery-staple-secret")], ROTATION_SECRET, "dictionary words"),
            (&[(HASH_WORKERS, "0")], HASH_WORKERS, "no hashing workers"),
            (&[(HASH_QUEUE_TIMEOUT, "1")], HASH_QUEUE_TIMEOUT, "queue timeout below 10 ms"),
            (&[(MAX_FAILURES_PER_USERNAME, "2")], MAX_FAILURES_PER_USERNAME, "ceiling below the per-address limit"),
            (&[(HEADER_READ_TIMEOUT, "0")], HEADER_READ_TIMEOUT, "zero header timeout"),
            (&[(IDLE_TIMEOUT, "x")], IDLE_TIMEOUT, "idle timeout not a number"),
            (&[(CORS_ALLOWED_ORIGINS, "*")], CORS_ALLOWED_ORIGINS, "a wildcard origin"),
            (&[(REGISTRATION_MODE, "maybe")], REGISTRATION_MODE, "unknown registration mode"),
            (&[(PASSWORD_MIN_LENGTH, "4")], PASSWORD_MIN_LENGTH, "passwords shorter than 8"),
            (&[(IDLE_EXPIRES, "-1")], IDLE_EXPIRES, "negative idle timeout"),
            (&[(CORS_ALLOWED_ORIGINS, "https://a.example/app")], CORS_ALLOWED_ORIGINS, "an origin with a path"),
            (&[(CORS_ALLOWED_ORIGINS, "a.example")], CORS_ALLOWED_ORIGINS, "an origin without a scheme"),
            (&[(MAX_FAILURES, "0")], MAX_FAILURES, "zero failures"),
            (&[(LOCKOUT, "x")], LOCKOUT, "not a number"),
            (
                &[(
                    ALGORITHM_KEY,
                    "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/jwt-algorithm-key/)",
                )],
                ALGORITHM_KEY,
                "unresolved Key Vault reference",
            ),
            (
                &[(ROTATION_SECRET, "@Microsoft.KeyVault(VaultName=kv;SecretName=jwt-rotation-secret)")],
                ROTATION_SECRET,
                "unresolved Key Vault reference",
            ),
            (&[(PORT, "70000")], PORT, "port out of range"),
        ];
        for (extra, setting, why) in cases {
            let mut pairs: Vec<(&str, &str)> = base();
            pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            pairs.extend_from_slice(extra);
            let err = only(Settings::load(&Env::from_pairs(pairs), Mode::Production).unwrap_err());
            assert_eq!(err.setting, *setting, "{why}: {err}");
            assert!(err.to_string().starts_with(&format!("setting {setting}: ")), "{why}: {err}");
        }
    }

    #[test]
    fn production_requires_issuer_audience_and_key() {
        for missing in [ISSUER, AUDIENCE, ALGORITHM_KEY] {
            let pairs: Vec<_> = base().into_iter().filter(|(k, _)| *k != missing).collect();
            let err = only(Settings::load(&Env::from_pairs(pairs), Mode::Production).unwrap_err());
            assert_eq!(err.setting, missing);
            assert_eq!(err.problem, "is missing");
        }
    }

    #[test]
    fn weak_keys_point_to_the_generator() {
        let weak = "k".repeat(48);
        let mut pairs = vec![(ISSUER, "https://issuer.example"), (AUDIENCE, "api://example")];
        pairs.push((ALGORITHM_KEY, weak.as_str()));
        let err = only(Settings::load(&Env::from_pairs(pairs), Mode::Production).unwrap_err());
        assert!(err.problem.contains("handler keys generate --algorithm HS256"), "{err}");
        assert!(err.problem.contains("too easy to guess"), "{err}");
    }

    #[test]
    fn dictionary_secrets_load_but_fail_their_pattern_score() {
        let words = "correct-horse-battery-staple-0123456789";
        let key = "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw";
        let env = Env::from_pairs([
            (ISSUER, "https://issuer.example"),
            (AUDIENCE, "api://example"),
            (ALGORITHM_KEY, key),
            (ROTATION_SECRET, words),
        ]);
        let settings = Settings::load(&env, Mode::Production).unwrap();
        let listed = settings.secrets_to_score();
        let names: Vec<&str> = listed.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [ALGORITHM_KEY, ROTATION_SECRET]);
        let scores: Vec<(&'static str, f64)> =
            listed.iter().map(|(n, v)| (*n, entropy::pattern_bits(std::str::from_utf8(v.expose()).unwrap()))).collect();
        let err = check_secret_scores(&scores).unwrap_err();
        assert_eq!(err.setting, ROTATION_SECRET);
        assert!(err.problem.contains("too easy to guess"), "{err}");
        assert!(check_secret_scores(&scores[..1]).is_ok());
    }

    #[test]
    fn loading_is_pure_and_development_mode_needs_the_key_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let env = Env::from_pairs([(EMBEDDED_PATH, path.to_str().unwrap())]);
        let err = only(Settings::load(&env, Mode::Development).unwrap_err());
        assert_eq!(err.setting, ALGORITHM_KEY);
        assert!(!path.exists(), "loading wrote nothing");
        let s = Settings::load(&Env::from_pairs([(ALGORITHM_KEY, KEY)]), Mode::Development).unwrap();
        assert_eq!(s.descriptor.issuer, DEV_ISSUER);
        assert_eq!(s.descriptor.audience, DEV_AUDIENCE);
    }

    #[test]
    fn lockout_and_hashing_defaults() {
        let s = Settings::load(&with(&[(MAX_FAILURES, "7")]), Mode::Production).unwrap();
        assert_eq!(s.login.max_failures_per_username, 70);
        assert!((1..=4).contains(&s.hashing.workers));
        assert_eq!(s.hashing.queue_timeout_ms, 2_000);
        assert_eq!(s.http.header_read_timeout_ms, 10_000);
    }

    #[test]
    fn previous_keys_are_read_in_order() {
        let env = with(&[
            ("JwtRefreshToken__Descriptor__PreviousKeys__0", "old-key-0-0123456789abcdef0123456789"),
            ("JwtRefreshToken__Descriptor__PreviousKeys__1", "old-key-1-0123456789abcdef0123456789"),
        ]);
        let s = Settings::load(&env, Mode::Production).unwrap();
        assert_eq!(s.descriptor.previous_keys.len(), 2);
        assert_eq!(s.descriptor.previous_keys[1].expose(), b"old-key-1-0123456789abcdef0123456789");
    }

    #[test]
    fn an_endpoint_or_a_connection_string_selects_cosmos() {
        let entra = with(&[(COSMOS_ENDPOINT, "https://acct.documents.azure.com:443/"), ("AZURE_CLIENT_ID", "abc")]);
        let StoreSettings::Cosmos(c) = Settings::load(&entra, Mode::Production).unwrap().store else { panic!() };
        assert_eq!(c.endpoint, "https://acct.documents.azure.com:443/");
        assert_eq!(c.auth, CosmosAuth::EntraId { client_id: Some("abc".into()), identity: Identity::Developer });
        assert_eq!(
            (c.database.as_str(), c.token_container.as_str(), c.user_container.as_str()),
            ("jwt-refresh-token", "tokens", "users")
        );
        let keyed = with(&[
            (COSMOS_CONNECTION_STRING, "AccountEndpoint=http://127.0.0.1:8081/;AccountKey=a2V5;"),
            (COSMOS_DATABASE, "db"),
            (COSMOS_TOKEN_CONTAINER, "t"),
            (COSMOS_USER_CONTAINER, "u"),
        ]);
        let StoreSettings::Cosmos(c) = Settings::load(&keyed, Mode::Production).unwrap().store else { panic!() };
        assert_eq!(c.endpoint, "http://127.0.0.1:8081/");
        assert_eq!(c.auth, CosmosAuth::Key(SecretBytes::new(b"a2V5".to_vec())));
        assert_eq!((c.database.as_str(), c.token_container.as_str(), c.user_container.as_str()), ("db", "t", "u"));
    }

    #[test]
    fn bad_cosmos_settings_are_named() {
        let cases = [
            (
                vec![
                    (COSMOS_ENDPOINT, "https://a/"),
                    (COSMOS_CONNECTION_STRING, "AccountEndpoint=https://a/;AccountKey=k"),
                ],
                COSMOS_CONNECTION_STRING,
            ),
            (vec![(COSMOS_ENDPOINT, "acct.documents.azure.com")], COSMOS_ENDPOINT),
            (vec![(COSMOS_CONNECTION_STRING, "AccountKey=k;")], COSMOS_CONNECTION_STRING),
            (vec![(COSMOS_CONNECTION_STRING, "AccountEndpoint=https://a/;")], COSMOS_CONNECTION_STRING),
            (vec![(COSMOS_CONNECTION_STRING, "garbage")], COSMOS_CONNECTION_STRING),
            (vec![(COSMOS_ENDPOINT, "https://a/"), (COSMOS_TOKEN_CONTAINER, "a/b")], COSMOS_TOKEN_CONTAINER),
            (vec![(COSMOS_ENDPOINT, "https://a/"), (COSMOS_TIMEOUT, "0")], COSMOS_TIMEOUT),
        ];
        for (extra, setting) in cases {
            let err = load_store(&Env::from_pairs(extra)).unwrap_err();
            assert_eq!(err.setting, setting, "{err}");
        }
    }

    #[test]
    fn the_managed_identity_is_used_as_azure_identity_understands_it() {
        let endpoint = (COSMOS_ENDPOINT, "https://acct.documents.azure.com:443/");
        let auth = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![endpoint];
            pairs.extend_from_slice(extra);
            load_store(&Env::from_pairs(pairs))
        };
        let managed = [(IDENTITY_ENDPOINT, "http://localhost:8081/msi/token"), (IDENTITY_HEADER, "h")];
        // The template's identity is user-assigned: without its client id the managed-identity
        // endpoint would be asked for a system-assigned one that does not exist.
        let err = auth(&managed).unwrap_err();
        assert_eq!(err.setting, AZURE_CLIENT_ID, "{err}");
        let mut with_client = managed.to_vec();
        with_client.push((AZURE_CLIENT_ID, "00000000-0000-0000-0000-000000000001"));
        let StoreSettings::Cosmos(c) = auth(&with_client).unwrap() else { panic!() };
        assert!(matches!(c.auth, CosmosAuth::EntraId { identity: Identity::Managed, .. }));
        // MSI_ENDPOINT alone is Cloud Shell / Azure ML to azure_identity 1.0, not a Function App.
        let StoreSettings::Cosmos(c) = auth(&[("MSI_ENDPOINT", "http://x")]).unwrap() else { panic!() };
        assert!(matches!(c.auth, CosmosAuth::EntraId { identity: Identity::Developer, .. }));
        // In Azure without an identity: stop, naming what is missing.
        let err = auth(&[(WEBSITE_SITE_NAME, "my-app")]).unwrap_err();
        assert_eq!(err.setting, IDENTITY_ENDPOINT, "{err}");
        assert!(err.problem.contains("managed identity"), "{err}");
        let err = auth(&[(IDENTITY_ENDPOINT, "http://x"), (WEBSITE_SITE_NAME, "my-app")]).unwrap_err();
        assert_eq!(err.setting, IDENTITY_HEADER, "{err}");
        // A connection string needs no identity, in Azure or not.
        let keyed =
            [(COSMOS_CONNECTION_STRING, "AccountEndpoint=https://a/;AccountKey=a2V5;"), (WEBSITE_SITE_NAME, "x")];
        assert!(load_store(&Env::from_pairs(keyed)).is_ok());
    }

    #[test]
    fn debug_of_cosmos_settings_hides_the_key() {
        let env =
            Env::from_pairs([(COSMOS_CONNECTION_STRING, "AccountEndpoint=https://a/;AccountKey=c2VjcmV0LWtleQ==;")]);
        let shown = format!("{:?}", load_store(&env).unwrap());
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }

    #[test]
    fn debug_of_env_shows_names_only() {
        let shown = format!("{:?}", with(&[]));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("jwtrefreshtoken__descriptor__algorithmkey"));
    }

    #[test]
    fn every_problem_is_named_in_one_load() {
        let env = Env::from_pairs([
            (AUDIENCE, "api://example"),
            (CLOCK_SKEW, "abc"),
            (LOCKOUT, "-1"),
            (REGISTRATION_MODE, "maybe"),
            (STRICT_SETTINGS, "yes"),
        ]);
        let errors = Settings::load(&env, Mode::Production).unwrap_err();
        let named: Vec<&str> = errors.0.iter().map(|e| e.setting.as_str()).collect();
        for setting in [ISSUER, ALGORITHM_KEY, CLOCK_SKEW, LOCKOUT, REGISTRATION_MODE, STRICT_SETTINGS] {
            assert!(named.contains(&setting), "{setting} is named: {errors}");
        }
        assert_eq!(named.len(), 6, "nothing else: {errors}");
        assert!(errors.any_missing());
        assert_eq!(errors.to_string().lines().count(), 6, "one line each: {errors}");
    }

    #[test]
    fn relations_between_settings_are_checked_after_each_one() {
        let errors =
            Settings::load(&with(&[(IDLE_EXPIRES, "2000"), (REFRESH_EXPIRES, "1000")]), Mode::Production).unwrap_err();
        assert_eq!(only(errors).setting, IDLE_EXPIRES);
    }

    #[test]
    fn a_misspelt_setting_is_found_with_the_name_it_was_meant_to_be() {
        let env = with(&[
            ("JwtRefreshToken__Descriptor__Isuer", "https://x"),
            ("JWTREFRESHTOKEN__LOGIN__LOCKOUTMS", "1000"),
            ("jwtrefreshtoken:Descriptor:PreviousKeys:0", "old-key-0-0123456789abcdef0123456789"),
            ("JwtRefreshToken__Descriptor__PreviousKeys__x", "k"),
            ("JwtRefreshToken__Something__Else", "1"),
            ("OTHER_APP_SETTING", "1"),
        ]);
        let unknown = unknown_settings(&env);
        let found: Vec<(&str, Option<&str>)> = unknown.iter().map(|u| (u.name.as_str(), u.suggestion)).collect();
        assert_eq!(
            found,
            [
                ("jwtrefreshtoken__descriptor__isuer", Some(ISSUER)),
                ("jwtrefreshtoken__descriptor__previouskeys__x", Some(PREVIOUS_KEYS)),
                ("jwtrefreshtoken__something__else", None),
            ],
            "listed names in any case and numbered keys are known; others are not"
        );
        assert!(unknown[0].to_string().contains("did you mean JwtRefreshToken__Descriptor__Issuer?"), "{}", unknown[0]);
        assert!(unknown[2].to_string().contains("docs/configuration.md"), "{}", unknown[2]);
        assert!(!strict_settings(&env));
        assert!(strict_settings(&with(&[(STRICT_SETTINGS, "TRUE")])));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("issuer", "isuer"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn the_code_reads_each_default_and_bound_from_the_table() {
        let s = Settings::load(&with(&[]), Mode::Production).unwrap();
        let int = |name: &str| match names::Setting::find(name).unwrap().default {
            DefaultValue::Int(d) => d,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(s.descriptor.clock_skew_ms, int(CLOCK_SKEW));
        assert_eq!(s.expires.create_expires_in_ms, int(CREATE_EXPIRES));
        assert_eq!(i64::from(s.login.max_failures), int(MAX_FAILURES));
        assert_eq!(i64::try_from(s.http.idle_timeout_ms).unwrap(), int(IDLE_TIMEOUT));
        assert_eq!(i64::from(s.port), int(PORT));
        // Each integer row's bounds are enforced: one past either end is refused.
        for row in names::ALL {
            let names::Kind::Integer { min, max } = row.kind else { continue };
            for bad in [min - 1, max + 1] {
                let bad = bad.to_string();
                let mut pairs: Vec<(&str, &str)> = base();
                pairs.push((row.name, bad.as_str()));
                if row.name.starts_with("JwtRefreshToken__Cosmos__") {
                    pairs.push((COSMOS_CONNECTION_STRING, "AccountEndpoint=https://a/;AccountKey=a2V5;"));
                }
                let Err(errors) = Settings::load(&Env::from_pairs(pairs), Mode::Production) else {
                    panic!("{}={bad} is refused", row.name)
                };
                assert!(errors.0.iter().any(|e| e.setting == row.name), "{}={bad}: {errors}", row.name);
            }
        }
    }

    #[test]
    fn the_issuer_must_be_the_public_https_base_of_the_routes() {
        assert_eq!(issuer_problem("https://app.azurewebsites.net/api"), None);
        assert_eq!(issuer_problem("https://app.azurewebsites.net/api/"), None);
        assert!(issuer_problem("http://app.azurewebsites.net/api").unwrap().contains("not an https URL"));
        assert!(issuer_problem("https://app.azurewebsites.net").unwrap().contains("does not end in /api"));
        assert!(issuer_problem("my-issuer").unwrap().contains("not an https URL"));
    }
}
