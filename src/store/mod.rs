//! The storage seam: what the token rules need from a database, and nothing more.
//!
//! Every backend runs the same contract suite (`tests/store_contract.rs`). Compare-and-swap is part
//! of the contract: rotation and revocation are correct only because a replace against a stale
//! [`Version`] fails with [`StoreError::Precondition`] (in Cosmos: `If-Match` → 412).

use std::fmt;

use async_trait::async_trait;

use crate::clock::UnixMs;

pub mod cosmos;
pub mod embedded;

/// An opaque version of a stored record (an ETag in Cosmos, a counter in SQLite).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// A record together with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its version, for a later compare-and-swap.
    pub version: Version,
}

/// Errors a store reports. Backends map their own errors onto these cases privately.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record to replace does not exist.
    #[error("record not found")]
    NotFound,
    /// A record with the same key already exists.
    #[error("record already exists")]
    Conflict,
    /// The record changed since it was read (compare-and-swap lost).
    #[error("record changed since it was read")]
    Precondition,
    /// The store cannot be reached or refused the request; retrying later may succeed.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Unavailable`].
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable { source: source.into() }
    }
}

/// A user account, as kept by the built-in user directory.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Stable id (the access token's `sub`); never changes, never reused.
    pub id: String,
    /// The username as it was registered (display form, the token's `name`).
    pub username: String,
    /// Lookup key: the username in lowercase.
    pub username_key: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Roles, copied into the access token.
    pub roles: Vec<String>,
    /// A disabled user can neither log in nor refresh.
    pub disabled: bool,
    /// When the account was created.
    pub created_at_ms: UnixMs,
    /// The sign-in providers' identities linked to the account (the source of truth: an
    /// [`IdentityRecord`] only finds the account, which must still list the identity).
    pub identities: Vec<LinkedIdentity>,
    /// Second factors: a TOTP authenticator and its recovery codes.
    pub factors: Factors,
    /// The user's e-mail address, normalised, and whether it was verified.
    pub email: Option<EmailAddress>,
}

/// An account's e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailAddress {
    /// The address, normalised (see `accounts::email::normalise`).
    pub address: String,
    /// Proven by a code sent to it, or set as verified by an admin. A verified address belongs to
    /// one account (its [`EmailClaim`]).
    pub verified: bool,
}

/// Which account a verified address belongs to: a record of its own per address, created (never
/// blindly overwritten) before the account marks the address verified, so that two accounts
/// verifying one address on two instances race on one record. The account is the source of truth:
/// a claim whose account no longer holds the address verified is stale and may be taken over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailClaim {
    /// The username key of the account.
    pub owner_key: String,
    /// That account's user id.
    pub owner_id: String,
    /// When it was claimed.
    pub claimed_at_ms: UnixMs,
}

/// A short-lived record under a key of its own: an e-mail code outstanding for an account (its
/// keyed hash only) and the times codes were sent, or only the send times of an address. Expires
/// by itself (Cosmos TTL; the embedded store's purge) at `expires_at_ms`, and reads as absent after.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeRecord {
    /// The keyed hash (hex) of the outstanding code; `None` once used or void.
    #[serde(default)]
    pub code_hash: Option<String>,
    /// The address the code was sent to.
    #[serde(default)]
    pub address: Option<String>,
    /// When the outstanding code stops being valid.
    #[serde(default)]
    pub code_expires_at_ms: UnixMs,
    /// Wrong tries of the outstanding code.
    #[serde(default)]
    pub failures: u32,
    /// When codes were sent, oldest first (only those of the last hour are kept).
    #[serde(default)]
    pub sent_at_ms: Vec<UnixMs>,
    /// When the record may be forgotten.
    pub expires_at_ms: UnixMs,
}

/// A user's second factors (kept with the user, so a login's one account read sees them).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Factors {
    /// The TOTP authenticator (RFC 6238), enrolled or pending confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpFactor>,
    /// Keyed hashes (hex) of the unused recovery codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_codes: Vec<String>,
    /// Registered passkeys (WebAuthn credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<StoredPasskey>,
}

impl Factors {
    /// Whether a login needs a second factor: a confirmed authenticator, or a passkey.
    pub fn any_active(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.active) || !self.passkeys.is_empty()
    }
}

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPasskey {
    /// The credential id, base64url.
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    /// The credential as the WebAuthn library keeps it (public key, counter, flags).
    pub credential: serde_json::Value,
    /// The signature counter last seen (0 for authenticators that keep none).
    pub counter: u32,
    /// The authenticator may back the credential up (a synced passkey).
    pub backup_eligible: bool,
    /// The credential is backed up.
    pub backup_state: bool,
    /// When it was registered.
    pub created_at_ms: UnixMs,
    /// When it last signed in.
    #[serde(default)]
    pub last_used_at_ms: Option<UnixMs>,
}

/// A TOTP authenticator.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TotpFactor {
    /// The shared secret, sealed (AES-256-GCM under a key derived from the rotation secret).
    pub sealed_secret: String,
    /// Confirmed with a code: logins need it. A pending one does not count yet.
    pub active: bool,
    /// The last time step a code was accepted for (RFC 6238 §5.2: each code is accepted once).
    pub last_step: u64,
    /// When it was enrolled.
    pub enrolled_at_ms: UnixMs,
}

impl fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpFactor")
            .field("active", &self.active)
            .field("last_step", &self.last_step)
            .field("sealed_secret", &"***")
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// Whether the user can sign in with a password (a federated account may have none).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}

/// A sign-in provider's identity linked to an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedIdentity {
    /// The provider's name (`apple`, `google`, …).
    pub provider: String,
    /// The provider's subject (`sub`).
    pub subject: String,
    /// The e-mail address the provider gave when the identity was linked (informational).
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider said that address was verified.
    #[serde(default)]
    pub email_verified: bool,
    /// When it was linked.
    pub linked_at_ms: UnixMs,
}

/// Which account a sign-in provider's identity (provider, subject) belongs to: a record of its own
/// per identity, created (never blindly overwritten) before the account lists the identity, so
/// that two first sign-ins of one person on two instances race on one record and make one
/// account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRecord {
    /// The provider's name.
    pub provider: String,
    /// The provider's subject.
    pub subject: String,
    /// The username key of the account it belongs to; `None` once unlinked.
    pub owner_key: Option<String>,
    /// That account's user id.
    pub owner_id: Option<String>,
    /// When the record last changed owner (a claim whose account never came is stale after a while).
    pub claimed_at_ms: UnixMs,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("password_hash", &"***")
            .finish_non_exhaustive()
    }
}

/// One login session: the chain of refresh tokens handed to one device.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The owner's stable id (Cosmos partition key).
    pub user_id: String,
    /// Random session id (the access token's `sid`).
    pub session_id: String,
    /// Random per-session seed; refresh tokens are HMAC(server secret, seed, generation), so the
    /// store alone cannot mint or recognise a token.
    pub seed: [u8; 32],
    /// Generation of the current refresh token; each rotation adds one.
    pub generation: u64,
    /// When the current generation replaced the previous one (start of the reuse grace).
    pub rotated_at_ms: UnixMs,
    /// When the session began.
    pub created_at_ms: UnixMs,
    /// Absolute end of the session; rotation never moves it.
    pub expires_at_ms: UnixMs,
    /// The user's name when the session began (access-token `name`).
    pub username: String,
    /// The user's roles (access-token `roles`): copied at login, updated when an admin changes them.
    pub roles: Vec<String>,
    /// What "my devices" shows, and the inactivity deadline.
    pub details: SessionDetails,
}

/// The parts of a session that are about the device: its activity and the key it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetails {
    /// When the session was last used (login or refresh).
    #[serde(default)]
    pub last_used_at_ms: UnixMs,
    /// With an inactivity timeout: the session ends at this time unless refreshed before.
    #[serde(default)]
    pub idle_expires_at_ms: Option<UnixMs>,
    /// The client's `User-Agent` at login, truncated.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The client address at login (see `http::client_address`).
    #[serde(default)]
    pub client_address: Option<String>,
    /// The JWK thumbprint of the DPoP key the session is bound to (RFC 9449): refreshing it needs
    /// a proof signed by that key. `None` for a bearer session. Kept with the details (a JSON
    /// field in both stores), so older records read as unbound and no schema change is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// How the user authenticated when the session began (RFC 8176 `amr`: `pwd`, `fed`, `otp`,
    /// `mfa`); every access token of the session carries it, with the session's start as
    /// `auth_time`. Empty for sessions from before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

impl SessionRecord {
    /// When the session ends: the earlier of its absolute end and its inactivity deadline.
    pub fn ends_at_ms(&self) -> UnixMs {
        self.details.idle_expires_at_ms.map_or(self.expires_at_ms, |idle| idle.min(self.expires_at_ms))
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("generation", &self.generation)
            .field("rotated_at_ms", &self.rotated_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("seed", &"***")
            .finish_non_exhaustive()
    }
}

/// Failed-login bookkeeping for one username (known or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginThrottle {
    /// Failures counted in the current window.
    pub failures: u32,
    /// Time of the latest failure (the window runs from here).
    pub last_failure_ms: UnixMs,
    /// While in the future, every login for the username is refused.
    pub locked_until_ms: UnixMs,
    /// Exhaustions in a row (username-wide budget only; each doubles the next lock).
    #[serde(default)]
    pub strikes: u32,
}

/// Failed-login bookkeeping for one username from one client address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddressThrottle {
    /// The client address key (see `http::client_address`).
    pub address: String,
    /// Its failures and lock.
    pub throttle: LoginThrottle,
}

/// Failed-login bookkeeping for one username from one device (a verified device token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceThrottle {
    /// The device id of the token.
    pub device: String,
    /// Its failures and lock.
    pub throttle: LoginThrottle,
}

/// Everything kept under one username key: the user (if one is registered) and the login
/// throttle (also for unknown usernames, so lockout reveals nothing). One record, so a login is
/// one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The lowercase username key.
    pub username_key: String,
    /// The registered user, if any.
    pub user: Option<UserRecord>,
    /// Failed-login state of the username from all addresses together (the backstop).
    pub throttle: LoginThrottle,
    /// Failed-login state per client address (most recent first, bounded).
    pub addresses: Vec<AddressThrottle>,
    /// Failed-login state per device of the user (most recent first, bounded).
    pub devices: Vec<DeviceThrottle>,
    /// When a record without a user may be forgotten (its throttle no longer matters). Ignored
    /// while `user` is set.
    pub expires_at_ms: Option<UnixMs>,
}

impl Account {
    /// A fresh record under `username_key`: no user, nothing counted.
    pub fn empty(username_key: &str) -> Self {
        Self {
            username_key: username_key.to_string(),
            user: None,
            throttle: LoginThrottle::default(),
            addresses: Vec::new(),
            devices: Vec::new(),
            expires_at_ms: None,
        }
    }
}

/// The ids of the enabled users holding the `admin` role: a record of its own (never an account),
/// changed by compare-and-swap *before* a user change that could end someone's admin rights, so
/// that two such changes on different users (each its own record, no cross-record transaction in
/// Cosmos) cannot both pass and leave no admin.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminRoster {
    /// User ids, sorted, without duplicates.
    pub admin_ids: Vec<String>,
}

/// Which username key holds a UTS #39 confusable skeleton: a record of its own per skeleton, written
/// (created, never blindly overwritten) before the user under `owner_key`, so that two look-alike
/// names registered at once on two instances race on one record and one of them is refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameClaim {
    /// The username key of the name that claimed the skeleton.
    pub owner_key: String,
    /// When it was claimed (a claim whose user never came is stale after a while).
    pub claimed_at_ms: UnixMs,
}

/// A resource-server client allowed to call token introspection (RFC 7662 §2.1), authenticated
/// with `client_secret_basic`. Only a hash of its secret is kept (see `clients`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client id (the name it was added under; the Basic user-id).
    pub client_id: String,
    /// The keyed SHA-256 of the client secret (never the secret itself).
    pub secret_hash: [u8; 32],
    /// When the client was added.
    pub created_at_ms: UnixMs,
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("created_at_ms", &self.created_at_ms)
            .field("secret_hash", &"***")
            .finish()
    }
}

/// Sessions: created at login, rotated by compare-and-swap, deleted when revoked or reused.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Stores a new session. [`StoreError::Conflict`] if `(user_id, session_id)` exists.
    async fn insert_session(&self, session: &SessionRecord) -> Result<Version, StoreError>;

    /// One session by its key, or `None` when it does not exist (never created, revoked or
    /// purged). Expiry is the caller's judgement: an expired session may still be returned.
    async fn get_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Versioned<SessionRecord>>, StoreError>;

    /// Replaces a session only if it is still at `expected`; returns the new version.
    /// [`StoreError::Precondition`] when it changed, [`StoreError::NotFound`] when it is gone.
    async fn replace_session(&self, session: &SessionRecord, expected: &Version) -> Result<Version, StoreError>;

    /// Deletes one session; `true` if it existed.
    async fn delete_session(&self, user_id: &str, session_id: &str) -> Result<bool, StoreError>;

    /// Deletes every session of `user_id` except `keep`; returns how many were deleted.
    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64, StoreError>;

    /// Every session of `user_id` (expired ones included), in no particular order.
    async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Removes sessions that ended (absolute lifetime or inactivity deadline) at or before `now`;
    /// returns how many. Stores that expire records by themselves (Cosmos TTL) may do nothing and
    /// return 0.
    async fn purge_expired(&self, now: UnixMs) -> Result<u64, StoreError>;

    /// The revoke-everyone epoch: every session that began before it has ended (0 when never set).
    /// A record of its own, never an account, never purged.
    async fn sessions_epoch(&self) -> Result<UnixMs, StoreError>;

    /// Moves the revoke-everyone epoch forward to `at`, or keeps a later one already stored;
    /// returns the epoch as stored afterwards. Concurrent raises keep the latest.
    async fn raise_sessions_epoch(&self, at: UnixMs) -> Result<UnixMs, StoreError>;

    /// Records the single use of `marker` (the hash of a used ID token) at `now` until `expires_at_ms`:
    /// `Ok(true)` the first time, `Ok(false)` while an earlier use is still recorded. Of two racing
    /// calls, on any instances, exactly one gets `true`. Stores remove expired markers by
    /// themselves (Cosmos TTL) or in [`SessionStore::purge_expired`].
    async fn mark_used(&self, marker: &str, now: UnixMs, expires_at_ms: UnixMs) -> Result<bool, StoreError>;
}

/// Accounts of the built-in user directory: users and login throttles, one record per username key.
#[async_trait]
pub trait UserStore: Send + Sync + fmt::Debug {
    /// The account under a lowercase username key, or `None`. Records without a user whose
    /// `expires_at_ms` has passed may or may not be returned.
    async fn get_account(&self, username_key: &str) -> Result<Option<Versioned<Account>>, StoreError>;

    /// Writes an account: with `expected = None` only if none exists under the key
    /// ([`StoreError::Conflict`] otherwise), else only if still at `expected`
    /// ([`StoreError::Precondition`] when it changed, [`StoreError::NotFound`] when it is gone).
    async fn put_account(&self, account: &Account, expected: Option<&Version>) -> Result<Version, StoreError>;

    /// Every registered user, ordered by username key (administration only; may scan).
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// The admin roster, or `None` when none was ever written (a store from before it existed:
    /// the caller builds it from [`UserStore::list_users`]).
    async fn get_admins(&self) -> Result<Option<Versioned<AdminRoster>>, StoreError>;

    /// Writes the admin roster: with `expected = None` only if none exists
    /// ([`StoreError::Conflict`] otherwise), else only if still at `expected`
    /// ([`StoreError::Precondition`] when it changed, [`StoreError::NotFound`] when it is gone).
    async fn put_admins(&self, roster: &AdminRoster, expected: Option<&Version>) -> Result<Version, StoreError>;

    /// Removes records without a user whose `expires_at_ms` is at or before `now`; returns how
    /// many. Stores that expire records by themselves (Cosmos TTL) may do nothing and return 0.
    async fn purge_expired_accounts(&self, now: UnixMs) -> Result<u64, StoreError>;

    /// The claim on the confusable skeleton `skeleton`, if any name holds it.
    async fn get_name_claim(&self, skeleton: &str) -> Result<Option<Versioned<NameClaim>>, StoreError>;

    /// Writes the claim on `skeleton`: created when `expected` is `None` ([`StoreError::Conflict`]
    /// when one exists), else replaced only if still at `expected`.
    async fn put_name_claim(
        &self,
        skeleton: &str,
        claim: &NameClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError>;

    /// The record of the sign-in identity (`provider`, `subject`), if any.
    async fn get_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Versioned<IdentityRecord>>, StoreError>;

    /// Writes the record of `identity`'s (provider, subject): created when `expected` is `None`
    /// ([`StoreError::Conflict`] when one exists), else replaced only if still at `expected`.
    async fn put_identity(&self, identity: &IdentityRecord, expected: Option<&Version>) -> Result<Version, StoreError>;

    /// The claim on the verified `address` (normalised), if any.
    async fn get_email_claim(&self, address: &str) -> Result<Option<Versioned<EmailClaim>>, StoreError>;

    /// Writes the claim on `address`: created when `expected` is `None` ([`StoreError::Conflict`]
    /// when one exists), else replaced only at `expected`.
    async fn put_email_claim(
        &self,
        address: &str,
        claim: &EmailClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError>;

    /// The code record under `key`, unless it expired by `now`.
    async fn get_code(&self, key: &str, now: UnixMs) -> Result<Option<Versioned<CodeRecord>>, StoreError>;

    /// Writes the code record under `key`, to expire at its `expires_at_ms`: created when `expected`
    /// is `None` (a record expired by `now` is taken over; a live one is [`StoreError::Conflict`]),
    /// else replaced only at `expected`.
    async fn put_code(
        &self,
        key: &str,
        code: &CodeRecord,
        expected: Option<&Version>,
        now: UnixMs,
    ) -> Result<Version, StoreError>;
}

/// Introspection clients, one record per client id; records of their own (never accounts).
#[async_trait]
pub trait ClientStore: Send + Sync + fmt::Debug {
    /// Stores a new client. [`StoreError::Conflict`] if one with the same id exists.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;

    /// One client by its id, or `None` when there is none (never added, or removed).
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Every client, ordered by id (administration only; may scan).
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// Deletes one client; `true` if it existed.
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;
}

/// One step of a compare-and-swap loop (see [`retry_cas`]): finished, or lost the race and to be
/// tried again with the state `S` (typically a record read afresh).
#[derive(Debug)]
pub enum Cas<T, S> {
    /// Finished with this result.
    Done(T),
    /// Lost a compare-and-swap; try again from this state.
    Retry(S),
}

/// How often a compare-and-swap is tried before the operation gives up with
/// [`StoreError::Unavailable`] (the client may retry; the record is not corrupted).
pub const MAX_CAS_ATTEMPTS: usize = 16;

/// The one compare-and-swap retry loop: runs `attempt` from `state` until it returns
/// [`Cas::Done`] or an error, at most [`MAX_CAS_ATTEMPTS`] times; `what` names the contended
/// record in the error.
pub async fn retry_cas<S, T, E, F, Fut>(what: &'static str, mut state: S, mut attempt: F) -> Result<T, E>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Result<Cas<T, S>, E>>,
    E: From<StoreError>,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        match attempt(state).await? {
            Cas::Done(result) => return Ok(result),
            Cas::Retry(next) => state = next,
        }
    }
    Err(StoreError::unavailable(format!("{what} stayed contended after {MAX_CAS_ATTEMPTS} attempts")).into())
}

/// What an account update does with the record it was shown (see [`update_account`]).
// Made and consumed at once, never stored: boxing the account would only cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<T> {
    /// Write this account (created when none exists under the key) and finish with `T` once it
    /// is written.
    Write(Account, T),
    /// Finish with `T`, writing nothing.
    Done(T),
}

/// The one conditional account update (object_store's `PutMode::Update` loop): shows `step` the
/// account under `key` as last read (`known`; `None` when none exists), writes what it asks with
/// compare-and-swap, and when the record changed, appeared or went away since it was read
/// ([`StoreError::Precondition`], [`StoreError::Conflict`], [`StoreError::NotFound`]) reads it
/// again and asks again, at most [`MAX_CAS_ATTEMPTS`] times. Every read-modify-write of an
/// account goes through here, so store errors are sorted in one place; `step` may run several
/// times and only says what changes.
///
/// Returns `step`'s outcome and the account as it stands afterwards: as written, or as last read
/// when `step` wrote nothing.
pub async fn update_account<T>(
    store: &dyn UserStore,
    key: &str,
    known: Option<Versioned<Account>>,
    mut step: impl FnMut(Option<&Account>) -> Step<T>,
) -> Result<(T, Option<Versioned<Account>>), StoreError> {
    retry_cas("account record", known, |current| {
        let decided = step(current.as_ref().map(|c| &c.value));
        async move {
            let (account, outcome) = match decided {
                Step::Done(outcome) => return Ok(Cas::Done((outcome, current))),
                Step::Write(account, outcome) => (account, outcome),
            };
            debug_assert_eq!(account.username_key, key, "an update writes the record it read");
            match store.put_account(&account, current.as_ref().map(|c| &c.version)).await {
                Ok(version) => Ok(Cas::Done((outcome, Some(Versioned { value: account, version })))),
                Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                    Ok(Cas::Retry(store.get_account(key).await?))
                }
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// A backend that holds sessions, users and introspection clients.
pub trait Store: SessionStore + UserStore + ClientStore {}

impl<T: SessionStore + UserStore + ClientStore> Store for T {}

/// Test doubles of the store.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::embedded::{EmbeddedStore, MEMORY};

    /// An in-memory store whose account writes fail as if they lost a race, a set number of times.
    #[derive(Debug)]
    pub(crate) struct Contended {
        pub(crate) inner: EmbeddedStore,
        failures_left: AtomicUsize,
    }

    impl Contended {
        /// A store whose next `failures` account writes lose.
        pub(crate) fn new(failures: usize) -> Self {
            let inner = EmbeddedStore::open(std::path::Path::new(MEMORY)).unwrap();
            Self { inner, failures_left: failures.into() }
        }

        /// The next `failures` account writes lose.
        pub(crate) fn fail_next(&self, failures: usize) {
            self.failures_left.store(failures, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl UserStore for Contended {
        async fn get_account(&self, key: &str) -> Result<Option<Versioned<Account>>, StoreError> {
            self.inner.get_account(key).await
        }
        async fn put_account(&self, a: &Account, v: Option<&Version>) -> Result<Version, StoreError> {
            if self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(if v.is_some() { StoreError::Precondition } else { StoreError::Conflict });
            }
            self.inner.put_account(a, v).await
        }
        async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
            self.inner.list_users().await
        }
        async fn get_admins(&self) -> Result<Option<Versioned<AdminRoster>>, StoreError> {
            self.inner.get_admins().await
        }
        async fn put_admins(&self, r: &AdminRoster, v: Option<&Version>) -> Result<Version, StoreError> {
            self.inner.put_admins(r, v).await
        }
        async fn purge_expired_accounts(&self, now: UnixMs) -> Result<u64, StoreError> {
            self.inner.purge_expired_accounts(now).await
        }
        async fn get_name_claim(&self, k: &str) -> Result<Option<Versioned<NameClaim>>, StoreError> {
            self.inner.get_name_claim(k).await
        }
        async fn put_name_claim(&self, k: &str, c: &NameClaim, v: Option<&Version>) -> Result<Version, StoreError> {
            self.inner.put_name_claim(k, c, v).await
        }
        async fn get_identity(&self, p: &str, s: &str) -> Result<Option<Versioned<IdentityRecord>>, StoreError> {
            self.inner.get_identity(p, s).await
        }
        async fn get_email_claim(&self, a: &str) -> Result<Option<Versioned<EmailClaim>>, StoreError> {
            self.inner.get_email_claim(a).await
        }
        async fn put_email_claim(&self, a: &str, c: &EmailClaim, v: Option<&Version>) -> Result<Version, StoreError> {
            self.inner.put_email_claim(a, c, v).await
        }
        async fn get_code(&self, k: &str, now: UnixMs) -> Result<Option<Versioned<CodeRecord>>, StoreError> {
            self.inner.get_code(k, now).await
        }
        async fn put_code(
            &self,
            k: &str,
            c: &CodeRecord,
            v: Option<&Version>,
            now: UnixMs,
        ) -> Result<Version, StoreError> {
            self.inner.put_code(k, c, v, now).await
        }
        async fn put_identity(&self, i: &IdentityRecord, v: Option<&Version>) -> Result<Version, StoreError> {
            self.inner.put_identity(i, v).await
        }
    }

    #[async_trait]
    impl ClientStore for Contended {
        async fn insert_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
            self.inner.insert_client(c).await
        }
        async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
            self.inner.get_client(id).await
        }
        async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
            self.inner.list_clients().await
        }
        async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.delete_client(id).await
        }
    }

    #[async_trait]
    impl SessionStore for Contended {
        async fn insert_session(&self, s: &SessionRecord) -> Result<Version, StoreError> {
            self.inner.insert_session(s).await
        }
        async fn get_session(&self, u: &str, s: &str) -> Result<Option<Versioned<SessionRecord>>, StoreError> {
            self.inner.get_session(u, s).await
        }
        async fn replace_session(&self, s: &SessionRecord, v: &Version) -> Result<Version, StoreError> {
            self.inner.replace_session(s, v).await
        }
        async fn delete_session(&self, u: &str, s: &str) -> Result<bool, StoreError> {
            self.inner.delete_session(u, s).await
        }
        async fn delete_user_sessions(&self, u: &str, keep: Option<&str>) -> Result<u64, StoreError> {
            self.inner.delete_user_sessions(u, keep).await
        }
        async fn list_user_sessions(&self, u: &str) -> Result<Vec<SessionRecord>, StoreError> {
            self.inner.list_user_sessions(u).await
        }
        async fn purge_expired(&self, now: UnixMs) -> Result<u64, StoreError> {
            self.inner.purge_expired(now).await
        }
        async fn sessions_epoch(&self) -> Result<UnixMs, StoreError> {
            self.inner.sessions_epoch().await
        }
        async fn raise_sessions_epoch(&self, at: UnixMs) -> Result<UnixMs, StoreError> {
            self.inner.raise_sessions_epoch(at).await
        }
        async fn mark_used(&self, m: &str, now: UnixMs, until: UnixMs) -> Result<bool, StoreError> {
            self.inner.mark_used(m, now, until).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn update_account_retries_lost_races_and_is_bounded() {
        let store = testing::Contended::new(3);
        let bump = |current: Option<&Account>| {
            let mut next = current.cloned().unwrap_or_else(|| Account::empty("k"));
            next.throttle.failures += 1;
            Step::Write(next, ())
        };
        let ((), after) = update_account(&store, "k", None, bump).await.unwrap();
        assert_eq!(after.unwrap().value.throttle.failures, 1, "three lost races, then one write");
        store.fail_next(usize::MAX);
        let r = update_account(&store, "k", store.get_account("k").await.unwrap(), bump).await;
        assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
        store.fail_next(0);
        let (seen, _) = update_account(&store, "k", None, |current| Step::Done(current.map(|a| a.throttle.failures)))
            .await
            .unwrap();
        assert_eq!(seen, None, "Done writes nothing and returns what it was shown");
    }

    #[tokio::test]
    async fn retry_cas_returns_the_first_done() {
        let mut calls = 0;
        let r: Result<u32, StoreError> = retry_cas("x", 0u32, |n| {
            calls += 1;
            async move { Ok(if n < 3 { Cas::Retry(n + 1) } else { Cas::Done(n * 10) }) }
        })
        .await;
        assert_eq!(r.unwrap(), 30);
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn retry_cas_is_bounded() {
        let mut calls = 0;
        let r: Result<(), StoreError> = retry_cas("the record", (), |()| {
            calls += 1;
            async { Ok(Cas::Retry(())) }
        })
        .await;
        assert_eq!(calls, MAX_CAS_ATTEMPTS);
        let e = r.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }));
        assert!(e.to_string().contains("the record stayed contended"), "{e}");
    }

    #[tokio::test]
    async fn retry_cas_stops_at_an_error() {
        let mut calls = 0;
        let r: Result<(), StoreError> = retry_cas("x", (), |()| {
            calls += 1;
            async { Err(StoreError::NotFound) }
        })
        .await;
        assert!(matches!(r, Err(StoreError::NotFound)));
        assert_eq!(calls, 1);
    }
}
