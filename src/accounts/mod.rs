//! The account service: the rules of accounts of the built-in user directory — sign-up, creating
//! users, passwords, enable/disable, roles, unlock, the admin listing — and, in [`sessions`], what
//! each change does to the user's sessions. The HTTP edge and the `handler user …` commands both
//! call it; nothing else changes users. No HTTP here.
//!
//! The token rules (login, rotation, reuse, revocation) are [`TokenService`](crate::service::TokenService)'s;
//! this service uses only its shared types ([`Caller`], [`ServiceError`]) and never the other way
//! round.

use std::num::NonZeroUsize;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::{Clock, UnixMs};
use crate::secret::Password;
use crate::service::{Caller, GrantFailure, ServiceError};
use crate::settings::{Accounts, RegistrationMode};
use crate::store::{Account, Step, Store, StoreError, UserRecord, update_account};
use crate::users::lockout::{Attempt, Check, Origin};
use crate::users::profile::{self, PasswordPolicyError};
use crate::users::{self, HashError, Lockout, MAX_PASSWORD_BYTES, PasswordHasher, Principal, UserState, UsernameError};

mod admins;
pub mod email;
pub mod factors;
pub mod identities;
mod lookalikes;
pub mod passkeys;
pub mod sessions;
mod signup;

pub use sessions::Reason;

/// What a non-admin caller of an admin operation is told.
const ADMIN_NEEDED: &str = "this needs the admin role";
/// What a change that would leave no enabled admin is told.
pub const LAST_ADMIN: &str = "this change would leave no enabled admin; make another user an admin first";
/// Most users a page of `GET /api/users` holds.
pub const MAX_PAGE: NonZeroUsize = match NonZeroUsize::new(200) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// Shortest password an operator may set with [`PasswordCheck::AllowWeak`].
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Who asks for an account operation.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The operator at the `handler` command line: whoever may open the store.
    Operator,
    /// A caller over HTTP, who must hold the admin role in their current account.
    Admin(&'a Caller),
}

/// Whether a new password must pass the strength policy ([`profile::check_new_password`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The policy every HTTP route applies.
    Policy,
    /// Only 8 to 1024 bytes without line breaks (`--allow-weak-password`, for scripted fixtures).
    AllowWeak,
}

/// A user as the admin routes and the command line show it (never the hash).
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// Stable id.
    pub id: String,
    /// Username as registered.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether the user can sign in with a password (an account made by a provider sign-in has none).
    pub has_password: bool,
    /// The sign-in providers' identities linked to the user.
    pub identities: Vec<identities::IdentityInfo>,
    /// The second factors a password login of the user needs (`totp`, `webauthn`,
    /// `recovery_code`); empty when none.
    pub second_factors: Vec<&'static str>,
    /// How many passkeys the user holds.
    pub passkeys: usize,
    /// The user's e-mail address, if any.
    pub email: Option<String>,
    /// Whether it is verified.
    pub email_verified: bool,
}

impl From<&UserRecord> for UserInfo {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            roles: u.roles.clone(),
            disabled: u.disabled,
            created_at: u.created_at_ms / 1000,
            has_password: u.has_password(),
            identities: u.identities.iter().map(identities::IdentityInfo::from).collect(),
            second_factors: Principal::from(u).second_factors,
            passkeys: u.factors.passkeys.len(),
            email: u.email.as_ref().map(|e| e.address.clone()),
            email_verified: u.email.as_ref().is_some_and(|e| e.verified),
        }
    }
}

/// A page of users.
#[derive(Debug, Clone, Serialize)]
pub struct UserPage {
    /// The users, ordered by username key.
    pub users: Vec<UserInfo>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A changed user, and how many of their sessions the change ended.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The user as changed.
    pub user: UserInfo,
    /// Sessions ended by the change.
    pub sessions_ended: u64,
}

/// What an admin may change about a user (`PATCH /api/users/{username}`, `handler user disable|unlock`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// Disable (true) or enable (false).
    pub disabled: Option<bool>,
    /// New roles (replacing the old ones).
    pub roles: Option<Vec<String>>,
    /// Roles to add (after `roles`), e.g. `handler user role NAME --add admin`.
    pub add_roles: Vec<String>,
    /// Roles to remove (after `roles` and `add_roles`).
    pub remove_roles: Vec<String>,
    /// Clear every failed-login count and lock.
    pub unlock: bool,
    /// Set or remove the user's e-mail address.
    pub email: Option<EmailChange>,
}

/// An admin's change of a user's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailChange {
    /// The new address; `None` removes it.
    pub address: Option<String>,
    /// Set it as verified without a code (it must belong to no other account).
    pub verified: bool,
}

/// A user about to be written.
struct NewUser {
    id: String,
    /// The argon2id hash; empty for an account that signs in only through a provider.
    password_hash: String,
    roles: Vec<String>,
    identities: Vec<crate::store::LinkedIdentity>,
    /// The address given at sign-up (unverified).
    email: Option<crate::store::EmailAddress>,
}

/// The account service.
#[derive(Debug, Clone)]
pub struct AccountService {
    store: Arc<dyn Store>,
    hasher: Arc<PasswordHasher>,
    clock: Arc<dyn Clock>,
    password_min_chars: usize,
    /// Sign-up over HTTP; without it, registration is closed.
    signup: Option<signup::SignUp>,
    /// Login throttling, which a wrong current password in a password change counts toward;
    /// without it, password changes over HTTP are not available.
    lockout: Option<Lockout>,
    /// Seals TOTP secrets and hashes recovery codes; without it, second factors are not available.
    factor_keys: Option<factors::FactorKeys>,
    /// The WebAuthn relying party; without it, passkeys are not available.
    passkeys: Option<passkeys::PasskeyConfig>,
    /// Addresses, verification and recovery by e-mail; without it, not available.
    email: Option<email::EmailRules>,
    /// Security notices (a mailer that sends nothing without e-mail).
    mailer: crate::mail::Mailer,
}

fn username_error(e: UsernameError) -> ServiceError {
    ServiceError::InvalidRequestOwned(e.to_string())
}

fn policy_error(e: PasswordPolicyError) -> ServiceError {
    ServiceError::InvalidRequestOwned(e.to_string())
}

fn hash_error(e: HashError) -> ServiceError {
    ServiceError::Unavailable(StoreError::unavailable(e.to_string()))
}

fn valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len()) && role.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// Checked, sorted and deduplicated roles.
fn checked_roles(roles: &[String]) -> Result<Vec<String>, ServiceError> {
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(ServiceError::InvalidRequestOwned(format!(
            "role {bad:?} must be 1 to 64 characters of letters, digits, '.', '_', ':' or '-'"
        )));
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    Ok(roles)
}

impl AccountService {
    /// The service over `store`, hashing with `hasher`, requiring new passwords of at least
    /// `password_min_chars` characters (`JwtRefreshToken__Password__MinLength`).
    pub fn new(
        store: Arc<dyn Store>,
        hasher: Arc<PasswordHasher>,
        clock: Arc<dyn Clock>,
        password_min_chars: usize,
    ) -> Self {
        Self {
            store,
            hasher,
            clock,
            password_min_chars,
            signup: None,
            lockout: None,
            factor_keys: None,
            passkeys: None,
            email: None,
            mailer: crate::mail::Mailer::off(),
        }
    }

    /// Sign-up over HTTP with `rules` (open or closed, throttled per client address).
    #[must_use]
    pub fn with_sign_up(mut self, rules: Accounts) -> Self {
        self.password_min_chars = rules.password_min_chars;
        self.signup = Some(signup::SignUp::new(rules));
        self
    }

    /// Password changes over HTTP, counting a wrong current password as a failed login with
    /// `lockout` (the one the directory's logins use).
    #[must_use]
    pub fn with_lockout(mut self, lockout: Lockout) -> Self {
        self.lockout = Some(lockout);
        self
    }

    /// Second factors (TOTP, recovery codes) with `keys`.
    #[must_use]
    pub fn with_factors(mut self, keys: factors::FactorKeys) -> Self {
        self.factor_keys = Some(keys);
        self
    }

    /// Passkeys with `config`.
    #[must_use]
    pub fn with_passkeys(mut self, config: passkeys::PasskeyConfig) -> Self {
        self.passkeys = Some(config);
        self
    }

    /// Computes the password hasher's dummy hash now, so the first login of an unknown user does
    /// not pay for it (on failure a warning: that first login computes it instead).
    pub async fn warm_up(&self) {
        if let Err(e) = self.hasher.warm_up().await {
            tracing::warn!(error = %e, "password hasher warm-up failed");
        }
    }

    /// 403 unless `actor` may manage users: the operator always, an HTTP caller when the token
    /// carries `admin` and their current account still does (one account read).
    async fn authorize(&self, actor: Actor<'_>) -> Result<(), ServiceError> {
        let Actor::Admin(caller) = actor else { return Ok(()) };
        if !caller.claims_admin() {
            return Err(ServiceError::Forbidden(ADMIN_NEEDED));
        }
        let me = users::find_user(self.store.as_ref(), &caller.username).await?;
        if caller.is_admin(me.as_ref().map(UserState::from).as_ref()) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(ADMIN_NEEDED))
        }
    }

    /// The password rules for a new password of `username`.
    fn check_password(&self, password: &Password, username: &str, check: PasswordCheck) -> Result<(), ServiceError> {
        let pw = password.expose();
        match check {
            PasswordCheck::Policy => {
                profile::check_new_password(pw, username, self.password_min_chars).map_err(policy_error)
            }
            PasswordCheck::AllowWeak => {
                if pw.chars().count() < MIN_PASSWORD_CHARS || pw.len() > MAX_PASSWORD_BYTES || pw.contains(['\n', '\r'])
                {
                    return Err(ServiceError::InvalidRequestOwned(format!(
                        "password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long and contain no line breaks"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Sign-up (`POST /api/register`): creates the account; the caller starts its session.
    pub async fn register(
        &self,
        username: &str,
        password: &Password,
        client: Option<&str>,
    ) -> Result<Principal, ServiceError> {
        self.register_with_email(username, password, None, client).await
    }

    /// Sign-up with an address (`{"username","password","email"}`): the account keeps it
    /// unverified, and a verification code is mailed to it.
    pub async fn register_with_email(
        &self,
        username: &str,
        password: &Password,
        email: Option<&str>,
        client: Option<&str>,
    ) -> Result<Principal, ServiceError> {
        let signup = match &self.signup {
            Some(signup) if signup.rules.registration == RegistrationMode::Open => signup,
            _ => return Err(ServiceError::AccessDenied("registration is closed; ask an administrator for an account")),
        };
        profile::check_new_username(username).map_err(username_error)?;
        self.check_password(password, username, PasswordCheck::Policy)?;
        let email = match email {
            Some(_) if self.email_rules().is_err() => {
                return Err(ServiceError::InvalidRequest(
                    "this service sends no e-mail (JwtRefreshToken__Email__Transport is none): sign up without `email`",
                ));
            }
            Some(raw) => Some(crate::store::EmailAddress { address: email::normalise(raw)?, verified: false }),
            None => None,
        };
        let now = self.clock.now_ms();
        signup.count(client, now).map_err(|retry_after_ms| ServiceError::Locked { retry_after_ms })?;
        let user = self.insert_user(username, password, Vec::new(), email, now).await?;
        tracing::info!(user_id = %user.id, "account created by sign-up");
        self.verify_new_address(&user).await;
        Ok(Principal::from(&user))
    }

    /// Creates a user (`POST /api/users`, `handler user add`).
    pub async fn create_user(
        &self,
        actor: Actor<'_>,
        username: &str,
        password: &Password,
        roles: &[String],
        check: PasswordCheck,
    ) -> Result<UserInfo, ServiceError> {
        self.authorize(actor).await?;
        profile::check_new_username(username).map_err(username_error)?;
        self.check_password(password, username, check)?;
        let roles = checked_roles(roles)?;
        let user = self.insert_user(username, password, roles, None, self.clock.now_ms()).await?;
        if admins::is_enabled_admin(&user) {
            admins::enlist(self.store.as_ref(), &user.id).await?;
        }
        tracing::info!(created = %user.id, "user created");
        Ok(UserInfo::from(&user))
    }

    /// Writes a new user with a fresh random id under the key of `username`.
    async fn insert_user(
        &self,
        username: &str,
        password: &Password,
        roles: Vec<String>,
        email: Option<crate::store::EmailAddress>,
        now: UnixMs,
    ) -> Result<UserRecord, ServiceError> {
        let hash = self.hasher.hash(password).await.map_err(hash_error)?;
        let new =
            NewUser { id: uuid::Uuid::new_v4().to_string(), password_hash: hash, roles, identities: Vec::new(), email };
        self.insert_new_user(username, new, now).await
    }

    /// Writes `new` under the key of `username`, unless the name (or a look-alike) is taken.
    async fn insert_new_user(&self, username: &str, new: NewUser, now: UnixMs) -> Result<UserRecord, ServiceError> {
        let taken = || ServiceError::InvalidRequestOwned("username is taken; choose another one".into());
        let key = users::username_key(username).map_err(username_error)?;
        let store = self.store.as_ref();
        // A name registered before the username profile lives under its old key.
        let legacy = profile::legacy_key(username);
        if legacy != key && store.get_account(&legacy).await?.is_some_and(|a| a.value.user.is_some()) {
            return Err(taken());
        }
        // A name that looks like a registered one (`pаypаl` with Cyrillic а when `paypal` exists,
        // `rn` when `m` exists): the skeleton's claim (see `lookalikes`), and for names registered
        // before claims, a registered name whose key is the skeleton.
        let skeleton = profile::skeleton_key(username);
        if skeleton != key && store.get_account(&skeleton).await?.is_some_and(|a| a.value.user.is_some()) {
            return Err(username_error(users::UsernameError::Confusable));
        }
        if lookalikes::claim(store, &skeleton, &key, now).await? == lookalikes::Claimed::LooksLikeAnother {
            return Err(username_error(users::UsernameError::Confusable));
        }
        let user = UserRecord {
            id: new.id,
            username: username.to_string(),
            username_key: key.clone(),
            password_hash: new.password_hash,
            roles: new.roles,
            disabled: false,
            created_at_ms: now,
            identities: new.identities,
            factors: Default::default(),
            email: new.email,
        };
        // Most names are new: the first try inserts without reading, and a record found then is
        // read. Only a user written by someone else makes the name taken; a throttle already
        // counted for the name (failures before the account existed) is kept.
        let (created, _) = update_account(store, &key, None, |current| match current {
            Some(a) if a.user.is_some() => Step::Done(false),
            _ => {
                let mut account = current.cloned().unwrap_or_else(|| Account::empty(&key));
                account.user = Some(user.clone());
                Step::Write(account, true)
            }
        })
        .await?;
        if created { Ok(user) } else { Err(taken()) }
    }

    /// Changes the registered user under `username`; [`ServiceError::UnknownUser`] when there is none.
    async fn update_user(&self, username: &str, change: impl Fn(&mut Account)) -> Result<UserRecord, ServiceError> {
        let key = users::username_key(username).map_err(username_error)?;
        let store = self.store.as_ref();
        let (key, current) = users::read_account(store, &key, username).await?;
        let (changed, _) = update_account(store, &key, current, |current| match current {
            Some(a) if a.user.is_some() => {
                let mut next = a.clone();
                change(&mut next);
                let user = next.user.clone();
                Step::Write(next, user)
            }
            _ => Step::Done(None),
        })
        .await?;
        changed.ok_or(ServiceError::UnknownUser)
    }

    /// Applies `change` to `username` (`PATCH /api/users/{username}`, `handler user disable|enable|role|unlock`).
    /// Disabling ends every session of the user at once; a role change reaches the user's sessions,
    /// so their next refresh carries it (see [`Reason`]). A change that would leave no enabled
    /// admin is refused with [`ServiceError::Conflict`] (see [`admins`]).
    pub async fn change_user(
        &self,
        actor: Actor<'_>,
        username: &str,
        change: &UserChange,
    ) -> Result<Changed, ServiceError> {
        self.authorize(actor).await?;
        let roles = change.roles.as_deref().map(checked_roles).transpose()?;
        let add_roles = checked_roles(&change.add_roles)?;
        let remove_roles = checked_roles(&change.remove_roles)?;
        let roles_change = roles.is_some() || !add_roles.is_empty() || !remove_roles.is_empty();
        let apply = |u: &mut UserRecord| {
            if let Some(disabled) = change.disabled {
                u.disabled = disabled;
            }
            if let Some(roles) = &roles {
                u.roles.clone_from(roles);
            }
            u.roles.extend(add_roles.iter().cloned());
            u.roles.retain(|r| !remove_roles.contains(r));
            u.roles.sort();
            u.roles.dedup();
        };
        // Withdraw from the admin roster first when the change may end the user's admin rights.
        let mut withdrawn = None;
        let store = self.store.as_ref();
        if change.disabled == Some(true) || roles_change {
            let key = users::username_key(username).map_err(username_error)?;
            let (_, current) = users::read_account(store, &key, username).await?;
            let user = current.and_then(|a| a.value.user).ok_or(ServiceError::UnknownUser)?;
            let mut after = user.clone();
            apply(&mut after);
            if admins::is_enabled_admin(&user) && !admins::is_enabled_admin(&after) {
                match admins::withdraw(store, &user.id).await? {
                    admins::Withdrawn::LastAdmin => return Err(ServiceError::Conflict(LAST_ADMIN)),
                    admins::Withdrawn::Removed => withdrawn = Some(user.id),
                    admins::Withdrawn::NotListed => {}
                }
            }
        }
        let new_email = match &change.email {
            Some(EmailChange { address, verified }) => {
                let user = users::find_user(store, username).await?.ok_or(ServiceError::UnknownUser)?;
                Some(self.admin_email(&user, address.as_deref(), *verified).await?)
            }
            None => None,
        };
        let changed = self
            .update_user(username, |a| {
                if let Some(u) = a.user.as_mut() {
                    apply(u);
                    if let Some(email) = &new_email {
                        u.email.clone_from(email);
                    }
                }
                if change.unlock {
                    users::lockout::unlock(a);
                }
            })
            .await;
        let user = match (changed, &withdrawn) {
            (Ok(user), _) => user,
            (Err(e), Some(id)) => {
                // Compensate: the user did not change, so they are still an admin.
                if let Err(undo) = admins::enlist(store, id).await {
                    tracing::error!(error = %undo, "admin roster left without a user whose change failed");
                }
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        if admins::is_enabled_admin(&user) {
            admins::enlist(store, &user.id).await?;
        } else if withdrawn.is_none() && (change.disabled == Some(true) || roles_change) {
            // Not an admin after all (changed meanwhile): keep the roster from listing them.
            let _ = admins::withdraw(store, &user.id).await?;
        }
        let reason = match roles_change {
            _ if user.disabled => Some(Reason::Disabled),
            true => Some(Reason::RolesChanged(&user.roles)),
            false => None,
        };
        let sessions_ended = match reason {
            Some(reason) => self.end_sessions(&user.id, reason).await?,
            None => 0,
        };
        if change.disabled == Some(true) && user.disabled {
            self.notify(&user, crate::mail::Notice::AccountDisabled);
        }
        tracing::info!(changed = %user.id, ended = sessions_ended, "user changed");
        Ok(Changed { user: UserInfo::from(&user), sessions_ended })
    }

    /// Sets a new password for `username` without checking the old one (`handler user password`);
    /// every session of the user ends.
    pub async fn set_password(
        &self,
        actor: Actor<'_>,
        username: &str,
        password: &Password,
        check: PasswordCheck,
    ) -> Result<Changed, ServiceError> {
        self.authorize(actor).await?;
        self.check_password(password, username, check)?;
        let hash = self.hasher.hash(password).await.map_err(hash_error)?;
        let user = self
            .update_user(username, |a| {
                if let Some(u) = a.user.as_mut() {
                    u.password_hash.clone_from(&hash);
                }
            })
            .await?;
        let sessions_ended = self.end_sessions(&user.id, Reason::PasswordSet).await?;
        self.notify(&user, crate::mail::Notice::PasswordChanged);
        tracing::info!(changed = %user.id, ended = sessions_ended, "password set");
        Ok(Changed { user: UserInfo::from(&user), sessions_ended })
    }

    /// Changes the caller's password after checking the current one (`POST /api/password`), with
    /// the lockout of logins: a wrong current password counts as a failed login from `client`.
    /// Every *other* session of the caller ends; returns how many.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &Password,
        new: &Password,
        client: Option<&str>,
    ) -> Result<u64, ServiceError> {
        let lockout = self.lockout.as_ref().ok_or(ServiceError::NotAvailable("password changes are not enabled"))?;
        self.check_password(new, &caller.username, PasswordCheck::Policy)?;
        let now = self.clock.now_ms();
        let (store, hasher, user_id) = (self.store.as_ref(), &self.hasher, caller.claims.sub.as_str());
        let attempt = lockout.attempt(
            store,
            &caller.username,
            Origin { address: client, device_token: None },
            now,
            |user| async move {
                let user = user.filter(|u| u.id == user_id && !u.disabled);
                match hasher.verify(current, user.as_ref().map(|u| u.password_hash.as_str())).await {
                    Ok(true) => Ok(user.map_or(Check::Failed, |u| Check::Passed(u.password_hash))),
                    Ok(false) => Ok(Check::Failed),
                    Err(HashError::Busy(why)) => Ok(Check::Unchecked(why)),
                    Err(HashError::Failed(e)) => Err(StoreError::unavailable(e)),
                }
            },
        );
        let (verified_hash, key, account) = match attempt.await? {
            Attempt::Passed { outcome, key, account } => (outcome, key, account),
            Attempt::Failed => return Err(ServiceError::InvalidGrant(GrantFailure::BadCredentials)),
            Attempt::Locked { retry_after_ms } => return Err(ServiceError::Locked { retry_after_ms }),
            Attempt::Unchecked(why) => return Err(ServiceError::Busy(why)),
        };
        let new_hash = match hasher.hash(new).await {
            Ok(hash) => hash,
            Err(HashError::Busy(why)) => return Err(ServiceError::Busy(why)),
            Err(e @ HashError::Failed(_)) => return Err(hash_error(e)),
        };
        let (changed, _) = update_account(store, &key, account, |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(None) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user_id && !u.disabled) else {
                return Step::Done(None);
            };
            // Changed by someone else since it was verified: the current password may be stale.
            if u.password_hash != verified_hash {
                return Step::Done(None);
            }
            u.password_hash.clone_from(&new_hash);
            let after = u.clone();
            Step::Write(next, Some(after))
        })
        .await?;
        let Some(changed) = changed else {
            return Err(ServiceError::InvalidGrant(GrantFailure::BadCredentials));
        };
        let ended = self.end_sessions(user_id, Reason::PasswordChanged { kept: &caller.claims.sid }).await?;
        self.notify(&changed, crate::mail::Notice::PasswordChanged);
        tracing::info!(ended, "password changed; other sessions ended");
        Ok(ended)
    }

    /// The one operation that ends (or updates) a user's sessions for an account reason.
    pub async fn end_sessions(&self, user_id: &str, reason: Reason<'_>) -> Result<u64, ServiceError> {
        Ok(sessions::follow(self.store.as_ref(), user_id, reason).await?)
    }

    /// A page of at most `limit` users after `cursor` (`GET /api/users`, `handler user list`).
    pub async fn list_users(
        &self,
        actor: Actor<'_>,
        limit: NonZeroUsize,
        cursor: Option<&str>,
    ) -> Result<UserPage, ServiceError> {
        use base64::Engine as _;
        const CURSOR: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        self.authorize(actor).await?;
        let after = match cursor {
            None => None,
            Some(c) => Some(
                CURSOR
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(ServiceError::InvalidRequest("cursor is not one this service returned"))?,
            ),
        };
        let mut all = self.store.list_users().await?;
        all.sort_by(|a, b| a.username_key.cmp(&b.username_key));
        let limit = limit.get();
        let page: Vec<&UserRecord> = all
            .iter()
            .filter(|u| after.as_deref().is_none_or(|a| u.username_key.as_str() > a))
            .take(limit.saturating_add(1))
            .collect();
        let next_cursor = if page.len() > limit {
            page.get(limit - 1).map(|last| CURSOR.encode(last.username_key.as_bytes()))
        } else {
            None
        };
        Ok(UserPage { users: page.into_iter().take(limit).map(UserInfo::from).collect(), next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::settings::Hashing;
    use crate::store::testing::Contended;
    use crate::store::{SessionStore as _, UserStore as _};

    fn service(store: Arc<dyn Store>) -> AccountService {
        let hasher =
            PasswordHasher::start(&Hashing { workers: 2, queue_length: 64, queue_timeout_ms: 30_000 }).unwrap();
        AccountService::new(store, hasher, Arc::new(ManualClock::new(5)), 8)
    }

    const STRONG: &str = "correct horse battery staple";

    #[tokio::test]
    async fn create_refuses_taken_names_weak_passwords_and_bad_roles() {
        let store = Arc::new(Contended::new(0));
        let accounts = service(store.clone());
        let pw = Password::new(STRONG);
        let roles = ["admin".to_string(), "admin".to_string()];
        let user = accounts.create_user(Actor::Operator, "Alice", &pw, &roles, PasswordCheck::Policy).await.unwrap();
        assert_eq!(user.roles, vec!["admin".to_string()]);
        let again = accounts.create_user(Actor::Operator, "alice", &pw, &[], PasswordCheck::Policy).await;
        assert!(matches!(again, Err(ServiceError::InvalidRequestOwned(_))), "{again:?}");
        for (bad, check) in [
            ("password1", PasswordCheck::Policy),
            ("short", PasswordCheck::AllowWeak),
            ("has\nnewline-inside", PasswordCheck::AllowWeak),
        ] {
            let r = accounts.create_user(Actor::Operator, "bob", &Password::new(bad), &[], check).await;
            assert!(matches!(r, Err(ServiceError::InvalidRequestOwned(_))), "{bad:?}: {r:?}");
        }
        let r = accounts.create_user(Actor::Operator, "bob", &pw, &["bad role".into()], PasswordCheck::Policy).await;
        assert!(matches!(r, Err(ServiceError::InvalidRequestOwned(_))));
        let weak = Password::new("password1");
        accounts.create_user(Actor::Operator, "bob", &weak, &[], PasswordCheck::AllowWeak).await.unwrap();
        let names: Vec<String> = store.list_users().await.unwrap().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["Alice", "bob"]);
    }

    #[tokio::test]
    async fn create_retries_a_lost_race_instead_of_reporting_a_taken_name() {
        let store = Arc::new(Contended::new(3));
        let accounts = service(store.clone());
        let user = accounts
            .create_user(Actor::Operator, "dave", &Password::new(STRONG), &[], PasswordCheck::Policy)
            .await
            .unwrap();
        assert_eq!(store.inner.get_account("dave").await.unwrap().unwrap().value.user.unwrap().id, user.id);
    }

    #[tokio::test]
    async fn updates_give_up_after_a_bounded_number_of_lost_races() {
        let store = Arc::new(Contended::new(0));
        let accounts = service(store.clone());
        accounts
            .create_user(Actor::Operator, "erin", &Password::new(STRONG), &[], PasswordCheck::Policy)
            .await
            .unwrap();
        let unlock = UserChange { unlock: true, ..UserChange::default() };
        store.fail_next(usize::MAX);
        let r = accounts.change_user(Actor::Operator, "erin", &unlock).await;
        assert!(matches!(r, Err(ServiceError::Unavailable(StoreError::Unavailable { .. }))), "{r:?}");
        store.fail_next(2);
        accounts.change_user(Actor::Operator, "erin", &unlock).await.unwrap();
        let r = accounts.change_user(Actor::Operator, "nobody", &unlock).await;
        assert!(matches!(r, Err(ServiceError::UnknownUser)), "{r:?}");
    }

    #[tokio::test]
    async fn disabling_or_setting_the_password_ends_every_session_and_roles_reach_them() {
        let store = Arc::new(Contended::new(0));
        let accounts = service(store.clone());
        let user = accounts
            .create_user(Actor::Operator, "fay", &Password::new(STRONG), &[], PasswordCheck::Policy)
            .await
            .unwrap();
        let session = |sid: &str| crate::store::SessionRecord {
            user_id: user.id.clone(),
            session_id: sid.into(),
            seed: [0; 32],
            generation: 0,
            rotated_at_ms: 0,
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
            username: "fay".into(),
            roles: vec![],
            details: Default::default(),
        };
        store.insert_session(&session("a")).await.unwrap();
        let roles = UserChange { roles: Some(vec!["ops".into()]), ..UserChange::default() };
        assert_eq!(accounts.change_user(Actor::Operator, "fay", &roles).await.unwrap().sessions_ended, 0);
        assert_eq!(store.get_session(&user.id, "a").await.unwrap().unwrap().value.roles, ["ops"]);
        let new = Password::new("plum umbrella cactus 1987");
        let set = accounts.set_password(Actor::Operator, "fay", &new, PasswordCheck::Policy).await.unwrap();
        assert_eq!(set.sessions_ended, 1);
        store.insert_session(&session("b")).await.unwrap();
        let disable = UserChange { disabled: Some(true), ..UserChange::default() };
        let changed = accounts.change_user(Actor::Operator, "fay", &disable).await.unwrap();
        assert_eq!((changed.user.disabled, changed.sessions_ended), (true, 1));
    }

    #[tokio::test]
    async fn a_store_without_an_admin_roster_builds_it_from_its_users_on_first_use() {
        let store = Arc::new(Contended::new(0));
        // Written as a store from before the roster holds them: accounts only.
        for (name, disabled) in [("old-root", false), ("old-off", true)] {
            let user = UserRecord {
                id: format!("id-{name}"),
                username: name.into(),
                username_key: name.into(),
                password_hash: "x".into(),
                roles: vec!["admin".into()],
                disabled,
                created_at_ms: 0,
                identities: Vec::new(),
                factors: Default::default(),
                email: None,
            };
            let mut account = Account::empty(name);
            account.user = Some(user);
            store.put_account(&account, None).await.unwrap();
        }
        let accounts = service(store.clone());
        let demote = UserChange { remove_roles: vec!["admin".into()], ..UserChange::default() };
        let r = accounts.change_user(Actor::Operator, "old-root", &demote).await;
        assert!(matches!(r, Err(ServiceError::Conflict(LAST_ADMIN))), "the disabled admin does not count: {r:?}");
        let roster = store.get_admins().await.unwrap().unwrap().value;
        assert_eq!(roster.admin_ids, ["id-old-root"]);
        let enable = UserChange { disabled: Some(false), ..UserChange::default() };
        accounts.change_user(Actor::Operator, "old-off", &enable).await.unwrap();
        let changed = accounts.change_user(Actor::Operator, "old-root", &demote).await.unwrap();
        assert!(changed.user.roles.is_empty());
        assert_eq!(store.get_admins().await.unwrap().unwrap().value.admin_ids, ["id-old-off"]);
    }

    #[tokio::test]
    async fn a_failed_user_change_puts_the_withdrawn_admin_back_on_the_roster() {
        let store = Arc::new(Contended::new(0));
        let accounts = service(store.clone());
        let pw = Password::new(STRONG);
        let admin = ["admin".to_string()];
        let a = accounts.create_user(Actor::Operator, "ann", &pw, &admin, PasswordCheck::Policy).await.unwrap();
        let b = accounts.create_user(Actor::Operator, "ben", &pw, &admin, PasswordCheck::Policy).await.unwrap();
        store.fail_next(usize::MAX);
        let disable = UserChange { disabled: Some(true), ..UserChange::default() };
        let r = accounts.change_user(Actor::Operator, "ann", &disable).await;
        assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
        store.fail_next(0);
        let mut both = vec![a.id, b.id];
        both.sort();
        assert_eq!(store.get_admins().await.unwrap().unwrap().value.admin_ids, both, "ann is listed again");
    }

    #[tokio::test]
    async fn pages_never_panic_and_cursors_continue() {
        let store = Arc::new(Contended::new(0));
        let accounts = service(store.clone());
        for name in ["a1", "a2", "a3"] {
            accounts
                .create_user(Actor::Operator, name, &Password::new(STRONG), &[], PasswordCheck::Policy)
                .await
                .unwrap();
        }
        let one = NonZeroUsize::MIN;
        let first = accounts.list_users(Actor::Operator, one, None).await.unwrap();
        assert_eq!(first.users.len(), 1);
        let second = accounts.list_users(Actor::Operator, MAX_PAGE, first.next_cursor.as_deref()).await.unwrap();
        let names: Vec<&str> = second.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!((names, second.next_cursor), (vec!["a2", "a3"], None));
    }
}
