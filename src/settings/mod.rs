//! Typed, validated settings read from app settings (environment variables).
//!
//! Names follow the .NET package Jwt.Refresh.Token.Cosmos (`JwtRefreshToken:Descriptor:Issuer`), written
//! the way Azure app settings nest them (`JwtRefreshToken__Descriptor__Issuer`). Names are matched
//! without regard to case, and `:` is accepted in place of `__`. Every problem names its setting.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::SecretBytes;

/// Prefix shared by all of the service's own settings.
pub const PREFIX: &str = "JwtRefreshToken__";
/// The port the Functions host tells the handler to listen on.
pub const PORT_SETTING: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
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

/// A snapshot of configuration values, keyed case-insensitively with `:` read as `__`.
#[derive(Clone, Default)]
pub struct Env {
    values: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values can be keys and secrets: show names only.
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Values from name/value pairs (tests, `local.settings.json`).
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let values = pairs.into_iter().map(|(k, v)| (normalize(k.as_ref()), v.into())).collect();
        Self { values }
    }

    /// The value of `name`, if set to something other than blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&normalize(name)).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// Sets a value (used to fill development defaults).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(normalize(name), value.into());
    }

    fn parse_int<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &self,
        name: &str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingsError> {
        let Some(raw) = self.get(name) else { return Ok(default) };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| SettingsError::new(name, format!("must be a whole number, got {:?}", shorten(raw))))?;
        if value < min || value > max {
            return Err(SettingsError::new(name, format!("must be between {min} and {max}, got {value}")));
        }
        Ok(value)
    }
}

fn normalize(name: &str) -> String {
    name.replace(':', "__").to_ascii_lowercase()
}

fn shorten(raw: &str) -> String {
    raw.chars().take(40).collect()
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

    fn parse(raw: &str) -> Option<Self> {
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
#[derive(Debug, Clone, Copy)]
pub struct Login {
    /// Failures before a username is locked.
    pub max_failures: u32,
    /// How long a lock lasts, and the window in which failures add up.
    pub lockout_ms: i64,
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// SQLite in WAL mode, in a directory of its own.
    Embedded {
        /// Directory holding the database (`JwtRefreshToken__Embedded__Path`).
        path: PathBuf,
    },
    /// Azure Cosmos DB (NoSQL API).
    Cosmos(CosmosSettings),
}

/// How the Cosmos client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosmosAuth {
    /// Microsoft Entra ID: managed identity in Azure (user-assigned when `client_id` is set,
    /// from `AZURE_CLIENT_ID`), developer credentials (`az login`) elsewhere.
    EntraId {
        /// Client id of a user-assigned managed identity.
        client_id: Option<String>,
    },
    /// Account key from a connection string (the emulator, local work).
    Key(SecretBytes),
}

/// Cosmos DB settings (`JwtRefreshToken__Cosmos__*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosSettings {
    /// Account endpoint, e.g. `https://myaccount.documents.azure.com:443/`.
    pub endpoint: String,
    /// Authentication.
    pub auth: CosmosAuth,
    /// Database name.
    pub database: String,
    /// Sessions container (partition key `/userId`).
    pub token_container: String,
    /// Accounts container (partition key `/id`).
    pub user_container: String,
    /// Timeout of each Cosmos request, retries included.
    pub request_timeout_ms: u64,
    /// The Function App's region (`REGION_NAME`, set by Azure): requests go to the nearest replica.
    pub region: Option<String>,
}

/// Whether missing signing settings may be filled with development defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Issuer, Audience and AlgorithmKey must be set.
    Production,
    /// Missing ones get local defaults; the key is generated once and kept in the store directory.
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
    /// State.
    pub store: StoreSettings,
    /// Listening port (0 picks a free one).
    pub port: u16,
    /// The mode the settings were loaded in.
    pub mode: Mode,
}

const ISSUER: &str = "JwtRefreshToken__Descriptor__Issuer";
const AUDIENCE: &str = "JwtRefreshToken__Descriptor__Audience";
const ALGORITHM: &str = "JwtRefreshToken__Descriptor__Algorithm";
/// Name of the signing-key setting.
pub const ALGORITHM_KEY: &str = "JwtRefreshToken__Descriptor__AlgorithmKey";
/// Prefix of the previous-key settings (`…PreviousKeys__0`, `…PreviousKeys__1`, …).
pub const PREVIOUS_KEYS: &str = "JwtRefreshToken__Descriptor__PreviousKeys";
const CLOCK_SKEW: &str = "JwtRefreshToken__Descriptor__ClockSkewMs";
const CREATE_EXPIRES: &str = "JwtRefreshToken__Expires__CreateExpiresInMs";
const REFRESH_EXPIRES: &str = "JwtRefreshToken__Expires__RefreshExpiresInMs";
const REUSE_GRACE: &str = "JwtRefreshToken__Rotation__ReuseGraceMs";
/// Name of the rotation-secret setting.
pub const ROTATION_SECRET: &str = "JwtRefreshToken__Rotation__Secret";
const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
const LOCKOUT: &str = "JwtRefreshToken__Login__LockoutMs";
const EMBEDDED_PATH: &str = "JwtRefreshToken__Embedded__Path";
/// Cosmos account endpoint (Entra ID authentication).
pub const COSMOS_ENDPOINT: &str = "JwtRefreshToken__Cosmos__AccountEndpoint";
/// Cosmos connection string (account-key authentication).
pub const COSMOS_CONNECTION_STRING: &str = "JwtRefreshToken__Cosmos__ConnectionString";
const COSMOS_DATABASE: &str = "JwtRefreshToken__Cosmos__DatabaseName";
const COSMOS_TOKEN_CONTAINER: &str = "JwtRefreshToken__Cosmos__TokenContainerId";
const COSMOS_USER_CONTAINER: &str = "JwtRefreshToken__Cosmos__UserContainerId";
const COSMOS_TIMEOUT: &str = "JwtRefreshToken__Cosmos__RequestTimeoutMs";
const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const DEFAULT_EMBEDDED_PATH: &str = "./.data";
/// Issuer used in development mode when none is set.
pub const DEV_ISSUER: &str = "http://localhost:7071";
/// Audience used in development mode when none is set.
pub const DEV_AUDIENCE: &str = "jwt-refresh-token-dev";
const DEV_KEY_FILE: &str = "dev-signing-key";
const MIN_HS256_KEY_BYTES: usize = 32;
const DAY_MS: i64 = 86_400_000;

impl Settings {
    /// Loads and validates every setting.
    pub fn load(env: &Env, mode: Mode) -> Result<Self, SettingsError> {
        let store = load_store(env)?;
        let port = env.parse_int(PORT_SETTING, DEFAULT_PORT, 0, u16::MAX)?;
        let algorithm = match env.get(ALGORITHM) {
            None => SigningAlgorithm::Hs256,
            Some(raw) => SigningAlgorithm::parse(raw).ok_or_else(|| {
                SettingsError::new(ALGORITHM, format!("must be HS256, ES256 or EdDSA, got {:?}", shorten(raw)))
            })?,
        };
        let issuer = required_or_dev(env, ISSUER, mode, DEV_ISSUER)?;
        let audience = required_or_dev(env, AUDIENCE, mode, DEV_AUDIENCE)?;
        for secret in [ALGORITHM_KEY, ROTATION_SECRET, COSMOS_CONNECTION_STRING] {
            unresolved_reference(env, secret)?;
        }
        let algorithm_key = match (env.get(ALGORITHM_KEY), mode, algorithm) {
            (Some(key), _, _) => SecretBytes::new(key.as_bytes().to_vec()),
            (None, Mode::Development, SigningAlgorithm::Hs256) => {
                development_key(Path::new(env.get(EMBEDDED_PATH).unwrap_or(DEFAULT_EMBEDDED_PATH)))?
            }
            (None, _, _) => return Err(SettingsError::new(ALGORITHM_KEY, "is missing")),
        };
        if algorithm == SigningAlgorithm::Hs256 && algorithm_key.len() < MIN_HS256_KEY_BYTES {
            return Err(SettingsError::new(
                ALGORITHM_KEY,
                format!("must be at least {MIN_HS256_KEY_BYTES} bytes for HS256, got {}", algorithm_key.len()),
            ));
        }
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
            clock_skew_ms: env.parse_int(CLOCK_SKEW, 30_000, 0, 600_000)?,
        };
        let expires = Expires {
            create_expires_in_ms: env.parse_int(CREATE_EXPIRES, 300_000, 1_000, DAY_MS)?,
            refresh_expires_in_ms: env.parse_int(REFRESH_EXPIRES, 604_800_000, 1_000, 3_650 * DAY_MS)?,
        };
        let secret = match env.get(ROTATION_SECRET) {
            None => None,
            Some(s) if s.len() < MIN_HS256_KEY_BYTES => {
                return Err(SettingsError::new(
                    ROTATION_SECRET,
                    format!("must be at least {MIN_HS256_KEY_BYTES} bytes, got {}", s.len()),
                ));
            }
            Some(s) => Some(SecretBytes::new(s.as_bytes().to_vec())),
        };
        let rotation = Rotation { reuse_grace_ms: env.parse_int(REUSE_GRACE, 10_000, 0, 300_000)?, secret };
        let login = Login {
            max_failures: env.parse_int(MAX_FAILURES, 5, 1, 1_000)?,
            lockout_ms: env.parse_int(LOCKOUT, 900_000, 1_000, DAY_MS)?,
        };
        Ok(Self { descriptor, expires, rotation, login, store, port, mode })
    }
}

/// App Service hands the literal `@Microsoft.KeyVault(…)` text to the app when it cannot resolve a
/// Key Vault reference; used as a key, that text would look valid. Refuse it.
fn unresolved_reference(env: &Env, name: &str) -> Result<(), SettingsError> {
    match env.get(name) {
        Some(v) if v.trim_start().to_ascii_lowercase().starts_with("@microsoft.keyvault(") => Err(SettingsError::new(
            name,
            "is an unresolved Key Vault reference: grant the app's identity 'Key Vault Secrets User' and check the secret URI",
        )),
        _ => Ok(()),
    }
}

/// Only the store settings: all the `user` commands need. An endpoint or a connection string
/// selects Cosmos; otherwise the embedded store is used.
pub fn load_store(env: &Env) -> Result<StoreSettings, SettingsError> {
    unresolved_reference(env, COSMOS_CONNECTION_STRING)?;
    let auth = match (env.get(COSMOS_ENDPOINT), env.get(COSMOS_CONNECTION_STRING)) {
        (None, None) => {
            return Ok(StoreSettings::Embedded {
                path: PathBuf::from(env.get(EMBEDDED_PATH).unwrap_or(DEFAULT_EMBEDDED_PATH)),
            });
        }
        (Some(_), Some(_)) => {
            return Err(SettingsError::new(
                COSMOS_CONNECTION_STRING,
                format!(
                    "set either {COSMOS_ENDPOINT} (Entra ID) or {COSMOS_CONNECTION_STRING} (account key), not both"
                ),
            ));
        }
        (Some(endpoint), None) => (
            endpoint_url(endpoint, COSMOS_ENDPOINT)?,
            CosmosAuth::EntraId { client_id: env.get(AZURE_CLIENT_ID).map(|s| s.trim().to_string()) },
        ),
        (None, Some(cs)) => {
            let (endpoint, key) = parse_connection_string(cs)?;
            (endpoint, CosmosAuth::Key(key))
        }
    };
    let (endpoint, auth) = auth;
    Ok(StoreSettings::Cosmos(CosmosSettings {
        endpoint,
        auth,
        database: resource_id(env, COSMOS_DATABASE, "jwt-refresh-token")?,
        token_container: resource_id(env, COSMOS_TOKEN_CONTAINER, "tokens")?,
        user_container: resource_id(env, COSMOS_USER_CONTAINER, "users")?,
        request_timeout_ms: env.parse_int(COSMOS_TIMEOUT, 5_000, 100, 120_000)?,
        region: env.get("REGION_NAME").map(|r| r.trim().to_string()),
    }))
}

fn endpoint_url(raw: &str, setting: &str) -> Result<String, SettingsError> {
    let raw = raw.trim();
    let ok = (raw.starts_with("https://") || raw.starts_with("http://"))
        && raw.len() > "https://".len()
        && !raw.contains(char::is_whitespace);
    if !ok {
        return Err(SettingsError::new(setting, format!("must be an http(s) URL, got {:?}", shorten(raw))));
    }
    Ok(raw.to_string())
}

/// `AccountEndpoint=https://…;AccountKey=…;` (order free, keys without case).
fn parse_connection_string(raw: &str) -> Result<(String, SecretBytes), SettingsError> {
    let (mut endpoint, mut key) = (None, None);
    for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(SettingsError::new(
                COSMOS_CONNECTION_STRING,
                "must be of the form AccountEndpoint=…;AccountKey=…;",
            ));
        };
        if name.trim().eq_ignore_ascii_case("AccountEndpoint") {
            endpoint = Some(endpoint_url(value, COSMOS_CONNECTION_STRING)?);
        } else if name.trim().eq_ignore_ascii_case("AccountKey") {
            key = Some(SecretBytes::new(value.trim().as_bytes().to_vec()));
        }
    }
    match (endpoint, key) {
        (Some(e), Some(k)) if !k.is_empty() => Ok((e, k)),
        (None, _) => Err(SettingsError::new(COSMOS_CONNECTION_STRING, "has no AccountEndpoint")),
        _ => Err(SettingsError::new(COSMOS_CONNECTION_STRING, "has no AccountKey")),
    }
}

/// A Cosmos database or container id: 1–255 characters, none of `/ \\ ? #`.
fn resource_id(env: &Env, name: &str, default: &str) -> Result<String, SettingsError> {
    let value = env.get(name).map_or(default, str::trim);
    if value.len() > 255 || value.contains(['/', '\\', '?', '#']) || value.ends_with(' ') {
        return Err(SettingsError::new(name, "must be 1 to 255 characters without / \\ ? #"));
    }
    Ok(value.to_string())
}

fn required_or_dev(env: &Env, name: &str, mode: Mode, dev_default: &str) -> Result<String, SettingsError> {
    match (env.get(name), mode) {
        (Some(v), _) => Ok(v.trim().to_string()),
        (None, Mode::Development) => Ok(dev_default.to_string()),
        (None, Mode::Production) => Err(SettingsError::new(name, "is missing")),
    }
}

/// Reads the development signing key kept in the store directory, creating it on first use.
fn development_key(dir: &Path) -> Result<SecretBytes, SettingsError> {
    use base64::Engine as _;
    use rand::TryRng as _;

    let file = dir.join(DEV_KEY_FILE);
    let problem = |what: &str, e: &dyn fmt::Display| {
        SettingsError::new(
            ALGORITHM_KEY,
            format!("is missing and the development key {} could not be {what}: {e}", file.display()),
        )
    };
    match std::fs::read_to_string(&file) {
        Ok(existing) if existing.trim().len() >= MIN_HS256_KEY_BYTES => {
            return Ok(SecretBytes::new(existing.trim().as_bytes().to_vec()));
        }
        Ok(_) => return Err(problem("used", &"it is shorter than 32 bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(problem("read", &e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| problem("created", &e))?;
    let mut raw = [0u8; 48];
    rand::rngs::SysRng.try_fill_bytes(&mut raw).map_err(|e| problem("generated", &e))?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    write_private_file(&file, key.as_bytes()).map_err(|e| problem("written", &e))?;
    Ok(SecretBytes::new(key.into_bytes()))
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (ISSUER, "https://issuer.example"),
            (AUDIENCE, "api://example"),
            (ALGORITHM_KEY, "0123456789abcdef0123456789abcdef"),
        ]
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
            ("JwtRefreshToken:Descriptor:AlgorithmKey", "0123456789abcdef0123456789abcdef"),
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
            (&[(PORT_SETTING, "70000")], PORT_SETTING, "port out of range"),
        ];
        for (extra, setting, why) in cases {
            let mut pairs: Vec<(&str, &str)> = base();
            pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            pairs.extend_from_slice(extra);
            let err = Settings::load(&Env::from_pairs(pairs), Mode::Production).unwrap_err();
            assert_eq!(err.setting, *setting, "{why}: {err}");
            assert!(err.to_string().starts_with(&format!("setting {setting}: ")), "{why}: {err}");
        }
    }

    #[test]
    fn production_requires_issuer_audience_and_key() {
        for missing in [ISSUER, AUDIENCE, ALGORITHM_KEY] {
            let pairs: Vec<_> = base().into_iter().filter(|(k, _)| *k != missing).collect();
            let err = Settings::load(&Env::from_pairs(pairs), Mode::Production).unwrap_err();
            assert_eq!(err.setting, missing);
            assert_eq!(err.problem, "is missing");
        }
    }

    #[test]
    fn development_mode_generates_and_keeps_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let env = Env::from_pairs([(EMBEDDED_PATH, path.to_str().unwrap())]);
        let first = Settings::load(&env, Mode::Development).unwrap();
        let second = Settings::load(&env, Mode::Development).unwrap();
        assert_eq!(first.descriptor.issuer, DEV_ISSUER);
        assert_eq!(first.descriptor.audience, DEV_AUDIENCE);
        assert!(first.descriptor.algorithm_key.len() >= 32);
        assert_eq!(first.descriptor.algorithm_key, second.descriptor.algorithm_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path.join(DEV_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
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
        assert_eq!(c.auth, CosmosAuth::EntraId { client_id: Some("abc".into()) });
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
}
