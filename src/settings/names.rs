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

/// One setting the handler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The full name, as an app setting / environment variable.
    pub name: &'static str,
    /// Where it comes from in Azure.
    pub deploy: Deploy,
    /// Holds a key or secret.
    pub secret: bool,
}

impl Setting {
    const fn new(name: &'static str, deploy: Deploy) -> Self {
        Self { name, deploy, secret: false }
    }

    const fn secret(name: &'static str, deploy: Deploy) -> Self {
        Self { name, deploy, secret: true }
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
pub const REUSE_GRACE: &str = "JwtRefreshToken__Rotation__ReuseGraceMs";
pub const ROTATION_SECRET: &str = "JwtRefreshToken__Rotation__Secret";
pub const MAX_FAILURES: &str = "JwtRefreshToken__Login__MaxFailures";
pub const MAX_FAILURES_PER_USERNAME: &str = "JwtRefreshToken__Login__MaxFailuresPerUsername";
pub const LOCKOUT: &str = "JwtRefreshToken__Login__LockoutMs";
pub const HASH_WORKERS: &str = "JwtRefreshToken__Login__HashWorkers";
pub const HASH_QUEUE: &str = "JwtRefreshToken__Login__HashQueueLength";
pub const HASH_QUEUE_TIMEOUT: &str = "JwtRefreshToken__Login__HashQueueTimeoutMs";
pub const HEADER_READ_TIMEOUT: &str = "JwtRefreshToken__Http__HeaderReadTimeoutMs";
pub const IDLE_TIMEOUT: &str = "JwtRefreshToken__Http__IdleTimeoutMs";
pub const CORS_ALLOWED_ORIGINS: &str = "JwtRefreshToken__Cors__AllowedOrigins";
pub const EMBEDDED_PATH: &str = "JwtRefreshToken__Embedded__Path";
pub const COSMOS_ENDPOINT: &str = "JwtRefreshToken__Cosmos__AccountEndpoint";
pub const COSMOS_CONNECTION_STRING: &str = "JwtRefreshToken__Cosmos__ConnectionString";
pub const COSMOS_DATABASE: &str = "JwtRefreshToken__Cosmos__DatabaseName";
pub const COSMOS_TOKEN_CONTAINER: &str = "JwtRefreshToken__Cosmos__TokenContainerId";
pub const COSMOS_USER_CONTAINER: &str = "JwtRefreshToken__Cosmos__UserContainerId";
pub const COSMOS_TIMEOUT: &str = "JwtRefreshToken__Cosmos__RequestTimeoutMs";
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

/// Every setting the handler reads.
pub const ALL: &[Setting] = &[
    Setting::new(ISSUER, Deploy::Template),
    Setting::new(AUDIENCE, Deploy::Template),
    Setting::new(ALGORITHM, Deploy::Template),
    Setting::secret(ALGORITHM_KEY, Deploy::Template),
    Setting::secret(PREVIOUS_KEYS, Deploy::Optional),
    Setting::new(CLOCK_SKEW, Deploy::Optional),
    Setting::new(CREATE_EXPIRES, Deploy::Optional),
    Setting::new(REFRESH_EXPIRES, Deploy::Optional),
    Setting::new(REUSE_GRACE, Deploy::Optional),
    Setting::secret(ROTATION_SECRET, Deploy::Template),
    Setting::new(MAX_FAILURES, Deploy::Optional),
    Setting::new(MAX_FAILURES_PER_USERNAME, Deploy::Optional),
    Setting::new(LOCKOUT, Deploy::Optional),
    Setting::new(HASH_WORKERS, Deploy::Optional),
    Setting::new(HASH_QUEUE, Deploy::Optional),
    Setting::new(HASH_QUEUE_TIMEOUT, Deploy::Optional),
    Setting::new(HEADER_READ_TIMEOUT, Deploy::Optional),
    Setting::new(IDLE_TIMEOUT, Deploy::Optional),
    Setting::new(CORS_ALLOWED_ORIGINS, Deploy::Optional),
    Setting::new(EMBEDDED_PATH, Deploy::Local),
    Setting::new(COSMOS_ENDPOINT, Deploy::Template),
    Setting::secret(COSMOS_CONNECTION_STRING, Deploy::Local),
    Setting::new(COSMOS_DATABASE, Deploy::Template),
    Setting::new(COSMOS_TOKEN_CONTAINER, Deploy::Template),
    Setting::new(COSMOS_USER_CONTAINER, Deploy::Template),
    Setting::new(COSMOS_TIMEOUT, Deploy::Optional),
    Setting::new(PORT, Deploy::Platform),
    Setting::new(AZURE_CLIENT_ID, Deploy::Optional),
    Setting::new(REGION_NAME, Deploy::Platform),
    Setting::new(IDENTITY_ENDPOINT, Deploy::Platform),
    Setting::secret(IDENTITY_HEADER, Deploy::Platform),
    Setting::new(WEBSITE_SITE_NAME, Deploy::Platform),
];

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
