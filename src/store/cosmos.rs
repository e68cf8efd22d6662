//! The Cosmos DB store (NoSQL API) through the official `azure_data_cosmos` SDK.
//!
//! Two containers:
//! - sessions (`TokenContainerId`, partition key `/userId`, id = session id): a refresh is one point
//!   read plus one replace with `If-Match` on the ETag; revoking all of a user's sessions is one
//!   single-partition query plus transactional batches of deletes;
//! - accounts (`UserContainerId`, partition key `/id`, id = base64url of the lowercase username): the
//!   user and its login throttle in one document, so a login is one point read. The revoke-everyone
//!   epoch is a document of its own kind there too, under an id no username maps to.
//!
//! Every document carries `ttl` = the rest of its absolute lifetime (container default TTL is on),
//! so Cosmos expires sessions and stale throttles by itself. Every call has a timeout; the SDK
//! retries throttled requests (429, honouring `x-ms-retry-after-ms`) a bounded number of times,
//! after which the caller sees [`StoreError::Unavailable`] (503 + `Retry-After` at the HTTP edge).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::Etag;
use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition, TimeToLive, TransactionalBatch};
use azure_data_cosmos::options::{ItemWriteOptions, OperationOptions, Precondition, ThrottlingRetryOptions};
use azure_data_cosmos::{AccountReference, CosmosClient, CosmosClientBuilder, CosmosError, FeedScope, RoutingStrategy};
use base64::Engine as _;
use futures_util::TryStreamExt as _;

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{
    Account, AddressThrottle, AdminRoster, Cas, ClientRecord, ClientStore, CodeRecord, DeviceThrottle, EmailAddress,
    EmailClaim, Factors, IdentityRecord, LinkedIdentity, LoginThrottle, NameClaim, SessionDetails, SessionRecord,
    SessionStore, StoreError, UserRecord, UserStore, Version, Versioned, retry_cas,
};
use crate::clock::{Clock, UnixMs};
use crate::settings::{CosmosAuth, CosmosSettings};

/// Largest number of operations Cosmos accepts in one transactional batch.
const MAX_BATCH_OPERATIONS: usize = 100;
/// Throttled (429) requests are retried this many times by the SDK before surfacing.
const MAX_THROTTLE_RETRIES: u32 = 3;
/// A revoke-all re-reads and retries this often when sessions change under it.
const MAX_BULK_DELETE_ATTEMPTS: usize = 5;

/// Whether missing databases and containers may be created (only with key authentication:
/// data-plane RBAC has no control-plane rights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// Create what is missing.
    CreateMissing,
    /// Report what is missing.
    RequireExisting,
}

use crate::settings::names::{
    COSMOS_DATABASE as DATABASE_SETTING, COSMOS_TOKEN_CONTAINER as TOKEN_CONTAINER_SETTING,
    COSMOS_USER_CONTAINER as USER_CONTAINER_SETTING,
};

/// Why [`CosmosStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A database or container is missing and may not be created here.
    #[error("setting {setting}: {what}")]
    Missing {
        /// The setting that names the missing resource.
        setting: &'static str,
        /// What is missing.
        what: String,
    },
    /// Cosmos could not be reached or refused the request.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cosmos-backed [`super::Store`].
#[derive(Debug)]
pub struct CosmosStore {
    settings: CosmosSettings,
    clock: Arc<dyn Clock>,
    containers: OnceCell<Containers>,
}

#[derive(Clone)]
struct Containers {
    sessions: ContainerClient,
    accounts: ContainerClient,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Containers")
    }
}

/// Maps an SDK error to the store's cases.
fn map_err(e: CosmosError) -> StoreError {
    let status = e.status();
    match u16::from(status.status_code()) {
        404 => StoreError::NotFound,
        409 => StoreError::Conflict,
        412 => StoreError::Precondition,
        _ => StoreError::unavailable(e),
    }
}

fn timeout_error(ms: u64) -> StoreError {
    StoreError::unavailable(format!("Cosmos DB did not answer within {ms} ms"))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Document id of the account under a username key (ids cannot hold `/ \ ? #`).
fn account_id(username_key: &str) -> String {
    b64().encode(username_key.as_bytes())
}

/// Seconds for a document's `ttl`: the rest of its lifetime, at least 1 (Cosmos refuses 0).
fn ttl_seconds(expires_at_ms: UnixMs, now: UnixMs) -> i64 {
    ((expires_at_ms - now + 999) / 1000).max(1)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionDoc {
    id: String,
    user_id: String,
    seed: String,
    generation: u64,
    rotated_at_ms: i64,
    created_at_ms: i64,
    expires_at_ms: i64,
    username: String,
    roles: Vec<String>,
    #[serde(default)]
    details: SessionDetails,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

impl SessionDoc {
    fn from_record(s: &SessionRecord, now: UnixMs) -> Self {
        Self {
            id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            seed: b64().encode(s.seed),
            generation: s.generation,
            rotated_at_ms: s.rotated_at_ms,
            created_at_ms: s.created_at_ms,
            expires_at_ms: s.expires_at_ms,
            username: s.username.clone(),
            roles: s.roles.clone(),
            details: s.details.clone(),
            // The earlier of the absolute end and the inactivity deadline: idle sessions go by
            // themselves, and each rotation moves the deadline (never past the absolute end).
            ttl: ttl_seconds(s.ends_at_ms(), now),
            etag: None,
        }
    }

    fn into_record(self) -> Result<Versioned<SessionRecord>, StoreError> {
        let seed: [u8; 32] = b64()
            .decode(&self.seed)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| StoreError::unavailable("session document has a malformed seed"))?;
        let etag = self.etag.ok_or_else(|| StoreError::unavailable("session document has no _etag"))?;
        Ok(Versioned {
            value: SessionRecord {
                user_id: self.user_id,
                session_id: self.id,
                seed,
                generation: self.generation,
                rotated_at_ms: self.rotated_at_ms,
                created_at_ms: self.created_at_ms,
                expires_at_ms: self.expires_at_ms,
                username: self.username,
                roles: self.roles,
                details: self.details,
            },
            version: Version(etag),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDoc {
    id: String,
    username: String,
    password_hash: String,
    roles: Vec<String>,
    disabled: bool,
    created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    identities: Vec<LinkedIdentity>,
    #[serde(default)]
    factors: Factors,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<EmailAddress>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountDoc {
    id: String,
    username_key: String,
    #[serde(default)]
    user: Option<UserDoc>,
    failures: u32,
    last_failure_ms: i64,
    locked_until_ms: i64,
    #[serde(default)]
    strikes: u32,
    #[serde(default)]
    expires_at_ms: Option<i64>,
    #[serde(default)]
    addresses: Vec<AddressThrottle>,
    #[serde(default)]
    devices: Vec<DeviceThrottle>,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

impl AccountDoc {
    fn from_account(a: &Account, now: UnixMs) -> Self {
        let ttl = match (&a.user, a.expires_at_ms) {
            (None, Some(expires)) => ttl_seconds(expires, now),
            _ => -1,
        };
        Self {
            id: account_id(&a.username_key),
            username_key: a.username_key.clone(),
            user: a.user.as_ref().map(|u| UserDoc {
                id: u.id.clone(),
                username: u.username.clone(),
                password_hash: u.password_hash.clone(),
                roles: u.roles.clone(),
                disabled: u.disabled,
                created_at_ms: u.created_at_ms,
                identities: u.identities.clone(),
                factors: u.factors.clone(),
                email: u.email.clone(),
            }),
            failures: a.throttle.failures,
            last_failure_ms: a.throttle.last_failure_ms,
            locked_until_ms: a.throttle.locked_until_ms,
            strikes: a.throttle.strikes,
            expires_at_ms: a.expires_at_ms,
            addresses: a.addresses.clone(),
            devices: a.devices.clone(),
            ttl,
            etag: None,
        }
    }

    fn into_account(self) -> Result<Versioned<Account>, StoreError> {
        let etag = self.etag.ok_or_else(|| StoreError::unavailable("account document has no _etag"))?;
        let key = self.username_key;
        Ok(Versioned {
            value: Account {
                user: self.user.map(|u| UserRecord {
                    id: u.id,
                    username: u.username,
                    username_key: key.clone(),
                    password_hash: u.password_hash,
                    roles: u.roles,
                    disabled: u.disabled,
                    created_at_ms: u.created_at_ms,
                    identities: u.identities,
                    factors: u.factors,
                    email: u.email,
                }),
                username_key: key,
                throttle: LoginThrottle {
                    failures: self.failures,
                    last_failure_ms: self.last_failure_ms,
                    locked_until_ms: self.locked_until_ms,
                    strikes: self.strikes,
                },
                expires_at_ms: self.expires_at_ms,
                addresses: self.addresses,
                devices: self.devices,
            },
            version: Version(etag),
        })
    }
}

/// Id of the revoke-everyone epoch document in the accounts container: `.` is not in the base64url
/// alphabet of account ids, so no username maps to it.
const EPOCH_ID: &str = "sessions.epoch";

/// Before the epoch had a document of its own it was an account under this username key, its time
/// in `lastFailureMs`. Read as a fallback while no epoch document exists; the first raise folds it in.
const LEGACY_EPOCH_KEY: &str = "\u{0}sessions-epoch";

/// The revoke-everyone epoch: sessions that began before `revokedBeforeMs` have ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EpochDoc {
    id: String,
    kind: String,
    revoked_before_ms: i64,
    /// Never expires (the container's default TTL is on).
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

/// Id of the admin roster document in the accounts container (`.` keeps it apart from account ids).
const ADMINS_ID: &str = "admins.roster";

/// The ids of look-alike name claims start with this, then the hex SHA-256 of the skeleton (a
/// skeleton may hold characters and lengths a Cosmos id may not).
const NAME_CLAIM_PREFIX: &str = "nameclaim.";

fn name_claim_id(skeleton: &str) -> String {
    hashed_id(NAME_CLAIM_PREFIX, skeleton)
}

/// A record of its own in the accounts container, its id its partition key: the admin roster (see
/// [`AdminRoster`]) or a name claim (see [`NameClaim`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordDoc<T> {
    id: String,
    kind: String,
    #[serde(flatten)]
    value: T,
    /// Never expires (the container's default TTL is on).
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

/// Document ids of introspection clients in the accounts container start with this (`.` keeps them
/// apart from account ids, which are base64url).
/// Ids of sign-in identity documents: this, then the hex SHA-256 of provider, NUL, subject
/// (subjects may hold characters ids cannot).
const IDENTITY_PREFIX: &str = "identity.";
const IDENTITY_KIND: &str = "identity";

fn identity_doc_id(provider: &str, subject: &str) -> String {
    hashed_id(IDENTITY_PREFIX, &format!("{provider}\u{0}{subject}"))
}

/// Ids of e-mail claim documents: this, then the hex SHA-256 of the address.
const EMAIL_CLAIM_PREFIX: &str = "emailclaim.";
/// Ids of e-mail code documents: this, then the hex SHA-256 of the code key.
const CODE_PREFIX: &str = "code.";

/// `prefix` and the hex SHA-256 of `key` (keys may hold characters and lengths ids may not).
fn hashed_id(prefix: &str, key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    format!("{prefix}{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Ids of used-token markers (the marker is already a hex hash).
const USED_PREFIX: &str = "used.";

/// A used ID token's marker: expires by Cosmos TTL with the token; `nonce` tells our own write
/// from another's when the SDK retried a create whose answer was lost.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsedDoc {
    id: String,
    kind: String,
    nonce: String,
    ttl: i64,
}

const CLIENT_ID_PREFIX: &str = "client.";

fn client_doc_id(client_id: &str) -> String {
    format!("{CLIENT_ID_PREFIX}{client_id}")
}

/// An introspection client (see [`ClientRecord`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientDoc {
    id: String,
    kind: String,
    client_id: String,
    /// base64url of the secret's keyed hash.
    secret_hash: String,
    created_at_ms: i64,
    /// Never expires (the container's default TTL is on).
    ttl: i64,
}

/// The `kind` of client documents.
const CLIENT_KIND: &str = "introspectionClient";

impl ClientDoc {
    fn into_record(self) -> Result<ClientRecord, StoreError> {
        let secret_hash: [u8; 32] = b64()
            .decode(&self.secret_hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| StoreError::unavailable("client document has a malformed secret hash"))?;
        Ok(ClientRecord { client_id: self.client_id, secret_hash, created_at_ms: self.created_at_ms })
    }
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

fn if_match(version: &Version) -> Option<ItemWriteOptions> {
    Some(ItemWriteOptions::default().with_precondition(Precondition::IfMatch(Etag::from(version.0.as_str()))))
}

fn etag_of(headers: &azure_data_cosmos::models::ResponseHeaders) -> Result<Version, StoreError> {
    headers
        .etag()
        .map(|e| Version(e.to_string()))
        .ok_or_else(|| StoreError::unavailable("Cosmos DB answered a write without an ETag"))
}

impl CosmosStore {
    /// A store for `settings`; nothing is contacted until [`CosmosStore::connect`] or the first call.
    pub fn new(settings: CosmosSettings, clock: Arc<dyn Clock>) -> Self {
        Self { settings, clock, containers: OnceCell::new() }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms)
    }

    async fn timed<T>(&self, fut: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout(), fut)
            .await
            .unwrap_or_else(|_| Err(timeout_error(self.settings.request_timeout_ms)))
    }

    async fn client(&self) -> Result<CosmosClient, StoreError> {
        let endpoint = self
            .settings
            .endpoint
            .parse()
            .map_err(|e| StoreError::unavailable(format!("invalid Cosmos endpoint: {e}")))?;
        let account = match &self.settings.auth {
            CosmosAuth::Key(key) => {
                let key = String::from_utf8(key.expose().to_vec())
                    .map_err(|_| StoreError::unavailable("the Cosmos account key is not text"))?;
                AccountReference::with_authentication_key(endpoint, azure_core::credentials::Secret::new(key))
            }
            CosmosAuth::EntraId { client_id, identity } => AccountReference::with_credential(
                endpoint,
                identity.credential(client_id.as_deref()).map_err(StoreError::unavailable)?,
            ),
        };
        let mut throttling = ThrottlingRetryOptions::default();
        throttling.max_retry_count = Some(MAX_THROTTLE_RETRIES);
        throttling.max_retry_wait_time = Some(self.timeout() / 2);
        let mut defaults = OperationOptions::default();
        defaults.throttling_retry_options = Some(throttling);
        CosmosClientBuilder::new()
            .with_default_operation_options(defaults)
            .build(account, routing(self.settings.region.as_deref()))
            .await
            .map_err(map_err)
    }

    /// Connects, checks (or, with [`Provisioning::CreateMissing`], creates) the database and both
    /// containers, and keeps the container clients for every later call. Idempotent.
    pub async fn connect(&self, provisioning: Provisioning) -> Result<(), ConnectError> {
        if self.containers.get().is_some() {
            return Ok(());
        }
        let client = self.timed(self.client()).await?;
        let database = client.database_client(self.settings.database.as_str());
        match self.timed(async { database.read(None).await.map_err(map_err) }).await {
            Ok(_) => {}
            Err(StoreError::NotFound) if provisioning == Provisioning::CreateMissing => {
                match self
                    .timed(async { client.create_database(&self.settings.database, None).await.map_err(map_err) })
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(StoreError::NotFound) => {
                return Err(ConnectError::Missing {
                    setting: DATABASE_SETTING,
                    what: format!("database {:?} does not exist", self.settings.database),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let mut found = Vec::new();
        for (name, key, setting) in [
            (&self.settings.token_container, "/userId", TOKEN_CONTAINER_SETTING),
            (&self.settings.user_container, "/id", USER_CONTAINER_SETTING),
        ] {
            let client = match self.container(&database, name).await {
                Err(StoreError::NotFound) if provisioning == Provisioning::CreateMissing => {
                    let properties = ContainerProperties::new(name.clone(), PartitionKeyDefinition::from(key))
                        .with_default_ttl(TimeToLive::NoDefault);
                    match self.timed(async { database.create_container(properties, None).await.map_err(map_err) }).await
                    {
                        Ok(_) | Err(StoreError::Conflict) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.container(&database, name).await?
                }
                Err(StoreError::NotFound) => {
                    return Err(ConnectError::Missing {
                        setting,
                        what: format!(
                            "container {name:?} (partition key {key}) does not exist in database {:?}",
                            self.settings.database
                        ),
                    });
                }
                other => other?,
            };
            found.push(client);
        }
        let (Some(accounts), Some(sessions)) = (found.pop(), found.pop()) else {
            return Err(StoreError::unavailable("container clients missing").into());
        };
        // A concurrent connect may have won; either set of clients is equivalent.
        let _ = self.containers.set(Containers { sessions, accounts });
        Ok(())
    }

    async fn containers(&self) -> Result<&Containers, StoreError> {
        self.containers
            .get_or_try_init(|| async {
                let client = self.timed(self.client()).await?;
                let database = client.database_client(self.settings.database.as_str());
                let sessions = self.container(&database, &self.settings.token_container).await;
                let accounts = self.container(&database, &self.settings.user_container).await;
                match (sessions, accounts) {
                    (Ok(sessions), Ok(accounts)) => Ok(Containers { sessions, accounts }),
                    // Never let a missing container read as a missing document.
                    (Err(StoreError::NotFound), _) | (_, Err(StoreError::NotFound)) => {
                        Err(StoreError::unavailable(format!("Cosmos resources missing: {}", self.describe_resources())))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            })
            .await
    }

    async fn container(&self, database: &DatabaseClient, name: &str) -> Result<ContainerClient, StoreError> {
        self.timed(async { database.container_client(name, None).await.map_err(map_err) }).await
    }

    /// Describes the resources the store needs.
    pub fn describe_resources(&self) -> String {
        format!(
            "database {:?} with containers {:?} (partition key /userId) and {:?} (partition key /id), default TTL on",
            self.settings.database, self.settings.token_container, self.settings.user_container
        )
    }

    /// Deletes `ids` of one partition in transactional batches of at most 100; returns how many
    /// were deleted, and the error that stopped it (a failed batch keeps none of its deletes).
    async fn delete_ids(
        &self,
        sessions: &ContainerClient,
        user_id: &str,
        ids: &[String],
    ) -> (u64, Result<(), StoreError>) {
        let mut deleted = 0;
        for chunk in ids.chunks(MAX_BATCH_OPERATIONS) {
            let mut batch = TransactionalBatch::new(user_id.to_string());
            for id in chunk {
                batch = batch.delete_item(id.clone(), None);
            }
            let executed = self
                .timed(async {
                    let response = sessions.execute_transactional_batch(batch, None).await.map_err(map_err)?;
                    response.into_model().map_err(map_err)
                })
                .await;
            let model = match executed {
                Ok(model) => model,
                Err(e) => return (deleted, Err(e)),
            };
            // A failed batch answers 207: one operation with its own status, 424 for the others.
            if let Some(failed) = model.results().iter().find(|r| !r.is_success() && r.status_code() != 424) {
                let e = match failed.status_code() {
                    404 => StoreError::NotFound,
                    412 => StoreError::Precondition,
                    code => StoreError::unavailable(format!("transactional batch failed with {code}")),
                };
                return (deleted, Err(e));
            }
            deleted += chunk.len() as u64;
        }
        (deleted, Ok(()))
    }

    /// Runs a query and collects every result.
    async fn query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        container: &ContainerClient,
        sql: &'static str,
        scope: FeedScope,
    ) -> Result<Vec<T>, StoreError> {
        self.timed(async {
            let items = container.query_items::<T>(sql, scope, None).await.map_err(map_err)?;
            items.try_collect().await.map_err(map_err)
        })
        .await
    }
}

/// Near the Function App's own region when Azure tells it (`REGION_NAME`), else the account's order.
fn routing(region: Option<&str>) -> RoutingStrategy {
    match region {
        Some(r) => RoutingStrategy::ProximityTo(r.to_string().into()),
        None => RoutingStrategy::PreferredRegions(Vec::new()),
    }
}

#[async_trait]
impl SessionStore for CosmosStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<Version, StoreError> {
        let c = self.containers().await?;
        let doc = SessionDoc::from_record(session, self.clock.now_ms());
        let created = self
            .timed(async { c.sessions.create_item(doc.user_id.clone(), &doc.id, &doc, None).await.map_err(map_err) })
            .await;
        match created {
            Ok(response) => etag_of(response.headers()),
            // The SDK retries a create whose answer was lost (connection reset after the write);
            // the retry then conflicts with our own first attempt. Session ids are random, so a
            // stored record equal to ours is that attempt: the insert succeeded.
            Err(StoreError::Conflict) => match self.get_session(&session.user_id, &session.session_id).await? {
                Some(stored) if stored.value == *session => Ok(stored.version),
                _ => Err(StoreError::Conflict),
            },
            Err(e) => Err(e),
        }
    }

    async fn get_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Versioned<SessionRecord>>, StoreError> {
        let c = self.containers().await?;
        let read =
            self.timed(async { c.sessions.read_item(user_id.to_string(), session_id, None).await.map_err(map_err) });
        match read.await {
            Ok(response) => response.into_model::<SessionDoc>().map_err(map_err)?.into_record().map(Some),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn replace_session(&self, session: &SessionRecord, expected: &Version) -> Result<Version, StoreError> {
        let c = self.containers().await?;
        let doc = SessionDoc::from_record(session, self.clock.now_ms());
        let response = self
            .timed(async {
                c.sessions.replace_item(doc.user_id.clone(), &doc.id, &doc, if_match(expected)).await.map_err(map_err)
            })
            .await?;
        etag_of(response.headers())
    }

    async fn delete_session(&self, user_id: &str, session_id: &str) -> Result<bool, StoreError> {
        let c = self.containers().await?;
        let deleted =
            self.timed(async { c.sessions.delete_item(user_id.to_string(), session_id, None).await.map_err(map_err) });
        match deleted.await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        let c = self.containers().await?;
        let mut ended = 0;
        for _ in 0..MAX_BULK_DELETE_ATTEMPTS {
            let found: Vec<IdOnly> =
                self.query(&c.sessions, "SELECT c.id FROM c", FeedScope::partition(user_id.to_string())).await?;
            let ids: Vec<String> = found.into_iter().map(|d| d.id).filter(|id| Some(id.as_str()) != keep).collect();
            let (deleted, outcome) = self.delete_ids(&c.sessions, user_id, &ids).await;
            ended += deleted;
            match outcome {
                Ok(()) => return Ok(ended),
                // A session vanished between the query and the batch (revoked, reused or expired
                // meanwhile): that batch kept nothing; read again.
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::unavailable("sessions kept changing during a bulk revoke"))
    }

    async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let c = self.containers().await?;
        let docs: Vec<SessionDoc> =
            self.query(&c.sessions, "SELECT * FROM c", FeedScope::partition(user_id.to_string())).await?;
        docs.into_iter().map(|d| d.into_record().map(|v| v.value)).collect()
    }

    async fn purge_expired(&self, _now: UnixMs) -> Result<u64, StoreError> {
        // Cosmos TTL removes expired sessions by itself.
        Ok(0)
    }

    async fn mark_used(&self, marker: &str, now: UnixMs, expires_at_ms: UnixMs) -> Result<bool, StoreError> {
        let c = self.containers().await?;
        let id = format!("{USED_PREFIX}{marker}");
        let nonce = uuid::Uuid::new_v4().to_string();
        let doc = UsedDoc {
            id: id.clone(),
            kind: "usedToken".into(),
            nonce: nonce.clone(),
            ttl: ttl_seconds(expires_at_ms, now),
        };
        let created = self.timed(async { c.accounts.create_item(id.clone(), &id, &doc, None).await.map_err(map_err) });
        match created.await {
            Ok(_) => Ok(true),
            // Someone used it first — or the SDK retried our own create whose answer was lost:
            // only our nonce makes it ours. (Expired markers are gone by TTL.)
            Err(StoreError::Conflict) => {
                let read = self.timed(async { c.accounts.read_item(id.clone(), &id, None).await.map_err(map_err) });
                match read.await {
                    Ok(response) => Ok(response.into_model::<UsedDoc>().map_err(map_err)?.nonce == nonce),
                    Err(StoreError::NotFound) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn sessions_epoch(&self) -> Result<UnixMs, StoreError> {
        match self.epoch_doc().await? {
            Some(doc) => Ok(doc.revoked_before_ms),
            None => self.legacy_epoch().await,
        }
    }

    async fn raise_sessions_epoch(&self, at: UnixMs) -> Result<UnixMs, StoreError> {
        let c = self.containers().await?;
        let current = self.epoch_doc().await?;
        retry_cas("sessions epoch", current, |current| async move {
            let stored = match &current {
                Some(doc) => doc.revoked_before_ms,
                None => self.legacy_epoch().await?,
            };
            if stored >= at {
                return Ok(Cas::Done(stored));
            }
            let doc = EpochDoc {
                id: EPOCH_ID.into(),
                kind: "sessionsEpoch".into(),
                revoked_before_ms: at,
                ttl: -1,
                etag: None,
            };
            let written = self
                .timed(async {
                    match current.as_ref().and_then(|d| d.etag.as_deref()) {
                        None => c.accounts.create_item(EPOCH_ID.to_string(), EPOCH_ID, &doc, None).await,
                        Some(etag) => {
                            let expected = Version(etag.to_string());
                            c.accounts.replace_item(EPOCH_ID.to_string(), EPOCH_ID, &doc, if_match(&expected)).await
                        }
                    }
                    .map_err(map_err)
                })
                .await;
            match written {
                Ok(_) => Ok(Cas::Done(at)),
                // Another raise came first: read it again (it may already be later than `at`).
                Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                    Ok(Cas::Retry(self.epoch_doc().await?))
                }
                Err(e) => Err(e),
            }
        })
        .await
    }
}

impl CosmosStore {
    /// The record `id` of the accounts container (its own partition), with its `_etag` as version.
    async fn get_record<T: serde::de::DeserializeOwned>(&self, id: String) -> Result<Option<Versioned<T>>, StoreError> {
        let c = self.containers().await?;
        let read = self.timed(async { c.accounts.read_item(id.clone(), &id, None).await.map_err(map_err) });
        let doc = match read.await {
            Ok(response) => response.into_model::<RecordDoc<T>>().map_err(map_err)?,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = doc.etag.ok_or_else(|| StoreError::unavailable("store record without an _etag"))?;
        Ok(Some(Versioned { value: doc.value, version: Version(etag) }))
    }

    /// Writes the record `id` of `kind`: created when `expected` is `None` (409 → `Conflict`), else
    /// replaced with `If-Match`.
    async fn put_record<T: Serialize + Clone + Send + Sync>(
        &self,
        id: String,
        kind: &str,
        value: &T,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.put_record_ttl(id, kind, value, expected, -1).await
    }

    /// [`CosmosStore::put_record`] with a `ttl` in seconds (-1: never expires).
    async fn put_record_ttl<T: Serialize + Clone + Send + Sync>(
        &self,
        id: String,
        kind: &str,
        value: &T,
        expected: Option<&Version>,
        ttl: i64,
    ) -> Result<Version, StoreError> {
        let c = self.containers().await?;
        let doc = RecordDoc { id: id.clone(), kind: kind.into(), value: value.clone(), ttl, etag: None };
        let response = self
            .timed(async {
                match expected {
                    None => c.accounts.create_item(id.clone(), &id, &doc, None).await,
                    Some(v) => c.accounts.replace_item(id.clone(), &id, &doc, if_match(v)).await,
                }
                .map_err(map_err)
            })
            .await?;
        etag_of(response.headers())
    }

    /// The epoch document, or `None` when no epoch was ever written in this form.
    async fn epoch_doc(&self) -> Result<Option<EpochDoc>, StoreError> {
        let c = self.containers().await?;
        let read =
            self.timed(async { c.accounts.read_item(EPOCH_ID.to_string(), EPOCH_ID, None).await.map_err(map_err) });
        match read.await {
            Ok(response) => response.into_model::<EpochDoc>().map_err(map_err).map(Some),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The epoch as stores before the epoch document kept it (a fake account; 0 when none).
    async fn legacy_epoch(&self) -> Result<UnixMs, StoreError> {
        Ok(self.get_account(LEGACY_EPOCH_KEY).await?.map_or(0, |a| a.value.throttle.last_failure_ms))
    }
}

#[async_trait]
impl UserStore for CosmosStore {
    async fn get_account(&self, username_key: &str) -> Result<Option<Versioned<Account>>, StoreError> {
        let c = self.containers().await?;
        let id = account_id(username_key);
        let read = self.timed(async { c.accounts.read_item(id.clone(), &id, None).await.map_err(map_err) });
        match read.await {
            Ok(response) => response.into_model::<AccountDoc>().map_err(map_err)?.into_account().map(Some),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_account(&self, account: &Account, expected: Option<&Version>) -> Result<Version, StoreError> {
        let c = self.containers().await?;
        let doc = AccountDoc::from_account(account, self.clock.now_ms());
        let response = self
            .timed(async {
                match expected {
                    None => c.accounts.create_item(doc.id.clone(), &doc.id, &doc, None).await,
                    Some(v) => c.accounts.replace_item(doc.id.clone(), &doc.id, &doc, if_match(v)).await,
                }
                .map_err(map_err)
            })
            .await?;
        etag_of(response.headers())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let c = self.containers().await?;
        // Administration only (the `user list` command): a cross-partition query is acceptable here.
        let docs: Vec<AccountDoc> =
            self.query(&c.accounts, "SELECT * FROM c WHERE IS_OBJECT(c.user)", FeedScope::full_container()).await?;
        let mut users: Vec<UserRecord> = docs
            .into_iter()
            .filter_map(|d| d.into_account().map(|a| a.value.user).transpose())
            .collect::<Result<_, _>>()?;
        users.sort_by(|a, b| a.username_key.cmp(&b.username_key));
        Ok(users)
    }

    async fn get_admins(&self) -> Result<Option<Versioned<AdminRoster>>, StoreError> {
        self.get_record(ADMINS_ID.to_string()).await
    }

    async fn put_admins(&self, roster: &AdminRoster, expected: Option<&Version>) -> Result<Version, StoreError> {
        self.put_record(ADMINS_ID.to_string(), "adminRoster", roster, expected).await
    }

    async fn get_name_claim(&self, skeleton: &str) -> Result<Option<Versioned<NameClaim>>, StoreError> {
        self.get_record(name_claim_id(skeleton)).await
    }

    async fn put_name_claim(
        &self,
        skeleton: &str,
        claim: &NameClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.put_record(name_claim_id(skeleton), "nameClaim", claim, expected).await
    }

    async fn get_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Versioned<IdentityRecord>>, StoreError> {
        self.get_record(identity_doc_id(provider, subject)).await
    }

    async fn put_identity(&self, identity: &IdentityRecord, expected: Option<&Version>) -> Result<Version, StoreError> {
        let id = identity_doc_id(&identity.provider, &identity.subject);
        self.put_record(id, IDENTITY_KIND, identity, expected).await
    }

    async fn get_email_claim(&self, address: &str) -> Result<Option<Versioned<EmailClaim>>, StoreError> {
        self.get_record(hashed_id(EMAIL_CLAIM_PREFIX, address)).await
    }

    async fn put_email_claim(
        &self,
        address: &str,
        claim: &EmailClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.put_record(hashed_id(EMAIL_CLAIM_PREFIX, address), "emailClaim", claim, expected).await
    }

    async fn get_code(&self, key: &str, now: UnixMs) -> Result<Option<Versioned<CodeRecord>>, StoreError> {
        // Cosmos hides an expired document, but its TTL counts in seconds: check to the millisecond.
        let code: Option<Versioned<CodeRecord>> = self.get_record(hashed_id(CODE_PREFIX, key)).await?;
        Ok(code.filter(|c| c.value.expires_at_ms > now))
    }

    async fn put_code(
        &self,
        key: &str,
        code: &CodeRecord,
        expected: Option<&Version>,
        now: UnixMs,
    ) -> Result<Version, StoreError> {
        let id = hashed_id(CODE_PREFIX, key);
        let ttl = ttl_seconds(code.expires_at_ms, now);
        match self.put_record_ttl(id.clone(), "emailCode", code, expected, ttl).await {
            Err(StoreError::Conflict) if expected.is_none() => {
                // A document whose time is up but which Cosmos has not removed yet is taken over.
                let stale: Option<Versioned<CodeRecord>> = self.get_record(id.clone()).await?;
                match stale {
                    Some(s) if s.value.expires_at_ms <= now => {
                        self.put_record_ttl(id, "emailCode", code, Some(&s.version), ttl).await
                    }
                    _ => Err(StoreError::Conflict),
                }
            }
            other => other,
        }
    }

    async fn purge_expired_accounts(&self, _now: UnixMs) -> Result<u64, StoreError> {
        // Cosmos TTL removes throttle-only accounts by itself.
        Ok(0)
    }
}

#[async_trait]
impl ClientStore for CosmosStore {
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let c = self.containers().await?;
        let doc = ClientDoc {
            id: client_doc_id(&client.client_id),
            kind: CLIENT_KIND.into(),
            client_id: client.client_id.clone(),
            secret_hash: b64().encode(client.secret_hash),
            created_at_ms: client.created_at_ms,
            ttl: -1,
        };
        self.timed(async { c.accounts.create_item(doc.id.clone(), &doc.id, &doc, None).await.map_err(map_err) })
            .await
            .map(drop)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let c = self.containers().await?;
        let id = client_doc_id(client_id);
        let read = self.timed(async { c.accounts.read_item(id.clone(), &id, None).await.map_err(map_err) });
        match read.await {
            Ok(response) => response.into_model::<ClientDoc>().map_err(map_err)?.into_record().map(Some),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let c = self.containers().await?;
        // Administration only (the `clients list` command): a cross-partition query is acceptable.
        let docs: Vec<ClientDoc> = self
            .query(&c.accounts, "SELECT * FROM c WHERE c.kind = 'introspectionClient'", FeedScope::full_container())
            .await?;
        let mut clients: Vec<ClientRecord> = docs.into_iter().map(ClientDoc::into_record).collect::<Result<_, _>>()?;
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(clients)
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let c = self.containers().await?;
        let id = client_doc_id(client_id);
        let deleted = self.timed(async { c.accounts.delete_item(id.clone(), &id, None).await.map_err(map_err) });
        match deleted.await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
