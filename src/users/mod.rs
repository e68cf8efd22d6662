//! Users: the directory seam ([`UserDirectory`], the .NET package's `IUserRepository`), the built-in
//! directory over a [`UserStore`], password hashing and lockout rules, and the admin operations
//! behind the `handler user …` commands.

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::UnixMs;
use crate::keyed::KeyedLocks;
use crate::secret::Password;
use crate::settings::Login;
use crate::store::{Account, Cas, LoginThrottle, StoreError, UserRecord, UserStore, Versioned, retry_cas};

pub mod lockout;
pub mod passwords;
pub mod profile;

pub use passwords::{HashError, PasswordHasher};

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest password, in bytes (argon2 accepts more; nobody needs more).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password the `user add` command accepts.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The role allowed to end other users' sessions.
pub const ADMIN_ROLE: &str = "admin";

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Empty.
    #[error("username must not be empty")]
    Empty,
    /// Too long.
    #[error("username must be at most {MAX_USERNAME_CHARS} characters")]
    TooLong,
    /// Control characters or surrounding spaces.
    #[error("username must not contain control, invisible or line-break characters, or start or end with whitespace")]
    BadCharacters,
    /// Letters of several scripts (a look-alike of another name).
    #[error("username must use letters of one script only (no look-alikes such as a Cyrillic а among Latin letters)")]
    MixedScript,
}

/// The lookup key of a username: checked, then mapped (RFC 8265 UsernameCaseMapped: width-mapped,
/// case-folded, NFC; see [`profile`]), so `Ａｌｉｃｅ`, `Alice` and `alice` are one account.
pub fn username_key(raw: &str) -> Result<String, UsernameError> {
    if raw.is_empty() {
        return Err(UsernameError::Empty);
    }
    if raw.chars().count() > MAX_USERNAME_CHARS {
        return Err(UsernameError::TooLong);
    }
    if raw.chars().any(char::is_control) || raw.trim() != raw {
        return Err(UsernameError::BadCharacters);
    }
    Ok(profile::mapped_key(raw))
}

/// The account of `username`: under its key, or under its pre-profile key (lowercased only) when
/// that differs and the first holds no user — so accounts registered before the profile still work.
/// Returns the key the account lives under (`key`, the mapped key of `username`, or the legacy
/// one), and the account.
async fn read_account(
    store: &dyn UserStore,
    key: &str,
    username: &str,
) -> Result<(String, Option<Versioned<Account>>), StoreError> {
    let found = store.get_account(key).await?;
    let legacy = profile::legacy_key(username);
    if legacy == key || found.as_ref().is_some_and(|a| a.value.user.is_some()) {
        return Ok((key.to_string(), found));
    }
    match store.get_account(&legacy).await? {
        Some(old) if old.value.user.is_some() => Ok((legacy, Some(old))),
        _ => Ok((key.to_string(), found)),
    }
}

/// An authenticated user, as the token service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id (`sub`); at most 128 bytes.
    pub id: String,
    /// Display name (`name`).
    pub name: String,
    /// Roles (`roles`).
    pub roles: Vec<String>,
}

/// The outcome of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The credentials are right and the account is active.
    Authenticated(Principal),
    /// Unknown user, wrong password or disabled account — indistinguishable by design.
    Rejected,
    /// Too many failures: refused without checking the password.
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// The password could not be checked now (hashing saturated); nothing was counted.
    Busy(&'static str),
}

/// A user as the directory knows it, enabled or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    /// Who it is.
    pub principal: Principal,
    /// A disabled user can neither log in nor act with an access token.
    pub disabled: bool,
}

/// Where users come from (the .NET package's `IUserRepository`). Implement it to plug in your own
/// directory; [`StoreDirectory`] is the built-in one.
#[async_trait]
pub trait UserDirectory: Send + Sync + std::fmt::Debug {
    /// Checks credentials at `now` for a client at `client` (the address key lockout counts
    /// under), applying the directory's lockout. Implementations must answer an unknown user, a
    /// wrong password and a disabled account alike, in the same time.
    async fn login(
        &self,
        username: &str,
        password: &Password,
        client: &str,
        now: UnixMs,
    ) -> Result<LoginOutcome, StoreError>;

    /// A user by username, enabled or not: for an admin ending that user's sessions, and to check
    /// a caller's current state.
    async fn find(&self, username: &str) -> Result<Option<UserState>, StoreError>;

    /// Whether the user `username` still exists as `user_id` and is enabled; read afresh (called
    /// after a session was written, so a login racing a disable cannot leave a session behind).
    async fn is_active(&self, username: &str, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.find(username).await?.is_some_and(|u| !u.disabled && u.principal.id == user_id))
    }
}

/// The built-in directory: accounts in a [`UserStore`], argon2id hashes, and lockout kept in the
/// same record as the user, so a login reads one record.
#[derive(Debug, Clone)]
pub struct StoreDirectory {
    store: Arc<dyn UserStore>,
    hasher: Arc<PasswordHasher>,
    policy: Login,
    attempts: Arc<KeyedLocks<()>>,
}

impl StoreDirectory {
    /// A directory over `store` with the lockout `policy`.
    pub fn new(store: Arc<dyn UserStore>, hasher: Arc<PasswordHasher>, policy: Login) -> Self {
        Self { store, hasher, policy, attempts: Arc::default() }
    }

    /// Applies `change` to the account under `key` (a fresh user-less one when none exists) with
    /// compare-and-swap, re-reading after each lost race. `current` is a record already read.
    /// Returns the account as it was before the change that was written, and as written, with the
    /// version written.
    async fn update_account(
        &self,
        key: &str,
        current: Option<Versioned<Account>>,
        change: impl Fn(&mut Account),
    ) -> Result<(Account, Versioned<Account>), StoreError> {
        update_account(self.store.as_ref(), key, current, change).await
    }
}

/// See [`StoreDirectory::update_account`].
async fn update_account(
    store: &dyn UserStore,
    key: &str,
    current: Option<Versioned<Account>>,
    change: impl Fn(&mut Account),
) -> Result<(Account, Versioned<Account>), StoreError> {
    let change = &change;
    retry_cas("account record", current, |current| async move {
        let before = current.as_ref().map_or_else(|| empty_account(key), |c| c.value.clone());
        let mut account = before.clone();
        change(&mut account);
        match store.put_account(&account, current.as_ref().map(|c| &c.version)).await {
            Ok(version) => Ok(Cas::Done((before, Versioned { value: account, version }))),
            Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                Ok(Cas::Retry(store.get_account(key).await?))
            }
            Err(e) => Err(e),
        }
    })
    .await
}

fn empty_account(key: &str) -> Account {
    Account {
        username_key: key.to_string(),
        user: None,
        throttle: LoginThrottle::default(),
        addresses: Vec::new(),
        expires_at_ms: None,
    }
}

fn principal(user: &UserRecord) -> Principal {
    Principal { id: user.id.clone(), name: user.username.clone(), roles: user.roles.clone() }
}

#[async_trait]
impl UserDirectory for StoreDirectory {
    async fn login(
        &self,
        username: &str,
        password: &Password,
        client: &str,
        now: UnixMs,
    ) -> Result<LoginOutcome, StoreError> {
        let Ok(key) = username_key(username) else { return Ok(LoginOutcome::Rejected) };
        let policy = self.policy;
        // One attempt per username and address at a time in this process; across processes the
        // reservation below keeps the count.
        let _turn = self.attempts.lock(format!("{key}\u{0}{client}")).await;
        let (key, read) = read_account(self.store.as_ref(), &key, username).await?;
        // Reserve the attempt first when failures are already recorded, so parallel guesses can
        // never have more than `max_failures` passwords checked per window.
        let key_ref = key.as_str();
        // `before`: the account as it was before this attempt's reservation, if it made one.
        let gate = retry_cas("account record", read, |current| async move {
            let account = current.as_ref().map_or_else(|| empty_account(key_ref), |c| c.value.clone());
            match lockout::gate(&account, client, now, &policy) {
                lockout::Gate::Locked { retry_after_ms } => Ok(Cas::Done(Err(retry_after_ms))),
                lockout::Gate::Open { reserve: false } => Ok(Cas::Done(Ok((current, None)))),
                lockout::Gate::Open { reserve: true } => {
                    let mut next = account.clone();
                    lockout::record_failure(&mut next, client, now, &policy);
                    match self.store.put_account(&next, current.as_ref().map(|c| &c.version)).await {
                        Ok(version) => Ok(Cas::Done(Ok((Some(Versioned { value: next, version }), Some(account))))),
                        Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                            Ok(Cas::Retry(self.store.get_account(key_ref).await?))
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await?;
        let (account, before) = match gate {
            Ok(found) => found,
            Err(retry_after_ms) => return Ok(LoginOutcome::Locked { retry_after_ms }),
        };
        let reserved = before.is_some();
        let user = account.as_ref().and_then(|a| a.value.user.clone());
        // Always run argon2 (against a dummy hash for unknown users) so timing reveals nothing.
        let matched = match self.hasher.verify(password, user.as_ref().map(|u| u.password_hash.as_str())).await {
            Ok(m) => m,
            Err(HashError::Busy(why)) => {
                if reserved {
                    self.update_account(&key, account, |a| lockout::release(a, client)).await?;
                }
                return Ok(LoginOutcome::Busy(why));
            }
            Err(HashError::Failed(e)) => return Err(StoreError::unavailable(e)),
        };
        match user.filter(|u| matched && !u.disabled) {
            Some(user) => {
                let has_entry = account.as_ref().is_some_and(|a| a.value.addresses.iter().any(|t| t.address == client));
                if reserved || has_entry {
                    self.update_account(&key, account, |a| lockout::record_success(a, client, reserved)).await?;
                }
                Ok(LoginOutcome::Authenticated(principal(&user)))
            }
            None if reserved => {
                if let (Some(before), Some(after)) = (&before, &account) {
                    warn_if_locked(before, &after.value, &key, client, now, &policy);
                }
                Ok(LoginOutcome::Rejected)
            }
            None => {
                let (before, after) =
                    self.update_account(&key, account, |a| lockout::record_failure(a, client, now, &policy)).await?;
                warn_if_locked(&before, &after.value, &key, client, now, &policy);
                Ok(LoginOutcome::Rejected)
            }
        }
    }

    async fn find(&self, username: &str) -> Result<Option<UserState>, StoreError> {
        let Ok(key) = username_key(username) else { return Ok(None) };
        Ok(read_account(self.store.as_ref(), &key, username)
            .await?
            .1
            .and_then(|a| a.value.user)
            .map(|u| UserState { principal: principal(&u), disabled: u.disabled }))
    }
}

/// Warns once, for the failure that set a lock (not for late guesses during it), naming the
/// username key and the client address.
fn warn_if_locked(before: &Account, after: &Account, key: &str, client: &str, now: UnixMs, policy: &Login) {
    if lockout::is_locked(after, client, now, policy) && !lockout::is_locked(before, client, now, policy) {
        let username_wide = after.throttle.locked_until_ms > now;
        tracing::warn!(username = %key, client_address = %client, username_wide, "login locked after repeated failures");
    }
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The username is not acceptable.
    #[error(transparent)]
    Username(#[from] UsernameError),
    /// The username is taken (compared without case).
    #[error("user {0:?} already exists")]
    Exists(String),
    /// No such user.
    #[error("no user named {0:?}")]
    Unknown(String),
    /// The password is not acceptable.
    #[error("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long and contain no line breaks")]
    Password,
    /// A role name is not acceptable.
    #[error("role {0:?} must be 1 to 64 characters of letters, digits, '.', '_', ':' or '-'")]
    Role(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len()) && role.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// The rule for passwords an operator sets (the CLI): 8 to 1024 bytes without line breaks. The
/// HTTP routes apply the stricter [`profile::check_new_password`] first.
fn admin_password(password: &Password) -> Result<(), AdminError> {
    let pw = password.expose();
    if pw.chars().count() < MIN_PASSWORD_CHARS || pw.len() > MAX_PASSWORD_BYTES || pw.contains(['\n', '\r']) {
        return Err(AdminError::Password);
    }
    Ok(())
}

/// Creates a user with a fresh random id.
pub async fn add_user(
    store: &dyn UserStore,
    hasher: &PasswordHasher,
    username: &str,
    password: &Password,
    roles: &[String],
    now: UnixMs,
) -> Result<UserRecord, AdminError> {
    let key = username_key(username)?;
    admin_password(password)?;
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(AdminError::Role(bad.clone()));
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_string(),
        username_key: key.clone(),
        password_hash: hasher.hash(password).await.map_err(|e| StoreError::unavailable(e.to_string()))?,
        roles,
        disabled: false,
        created_at_ms: now,
    };
    // A name registered before the username profile lives under its old key.
    let legacy = profile::legacy_key(username);
    if legacy != key && store.get_account(&legacy).await?.is_some_and(|a| a.value.user.is_some()) {
        return Err(AdminError::Exists(username.to_string()));
    }
    // Most names are new: try the insert first (one write), and read only when a record exists.
    let mut fresh = empty_account(&key);
    fresh.user = Some(user.clone());
    let existing = match store.put_account(&fresh, None).await {
        Ok(_) => return Ok(user),
        Err(StoreError::Conflict) => store.get_account(&key).await?,
        Err(e) => return Err(e.into()),
    };
    let (key, user) = (&key, &user);
    retry_cas("account record", existing, |current| async move {
        if current.as_ref().is_some_and(|a| a.value.user.is_some()) {
            return Err(AdminError::Exists(username.to_string()));
        }
        // Keep a throttle already counted for this name (failures before the account existed).
        let mut account = current.as_ref().map_or_else(|| empty_account(key), |a| a.value.clone());
        account.user = Some(user.clone());
        match store.put_account(&account, current.as_ref().map(|a| &a.version)).await {
            Ok(_) => Ok(Cas::Done(user.clone())),
            // Lost a race (another `user add`, or a failed login updating the throttle): read again;
            // only a user written by someone else makes the name taken.
            Err(StoreError::Conflict | StoreError::Precondition | StoreError::NotFound) => {
                Ok(Cas::Retry(store.get_account(key).await?))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Changes the registered user under `username` with compare-and-swap; [`AdminError::Unknown`]
/// when there is none.
async fn update_user(
    store: &dyn UserStore,
    username: &str,
    change: impl Fn(&mut Account),
) -> Result<UserRecord, AdminError> {
    let key = username_key(username)?;
    let unknown = || AdminError::Unknown(username.to_string());
    let (key, current) = read_account(store, &key, username).await?;
    let current = current.ok_or_else(unknown)?;
    let (key, change) = (&key, &change);
    retry_cas("account record", current, |current| async move {
        let mut account = current.value.clone();
        if account.user.is_none() {
            return Err(unknown());
        }
        change(&mut account);
        match store.put_account(&account, Some(&current.version)).await {
            Ok(_) => account.user.map(Cas::Done).ok_or_else(unknown),
            Err(StoreError::Precondition) => Ok(Cas::Retry(store.get_account(key).await?.ok_or_else(unknown)?)),
            Err(StoreError::NotFound) => Err(unknown()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Disables a user and ends all of their sessions; returns the user and how many sessions ended.
///
/// The flag is written before the sessions are deleted, and a login re-reads the account after
/// writing its session (deleting it when the user is disabled): a login racing this either sees
/// the flag, or wrote its session before the flag and so before the sweep, which ends it.
pub async fn disable_user(store: &dyn crate::store::Store, username: &str) -> Result<(UserRecord, u64), AdminError> {
    let user = update_user(store, username, |a| {
        if let Some(u) = a.user.as_mut() {
            u.disabled = true;
        }
    })
    .await?;
    let ended = store.delete_user_sessions(&user.id, None).await?;
    Ok((user, ended))
}

/// Clears every failed-login count and lock of `username` (`handler user unlock`).
pub async fn unlock_user(store: &dyn UserStore, username: &str) -> Result<UserRecord, AdminError> {
    update_user(store, username, lockout::unlock).await
}

/// The outcome of a password change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordChange {
    /// The current password was right; the new one is stored.
    Changed(UserRecord),
    /// Wrong current password (counted toward lockout), or the account is gone or disabled.
    Rejected,
    /// Too many failures from this address or for this username.
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// Hashing is saturated; nothing was changed or counted.
    Busy(&'static str),
}

/// Changes the password of `username` (whose id must be `user_id`) after checking `current`,
/// with the lockout of logins: a wrong current password counts as a failed login from `client`.
/// One account read and one write when it succeeds. `new` must already meet the policy.
#[allow(clippy::too_many_arguments)]
pub async fn change_password(
    store: &dyn UserStore,
    hasher: &PasswordHasher,
    policy: &Login,
    username: &str,
    user_id: &str,
    current: &Password,
    new: &Password,
    client: &str,
    now: UnixMs,
) -> Result<PasswordChange, StoreError> {
    let Ok(key) = username_key(username) else { return Ok(PasswordChange::Rejected) };
    let (key, read) = read_account(store, &key, username).await?;
    let Some(read) = read else { return Ok(PasswordChange::Rejected) };
    if let lockout::Gate::Locked { retry_after_ms } = lockout::gate(&read.value, client, now, policy) {
        return Ok(PasswordChange::Locked { retry_after_ms });
    }
    let Some(user) = read.value.user.clone().filter(|u| u.id == user_id && !u.disabled) else {
        return Ok(PasswordChange::Rejected);
    };
    match hasher.verify(current, Some(&user.password_hash)).await {
        Ok(true) => {}
        Ok(false) => {
            let (before, after) =
                update_account(store, &key, Some(read), |a| lockout::record_failure(a, client, now, policy)).await?;
            warn_if_locked(&before, &after.value, &key, client, now, policy);
            return Ok(PasswordChange::Rejected);
        }
        Err(HashError::Busy(why)) => return Ok(PasswordChange::Busy(why)),
        Err(HashError::Failed(e)) => return Err(StoreError::unavailable(e)),
    }
    let new_hash = match hasher.hash(new).await {
        Ok(h) => h,
        Err(HashError::Busy(why)) => return Ok(PasswordChange::Busy(why)),
        Err(HashError::Failed(e)) => return Err(StoreError::unavailable(e)),
    };
    let verified_hash = user.password_hash.clone();
    let (key, new_hash, verified_hash) = (&key, &new_hash, &verified_hash);
    retry_cas("account record", read, |current| async move {
        let mut account = current.value.clone();
        let Some(u) = account.user.as_mut().filter(|u| u.id == user_id && !u.disabled) else {
            return Ok(Cas::Done(PasswordChange::Rejected));
        };
        // Changed by someone else since it was verified: the current password may be stale.
        if u.password_hash != *verified_hash {
            return Ok(Cas::Done(PasswordChange::Rejected));
        }
        u.password_hash = new_hash.clone();
        let changed = u.clone();
        lockout::record_success(&mut account, client, false);
        match store.put_account(&account, Some(&current.version)).await {
            Ok(_) => Ok(Cas::Done(PasswordChange::Changed(changed))),
            Err(StoreError::Precondition) => match store.get_account(key).await? {
                Some(again) => Ok(Cas::Retry(again)),
                None => Ok(Cas::Done(PasswordChange::Rejected)),
            },
            Err(StoreError::NotFound) => Ok(Cas::Done(PasswordChange::Rejected)),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Sets a new password for `username` without checking the old one (`handler user password`, an
/// admin's action); the caller ends the user's sessions.
pub async fn set_password(
    store: &dyn UserStore,
    hasher: &PasswordHasher,
    username: &str,
    password: &Password,
) -> Result<UserRecord, AdminError> {
    admin_password(password)?;
    let hash = hasher.hash(password).await.map_err(|e| StoreError::unavailable(e.to_string()))?;
    update_user(store, username, |a| {
        if let Some(u) = a.user.as_mut() {
            u.password_hash = hash.clone();
        }
    })
    .await
}

/// What an admin may change about a user (`PATCH /api/users/{username}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// Disable (true) or enable (false).
    pub disabled: Option<bool>,
    /// New roles (replacing the old ones).
    pub roles: Option<Vec<String>>,
    /// Clear every failed-login count and lock.
    pub unlock: bool,
}

/// Applies `change` to `username`; disabling ends every session of the user, a role change is
/// copied into the user's sessions so that their next refresh carries it. Returns the user as
/// changed and how many sessions ended.
pub async fn change_user(
    store: &dyn crate::store::Store,
    username: &str,
    change: &UserChange,
) -> Result<(UserRecord, u64), AdminError> {
    let roles = match &change.roles {
        Some(roles) => {
            if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
                return Err(AdminError::Role(bad.clone()));
            }
            let mut roles = roles.clone();
            roles.sort();
            roles.dedup();
            Some(roles)
        }
        None => None,
    };
    let user = update_user(store, username, |a| {
        if let Some(u) = a.user.as_mut() {
            if let Some(disabled) = change.disabled {
                u.disabled = disabled;
            }
            if let Some(roles) = &roles {
                u.roles.clone_from(roles);
            }
        }
        if change.unlock {
            lockout::unlock(a);
        }
    })
    .await?;
    let mut ended = 0;
    if user.disabled {
        ended = store.delete_user_sessions(&user.id, None).await?;
    } else if let Some(roles) = &roles {
        for session in store.list_user_sessions(&user.id).await? {
            copy_roles(store, &session.user_id, &session.session_id, roles).await?;
        }
    }
    Ok((user, ended))
}

/// Writes `roles` into one session with compare-and-swap (a session gone meanwhile is fine).
async fn copy_roles(
    store: &dyn crate::store::Store,
    user_id: &str,
    session_id: &str,
    roles: &[String],
) -> Result<(), StoreError> {
    let current = store.get_session(user_id, session_id).await?;
    retry_cas("session", current, |current| async move {
        let Some(current) = current else { return Ok(Cas::Done(())) };
        let mut session = current.value.clone();
        if session.roles == roles {
            return Ok(Cas::Done(()));
        }
        session.roles = roles.to_vec();
        match store.replace_session(&session, &current.version).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(Cas::Done(())),
            Err(StoreError::Precondition) => Ok(Cas::Retry(store.get_session(user_id, session_id).await?)),
            Err(e) => Err(e),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Hashing;
    use crate::store::embedded::EmbeddedStore;

    const POLICY: Login = Login { max_failures: 5, max_failures_per_username: 50, lockout_ms: 60_000 };

    fn hasher() -> Arc<PasswordHasher> {
        PasswordHasher::start(&Hashing { workers: 2, queue_length: 64, queue_timeout_ms: 30_000 }).unwrap()
    }

    #[test]
    fn username_keys_ignore_case_and_refuse_odd_names() {
        assert_eq!(username_key("Alice").unwrap(), "alice");
        assert_eq!(username_key("ÉMILE").unwrap(), "émile");
        assert_eq!(username_key(""), Err(UsernameError::Empty));
        assert_eq!(username_key(" bob"), Err(UsernameError::BadCharacters));
        assert_eq!(username_key("bob\n"), Err(UsernameError::BadCharacters));
        assert_eq!(username_key("a\u{0}b"), Err(UsernameError::BadCharacters));
        assert_eq!(username_key(&"x".repeat(65)), Err(UsernameError::TooLong));
        assert!(username_key(&"x".repeat(64)).is_ok());
    }

    #[tokio::test]
    async fn add_authenticate_and_disable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let hasher = hasher();
        let pw = Password::new("s3cret-password");
        let user = add_user(store.as_ref(), &hasher, "Alice", &pw, &["admin".into(), "admin".into()], 5).await.unwrap();
        assert_eq!(user.roles, vec!["admin".to_string()]);
        assert!(matches!(add_user(store.as_ref(), &hasher, "alice", &pw, &[], 6).await, Err(AdminError::Exists(_))));
        let dir_ = StoreDirectory::new(store.clone(), hasher.clone(), POLICY);
        let LoginOutcome::Authenticated(p) = dir_.login("ALICE", &pw, "a", 10).await.unwrap() else {
            panic!("login failed")
        };
        assert_eq!(p.id, user.id);
        assert_eq!(p.name, "Alice");
        assert_eq!(
            dir_.login("alice", &Password::new("wrong-password"), "a", 10).await.unwrap(),
            LoginOutcome::Rejected
        );
        assert_eq!(dir_.login("nobody", &pw, "a", 10).await.unwrap(), LoginOutcome::Rejected);
        assert!(dir_.is_active("alice", &user.id).await.unwrap());
        disable_user(store.as_ref(), "alice").await.unwrap();
        assert_eq!(
            dir_.login("alice", &pw, "a", 10).await.unwrap(),
            LoginOutcome::Rejected,
            "disabled users cannot log in"
        );
        assert!(!dir_.is_active("alice", &user.id).await.unwrap());
        assert!(dir_.find("alice").await.unwrap().is_some_and(|u| u.disabled));
        assert!(matches!(disable_user(store.as_ref(), "nobody").await, Err(AdminError::Unknown(_))));
    }

    #[tokio::test]
    async fn bad_passwords_and_roles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let hasher = hasher();
        for bad in ["short", "has\nnewline-inside", &"x".repeat(MAX_PASSWORD_BYTES + 1)] {
            let r = add_user(&store, &hasher, "bob", &Password::new(bad), &[], 0).await;
            assert!(matches!(r, Err(AdminError::Password)), "{bad:?}");
        }
        let r = add_user(&store, &hasher, "bob", &Password::new("long-enough"), &["bad role".into()], 0).await;
        assert!(matches!(r, Err(AdminError::Role(_))));
        assert!(store.list_users().await.unwrap().is_empty(), "nothing was written");
    }

    #[tokio::test]
    async fn lockout_counts_per_address_and_unlock_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let hasher = hasher();
        let pw = Password::new("s3cret-password");
        add_user(store.as_ref(), &hasher, "carol", &pw, &[], 0).await.unwrap();
        let d = StoreDirectory::new(store.clone(), hasher, POLICY);
        let wrong = Password::new("wrong-password");
        for _ in 0..5 {
            assert_eq!(d.login("carol", &wrong, "203.0.113.9", 10).await.unwrap(), LoginOutcome::Rejected);
        }
        assert!(matches!(d.login("carol", &pw, "203.0.113.9", 11).await.unwrap(), LoginOutcome::Locked { .. }));
        assert!(matches!(d.login("carol", &pw, "198.51.100.7", 11).await.unwrap(), LoginOutcome::Authenticated(_)));
        unlock_user(store.as_ref(), "carol").await.unwrap();
        assert!(matches!(d.login("carol", &pw, "203.0.113.9", 12).await.unwrap(), LoginOutcome::Authenticated(_)));
        assert!(matches!(unlock_user(store.as_ref(), "nobody").await, Err(AdminError::Unknown(_))));
    }

    /// A store whose account writes fail with `Precondition` a set number of times.
    #[derive(Debug)]
    struct Contended {
        inner: EmbeddedStore,
        failures_left: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl UserStore for Contended {
        async fn get_account(&self, key: &str) -> Result<Option<Versioned<Account>>, StoreError> {
            self.inner.get_account(key).await
        }
        async fn put_account(
            &self,
            a: &Account,
            v: Option<&crate::store::Version>,
        ) -> Result<crate::store::Version, StoreError> {
            use std::sync::atomic::Ordering;
            if self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(if v.is_some() { StoreError::Precondition } else { StoreError::Conflict });
            }
            self.inner.put_account(a, v).await
        }
        async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
            self.inner.list_users().await
        }
        async fn purge_expired_accounts(&self, now: UnixMs) -> Result<u64, StoreError> {
            self.inner.purge_expired_accounts(now).await
        }
    }

    fn contended(failures: usize) -> (tempfile::TempDir, Contended) {
        let dir = tempfile::tempdir().unwrap();
        let inner = EmbeddedStore::open(dir.path()).unwrap();
        (dir, Contended { inner, failures_left: failures.into() })
    }

    #[tokio::test]
    async fn add_user_retries_a_lost_precondition_instead_of_reporting_a_taken_name() {
        let (_dir, store) = contended(3);
        let user = add_user(&store, &hasher(), "dave", &Password::new("long-enough-pw"), &[], 0).await.unwrap();
        assert_eq!(store.inner.get_account("dave").await.unwrap().unwrap().value.user.unwrap().id, user.id);
    }

    #[tokio::test]
    async fn updates_give_up_after_a_bounded_number_of_lost_races() {
        let (_dir, store) = contended(0);
        add_user(&store, &hasher(), "erin", &Password::new("long-enough-pw"), &[], 0).await.unwrap();
        store.failures_left.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        let r = unlock_user(&store, "erin").await;
        assert!(matches!(r, Err(AdminError::Store(StoreError::Unavailable { .. }))), "{r:?}");
        store.failures_left.store(2, std::sync::atomic::Ordering::SeqCst);
        unlock_user(&store, "erin").await.unwrap();
    }

    #[tokio::test]
    async fn failed_logins_on_a_contended_record_are_still_counted() {
        let (_dir, store) = contended(0);
        let store = Arc::new(store);
        add_user(store.as_ref(), &hasher(), "fay", &Password::new("long-enough-pw"), &[], 0).await.unwrap();
        let d = StoreDirectory::new(store.clone(), hasher(), POLICY);
        store.failures_left.store(5, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(d.login("fay", &Password::new("nope-nope"), "a", 1).await.unwrap(), LoginOutcome::Rejected);
        let account = store.inner.get_account("fay").await.unwrap().unwrap().value;
        assert_eq!(account.throttle.failures, 1);
    }
}
