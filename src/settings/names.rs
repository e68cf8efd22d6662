//! Every setting name the handler reads, in one table: the code, `infra/check.py` (which parses
//! this file), `local.settings.json.example` and the tests all take names from here, so they cannot
//! drift apart.
//!
//! Each entry says where the setting comes from in Azure ([`Deploy`]) and whether it holds a secret
//! (secrets are set in Azure only as Key Vault references).

/// Where a setting's value comes from when the handler runs in Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deploy {
    /// `infra/main.bicep` must set it.
    Template,
    /// Has a sound default; the template may set it.
    Optional,
    /// Set by the Azure platform itself (never by the template).
    Platform,
    /// Local work only; the template must not set it.
    Local,
}

/// The kind of value a setting takes, with the bounds [`crate::settings::Settings::load`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// A URL.
    Url,
    /// A key or secret (text; never printed).
    Secret,
    /// A filesystem path.
    Path,
    /// A whole number within `min..=max` (milliseconds for names ending in `Ms`).
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// One of these words, compared without case.
    Choice(&'static [&'static str]),
    /// `true` or `false`.
    Flag,
    /// A comma-separated list.
    List,
    /// Numbered entries: `NAME__0`, `NAME__1`, … read in order until the first gap.
    Numbered,
    /// A family of settings under `NAME__<name>__<field>`, one set per named thing (the sign-in
    /// providers); the fields are these (a numbered field is read as `<field>__0`, `<field>__1`, …).
    Family(&'static [&'static str]),
}

/// A setting's value when it is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Required: start-up stops without it (`--dev` may fill it in, see the description).
    Required,
    /// Unset means off or absent.
    Unset,
    /// This integer.
    Int(i64),
    /// This text.
    Text(&'static str),
    /// Computed at start-up, as described.
    Derived(&'static str),
}

/// One setting the handler reads: the one row that code, docs and checks take it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The full name, as an app setting / environment variable.
    pub name: &'static str,
    /// Where it comes from in Azure.
    pub deploy: Deploy,
    /// Holds a key or secret.
    pub secret: bool,
    /// The value it takes.
    pub kind: Kind,
    /// Its value when unset.
    pub default: DefaultValue,
    /// One or two sentences for `docs/configuration.md`.
    pub doc: &'static str,
}

impl Setting {
    const fn new(name: &'static str, deploy: Deploy) -> Self {
        Self { name, deploy, secret: false, kind: Kind::Text, default: DefaultValue::Unset, doc: "" }
    }

    const fn secret(name: &'static str, deploy: Deploy) -> Self {
        Self { name, deploy, secret: true, kind: Kind::Secret, default: DefaultValue::Unset, doc: "" }
    }

    const fn kind(self, kind: Kind) -> Self {
        Self { kind, ..self }
    }

    /// An integer setting with its default and bounds.
    const fn int(self, default: i64, min: i64, max: i64) -> Self {
        Self { kind: Kind::Integer { min, max }, default: DefaultValue::Int(default), ..self }
    }

    const fn default(self, default: DefaultValue) -> Self {
        Self { default, ..self }
    }

    const fn text_default(self, text: &'static str) -> Self {
        Self { default: DefaultValue::Text(text), ..self }
    }

    const fn required(self) -> Self {
        Self { default: DefaultValue::Required, ..self }
    }

    const fn doc(self, doc: &'static str) -> Self {
        Self { doc, ..self }
    }

    /// The row of `name` (compared without case, `:` read as `__`), if the table has one.
    pub fn find(name: &str) -> Option<&'static Setting> {
        let wanted = name.replace(':', "__");
        ALL.iter().find(|s| s.name.eq_ignore_ascii_case(&wanted))
    }
}

/// The embedded store's directory when `JwtRefreshToken__Embedded__Path` is unset.
pub const DEFAULT_EMBEDDED_PATH: &str = "./.data";

/// The text default of `name`'s row ("" when the row has none): for the settings whose default
/// code takes from here, so the docs generated from the table state what the code does.
pub fn text_default(name: &str) -> &'static str {
    match Setting::find(name).map(|s| s.default) {
        Some(DefaultValue::Text(t)) => t,
        _ => "",
    }
}

/// Prefix shared by all of the service's own settings.
pub const PREFIX: &str = "JwtRefreshToken__";

pub const ISSUER: &str = "JwtRefreshToken__Descriptor__Issuer";
pub const AUDIENCE: &str = "JwtRefreshToken__Descriptor__Audience";
pub const ALGORITHM: &str = "JwtRefreshToken__Descriptor__Algorithm";
pub const ALGORITHM_KEY: &str = "JwtRefreshToken__Descriptor__AlgorithmKey";
/// Prefix of the previous-key settings (`…PreviousKeys__0`, `…PreviousKeys__1`, …).
pub const PREVIOUS_KEYS: &str = "JwtRefreshToken__Descriptor__PreviousKeys";
pub const CLOCK_SKEW: &str = "JwtRefreshToken__Descriptor__ClockSkewMs";
pub const CREATE_EXPIRES: &str = "JwtRefreshToken__Expires__CreateExpiresInMs";
pub const REFRESH_EXPIRES: &str = "JwtRefreshToken__Expires__RefreshExpiresInMs";
pub const IDLE_EXPIRES: &str = "JwtRefreshToken__Expires__IdleExpiresInMs";
pub const SESSIONS_MAX_PER_USER: &str = "JwtRefreshToken__Sessions__MaxPerUser";
pub const REGISTRATION_MODE: &str = "JwtRefreshToken__Registration__Mode";
pub const REGISTRATION_MAX_PER_ADDRESS: &str = "JwtRefreshToken__Registration__MaxPerAddress";
pub const REGISTRATION_WINDOW: &str = "JwtRefreshToken__Registration__WindowMs";
pub const REGISTRATION_MAX_PER_MINUTE: &str = "JwtRefreshToken__Registration__MaxPerMinute";
pub const INTROSPECTION_MAX_PER_MINUTE: &str = "JwtRefreshToken__Introspection__MaxPerMinute";
pub const SERVICE_DOCUMENTATION: &str = "JwtRefreshToken__Discovery__ServiceDocumentation";
pub const DPOP_REQUIRED: &str = "JwtRefreshToken__Dpop__Required";
pub const DPOP_REQUIRE_NONCE: &str = "JwtRefreshToken__Dpop__RequireNonce";
pub const DPOP_PROOF_MAX_AGE: &str = "JwtRefreshToken__Dpop__ProofMaxAgeMs";
pub const FEDERATION_PROVIDERS: &str = "JwtRefreshToken__Federation__Providers";
pub const FEDERATION_ALLOW_HTTP_LOOPBACK: &str = "JwtRefreshToken__Federation__AllowHttpLoopback";
pub const FEDERATION_KEY_REFETCH_INTERVAL: &str = "JwtRefreshToken__Federation__KeyRefetchIntervalMs";
pub const FEDERATION_FETCH_TIMEOUT: &str = "JwtRefreshToken__Federation__FetchTimeoutMs";
pub const FEDERATION_MAX_FAILURES: &str = "JwtRefreshToken__Federation__MaxFailures";
pub const FEDERATION_FAILURE_WINDOW: &str = "JwtRefreshToken__Federation__FailureWindowMs";
/// The fields of each `Federation__Providers__<name>__…` set.
pub const PROVIDER_FIELDS: &[&str] = &[
    "Issuer",
    "Audiences",
    "JwksUri",
    "NonceMode",
    "RequireEmailVerified",
    "AllowedAlgorithms",
    "Tenants",
    "TrustMfa",
];
/// The fields of a provider set that are numbered (`Audiences__0`, `Audiences__1`, …).
pub const PROVIDER_NUMBERED_FIELDS: &[&str] = &["Audiences", "Tenants"];
pub const MFA_TOTP_ISSUER: &str = "JwtRefreshToken__Mfa__TotpIssuer";
pub const PASSKEYS_RP_ID: &str = "JwtRefreshToken__Passkeys__RpId";
pub const PASSKEYS_RP_NAME: &str = "JwtRefreshToken__Passkeys__RpName";
pub const PASSKEYS_ORIGINS: &str = "JwtRefreshToken__Passkeys__Origins";
pub const EMAIL_TRANSPORT: &str = "JwtRefreshToken__Email__Transport";
pub const EMAIL_FROM: &str = "JwtRefreshToken__Email__From";
pub const EMAIL_PRODUCT_NAME: &str = "JwtRefreshToken__Email__ProductName";
pub const EMAIL_APP_URL: &str = "JwtRefreshToken__Email__AppUrl";
pub const EMAIL_VERIFY_URL: &str = "JwtRefreshToken__Email__VerifyUrl";
pub const EMAIL_RESET_URL: &str = "JwtRefreshToken__Email__ResetUrl";
pub const EMAIL_OUTBOX_PATH: &str = "JwtRefreshToken__Email__OutboxPath";
pub const EMAIL_ACS_ENDPOINT: &str = "JwtRefreshToken__Email__Acs__Endpoint";
pub const EMAIL_ACS_API_VERSION: &str = "JwtRefreshToken__Email__Acs__ApiVersion";
pub const EMAIL_SMTP_HOST: &str = "JwtRefreshToken__Email__Smtp__Host";
pub const EMAIL_SMTP_PORT: &str = "JwtRefreshToken__Email__Smtp__Port";
pub const EMAIL_SMTP_SECURITY: &str = "JwtRefreshToken__Email__Smtp__Security";
pub const EMAIL_SMTP_USERNAME: &str = "JwtRefreshToken__Email__Smtp__Username";
pub const EMAIL_SMTP_PASSWORD: &str = "JwtRefreshToken__Email__Smtp__Password";
pub const EMAIL_ALLOW_HTTP_LOOPBACK: &str = "JwtRefreshToken__Email__AllowHttpLoopback";
pub const EMAIL_QUEUE_CAPACITY: &str = "JwtRefreshToken__Email__QueueCapacity";
pub const EMAIL_MAX_ATTEMPTS: &str = "JwtRefreshToken__Email__MaxAttempts";
pub const EMAIL_RETRY_BASE: &str = "JwtRefreshToken__Email__RetryBaseMs";
pub const EMAIL_SEND_TIMEOUT: &str = "JwtRefreshToken__Email__SendTimeoutMs";
pub const EMAIL_CODE_LENGTH: &str = "JwtRefreshToken__Email__CodeLength";
pub const EMAIL_CODE_LIFETIME: &str = "JwtRefreshToken__Email__CodeLifetimeMs";
pub const EMAIL_CODE_ATTEMPTS: &str = "JwtRefreshToken__Email__CodeAttempts";
pub const EMAIL_CODES_PER_HOUR: &str = "JwtRefreshToken__Email__CodesPerHour";
pub const EMAIL_MAILS_PER_ADDRESS_PER_HOUR: &str = "JwtRefreshToken__Email__MailsPerAddressPerHour";
pub const EMAIL_NOTIFY_PASSWORD_CHANGED: &str = "JwtRefreshToken__Email__Notify__PasswordChanged";
pub const EMAIL_NOTIFY_NEW_DEVICE: &str = "JwtRefreshToken__Email__Notify__NewDevice";
pub const EMAIL_NOTIFY_FACTOR_CHANGED: &str = "JwtRefreshToken__Email__Notify__FactorChanged";
pub const EMAIL_NOTIFY_ACCOUNT_DISABLED: &str = "JwtRefreshToken__Email__Notify__AccountDisabled";
pub const EMAIL_NOTIFY_EMAIL_CHANGED: &str = "JwtRefreshToken__Email__Notify__EmailChanged";
pub const PASSWORD_MIN_LENGTH: &str = "JwtRefreshToken__Password__MinLength";
pub const REUSE_GRACE: &str = "JwtRefreshToken__Rotation__ReuseGraceMs";
pub const ROTATION_SECRET: &str = "JwtRefreshToken__Rotation__Secret";
pub const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
pub const MAX_FAILURES_PER_USERNAME: &str = "JwtRefreshToken__Login__MaxFailuresPerUsername";
pub const LOCKOUT: &str = "JwtRefreshToken__Login__LockoutMs";
pub const DEVICE_TOKEN_LIFETIME: &str = "JwtRefreshToken__Login__DeviceTokenLifetimeDays";
pub const HASH_WORKERS: &str = "JwtRefreshToken__Login__HashWorkers";
pub const HASH_QUEUE: &str = "JwtRefreshToken__Login__HashQueueLength";
pub const HASH_QUEUE_TIMEOUT: &str = "JwtRefreshToken__Login__HashQueueTimeoutMs";
pub const HEADER_READ_TIMEOUT: &str = "JwtRefreshToken__Http__HeaderReadTimeoutMs";
pub const IDLE_TIMEOUT: &str = "JwtRefreshToken__Http__IdleTimeoutMs";
pub const BODY_READ_TIMEOUT: &str = "JwtRefreshToken__Http__BodyReadTimeoutMs";
pub const MAX_CONNECTIONS: &str = "JwtRefreshToken__Http__MaxConnections";
pub const TRUSTED_PROXY_HOPS: &str = "JwtRefreshToken__Network__TrustedProxyHops";
pub const CORS_ALLOWED_ORIGINS: &str = "JwtRefreshToken__Cors__AllowedOrigins";
pub const EMBEDDED_PATH: &str = "JwtRefreshToken__Embedded__Path";
pub const COSMOS_ENDPOINT: &str = "JwtRefreshToken__Cosmos__AccountEndpoint";
pub const COSMOS_CONNECTION_STRING: &str = "JwtRefreshToken__Cosmos__ConnectionString";
pub const COSMOS_DATABASE: &str = "JwtRefreshToken__Cosmos__DatabaseName";
pub const COSMOS_TOKEN_CONTAINER: &str = "JwtRefreshToken__Cosmos__TokenContainerId";
pub const COSMOS_USER_CONTAINER: &str = "JwtRefreshToken__Cosmos__UserContainerId";
pub const COSMOS_TIMEOUT: &str = "JwtRefreshToken__Cosmos__RequestTimeoutMs";
/// `true`: a `JwtRefreshToken__*` name the table does not list stops start-up (else a warning).
pub const STRICT_SETTINGS: &str = "JwtRefreshToken__StrictSettings";
/// The port the Functions host tells the handler to listen on.
pub const PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// Client id of a user-assigned managed identity.
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// The Function App's region, set by Azure.
pub const REGION_NAME: &str = "REGION_NAME";
/// Managed identity endpoint (App Service / Functions), set by Azure.
pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// Managed identity header secret (App Service / Functions), set by Azure.
pub const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The site name; set in every App Service / Functions app, so it tells "running in Azure".
pub const WEBSITE_SITE_NAME: &str = "WEBSITE_SITE_NAME";

const DAY: i64 = 86_400_000;

/// Every setting the handler reads.
pub const ALL: &[Setting] = &[
    Setting::new(ISSUER, Deploy::Template).kind(Kind::Url).required().doc(
        "`iss` of every access token, and the only issuer accepted. Set it to the service's public base URL, \
         e.g. `https://<app>.azurewebsites.net/api` (the Bicep output `issuer`). `--dev`: `http://localhost:7071`.",
    ),
    Setting::new(AUDIENCE, Deploy::Template)
        .required()
        .doc("`aud` of every access token, and the only audience accepted. `--dev`: `jwt-refresh-token-dev`."),
    Setting::new(ALGORITHM, Deploy::Template).kind(Kind::Choice(&["HS256", "ES256", "EdDSA"])).text_default("HS256").doc(
        "How access tokens are signed. ES256 or EdDSA (recommended, and the Bicep default) publish the public key \
         in JWKS; HS256 signs with a shared secret, as the .NET package does.",
    ),
    Setting::secret(ALGORITHM_KEY, Deploy::Template).required().doc(
        "HS256: a secret of at least 32 bytes and 128 estimated bits; ES256/EdDSA: a PKCS#8 PEM private key. \
         `handler keys generate --algorithm ES256` prints one. `--dev`: generated once into the store directory.",
    ),
    Setting::secret(PREVIOUS_KEYS, Deploy::Optional).kind(Kind::Numbered).doc(
        "Keys of earlier rotations, still accepted: HS256 secrets, or SPKI PEM public keys (never old private keys).",
    ),
    Setting::new(CLOCK_SKEW, Deploy::Optional)
        .int(30_000, 0, 600_000)
        .doc("Allowance for clock differences when checking `exp` and `nbf`."),
    Setting::new(CREATE_EXPIRES, Deploy::Optional).int(300_000, 1_000, DAY).doc("Access-token lifetime."),
    Setting::new(REFRESH_EXPIRES, Deploy::Optional)
        .int(604_800_000, 1_000, 3_650 * DAY)
        .doc("Absolute session lifetime; rotation never extends it."),
    Setting::new(IDLE_EXPIRES, Deploy::Optional).int(0, 0, 3_650 * DAY).doc(
        "A session not refreshed for this long ends (0: off). At most `RefreshExpiresInMs`.",
    ),
    Setting::new(SESSIONS_MAX_PER_USER, Deploy::Optional).int(100, 1, 10_000).doc(
        "Most sessions one user may have: a login beyond it ends the user's least recently used sessions.",
    ),
    Setting::new(REGISTRATION_MODE, Deploy::Optional).kind(Kind::Choice(&["closed", "open"])).text_default("closed").doc(
        "`open`: anyone may sign up (`POST /api/register`), throttled per client address; `closed`: admins create \
         users. `--dev`: `open`.",
    ),
    Setting::new(REGISTRATION_MAX_PER_ADDRESS, Deploy::Optional)
        .int(5, 1, 100_000)
        .doc("Sign-ups accepted from one client address per window."),
    Setting::new(REGISTRATION_WINDOW, Deploy::Optional).int(3_600_000, 1_000, DAY).doc("The sign-up throttle's window."),
    Setting::new(REGISTRATION_MAX_PER_MINUTE, Deploy::Optional).int(60, 1, 100_000).doc(
        "Sign-ups one instance accepts per minute from all addresses together, on top of the per-address limit.",
    ),
    Setting::new(INTROSPECTION_MAX_PER_MINUTE, Deploy::Optional).int(600, 1, 1_000_000).doc(
        "Introspection requests one client may make per minute on each instance (a token bucket: bursts up to \
         this many, refilled evenly over the minute); beyond it, 429 with `Retry-After`.",
    ),
    Setting::new(SERVICE_DOCUMENTATION, Deploy::Optional).kind(Kind::Url).doc(
        "The `service_documentation` URL of the discovery documents: where the developers who call this service \
         read about it (your copy of docs/http-api.md, say). Unset: the field is left out.",
    ),
    Setting::new(DPOP_REQUIRED, Deploy::Optional).kind(Kind::Flag).text_default("false").doc(
        "`true`: every token request (login, refresh, sign-up) must carry a DPoP proof (RFC 9449), so every \
         session is bound to a client key; `false`: clients without one get bearer tokens.",
    ),
    Setting::new(DPOP_REQUIRE_NONCE, Deploy::Optional).kind(Kind::Flag).text_default("false").doc(
        "`true`: DPoP proofs must carry a server nonce; a proof without a current one gets `use_dpop_nonce` and \
         the nonce in `DPoP-Nonce` (nonces last 5 to 10 minutes and are the same on every instance).",
    ),
    Setting::new(DPOP_PROOF_MAX_AGE, Deploy::Optional).int(60_000, 1_000, 600_000).doc(
        "How far a DPoP proof's `iat` may be from the server's clock, either way; a proof's `jti` is refused a \
         second time on an instance for twice this long.",
    ),
    Setting::new(MFA_TOTP_ISSUER, Deploy::Optional).text_default("jwt-refresh-token").doc(
        "The name authenticator apps show next to the account of a TOTP enrolment (the otpauth URI's \
         `issuer`): your product's name.",
    ),
    Setting::new(PASSKEYS_RP_ID, Deploy::Optional).doc(
        "The WebAuthn relying party id of passkeys: the registrable domain of the web app \
         (`example.com`, or `localhost` locally). Unset: no passkeys.",
    ),
    Setting::new(PASSKEYS_RP_NAME, Deploy::Optional).text_default("jwt-refresh-token").doc(
        "The relying party name browsers show when a passkey is made: your product's name.",
    ),
    Setting::new(PASSKEYS_ORIGINS, Deploy::Optional).kind(Kind::List).doc(
        "The origins passkey ceremonies may come from (`https://app.example.com`), comma-separated; each \
         must be the RP id or under it. Required with `Passkeys__RpId`.",
    ),
    Setting::new(FEDERATION_PROVIDERS, Deploy::Optional).kind(Kind::Family(PROVIDER_FIELDS)).doc(
        "Sign-in providers whose OpenID Connect ID tokens `POST /api/token` exchanges (RFC 8693), one set per \
         provider name: `…Providers__<name>__Audiences__0` (required: a client id the tokens must be issued to; \
         more as `__1`, `__2`), `__Issuer` (exact `iss`; preset for `apple`, `google`, `microsoft`), `__JwksUri` \
         (else from the issuer's discovery document), `__NonceMode` (`none`, `raw` or `sha256`), \
         `__RequireEmailVerified`, `__AllowedAlgorithms` (comma-separated, default `RS256`) and, for \
         `microsoft`, `__Tenants__N` (tenant ids, or `any`); `__TrustMfa` (`true`: a token whose `amr` \
         holds `mfa` passes an account's second factor). See docs/federation.md.",
    ),
    Setting::new(FEDERATION_ALLOW_HTTP_LOOPBACK, Deploy::Local).kind(Kind::Flag).text_default("false").doc(
        "Tests only: allow `http://127.0.0.1` provider issuers and key sets (otherwise only https).",
    ),
    Setting::new(FEDERATION_KEY_REFETCH_INTERVAL, Deploy::Optional).int(60_000, 1_000, 3_600_000).doc(
        "An ID token signed with a key id the cached key set lacks refetches the provider's keys at most once \
         per this interval per provider, so unknown key ids cannot turn the service into a request amplifier.",
    ),
    Setting::new(FEDERATION_FETCH_TIMEOUT, Deploy::Optional).int(5_000, 200, 30_000).doc(
        "Timeout of a provider's discovery or key-set request; a provider that does not answer in time is \
         answered 503.",
    ),
    Setting::new(FEDERATION_MAX_FAILURES, Deploy::Optional).int(20, 1, 10_000).doc(
        "Refused ID-token exchanges per client address, and per provider subject, in the failure window on \
         each instance; more are answered 429.",
    ),
    Setting::new(FEDERATION_FAILURE_WINDOW, Deploy::Optional).int(900_000, 1_000, 86_400_000).doc(
        "The window of `Federation__MaxFailures`.",
    ),
    Setting::new(EMAIL_TRANSPORT, Deploy::Optional).kind(Kind::Choice(&["none", "acs", "smtp", "outbox"])).text_default("none").doc(
        "How mail is sent: `acs` (Azure Communication Services Email with the managed identity), `smtp` (your \
         relay), `outbox` (one `.eml` file per message in `Email__OutboxPath`, for local work and tests) or \
         `none` (no addresses, no recovery by e-mail). `--dev`: `outbox`.",
    ),
    Setting::new(EMAIL_FROM, Deploy::Optional).doc(
        "The sender address (`DoNotReply@<domain>` with ACS: the Bicep output `emailSenderAddress`). Required \
         with a transport; `--dev`: `no-reply@localhost`.",
    ),
    Setting::new(EMAIL_PRODUCT_NAME, Deploy::Optional).text_default("jwt-refresh-token").doc(
        "Your product's name, in every subject and greeting.",
    ),
    Setting::new(EMAIL_APP_URL, Deploy::Optional).kind(Kind::Url).doc(
        "Your app's address, linked at the foot of every mail. Unset: no link.",
    ),
    Setting::new(EMAIL_VERIFY_URL, Deploy::Optional).kind(Kind::Url).doc(
        "The page where users enter an address-verification code; the mail links to it with the code after `#code=` \
         (a fragment, never sent to a server). Unset: the mail carries the code only.",
    ),
    Setting::new(EMAIL_RESET_URL, Deploy::Optional).kind(Kind::Url).doc(
        "The page where users enter a password-reset code, linked as `Email__VerifyUrl` is.",
    ),
    Setting::new(EMAIL_OUTBOX_PATH, Deploy::Local).kind(Kind::Path).default(DefaultValue::Derived(
        "`outbox` in the embedded store's directory",
    )).doc("The directory the `outbox` transport writes `.eml` files into (made when missing)."),
    Setting::new(EMAIL_ACS_ENDPOINT, Deploy::Optional).kind(Kind::Url).doc(
        "The Communication Services endpoint, `https://<name>.<geography>.communication.azure.com` (the Bicep output \
         `communicationEndpoint`). Required with `acs`; the managed identity needs a role that may send.",
    ),
    Setting::new(EMAIL_ACS_API_VERSION, Deploy::Optional).text_default("2023-03-31").doc(
        "The ACS Email REST API version.",
    ),
    Setting::new(EMAIL_SMTP_HOST, Deploy::Optional).doc("The SMTP relay's host name. Required with `smtp`."),
    Setting::new(EMAIL_SMTP_PORT, Deploy::Optional).int(587, 1, 65_535).doc("The SMTP relay's port."),
    Setting::new(EMAIL_SMTP_SECURITY, Deploy::Optional).kind(Kind::Choice(&["starttls", "tls", "none"])).text_default("starttls").doc(
        "`starttls` (required upgrade, port 587), `tls` (implicit TLS, port 465) or `none` (plain text: only \
         for a relay on loopback).",
    ),
    Setting::new(EMAIL_SMTP_USERNAME, Deploy::Optional).doc("The SMTP user name, if the relay needs one."),
    Setting::secret(EMAIL_SMTP_PASSWORD, Deploy::Optional).doc("The SMTP password (with `Email__Smtp__Username`)."),
    Setting::new(EMAIL_ALLOW_HTTP_LOOPBACK, Deploy::Local).kind(Kind::Flag).text_default("false").doc(
        "Tests only: allow an `http://127.0.0.1` ACS endpoint (otherwise only https).",
    ),
    Setting::new(EMAIL_QUEUE_CAPACITY, Deploy::Optional).int(1_000, 1, 100_000).doc(
        "Mails waiting to be sent on one instance; when it is full a new mail is dropped and logged, and the \
         user's answer is unchanged.",
    ),
    Setting::new(EMAIL_MAX_ATTEMPTS, Deploy::Optional).int(6, 1, 20).doc(
        "Tries per mail: a throttled or failed send is tried again after `Retry-After` or an exponential backoff.",
    ),
    Setting::new(EMAIL_RETRY_BASE, Deploy::Optional).int(2_000, 10, 60_000).doc(
        "The first backoff between tries (doubling, with jitter, at most 5 minutes).",
    ),
    Setting::new(EMAIL_SEND_TIMEOUT, Deploy::Optional).int(10_000, 500, 120_000).doc(
        "Timeout of one request to the mail transport.",
    ),
    Setting::new(EMAIL_CODE_LENGTH, Deploy::Optional).int(6, 6, 8).doc(
        "Digits of verification and reset codes.",
    ),
    Setting::new(EMAIL_CODE_LIFETIME, Deploy::Optional).int(900_000, 1_000, 3_600_000).doc(
        "How long a verification or reset code is valid (15 minutes).",
    ),
    Setting::new(EMAIL_CODE_ATTEMPTS, Deploy::Optional).int(5, 1, 20).doc(
        "Wrong tries a code allows; then it is void and a new one must be asked for.",
    ),
    Setting::new(EMAIL_CODES_PER_HOUR, Deploy::Optional).int(5, 1, 100).doc(
        "Codes one account is sent per hour, per purpose (verification, reset).",
    ),
    Setting::new(EMAIL_MAILS_PER_ADDRESS_PER_HOUR, Deploy::Optional).int(10, 1, 1_000).doc(
        "Code mails one address receives per hour, whichever accounts ask.",
    ),
    Setting::new(EMAIL_NOTIFY_PASSWORD_CHANGED, Deploy::Optional).kind(Kind::Flag).text_default("true").doc(
        "Mail the account's verified address when its password is changed, set or reset.",
    ),
    Setting::new(EMAIL_NOTIFY_NEW_DEVICE, Deploy::Optional).kind(Kind::Flag).text_default("true").doc(
        "Mail it when a password login comes from a new device (no valid device token).",
    ),
    Setting::new(EMAIL_NOTIFY_FACTOR_CHANGED, Deploy::Optional).kind(Kind::Flag).text_default("true").doc(
        "Mail it when an authenticator or passkey is added or removed, or an admin resets the factors.",
    ),
    Setting::new(EMAIL_NOTIFY_ACCOUNT_DISABLED, Deploy::Optional).kind(Kind::Flag).text_default("true").doc(
        "Mail it when the account is disabled.",
    ),
    Setting::new(EMAIL_NOTIFY_EMAIL_CHANGED, Deploy::Optional).kind(Kind::Flag).text_default("true").doc(
        "Mail the old verified address when the account's address is changed.",
    ),
    Setting::new(PASSWORD_MIN_LENGTH, Deploy::Optional)
        .int(8, 8, 1_024)
        .doc("Shortest new password, in characters (sign-up, password change, admin- and CLI-created users)."),
    Setting::new(REUSE_GRACE, Deploy::Optional).int(10_000, 0, 300_000).doc(
        "How long the immediately previous refresh token still yields the same successor (a lost response); \
         any other reuse ends the session.",
    ),
    Setting::secret(ROTATION_SECRET, Deploy::Template)
        .default(DefaultValue::Derived("HKDF of AlgorithmKey"))
        .doc("Server-side secret mixed into every refresh token, with the same strength rules as an HS256 key."),
    Setting::new(MAX_FAILURES, Deploy::Optional)
        .int(5, 1, 1_000)
        .doc("Failed logins from one client address before the username is locked for that address."),
    Setting::new(MAX_FAILURES_PER_USERNAME, Deploy::Optional)
        .int(50, 1, 100_000)
        .default(DefaultValue::Derived("10 × MaxFailures"))
        .doc("Failed logins from all addresses together before the username is locked everywhere; at least `MaxFailures`."),
    Setting::new(LOCKOUT, Deploy::Optional)
        .int(900_000, 1_000, DAY)
        .doc("How long a lock lasts, and the window in which failures add up."),
    Setting::new(DEVICE_TOKEN_LIFETIME, Deploy::Optional)
        .int(365, 1, 3_650)
        .doc("Days a device token (and its `__Host-device` cookie) stays valid; each password login renews it."),
    Setting::new(HASH_WORKERS, Deploy::Optional)
        .int(2, 1, 64)
        .default(DefaultValue::Derived("one per core, at most 4"))
        .doc("Password-hashing threads, each keeping one 19 MiB argon2id block resident."),
    Setting::new(HASH_QUEUE, Deploy::Optional)
        .int(64, 1, 100_000)
        .doc("Hashing requests that may wait for a worker; more are refused at once with 503."),
    Setting::new(HASH_QUEUE_TIMEOUT, Deploy::Optional)
        .int(2_000, 10, 60_000)
        .doc("Longest a request waits for a hashing worker before it is answered with 503."),
    Setting::new(HEADER_READ_TIMEOUT, Deploy::Optional)
        .int(10_000, 100, 600_000)
        .doc("Time a client has to send a request's headers once it started a request."),
    Setting::new(IDLE_TIMEOUT, Deploy::Optional)
        .int(120_000, 100, 3_600_000)
        .doc("Time an idle keep-alive connection stays open."),
    Setting::new(BODY_READ_TIMEOUT, Deploy::Optional).int(10_000, 100, 600_000).doc(
        "Time a client has to send a request's whole body once its headers arrived; a slower body is answered \
         408 and the connection closed.",
    ),
    Setting::new(MAX_CONNECTIONS, Deploy::Optional).int(1_024, 1, 1_000_000).doc(
        "Open client connections at most. At the cap, the longest-idle keep-alive connection is closed to make \
         room; only when none is idle is a new connection answered 503 and closed.",
    ),
    Setting::new(TRUSTED_PROXY_HOPS, Deploy::Optional).int(1, 0, 10).doc(
        "Proxies in front of the handler that append to `X-Forwarded-For`: the client is the entry this many \
         places from the right (1: the one Azure's front end appends; fewer entries: the leftmost). 0 ignores the \
         header: the TCP peer is the client, and in invocation mode (where the peer is the Functions host) a \
         request has no client address, so per-address throttles do not apply to it.",
    ),
    Setting::new(CORS_ALLOWED_ORIGINS, Deploy::Optional).kind(Kind::List).doc(
        "Exact browser origins (`https://app.example.com`, no path or wildcard) allowed to call with credentials; \
         also turns on the cookie transport for them.",
    ),
    Setting::new(EMBEDDED_PATH, Deploy::Local).kind(Kind::Path).text_default(DEFAULT_EMBEDDED_PATH).doc(
        "Directory of the embedded SQLite store (used when no Cosmos DB is set); `:memory:` keeps it in memory.",
    ),
    Setting::new(COSMOS_ENDPOINT, Deploy::Template)
        .kind(Kind::Url)
        .doc("Cosmos DB account endpoint, reached with Microsoft Entra ID (the managed identity in Azure)."),
    Setting::secret(COSMOS_CONNECTION_STRING, Deploy::Local)
        .doc("Cosmos DB connection string with an account key (emulators and local work); not with `AccountEndpoint`."),
    Setting::new(COSMOS_DATABASE, Deploy::Template).text_default("jwt-refresh-token").doc("Cosmos DB database name."),
    Setting::new(COSMOS_TOKEN_CONTAINER, Deploy::Template)
        .text_default("tokens")
        .doc("Sessions container (partition key `/userId`)."),
    Setting::new(COSMOS_USER_CONTAINER, Deploy::Template)
        .text_default("users")
        .doc("Accounts container (partition key `/id`)."),
    Setting::new(COSMOS_TIMEOUT, Deploy::Optional)
        .int(5_000, 100, 120_000)
        .doc("Timeout of each Cosmos DB request, retries included."),
    Setting::new(STRICT_SETTINGS, Deploy::Optional).kind(Kind::Flag).text_default("false").doc(
        "`true`: a `JwtRefreshToken__*` name this table does not list stops start-up; otherwise it is a warning \
         with the closest known name.",
    ),
    Setting::new(PORT, Deploy::Platform)
        .int(7071, 0, 65_535)
        .doc("Listening port on 127.0.0.1, set by the Functions host (0 picks a free one)."),
    Setting::new(AZURE_CLIENT_ID, Deploy::Optional).doc(
        "Client id of the user-assigned managed identity; required in Azure with `AccountEndpoint`.",
    ),
    Setting::new(REGION_NAME, Deploy::Platform).doc("The Function App's region; Cosmos DB requests go to the nearest one."),
    Setting::new(IDENTITY_ENDPOINT, Deploy::Platform).kind(Kind::Url).doc("Managed identity endpoint, set by Azure."),
    Setting::secret(IDENTITY_HEADER, Deploy::Platform).doc("Managed identity header secret, set by Azure."),
    Setting::new(WEBSITE_SITE_NAME, Deploy::Platform).doc("The site name, set by Azure: tells that the app runs there."),
];

/// `docs/configuration.md`, generated from [`ALL`] (a test fails when the committed file differs;
/// `BLESS=1 cargo test --test layout` writes it).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration\n\n<!-- Generated from src/settings/names.rs by `BLESS=1 cargo test --test layout`; do not edit. -->\n\n\
         Every setting the handler reads. In Azure they are app settings; locally, environment variables \
         (or `local.settings.json` under `func start`). Names are matched without case, and `:` may stand for \
         `__` (`JwtRefreshToken:Descriptor:Issuer`, as the .NET package wrote them). A `JwtRefreshToken__*` name \
         that is not listed here is a start-up warning naming the closest listed one (an error with \
         `JwtRefreshToken__StrictSettings=true`); every missing or invalid setting stops start-up with one line \
         naming it.\n\n\
         Where: *template* — `infra/main.bicep` sets it; *optional* — has a sound default; *platform* — set by \
         Azure or the Functions host; *local* — local work only, never in Azure.\n\n",
    );
    for group in groups() {
        out.push_str(&format!(
            "## {group}\n\n| setting | type | default | where | description |\n|---|---|---|---|---|\n"
        ));
        for s in ALL.iter().filter(|s| group_of(s.name) == group) {
            let name = match s.kind {
                Kind::Numbered => format!("`{}__N`", s.name),
                Kind::Family(_) => format!("`{}__<name>__<field>`", s.name),
                _ => format!("`{}`", s.name),
            };
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                kind_text(s),
                default_text(s.default),
                deploy_text(s.deploy),
                s.doc.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    out
}

/// The section a setting belongs to: the part after the prefix (`Descriptor`), or `Platform`.
fn group_of(name: &str) -> &str {
    name.strip_prefix(PREFIX).map_or("Platform and identity", |rest| rest.split("__").next().unwrap_or(rest))
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for s in ALL {
        let g = group_of(s.name);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

fn kind_text(s: &Setting) -> String {
    match s.kind {
        Kind::Text => "text".into(),
        Kind::Url => "URL".into(),
        Kind::Secret => "secret".into(),
        Kind::Path => "path".into(),
        Kind::Integer { min, max } => {
            let unit = if s.name.ends_with("Ms") { " ms" } else { "" };
            format!("integer {min}–{max}{unit}")
        }
        Kind::Choice(words) => words.join(" \\| "),
        Kind::Flag => "true \\| false".into(),
        Kind::List => "comma-separated list".into(),
        Kind::Numbered => "numbered secrets".into(),
        Kind::Family(fields) => format!("per provider: {}", fields.join(", ")),
    }
}

fn default_text(d: DefaultValue) -> String {
    match d {
        DefaultValue::Required => "**required**".into(),
        DefaultValue::Unset => "unset".into(),
        DefaultValue::Int(v) => format!("`{v}`"),
        DefaultValue::Text(t) => format!("`{t}`"),
        DefaultValue::Derived(how) => how.into(),
    }
}

fn deploy_text(d: Deploy) -> &'static str {
    match d {
        Deploy::Template => "template",
        Deploy::Optional => "optional",
        Deploy::Platform => "platform",
        Deploy::Local => "local",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_service_ones_share_the_prefix() {
        let mut seen = std::collections::HashSet::new();
        for s in ALL {
            assert!(seen.insert(s.name.to_ascii_lowercase()), "{} listed twice", s.name);
            if s.deploy != Deploy::Platform && s.name != AZURE_CLIENT_ID {
                assert!(s.name.starts_with(PREFIX), "{}", s.name);
            }
        }
    }
}
