//! E-mail settings (`JwtRefreshToken__Email__*`): the transport, the sender, the templates' names
//! and links, the send queue, the codes' rules and which security notices are sent.

use std::path::PathBuf;

use super::env::{Env, shorten};
use super::federation::acceptable_url;
use super::names::{
    EMAIL_ACS_API_VERSION, EMAIL_ACS_ENDPOINT, EMAIL_ALLOW_HTTP_LOOPBACK, EMAIL_APP_URL, EMAIL_CODE_ATTEMPTS,
    EMAIL_CODE_LENGTH, EMAIL_CODE_LIFETIME, EMAIL_CODES_PER_HOUR, EMAIL_FROM, EMAIL_MAILS_PER_ADDRESS_PER_HOUR,
    EMAIL_MAX_ATTEMPTS, EMAIL_NOTIFY_ACCOUNT_DISABLED, EMAIL_NOTIFY_EMAIL_CHANGED, EMAIL_NOTIFY_FACTOR_CHANGED,
    EMAIL_NOTIFY_NEW_DEVICE, EMAIL_NOTIFY_PASSWORD_CHANGED, EMAIL_OUTBOX_PATH, EMAIL_PRODUCT_NAME,
    EMAIL_QUEUE_CAPACITY, EMAIL_RESET_URL, EMAIL_RETRY_BASE, EMAIL_SEND_TIMEOUT, EMAIL_SMTP_HOST, EMAIL_SMTP_PASSWORD,
    EMAIL_SMTP_PORT, EMAIL_SMTP_SECURITY, EMAIL_SMTP_USERNAME, EMAIL_TRANSPORT, EMAIL_VERIFY_URL, text_default,
};
use super::{Identity, Mode, Problems, SettingsError, StoreSettings, flag, unresolved_reference};
use crate::secret::SecretBytes;

/// How mail leaves the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// No mail: addresses and recovery by e-mail are not available.
    None,
    /// Azure Communication Services Email, with a Microsoft Entra token of the managed identity.
    Acs {
        /// `https://<name>.communication.azure.com` (no trailing slash).
        endpoint: String,
        /// The REST API version.
        api_version: String,
        /// Client id of a user-assigned managed identity (`AZURE_CLIENT_ID`).
        client_id: Option<String>,
        /// Which credential gets the token.
        identity: Identity,
        /// Tests: an `http://127.0.0.1` endpoint is allowed.
        allow_http_loopback: bool,
    },
    /// An SMTP relay.
    Smtp {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
        /// How the connection is protected.
        security: SmtpSecurity,
        /// User name and password, when the relay needs them.
        credentials: Option<(String, SecretBytes)>,
    },
    /// One `.eml` file per message in this directory.
    Outbox {
        /// The directory.
        path: PathBuf,
    },
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// STARTTLS, required.
    StartTls,
    /// Implicit TLS.
    Tls,
    /// Plain text (a relay on loopback only).
    None,
}

/// The rules of verification and reset codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRules {
    /// Digits per code (6 to 8).
    pub length: usize,
    /// How long a code is valid.
    pub lifetime_ms: i64,
    /// Wrong tries per code.
    pub attempts: u32,
    /// Codes per account per hour, per purpose.
    pub per_hour: u32,
    /// Code mails per address per hour.
    pub per_address_per_hour: u32,
}

/// Which security notices are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notices {
    /// Password changed, set or reset.
    pub password_changed: bool,
    /// A password login from a new device.
    pub new_device: bool,
    /// A factor or passkey added or removed.
    pub factor_changed: bool,
    /// The account disabled.
    pub account_disabled: bool,
    /// The address changed (to the old address).
    pub email_changed: bool,
}

/// The e-mail settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The transport.
    pub transport: Transport,
    /// The sender address.
    pub from: String,
    /// The product's name in subjects and greetings.
    pub product_name: String,
    /// The app's address, at the foot of every mail.
    pub app_url: Option<String>,
    /// The page for verification codes.
    pub verify_url: Option<String>,
    /// The page for reset codes.
    pub reset_url: Option<String>,
    /// Mails waiting per instance.
    pub queue_capacity: usize,
    /// Tries per mail.
    pub max_attempts: u32,
    /// The first backoff.
    pub retry_base_ms: u64,
    /// Timeout of one transport request.
    pub send_timeout_ms: u64,
    /// The codes' rules.
    pub codes: CodeRules,
    /// The notices sent.
    pub notices: Notices,
}

impl Email {
    /// Whether mail can be sent at all.
    pub fn enabled(&self) -> bool {
        self.transport != Transport::None
    }
}

/// A `true`/`false` setting whose default is `true`.
fn flag_on(env: &Env, name: &str) -> Result<bool, SettingsError> {
    if env.get(name).is_none() { Ok(true) } else { flag(env, name) }
}

/// An optional absolute URL setting for a link in mails.
fn link(env: &Env, name: &str) -> Result<Option<String>, SettingsError> {
    let Some(raw) = env.get(name).map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://")).unwrap_or_default();
    if rest.is_empty()
        || rest.starts_with('/')
        || raw.chars().any(|c| c.is_whitespace() || c.is_control() || "\"<>'".contains(c))
    {
        return Err(SettingsError::new(name, format!("must be an absolute http(s) URL, got {:?}", shorten(raw))));
    }
    Ok(Some(raw.to_string()))
}

/// Whether `address` is a plausible sender address (`name@domain`, no spaces or angle brackets).
fn plausible_sender(address: &str) -> bool {
    address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && (domain.contains('.') || domain == "localhost")
            && !address.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:[]\\".contains(c))
            && address.len() <= 254
    })
}

/// Reads the e-mail settings, pushing every problem (one line naming the setting each).
pub(super) fn load(env: &Env, mode: Mode, store: &StoreSettings, p: &mut Problems) -> Email {
    let dev = mode == Mode::Development;
    let transport_name = env
        .get(EMAIL_TRANSPORT)
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_else(|| if dev { "outbox".into() } else { text_default(EMAIL_TRANSPORT).into() });
    let smtp_port: u16 = p.int(env, EMAIL_SMTP_PORT);
    let transport = match transport_name.as_str() {
        "none" => Ok(Transport::None),
        "outbox" => Ok(outbox(env, store)),
        "acs" => acs(env),
        "smtp" => smtp(env, smtp_port),
        other => Err(vec![SettingsError::new(
            EMAIL_TRANSPORT,
            format!("must be none, acs, smtp or outbox, got {:?}", shorten(other)),
        )]),
    };
    let transport = match transport {
        Ok(t) => t,
        Err(errors) => {
            errors.into_iter().for_each(|e| p.push(e));
            Transport::None
        }
    };
    let from = match env.get(EMAIL_FROM).map(str::trim) {
        Some(f) if plausible_sender(f) => f.to_string(),
        Some(f) => {
            p.push(SettingsError::new(
                EMAIL_FROM,
                format!("must be an address like no-reply@example.com, got {:?}", shorten(f)),
            ));
            String::new()
        }
        None if dev => "no-reply@localhost".into(),
        None if transport_name != "none" => {
            p.push(SettingsError::new(
                EMAIL_FROM,
                format!("is missing: {EMAIL_TRANSPORT} is {transport_name} and mail needs a sender address"),
            ));
            String::new()
        }
        None => String::new(),
    };
    let product_name: String = env
        .get(EMAIL_PRODUCT_NAME)
        .unwrap_or(text_default(EMAIL_PRODUCT_NAME))
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    Email {
        transport,
        from,
        product_name,
        app_url: p.take(link(env, EMAIL_APP_URL), || None),
        verify_url: p.take(link(env, EMAIL_VERIFY_URL), || None),
        reset_url: p.take(link(env, EMAIL_RESET_URL), || None),
        queue_capacity: p.int(env, EMAIL_QUEUE_CAPACITY),
        max_attempts: p.int(env, EMAIL_MAX_ATTEMPTS),
        retry_base_ms: p.int(env, EMAIL_RETRY_BASE),
        send_timeout_ms: p.int(env, EMAIL_SEND_TIMEOUT),
        codes: CodeRules {
            length: p.int(env, EMAIL_CODE_LENGTH),
            lifetime_ms: p.int(env, EMAIL_CODE_LIFETIME),
            attempts: p.int(env, EMAIL_CODE_ATTEMPTS),
            per_hour: p.int(env, EMAIL_CODES_PER_HOUR),
            per_address_per_hour: p.int(env, EMAIL_MAILS_PER_ADDRESS_PER_HOUR),
        },
        notices: Notices {
            password_changed: p.take(flag_on(env, EMAIL_NOTIFY_PASSWORD_CHANGED), || true),
            new_device: p.take(flag_on(env, EMAIL_NOTIFY_NEW_DEVICE), || true),
            factor_changed: p.take(flag_on(env, EMAIL_NOTIFY_FACTOR_CHANGED), || true),
            account_disabled: p.take(flag_on(env, EMAIL_NOTIFY_ACCOUNT_DISABLED), || true),
            email_changed: p.take(flag_on(env, EMAIL_NOTIFY_EMAIL_CHANGED), || true),
        },
    }
}

fn outbox(env: &Env, store: &StoreSettings) -> Transport {
    let path = match (env.get(EMAIL_OUTBOX_PATH).map(str::trim).filter(|p| !p.is_empty()), store) {
        (Some(path), _) => PathBuf::from(path),
        (None, StoreSettings::Embedded { path }) => path.join("outbox"),
        (None, _) => PathBuf::from(super::names::DEFAULT_EMBEDDED_PATH).join("outbox"),
    };
    Transport::Outbox { path }
}

fn acs(env: &Env) -> Result<Transport, Vec<SettingsError>> {
    let allow_http_loopback = flag(env, EMAIL_ALLOW_HTTP_LOOPBACK).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let endpoint = match env.get(EMAIL_ACS_ENDPOINT).map(|e| e.trim().trim_end_matches('/')) {
        Some(e) if acceptable_url(e, allow_http_loopback) && !e.contains(['?', '#']) => e.to_string(),
        Some(e) => {
            errors.push(SettingsError::new(
                EMAIL_ACS_ENDPOINT,
                format!("must be https://<name>.<geography>.communication.azure.com, got {:?}", shorten(e)),
            ));
            String::new()
        }
        None => {
            errors.push(SettingsError::new(
                EMAIL_ACS_ENDPOINT,
                format!("is missing: {EMAIL_TRANSPORT} is acs (the Bicep output communicationEndpoint)"),
            ));
            String::new()
        }
    };
    let api_version = env.get(EMAIL_ACS_API_VERSION).unwrap_or(text_default(EMAIL_ACS_API_VERSION)).trim().to_string();
    if api_version.is_empty() || !api_version.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        errors.push(SettingsError::new(
            EMAIL_ACS_API_VERSION,
            format!("must look like 2023-03-31, got {:?}", shorten(&api_version)),
        ));
    }
    let identity = match super::cosmos::identity(env, EMAIL_ACS_ENDPOINT) {
        Ok(identity) => identity,
        Err(e) => {
            errors.push(e);
            Identity::Developer
        }
    };
    let client_id = env.get(super::names::AZURE_CLIENT_ID).map(|id| id.trim().to_string()).filter(|id| !id.is_empty());
    if errors.is_empty() {
        Ok(Transport::Acs { endpoint, api_version, client_id, identity, allow_http_loopback })
    } else {
        Err(errors)
    }
}

fn smtp(env: &Env, port: u16) -> Result<Transport, Vec<SettingsError>> {
    let mut errors = Vec::new();
    let host = env.get(EMAIL_SMTP_HOST).map(str::trim).filter(|h| !h.is_empty()).map(str::to_string);
    if host.is_none() {
        errors.push(SettingsError::new(EMAIL_SMTP_HOST, format!("is missing: {EMAIL_TRANSPORT} is smtp")));
    }
    let security = match env.get(EMAIL_SMTP_SECURITY).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("starttls") => SmtpSecurity::StartTls,
        Some("tls") => SmtpSecurity::Tls,
        Some("none") => SmtpSecurity::None,
        Some(other) => {
            errors.push(SettingsError::new(
                EMAIL_SMTP_SECURITY,
                format!("must be starttls, tls or none, got {:?}", shorten(other)),
            ));
            SmtpSecurity::StartTls
        }
    };
    if let Err(e) = unresolved_reference(env, EMAIL_SMTP_PASSWORD) {
        errors.push(e);
    }
    let credentials = match (env.get(EMAIL_SMTP_USERNAME), env.get(EMAIL_SMTP_PASSWORD)) {
        (Some(user), Some(password)) => Some((user.trim().to_string(), SecretBytes::new(password.as_bytes().to_vec()))),
        (None, None) => None,
        (Some(_), None) => {
            errors.push(SettingsError::new(
                EMAIL_SMTP_PASSWORD,
                format!("is missing while {EMAIL_SMTP_USERNAME} is set"),
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(SettingsError::new(
                EMAIL_SMTP_USERNAME,
                format!("is missing while {EMAIL_SMTP_PASSWORD} is set"),
            ));
            None
        }
    };
    if security == SmtpSecurity::None && credentials.is_some() {
        errors.push(SettingsError::new(
            EMAIL_SMTP_SECURITY,
            "is none while a password is set: the password would cross the network in plain text; use starttls or tls",
        ));
    }
    match (host, errors.is_empty()) {
        (Some(host), true) => Ok(Transport::Smtp { host, port, security, credentials }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(pairs: &[(&str, &str)], mode: Mode) -> Result<Email, Vec<SettingsError>> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut p = Problems::default();
        let store = StoreSettings::Embedded { path: PathBuf::from("/data") };
        let email = load(&env, mode, &store, &mut p);
        if p.0.is_empty() { Ok(email) } else { Err(p.0) }
    }

    #[test]
    fn off_by_default_and_outbox_in_development() {
        let off = load_with(&[], Mode::Production).unwrap();
        assert!(!off.enabled());
        let dev = load_with(&[], Mode::Development).unwrap();
        assert_eq!(dev.transport, Transport::Outbox { path: PathBuf::from("/data/outbox") });
        assert_eq!(dev.from, "no-reply@localhost");
        assert!(dev.notices.new_device && dev.notices.password_changed);
    }

    #[test]
    fn every_missing_or_bad_setting_is_named() {
        let errors = load_with(&[(EMAIL_TRANSPORT, "acs")], Mode::Production).unwrap_err();
        let named: Vec<&str> = errors.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(named, [EMAIL_ACS_ENDPOINT, EMAIL_FROM]);
        let errors = load_with(
            &[
                (EMAIL_TRANSPORT, "smtp"),
                (EMAIL_FROM, "a b@c"),
                (EMAIL_SMTP_USERNAME, "u"),
                (EMAIL_NOTIFY_NEW_DEVICE, "yes"),
            ],
            Mode::Production,
        )
        .unwrap_err();
        let named: Vec<&str> = errors.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(named, [EMAIL_SMTP_HOST, EMAIL_SMTP_PASSWORD, EMAIL_FROM, EMAIL_NOTIFY_NEW_DEVICE]);
        let errors = load_with(&[(EMAIL_TRANSPORT, "carrier-pigeon")], Mode::Production).unwrap_err();
        assert_eq!(errors[0].setting, EMAIL_TRANSPORT);
        let errors = load_with(
            &[(EMAIL_TRANSPORT, "acs"), (EMAIL_FROM, "x@y.z"), (EMAIL_ACS_ENDPOINT, "http://evil.example")],
            Mode::Production,
        )
        .unwrap_err();
        assert_eq!(errors[0].setting, EMAIL_ACS_ENDPOINT);
    }

    #[test]
    fn acs_takes_the_managed_identity_when_the_platform_sets_one() {
        let email = load_with(
            &[
                (EMAIL_TRANSPORT, "ACS"),
                (EMAIL_FROM, "DoNotReply@x.azurecomm.net"),
                (EMAIL_ACS_ENDPOINT, "https://mail.communication.azure.com/"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
                ("IDENTITY_HEADER", "h"),
            ],
            Mode::Production,
        )
        .unwrap();
        match email.transport {
            Transport::Acs { endpoint, identity, .. } => {
                assert_eq!(endpoint, "https://mail.communication.azure.com");
                assert_eq!(identity, Identity::Managed);
            }
            other => panic!("{other:?}"),
        }
    }
}
