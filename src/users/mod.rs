//! Users: the directory seam ([`UserDirectory`], the .NET package's `IUserRepository`), the built-in
//! directory over a [`UserStore`], password hashing and lockout rules, and the admin operations
//! behind the `handler user …` commands.

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::UnixMs;
use crate::secret::Password;
use crate::settings::Login;
use crate::store::{Account, LoginThrottle, SessionStore, StoreError, UserRecord, UserStore, Versioned};

pub mod lockout;
pub mod passwords;

pub use passwords::PasswordHasher;

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest password, in bytes (argon2 accepts more; nobody needs more).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password the `user add` command accepts.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest time from reading an account to answering a successful login.
pub const CREDENTIAL_CHECK_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);
/// How long `user disable` waits before its second sweep of sessions: the credential-check window
/// plus time for the session write that follows it.
pub const DISABLE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1_500);
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
    #[error("username must not contain control characters or start or end with whitespace")]
    BadCharacters,
}

/// The lookup key of a username: checked, then lowercased, so `Alice` and `alice` are one account.
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
    Ok(raw.to_lowercase())
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
}

/// Where users come from (the .NET package's `IUserRepository`). Implement it to plug in your own
/// directory; [`StoreDirectory`] is the built-in one.
#[async_trait]
pub trait UserDirectory: Send + Sync + std::fmt::Debug {
    /// Checks credentials at `now`, applying the directory's lockout. Implementations must answer
    /// an unknown user, a wrong password and a disabled account alike, in the same time.
    async fn login(&self, username: &str, password: &Password, now: UnixMs) -> Result<LoginOutcome, StoreError>;

    /// A user by username (enabled or not), for an admin ending that user's sessions.
    async fn find(&self, username: &str) -> Result<Option<Principal>, StoreError>;
}

/// The built-in directory: accounts in a [`UserStore`], argon2id hashes, and lockout kept in the
/// same record as the user, so a login reads one record.
#[derive(Debug, Clone)]
pub struct StoreDirectory {
    store: Arc<dyn UserStore>,
    hasher: Arc<PasswordHasher>,
    policy: Login,
}

/// How often a compare-and-swap on an account is retried before giving up with 503.
const MAX_ACCOUNT_CAS_ATTEMPTS: usize = 16;

impl StoreDirectory {
    /// A directory over `store` with the lockout `policy`.
    pub fn new(store: Arc<dyn UserStore>, hasher: Arc<PasswordHasher>, policy: Login) -> Self {
        Self { store, hasher, policy }
    }

    /// Applies `change` to the account under `key` (a fresh user-less one when none exists) with
    /// compare-and-swap, re-reading after each lost race. `current` is a record already read.
    /// Returns the account as it was before the change that was written, and as written.
    async fn update_account(
        &self,
        key: &str,
        mut current: Option<Versioned<Account>>,
        change: impl Fn(&mut Account),
    ) -> Result<(Account, Account), StoreError> {
        for _ in 0..MAX_ACCOUNT_CAS_ATTEMPTS {
            let before = current.as_ref().map_or_else(|| empty_account(key), |c| c.value.clone());
            let mut account = before.clone();
            change(&mut account);
            match self.store.put_account(&account, current.as_ref().map(|c| &c.version)).await {
                Ok(_) => return Ok((before, account)),
                Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                    current = self.store.get_account(key).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::unavailable("account record stayed contended"))
    }
}

fn empty_account(key: &str) -> Account {
    Account { username_key: key.to_string(), user: None, throttle: LoginThrottle::default(), expires_at_ms: None }
}

fn principal(user: &UserRecord) -> Principal {
    Principal { id: user.id.clone(), name: user.username.clone(), roles: user.roles.clone() }
}

#[async_trait]
impl UserDirectory for StoreDirectory {
    async fn login(&self, username: &str, password: &Password, now: UnixMs) -> Result<LoginOutcome, StoreError> {
        let Ok(key) = username_key(username) else { return Ok(LoginOutcome::Rejected) };
        // Take a hashing slot before reading, so that queueing for one never ages the read.
        let slot = self.hasher.slot().await?;
        let read_at = std::time::Instant::now();
        let account = self.store.get_account(&key).await?;
        let throttle = account.as_ref().map(|a| a.value.throttle).unwrap_or_default();
        if let Some(retry_after_ms) = lockout::locked_for(&throttle, now) {
            return Ok(LoginOutcome::Locked { retry_after_ms });
        }
        let user = account.as_ref().and_then(|a| a.value.user.clone());
        // Always run argon2 (against a dummy hash for unknown users) so timing reveals nothing.
        let matched = self.hasher.verify(&slot, password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
        drop(slot);
        match user.filter(|u| matched && !u.disabled) {
            // A success read long ago may race a `user disable` that already swept the sessions;
            // refuse it (the disable sweeps again after `DISABLE_SETTLE`, longer than this window).
            Some(_) if read_at.elapsed() > CREDENTIAL_CHECK_WINDOW => {
                Err(StoreError::unavailable("the credential check took too long"))
            }
            Some(user) => {
                if throttle != LoginThrottle::default() {
                    self.update_account(&key, account, |a| a.throttle = LoginThrottle::default()).await?;
                }
                Ok(LoginOutcome::Authenticated(principal(&user)))
            }
            None => {
                let policy = self.policy;
                let (before, after) = self
                    .update_account(&key, account, |a| {
                        a.throttle = lockout::after_failure(Some(&a.throttle), now, &policy);
                        // A record that only counts failures may go once the window is over.
                        a.expires_at_ms =
                            Some(a.throttle.last_failure_ms.max(a.throttle.locked_until_ms) + policy.lockout_ms);
                    })
                    .await?;
                // Warn once, for the failure that set the lock (not for late guesses during it).
                let locked = |a: &Account| lockout::locked_for(&a.throttle, now).is_some();
                if locked(&after) && !locked(&before) {
                    tracing::warn!("login locked after repeated failures");
                }
                Ok(LoginOutcome::Rejected)
            }
        }
    }

    async fn find(&self, username: &str) -> Result<Option<Principal>, StoreError> {
        let Ok(key) = username_key(username) else { return Ok(None) };
        Ok(self.store.get_account(&key).await?.and_then(|a| a.value.user).as_ref().map(principal))
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
    let pw = password.expose();
    if pw.chars().count() < MIN_PASSWORD_CHARS || pw.len() > MAX_PASSWORD_BYTES || pw.contains(['\n', '\r']) {
        return Err(AdminError::Password);
    }
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(AdminError::Role(bad.clone()));
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let existing = store.get_account(&key).await?;
    if existing.as_ref().is_some_and(|a| a.value.user.is_some()) {
        return Err(AdminError::Exists(username.to_string()));
    }
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_string(),
        username_key: key.clone(),
        password_hash: hasher.hash(password).await?,
        roles,
        disabled: false,
        created_at_ms: now,
    };
    // Keep a throttle already counted for this name (failures before the account existed).
    let mut account = existing.as_ref().map_or_else(|| empty_account(&key), |a| a.value.clone());
    account.user = Some(user.clone());
    match store.put_account(&account, existing.as_ref().map(|a| &a.version)).await {
        Ok(_) => Ok(user),
        // Lost a race with another `user add` of the same name.
        Err(StoreError::Conflict | StoreError::Precondition | StoreError::NotFound) => {
            Err(AdminError::Exists(username.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Disables a user and ends all of their sessions; returns the user and how many sessions ended.
///
/// A login that read the account just before the flag was set may still start a session after the
/// first sweep; logins answer at most [`CREDENTIAL_CHECK_WINDOW`] after their read, so a second sweep
/// after `settle` (longer than that window plus a session write) ends those too. Pass
/// [`DISABLE_SETTLE`] outside tests.
pub async fn disable_user<S: UserStore + SessionStore + ?Sized>(
    store: &S,
    username: &str,
    settle: std::time::Duration,
) -> Result<(UserRecord, u64), AdminError> {
    let key = username_key(username)?;
    loop {
        let unknown = || AdminError::Unknown(username.to_string());
        let current = store.get_account(&key).await?.ok_or_else(unknown)?;
        let mut account = current.value;
        let user = account.user.as_mut().ok_or_else(unknown)?;
        if !user.disabled {
            user.disabled = true;
            match store.put_account(&account, Some(&current.version)).await {
                Ok(_) => {}
                Err(StoreError::Precondition) => continue,
                Err(StoreError::NotFound) => return Err(unknown()),
                Err(e) => return Err(e.into()),
            }
        }
        let Some(user) = account.user else { return Err(unknown()) };
        // Sessions are ended after the flag is set, so no refresh can outlive the disable.
        let mut ended = store.delete_user_sessions(&user.id, None).await?;
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
            ended += store.delete_user_sessions(&user.id, None).await?;
        }
        return Ok((user, ended));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

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
        let hasher = PasswordHasher::owasp();
        let pw = Password::new("s3cret-password");
        let user = add_user(store.as_ref(), &hasher, "Alice", &pw, &["admin".into(), "admin".into()], 5).await.unwrap();
        assert_eq!(user.roles, vec!["admin".to_string()]);
        assert!(matches!(add_user(store.as_ref(), &hasher, "alice", &pw, &[], 6).await, Err(AdminError::Exists(_))));
        let dir_ = StoreDirectory::new(store.clone(), hasher.clone(), Login { max_failures: 5, lockout_ms: 60_000 });
        let LoginOutcome::Authenticated(p) = dir_.login("ALICE", &pw, 10).await.unwrap() else {
            panic!("login failed")
        };
        assert_eq!(p.id, user.id);
        assert_eq!(p.name, "Alice");
        assert_eq!(dir_.login("alice", &Password::new("wrong-password"), 10).await.unwrap(), LoginOutcome::Rejected);
        assert_eq!(dir_.login("nobody", &pw, 10).await.unwrap(), LoginOutcome::Rejected);
        disable_user(store.as_ref(), "alice", std::time::Duration::ZERO).await.unwrap();
        assert_eq!(dir_.login("alice", &pw, 10).await.unwrap(), LoginOutcome::Rejected, "disabled users cannot log in");
        assert!(dir_.find("alice").await.unwrap().is_some());
        assert!(matches!(
            disable_user(store.as_ref(), "nobody", std::time::Duration::ZERO).await,
            Err(AdminError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn bad_passwords_and_roles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let hasher = PasswordHasher::owasp();
        for bad in ["short", "has\nnewline-inside", &"x".repeat(MAX_PASSWORD_BYTES + 1)] {
            let r = add_user(&store, &hasher, "bob", &Password::new(bad), &[], 0).await;
            assert!(matches!(r, Err(AdminError::Password)), "{bad:?}");
        }
        let r = add_user(&store, &hasher, "bob", &Password::new("long-enough"), &["bad role".into()], 0).await;
        assert!(matches!(r, Err(AdminError::Role(_))));
        assert!(store.list_users().await.unwrap().is_empty(), "nothing was written");
    }
}
