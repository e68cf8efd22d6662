//! Users: the directory seam ([`UserDirectory`], the .NET package's `IUserRepository`), the built-in
//! directory over a [`UserStore`], password hashing and lockout rules, and the admin operations
//! behind the `handler user …` commands.

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::UnixMs;
use crate::secret::Password;
use crate::store::{SessionStore, StoreError, UserRecord, UserStore};

pub mod lockout;
pub mod passwords;

pub use passwords::PasswordHasher;

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

/// Where users come from. Implement it to plug in your own directory.
#[async_trait]
pub trait UserDirectory: Send + Sync + std::fmt::Debug {
    /// Checks credentials. `Ok(None)` for an unknown user, a wrong password and a disabled account
    /// alike; implementations should take the same time for each. Lockout is applied by the caller.
    async fn authenticate(&self, username: &str, password: &Password) -> Result<Option<Principal>, StoreError>;

    /// A user by username (enabled or not), for an admin ending that user's sessions.
    async fn find(&self, username: &str) -> Result<Option<Principal>, StoreError>;
}

/// The built-in directory: users in a [`UserStore`], argon2id hashes.
#[derive(Debug, Clone)]
pub struct StoreDirectory {
    store: Arc<dyn UserStore>,
    hasher: Arc<PasswordHasher>,
}

impl StoreDirectory {
    /// A directory over `store`.
    pub fn new(store: Arc<dyn UserStore>, hasher: Arc<PasswordHasher>) -> Self {
        Self { store, hasher }
    }
}

fn principal(user: &UserRecord) -> Principal {
    Principal { id: user.id.clone(), name: user.username.clone(), roles: user.roles.clone() }
}

#[async_trait]
impl UserDirectory for StoreDirectory {
    async fn authenticate(&self, username: &str, password: &Password) -> Result<Option<Principal>, StoreError> {
        let user = match username_key(username) {
            Ok(key) => self.store.get_user(&key).await?.map(|v| v.value),
            Err(_) => None,
        };
        let phc = user.as_ref().map(|u| u.password_hash.as_str());
        // Always run argon2 (against a dummy hash for unknown users) so timing reveals nothing.
        let matched = self.hasher.verify(password, phc).await?;
        Ok(user.filter(|u| matched && !u.disabled).as_ref().map(principal))
    }

    async fn find(&self, username: &str) -> Result<Option<Principal>, StoreError> {
        let Ok(key) = username_key(username) else { return Ok(None) };
        Ok(self.store.get_user(&key).await?.map(|v| principal(&v.value)))
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
    if store.get_user(&key).await?.is_some() {
        return Err(AdminError::Exists(username.to_string()));
    }
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_string(),
        username_key: key,
        password_hash: hasher.hash(password).await?,
        roles,
        disabled: false,
        created_at_ms: now,
    };
    match store.insert_user(&user).await {
        Ok(()) => Ok(user),
        // Lost a race with another `user add` of the same name.
        Err(StoreError::Conflict) => Err(AdminError::Exists(username.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Disables a user and ends all of their sessions; returns the user and how many sessions ended.
pub async fn disable_user<S: UserStore + SessionStore + ?Sized>(
    store: &S,
    username: &str,
) -> Result<(UserRecord, u64), AdminError> {
    let key = username_key(username)?;
    loop {
        let Some(current) = store.get_user(&key).await? else { return Err(AdminError::Unknown(username.to_string())) };
        let mut user = current.value;
        if !user.disabled {
            user.disabled = true;
            match store.replace_user(&user, &current.version).await {
                Ok(_) => {}
                Err(StoreError::Precondition) => continue,
                Err(StoreError::NotFound) => return Err(AdminError::Unknown(username.to_string())),
                Err(e) => return Err(e.into()),
            }
        }
        // Sessions are ended after the flag is set, so no refresh can outlive the disable.
        let ended = store.delete_user_sessions(&user.id, None).await?;
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
        let dir_ = StoreDirectory::new(store.clone(), hasher.clone());
        let p = dir_.authenticate("ALICE", &pw).await.unwrap().unwrap();
        assert_eq!(p.id, user.id);
        assert_eq!(p.name, "Alice");
        assert!(dir_.authenticate("alice", &Password::new("wrong-password")).await.unwrap().is_none());
        assert!(dir_.authenticate("nobody", &pw).await.unwrap().is_none());
        disable_user(store.as_ref(), "alice").await.unwrap();
        assert!(dir_.authenticate("alice", &pw).await.unwrap().is_none(), "disabled users cannot log in");
        assert!(dir_.find("alice").await.unwrap().is_some());
        assert!(matches!(disable_user(store.as_ref(), "nobody").await, Err(AdminError::Unknown(_))));
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
