//! Sign-in providers (`JwtRefreshToken__Federation__…`): whose OpenID Connect ID tokens the token
//! endpoint exchanges for sessions (RFC 8693), each validated as its vendor documents.
//!
//! A provider named `apple`, `google` or `microsoft` starts from that vendor's preset (issuer, key
//! set, nonce handling); any other name is a generic OpenID provider that names its `Issuer`.
//! Every provider needs at least one audience (the client ids its tokens are issued to).

use super::env::{Env, shorten};
use super::names::{
    FEDERATION_ALLOW_HTTP_LOOPBACK, FEDERATION_FAILURE_WINDOW, FEDERATION_FETCH_TIMEOUT,
    FEDERATION_KEY_REFETCH_INTERVAL, FEDERATION_MAX_FAILURES, FEDERATION_PROVIDERS, PROVIDER_FIELDS,
    PROVIDER_NUMBERED_FIELDS,
};
use super::{Problems, SettingsError, flag};

/// Most providers one service configures.
pub const MAX_PROVIDERS: usize = 16;
/// Most audiences (or tenants) one provider lists.
const MAX_LIST: usize = 32;
/// The placeholder of Microsoft's multi-tenant issuer, replaced by the token's `tid`.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// How a provider's ID token carries the nonce the client sent with its sign-in request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceMode {
    /// No nonce is checked.
    None,
    /// The token's `nonce` is the raw nonce the client sends here.
    Raw,
    /// The token's `nonce` is the lowercase hex SHA-256 of the raw nonce (Sign in with Apple as
    /// Firebase and Supabase use it).
    Sha256,
}

/// Which Microsoft Entra tenants may sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    /// Any tenant (and personal Microsoft accounts).
    Any,
    /// Only these tenant ids (lowercase GUIDs).
    Only(Vec<String>),
}

/// A signature algorithm a provider may sign ID tokens with (never `none`, never HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (every vendor's choice).
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl IdTokenAlgorithm {
    /// The JOSE name.
    pub fn jose_name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Rs256, Self::Ps256, Self::Es256, Self::EdDsa]
            .into_iter()
            .find(|a| a.jose_name().eq_ignore_ascii_case(raw))
    }
}

/// One sign-in provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its name (lowercase), as clients send it in `provider`.
    pub name: String,
    /// The exact `iss` values accepted (Microsoft's holds [`TENANT_PLACEHOLDER`]).
    pub issuers: Vec<String>,
    /// The `aud` values accepted (client ids).
    pub audiences: Vec<String>,
    /// Where its signing keys are; `None`: from `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// How the nonce is carried.
    pub nonce: NonceMode,
    /// Refuse tokens without `email_verified: true`.
    pub require_email_verified: bool,
    /// The algorithms accepted.
    pub algorithms: Vec<IdTokenAlgorithm>,
    /// Microsoft only: the tenants allowed (the token's `tid`).
    pub tenants: Option<Tenants>,
    /// A token whose `amr` holds `mfa` passes the second factor of an account that has one.
    pub trust_mfa: bool,
}

/// The federation settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Federation {
    /// The providers, by name.
    pub providers: Vec<Provider>,
    /// Tests only: `http://127.0.0.1` issuers and key sets are allowed.
    pub allow_http_loopback: bool,
    /// Least time between two key-set fetches of one provider caused by an unknown key id.
    pub key_refetch_interval_ms: i64,
    /// Timeout of one discovery or key-set request.
    pub fetch_timeout_ms: i64,
    /// Refused exchanges per client address, and per provider subject, in the failure window.
    pub max_failures: u32,
    /// The failure window.
    pub failure_window_ms: i64,
}

impl Federation {
    /// The provider called `name` (any case).
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// A vendor's preset: issuers, key set and nonce handling, as the vendor documents them.
struct Preset {
    issuers: &'static [&'static str],
    jwks_uri: &'static str,
    nonce: NonceMode,
}

fn preset(name: &str) -> Option<Preset> {
    match name {
        // Sign in with Apple: "Verifying a user"; the nonce arrives hashed (SHA-256, hex).
        "apple" => Some(Preset {
            issuers: &["https://appleid.apple.com"],
            jwks_uri: "https://appleid.apple.com/auth/keys",
            nonce: NonceMode::Sha256,
        }),
        // Google Identity: "Verify the Google ID token on your server side" accepts both forms.
        "google" => Some(Preset {
            issuers: &["https://accounts.google.com", "accounts.google.com"],
            jwks_uri: "https://www.googleapis.com/oauth2/v3/certs",
            nonce: NonceMode::Raw,
        }),
        // Microsoft identity platform v2.0 tokens: the issuer names the token's tenant.
        "microsoft" => Some(Preset {
            issuers: &["https://login.microsoftonline.com/{tenantid}/v2.0"],
            jwks_uri: "https://login.microsoftonline.com/common/discovery/v2.0/keys",
            nonce: NonceMode::Raw,
        }),
        _ => None,
    }
}

/// Whether `name` (normalised: lowercase, `__`) is one of a provider's settings.
pub(crate) fn is_provider_setting(name: &str) -> bool {
    let base = format!("{}__", FEDERATION_PROVIDERS.to_ascii_lowercase());
    let Some(rest) = name.strip_prefix(&base) else { return false };
    let Some((provider, field)) = rest.split_once("__") else { return false };
    if provider.is_empty() {
        return false;
    }
    let (field, index) = match field.split_once("__") {
        Some((f, i)) => (f, Some(i)),
        None => (field, None),
    };
    let numbered = PROVIDER_NUMBERED_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(field));
    PROVIDER_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(field))
        && match index {
            None => !numbered,
            Some(i) => numbered && !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()),
        }
}

/// The provider names that have settings, sorted.
fn provider_names(env: &Env) -> Vec<String> {
    let base = format!("{}__", FEDERATION_PROVIDERS.to_ascii_lowercase());
    let mut names: Vec<String> = env
        .names()
        .filter_map(|n| n.strip_prefix(&base))
        .filter_map(|rest| rest.split_once("__").map(|(p, _)| p.to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reads the federation settings, pushing every problem (one line naming the setting each).
pub(super) fn load(env: &Env, p: &mut Problems) -> Federation {
    let allow_http_loopback = p.take(flag(env, FEDERATION_ALLOW_HTTP_LOOPBACK), || false);
    let mut providers = Vec::new();
    let names = provider_names(env);
    if names.len() > MAX_PROVIDERS {
        p.push(SettingsError::new(
            FEDERATION_PROVIDERS,
            format!("names {} providers; at most {MAX_PROVIDERS} are supported", names.len()),
        ));
    }
    for name in names.iter().take(MAX_PROVIDERS) {
        match provider(env, name, allow_http_loopback) {
            Ok(provider) => providers.push(provider),
            Err(errors) => errors.into_iter().for_each(|e| p.push(e)),
        }
    }
    Federation {
        providers,
        allow_http_loopback,
        key_refetch_interval_ms: p.int(env, FEDERATION_KEY_REFETCH_INTERVAL),
        fetch_timeout_ms: p.int(env, FEDERATION_FETCH_TIMEOUT),
        max_failures: p.int(env, FEDERATION_MAX_FAILURES),
        failure_window_ms: p.int(env, FEDERATION_FAILURE_WINDOW),
    }
}

fn setting(provider: &str, field: &str) -> String {
    format!("{FEDERATION_PROVIDERS}__{provider}__{field}")
}

/// Numbered values `field__0`, `field__1`, … until the first gap (at most [`MAX_LIST`]).
fn numbered(env: &Env, provider: &str, field: &str) -> Vec<String> {
    (0..MAX_LIST)
        .map_while(|i| env.get(&format!("{}__{i}", setting(provider, field))))
        .map(|v| v.trim().to_string())
        .collect()
}

/// Whether `url` is an https URL with a host, or (with `loopback`) an `http://127.0.0.1…` one.
pub fn acceptable_url(url: &str, loopback: bool) -> bool {
    let host_part = |rest: &str| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"')
    };
    if let Some(rest) = url.strip_prefix("https://") {
        return host_part(rest);
    }
    loopback
        && url.strip_prefix("http://").is_some_and(|rest| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        })
}

fn provider(env: &Env, name: &str, loopback: bool) -> Result<Provider, Vec<SettingsError>> {
    let mut errors = Vec::new();
    let preset = preset(name);
    let valid_name =
        name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        errors.push(SettingsError::new(
            setting(name, "…"),
            "names a provider with other characters than a-z, 0-9 and '-' (or more than 32)",
        ));
    }
    let issuers = match (env.get(&setting(name, "Issuer")), &preset) {
        (Some(issuer), _) => vec![issuer.trim().to_string()],
        (None, Some(preset)) => preset.issuers.iter().map(|s| (*s).to_string()).collect(),
        (None, None) => {
            errors.push(SettingsError::new(
                setting(name, "Issuer"),
                "is missing (only apple, google and microsoft have a preset issuer)",
            ));
            Vec::new()
        }
    };
    // Google's bare `accounts.google.com` is an issuer value, not a URL: only presets hold one.
    for issuer in issuers.iter().filter(|i| i.contains("://") || env.get(&setting(name, "Issuer")).is_some()) {
        if !acceptable_url(issuer, loopback) {
            errors.push(SettingsError::new(
                setting(name, "Issuer"),
                format!("must be an https URL, got {:?}", shorten(issuer)),
            ));
        }
    }
    let audiences = numbered(env, name, "Audiences");
    if audiences.is_empty() {
        errors.push(SettingsError::new(
            format!("{}__0", setting(name, "Audiences")),
            "is missing: name the client id (app bundle id, OAuth client id) the provider issues tokens to",
        ));
    }
    let jwks_uri = env
        .get(&setting(name, "JwksUri"))
        .map(|u| u.trim().to_string())
        .or_else(|| preset.as_ref().map(|p| p.jwks_uri.to_string()));
    if let Some(uri) = &jwks_uri
        && !acceptable_url(uri, loopback)
    {
        errors.push(SettingsError::new(
            setting(name, "JwksUri"),
            format!("must be an https URL, got {:?}", shorten(uri)),
        ));
    }
    let nonce = match env.get(&setting(name, "NonceMode")).map(|m| m.trim().to_ascii_lowercase()) {
        None => preset.as_ref().map_or(NonceMode::Raw, |p| p.nonce),
        Some(m) if m == "none" => NonceMode::None,
        Some(m) if m == "raw" => NonceMode::Raw,
        Some(m) if m == "sha256" => NonceMode::Sha256,
        Some(m) => {
            errors.push(SettingsError::new(
                setting(name, "NonceMode"),
                format!("must be none, raw or sha256, got {:?}", shorten(&m)),
            ));
            NonceMode::Raw
        }
    };
    let require_email_verified = flag(env, &setting(name, "RequireEmailVerified")).unwrap_or_else(|e| {
        errors.push(e);
        false
    });
    let trust_mfa = flag(env, &setting(name, "TrustMfa")).unwrap_or_else(|e| {
        errors.push(e);
        false
    });
    let algorithms = match env.get(&setting(name, "AllowedAlgorithms")) {
        None => vec![IdTokenAlgorithm::Rs256],
        Some(raw) => {
            let parsed: Vec<Option<IdTokenAlgorithm>> =
                raw.split(',').map(str::trim).filter(|a| !a.is_empty()).map(IdTokenAlgorithm::parse).collect();
            if parsed.is_empty() || parsed.iter().any(Option::is_none) {
                errors.push(SettingsError::new(
                    setting(name, "AllowedAlgorithms"),
                    format!("must list RS256, PS256, ES256 or EdDSA (never none or HS*), got {:?}", shorten(raw)),
                ));
            }
            parsed.into_iter().flatten().collect()
        }
    };
    let tenant_list = numbered(env, name, "Tenants");
    let tenants = match (name, tenant_list.as_slice()) {
        ("microsoft", []) => {
            errors.push(SettingsError::new(
                format!("{}__0", setting(name, "Tenants")),
                "is missing: list the Entra tenant ids allowed to sign in, or set it to any",
            ));
            None
        }
        ("microsoft", [only]) if only.eq_ignore_ascii_case("any") => Some(Tenants::Any),
        ("microsoft", list) => {
            let ok = list.iter().all(|t| t.len() == 36 && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
            if !ok {
                errors.push(SettingsError::new(
                    format!("{}__N", setting(name, "Tenants")),
                    "must be tenant ids (GUIDs), or the single value any",
                ));
            }
            Some(Tenants::Only(list.iter().map(|t| t.to_ascii_lowercase()).collect()))
        }
        (_, []) => None,
        (_, _) => {
            errors.push(SettingsError::new(
                format!("{}__0", setting(name, "Tenants")),
                "is only read for the microsoft provider",
            ));
            None
        }
    };
    if issuers.iter().any(|i| i.contains(TENANT_PLACEHOLDER)) && tenants.is_none() && name != "microsoft" {
        errors.push(SettingsError::new(
            setting(name, "Issuer"),
            "holds {tenantid}, which only the microsoft provider fills in",
        ));
    }
    if errors.is_empty() {
        Ok(Provider {
            name: name.to_string(),
            issuers,
            audiences,
            jwks_uri,
            nonce,
            require_email_verified,
            algorithms,
            tenants,
            trust_mfa,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(pairs: &[(&str, &str)]) -> Result<Federation, Vec<String>> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut p = Problems::default();
        let f = load(&env, &mut p);
        if p.0.is_empty() { Ok(f) } else { Err(p.0.iter().map(ToString::to_string).collect()) }
    }

    const P: &str = "JwtRefreshToken__Federation__Providers";

    #[test]
    fn presets_fill_in_issuer_keys_and_nonce_mode() {
        let f = load_from(&[
            (&format!("{P}__apple__Audiences__0"), "com.example.app"),
            (&format!("{P}__apple__Audiences__1"), "com.example.web"),
            (&format!("{P}__google__Audiences__0"), "123.apps.googleusercontent.com"),
            (&format!("{P}__microsoft__Audiences__0"), "00000000-0000-0000-0000-000000000001"),
            (&format!("{P}__microsoft__Tenants__0"), "any"),
        ])
        .unwrap();
        let apple = f.provider("Apple").unwrap();
        assert_eq!(apple.issuers, vec!["https://appleid.apple.com"]);
        assert_eq!(apple.audiences, vec!["com.example.app", "com.example.web"]);
        assert_eq!(apple.nonce, NonceMode::Sha256);
        assert_eq!(f.provider("google").unwrap().issuers.len(), 2);
        assert_eq!(f.provider("microsoft").unwrap().tenants, Some(Tenants::Any));
        assert_eq!(apple.algorithms, vec![IdTokenAlgorithm::Rs256]);
    }

    #[test]
    fn each_bad_provider_setting_is_named() {
        for (pairs, expect) in [
            (vec![(format!("{P}__corp__Audiences__0"), "x")], "__corp__Issuer: is missing"),
            (vec![(format!("{P}__corp__Issuer"), "https://id.example")], "__corp__Audiences__0: is missing"),
            (
                vec![(format!("{P}__corp__Issuer"), "http://id.example"), (format!("{P}__corp__Audiences__0"), "x")],
                "must be an https URL",
            ),
            (
                vec![
                    (format!("{P}__google__Audiences__0"), "x"),
                    (format!("{P}__google__AllowedAlgorithms"), "RS256,HS256"),
                ],
                "never none or HS*",
            ),
            (
                vec![(format!("{P}__google__Audiences__0"), "x"), (format!("{P}__google__NonceMode"), "md5")],
                "must be none, raw or sha256",
            ),
            (vec![(format!("{P}__microsoft__Audiences__0"), "x")], "Tenants__0: is missing"),
            (
                vec![
                    (format!("{P}__microsoft__Audiences__0"), "x"),
                    (format!("{P}__microsoft__Tenants__0"), "contoso"),
                ],
                "tenant ids (GUIDs)",
            ),
            (vec![(format!("{P}__Bad_Name__Audiences__0"), "x")], "other characters"),
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            let errors = load_from(&pairs).unwrap_err();
            assert!(errors.iter().any(|e| e.contains(expect)), "{expect}: {errors:?}");
        }
    }

    #[test]
    fn loopback_http_needs_the_test_setting() {
        let pairs = [(format!("{P}__test__Issuer"), "http://127.0.0.1:9"), (format!("{P}__test__Audiences__0"), "a")];
        let mut pairs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        assert!(load_from(&pairs).is_err());
        pairs.push(("JwtRefreshToken__Federation__AllowHttpLoopback", "true"));
        assert_eq!(load_from(&pairs).unwrap().providers[0].issuers, vec!["http://127.0.0.1:9"]);
        assert!(!acceptable_url("http://127.0.0.1.evil.example/", true));
        assert!(!acceptable_url("http://10.0.0.1/", true));
    }

    #[test]
    fn provider_setting_names_are_known_and_misspelt_fields_are_not() {
        let base = "jwtrefreshtoken__federation__providers__";
        assert!(is_provider_setting(&format!("{base}apple__audiences__0")));
        assert!(is_provider_setting(&format!("{base}corp__issuer")));
        assert!(is_provider_setting(&format!("{base}microsoft__tenants__3")));
        assert!(!is_provider_setting(&format!("{base}apple__audience__0")));
        assert!(!is_provider_setting(&format!("{base}apple__audiences")));
        assert!(!is_provider_setting(&format!("{base}apple__issuer__0")));
        assert!(!is_provider_setting(&format!("{base}__issuer")));
    }
}
