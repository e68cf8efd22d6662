//! Users: the directory seam ([`UserDirectory`], the .NET package's `IUserRepository`) and the
//! built-in directory over a [`UserStore`]; password hashing ([`passwords`]), login throttling
//! ([`lockout`]) and the username and password profile ([`profile`]). Creating and changing
//! accounts, and what that does to sessions, is the account service's (`crate::accounts`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::UnixMs;
use crate::secret::Password;
use crate::store::{Account, StoreError, UserRecord, UserStore, Versioned};

pub mod device;
pub mod lockout;
pub mod passwords;
pub mod profile;

pub use lockout::Lockout;
pub use passwords::{HashError, PasswordHasher};

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest password, in bytes (argon2 accepts more; nobody needs more).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The role allowed to manage users and end other users' sessions.
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
    /// A character RFC 8265 refuses in usernames: a compatibility form (`𝐚`, `ⓐ`, `ǅ`), a default
    /// ignorable or a Hangul filler, or a symbol.
    #[error(
        "username must be made of ordinary letters, digits and punctuation (no styled, circled or invisible \
         characters)"
    )]
    NotInProfile,
    /// Every letter looks like a Latin one, in another script (UTS #39 whole-script confusable).
    #[error("username looks like a Latin name written in another script; choose one that does not")]
    WholeScriptConfusable,
    /// Looks the same as a registered username (UTS #39 confusable skeleton).
    #[error("username is too similar to an existing one; choose another one")]
    Confusable,
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
pub(crate) async fn read_account(
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
    /// The second factors a login of this user must also pass (empty: none).
    pub second_factors: Vec<&'static str>,
    /// The fingerprint of the password hash the login was checked against (binds an `mfa_token`).
    pub password_fingerprint: String,
    /// The user's verified e-mail address (where security notices go), if any.
    pub email: Option<String>,
}

impl From<&UserRecord> for Principal {
    fn from(user: &UserRecord) -> Self {
        let mut second_factors = Vec::new();
        if user.factors.totp.as_ref().is_some_and(|t| t.active) {
            second_factors.push("totp");
        }
        if !user.factors.passkeys.is_empty() {
            second_factors.push("webauthn");
        }
        if user.factors.any_active() && !user.factors.recovery_codes.is_empty() {
            second_factors.push("recovery_code");
        }
        Self {
            id: user.id.clone(),
            name: user.username.clone(),
            roles: user.roles.clone(),
            second_factors,
            password_fingerprint: password_fingerprint(&user.password_hash),
            email: user.email.as_ref().filter(|e| e.verified).map(|e| e.address.clone()),
        }
    }
}

/// A fingerprint of a password hash ("" without a password): what an `mfa_token` is bound to, so
/// that a password change voids the second steps begun with the old one.
pub fn password_fingerprint(password_hash: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    if password_hash.is_empty() {
        return String::new();
    }
    let digest = sha2::Sha256::digest(password_hash.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.get(..12).unwrap_or_default())
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

impl From<&UserRecord> for UserState {
    fn from(u: &UserRecord) -> Self {
        Self { principal: principal(u), disabled: u.disabled }
    }
}

/// Where users come from (the .NET package's `IUserRepository`). Implement it to plug in your own
/// directory; [`StoreDirectory`] is the built-in one.
#[async_trait]
pub trait UserDirectory: Send + Sync + std::fmt::Debug {
    /// Checks credentials at `now` for a client `origin` (the address key and device token lockout
    /// counts under), applying the directory's lockout. Implementations must answer an unknown
    /// user, a wrong password and a disabled account alike, in the same time.
    async fn login(
        &self,
        username: &str,
        password: &Password,
        origin: lockout::Origin<'_>,
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

/// The registered user under `username` (by its key, or its pre-profile key), read afresh.
pub async fn find_user(store: &dyn UserStore, username: &str) -> Result<Option<UserRecord>, StoreError> {
    let Ok(key) = username_key(username) else { return Ok(None) };
    Ok(read_account(store, &key, username).await?.1.and_then(|a| a.value.user))
}

/// The built-in directory: accounts in a [`UserStore`], argon2id hashes, and lockout kept in the
/// same record as the user, so a login reads one record.
#[derive(Debug, Clone)]
pub struct StoreDirectory {
    store: Arc<dyn UserStore>,
    hasher: Arc<PasswordHasher>,
    lockout: Lockout,
}

impl StoreDirectory {
    /// A directory over `store`, throttling logins with `lockout`.
    pub fn new(store: Arc<dyn UserStore>, hasher: Arc<PasswordHasher>, lockout: Lockout) -> Self {
        Self { store, hasher, lockout }
    }
}

fn principal(user: &UserRecord) -> Principal {
    Principal::from(user)
}

#[async_trait]
impl UserDirectory for StoreDirectory {
    async fn login(
        &self,
        username: &str,
        password: &Password,
        origin: lockout::Origin<'_>,
        now: UnixMs,
    ) -> Result<LoginOutcome, StoreError> {
        let hasher = &self.hasher;
        let attempt = self.lockout.attempt(self.store.as_ref(), username, origin, now, |user| async move {
            // Always run argon2 (against a dummy hash for unknown users) so timing reveals nothing.
            let matched = match hasher
                .verify(password, user.as_ref().map(|u| u.password_hash.as_str()).filter(|h| !h.is_empty()))
                .await
            {
                Ok(matched) => matched,
                Err(HashError::Busy(why)) => return Ok(lockout::Check::Unchecked(why)),
                Err(HashError::Failed(e)) => return Err(StoreError::unavailable(e)),
            };
            Ok(match user.filter(|u| matched && !u.disabled) {
                Some(user) if user.factors.any_active() => lockout::Check::PassedFirstStep(principal(&user)),
                Some(user) => lockout::Check::Passed(principal(&user)),
                None => lockout::Check::Failed,
            })
        });
        Ok(match attempt.await? {
            lockout::Attempt::Passed { outcome, .. } => LoginOutcome::Authenticated(outcome),
            lockout::Attempt::Failed => LoginOutcome::Rejected,
            lockout::Attempt::Locked { retry_after_ms } => LoginOutcome::Locked { retry_after_ms },
            lockout::Attempt::Unchecked(why) => LoginOutcome::Busy(why),
        })
    }

    async fn find(&self, username: &str) -> Result<Option<UserState>, StoreError> {
        Ok(find_user(self.store.as_ref(), username).await?.map(|u| UserState::from(&u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Hashing, Login};
    use crate::store::embedded::EmbeddedStore;
    use crate::store::testing::Contended;

    const POLICY: Login =
        Login { max_failures: 5, max_failures_per_username: 50, lockout_ms: 60_000, device_token_ttl_ms: 86_400_000 };

    impl StoreDirectory {
        async fn login_at(
            &self,
            u: &str,
            p: &Password,
            address: &str,
            now: UnixMs,
        ) -> Result<LoginOutcome, StoreError> {
            self.login(u, p, address.into(), now).await
        }
    }

    fn hasher() -> Arc<PasswordHasher> {
        PasswordHasher::start(&Hashing { workers: 2, queue_length: 64, queue_timeout_ms: 30_000 }).unwrap()
    }

    /// Stores user `name` with `password`, as the account service would.
    async fn put_user(store: &dyn UserStore, hasher: &PasswordHasher, name: &str, password: &str) -> UserRecord {
        let key = username_key(name).unwrap();
        let user = UserRecord {
            id: format!("id-{key}"),
            username: name.to_string(),
            username_key: key.clone(),
            password_hash: hasher.hash(&Password::new(password)).await.unwrap(),
            roles: vec![],
            disabled: false,
            created_at_ms: 0,
            identities: Vec::new(),
            factors: Default::default(),
            email: None,
        };
        let mut account = Account::empty(&key);
        account.user = Some(user.clone());
        store.put_account(&account, None).await.unwrap();
        user
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
    async fn login_authenticates_by_any_case_and_refuses_the_rest_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let hasher = hasher();
        let user = put_user(store.as_ref(), &hasher, "Alice", "s3cret-password").await;
        let pw = Password::new("s3cret-password");
        let d = StoreDirectory::new(store.clone(), hasher, Lockout::new(POLICY));
        let LoginOutcome::Authenticated(p) = d.login_at("ALICE", &pw, "a", 10).await.unwrap() else {
            panic!("login failed")
        };
        assert_eq!((p.id.as_str(), p.name.as_str()), (user.id.as_str(), "Alice"));
        assert_eq!(
            d.login_at("alice", &Password::new("wrong-password"), "a", 10).await.unwrap(),
            LoginOutcome::Rejected
        );
        assert_eq!(d.login_at("nobody", &pw, "a", 10).await.unwrap(), LoginOutcome::Rejected);
        assert!(d.is_active("alice", &user.id).await.unwrap());
        let mut account = store.get_account("alice").await.unwrap().unwrap();
        if let Some(u) = account.value.user.as_mut() {
            u.disabled = true;
        }
        store.put_account(&account.value, Some(&account.version)).await.unwrap();
        assert_eq!(
            d.login_at("alice", &pw, "a", 10).await.unwrap(),
            LoginOutcome::Rejected,
            "disabled users cannot log in"
        );
        assert!(!d.is_active("alice", &user.id).await.unwrap());
        assert!(d.find("alice").await.unwrap().is_some_and(|u| u.disabled));
    }

    #[tokio::test]
    async fn lockout_counts_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let hasher = hasher();
        put_user(store.as_ref(), &hasher, "carol", "s3cret-password").await;
        let pw = Password::new("s3cret-password");
        let d = StoreDirectory::new(store.clone(), hasher, Lockout::new(POLICY));
        let wrong = Password::new("wrong-password");
        for _ in 0..5 {
            assert_eq!(d.login_at("carol", &wrong, "203.0.113.9", 10).await.unwrap(), LoginOutcome::Rejected);
        }
        assert!(matches!(d.login_at("carol", &pw, "203.0.113.9", 11).await.unwrap(), LoginOutcome::Locked { .. }));
        assert!(matches!(d.login_at("carol", &pw, "198.51.100.7", 11).await.unwrap(), LoginOutcome::Authenticated(_)));
    }

    #[tokio::test]
    async fn failed_logins_on_a_contended_record_are_still_counted() {
        let store = Arc::new(Contended::new(0));
        put_user(store.as_ref(), &hasher(), "fay", "long-enough-pw").await;
        let d = StoreDirectory::new(store.clone(), hasher(), Lockout::new(POLICY));
        store.fail_next(5);
        assert_eq!(d.login_at("fay", &Password::new("nope-nope"), "a", 1).await.unwrap(), LoginOutcome::Rejected);
        let account = store.get_account("fay").await.unwrap().unwrap().value;
        assert_eq!(account.throttle.failures, 1);
    }
}
