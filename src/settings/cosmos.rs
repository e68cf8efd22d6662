//! Cosmos DB connection settings: endpoint or connection string, resource ids, timeouts.

use std::path::PathBuf;

use super::env::{Env, shorten};
use super::names::{
    AZURE_CLIENT_ID, COSMOS_CONNECTION_STRING, COSMOS_DATABASE, COSMOS_ENDPOINT, COSMOS_TIMEOUT,
    COSMOS_TOKEN_CONTAINER, COSMOS_USER_CONTAINER, EMBEDDED_PATH, IDENTITY_ENDPOINT, IDENTITY_HEADER, REGION_NAME,
    WEBSITE_SITE_NAME,
};
use super::names::{DEFAULT_EMBEDDED_PATH, text_default};
use super::{SettingsError, StoreSettings, unresolved_reference};
use crate::secret::SecretBytes;

/// How the Cosmos client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosmosAuth {
    /// Microsoft Entra ID: the app's managed identity in Azure (user-assigned when `client_id` is
    /// set, from `AZURE_CLIENT_ID`), developer credentials (`az login`) elsewhere.
    EntraId {
        /// Client id of a user-assigned managed identity.
        client_id: Option<String>,
        /// Which credential to use.
        identity: Identity,
    },
    /// Account key from a connection string (the emulator, local work).
    Key(SecretBytes),
}

/// The Entra ID credential the Cosmos client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// App Service / Functions managed identity: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set
    /// (what azure_identity 1.0 reads as App Service; `MSI_ENDPOINT` alone means Cloud Shell or
    /// Azure ML there, not Functions).
    Managed,
    /// A developer's own sign-in (Azure CLI, azd): only outside Azure.
    Developer,
}

impl Identity {
    /// The Entra ID credential this names: the managed identity (user-assigned with `client_id`),
    /// or the developer's own sign-in. Cosmos DB and ACS Email both take their tokens from it.
    pub fn credential(
        self,
        client_id: Option<&str>,
    ) -> Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>, azure_core::Error> {
        if self == Identity::Managed {
            let mut options = azure_identity::ManagedIdentityCredentialOptions::default();
            if let Some(id) = client_id {
                options.user_assigned_id = Some(azure_identity::UserAssignedId::ClientId(id.to_string()));
            }
            let credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential> =
                azure_identity::ManagedIdentityCredential::new(Some(options))?;
            return Ok(credential);
        }
        let credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential> =
            azure_identity::DeveloperToolsCredential::new(None)?;
        Ok(credential)
    }
}

/// Chooses the credential from what the platform set. Running in Azure (`WEBSITE_SITE_NAME` is set
/// in every App Service and Functions app) without a managed identity is a misconfiguration, named
/// here, rather than a silent fall-back to developer credentials that cannot work there.
pub(super) fn identity(env: &Env, needed_by: &str) -> Result<Identity, SettingsError> {
    match (env.get(IDENTITY_ENDPOINT), env.get(IDENTITY_HEADER), env.get(WEBSITE_SITE_NAME)) {
        (Some(_), Some(_), _) => Ok(Identity::Managed),
        (None, None, None) => Ok(Identity::Developer),
        (Some(_), None, _) => Err(SettingsError::new(
            IDENTITY_HEADER,
            format!("is missing while {IDENTITY_ENDPOINT} is set: the managed identity cannot be used"),
        )),
        (None, _, _) => Err(SettingsError::new(
            IDENTITY_ENDPOINT,
            format!(
                "is missing: the app runs in Azure ({WEBSITE_SITE_NAME} is set) with {needed_by} but has no \
                 managed identity; assign one to the Function App (infra/main.bicep does)"
            ),
        )),
    }
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
        (Some(endpoint), None) => {
            let identity = identity(env, COSMOS_ENDPOINT)?;
            let client_id = env.get(AZURE_CLIENT_ID).map(|s| s.trim().to_string());
            // Without a client id, the managed-identity endpoint is asked for the system-assigned
            // identity, which the template does not create: every request would fail later.
            if identity == Identity::Managed && client_id.is_none() {
                return Err(SettingsError::new(
                    AZURE_CLIENT_ID,
                    format!(
                        "is missing: in Azure, {COSMOS_ENDPOINT} is reached with the user-assigned managed identity \
                         whose client id this names (infra/main.bicep sets it)"
                    ),
                ));
            }
            (endpoint_url(endpoint, COSMOS_ENDPOINT)?, CosmosAuth::EntraId { client_id, identity })
        }
        (None, Some(cs)) => {
            let (endpoint, key) = parse_connection_string(cs)?;
            (endpoint, CosmosAuth::Key(key))
        }
    };
    let (endpoint, auth) = auth;
    Ok(StoreSettings::Cosmos(CosmosSettings {
        endpoint,
        auth,
        database: resource_id(env, COSMOS_DATABASE)?,
        token_container: resource_id(env, COSMOS_TOKEN_CONTAINER)?,
        user_container: resource_id(env, COSMOS_USER_CONTAINER)?,
        request_timeout_ms: env.int(COSMOS_TIMEOUT)?,
        region: env.get(REGION_NAME).map(|r| r.trim().to_string()),
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
/// Unset, it is the row's default in the table.
fn resource_id(env: &Env, name: &str) -> Result<String, SettingsError> {
    let value = env.get(name).map_or_else(|| text_default(name), str::trim);
    if value.len() > 255 || value.contains(['/', '\\', '?', '#']) || value.ends_with(' ') {
        return Err(SettingsError::new(name, "must be 1 to 255 characters without / \\ ? #"));
    }
    Ok(value.to_string())
}
