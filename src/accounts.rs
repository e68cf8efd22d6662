//! Accounts and sessions over HTTP: sign-up, password change, "my devices", admin user management
//! and revoke-everyone. The rules of the token service ([`TokenService`]) for the built-in user
//! directory; no HTTP here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::clock::UnixMs;
use crate::secret::Password;
use crate::service::{Caller, Client, GrantFailure, ServiceError, TokenPair, TokenService};
use crate::settings::{Accounts, Login, RegistrationMode};
use crate::store::{SessionRecord, StoreError, UserRecord};
use crate::users::profile::{self, PasswordPolicyError};
use crate::users::{self, AdminError, PasswordChange, PasswordHasher, Principal, UserChange, UsernameError};

/// What a non-admin caller of an admin route is told.
const ADMIN_NEEDED: &str = "this needs the admin role";
/// Most users a page of `GET /api/users` holds.
pub const MAX_PAGE: usize = 200;
/// Client addresses whose sign-ups are remembered at once (the oldest window is dropped first).
const MAX_SIGNUP_ADDRESSES: usize = 10_000;

/// What the account routes need besides the token service.
#[derive(Debug, Clone)]
pub struct AccountRules {
    /// Sign-up and password rules.
    pub rules: Accounts,
    /// Lockout policy (a wrong current password counts as a failed login).
    pub login: Login,
    /// The hashing pool.
    pub hasher: Arc<PasswordHasher>,
    /// Sign-ups per client address in the current window, in this instance.
    signups: Arc<Mutex<HashMap<String, (UnixMs, u32)>>>,
}

impl AccountRules {
    /// The rules, with an empty sign-up throttle.
    pub fn new(rules: Accounts, login: Login, hasher: Arc<PasswordHasher>) -> Self {
        Self { rules, login, hasher, signups: Arc::default() }
    }

    /// Counts a sign-up from `address` at `now`; `Err(retry_after_ms)` when the address used up its
    /// sign-ups for the window.
    fn count_signup(&self, address: &str, now: UnixMs) -> Result<(), i64> {
        let mut map = self.signups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.rules.signup_window_ms;
        map.retain(|_, (start, _)| now - *start < window);
        if map.len() >= MAX_SIGNUP_ADDRESSES && !map.contains_key(address) {
            return Err(window);
        }
        let entry = map.entry(address.to_string()).or_insert((now, 0));
        if entry.1 >= self.rules.max_signups_per_address {
            return Err(entry.0 + window - now);
        }
        entry.1 += 1;
        Ok(())
    }
}

/// One entry of "my devices".
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id (the access token's `sid`).
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last login or refresh.
    pub last_used_at: i64,
    /// Unix seconds when the session ends (the earlier of idle and absolute end).
    pub expires_at: i64,
    /// `User-Agent` at login, truncated.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub client_address: Option<String>,
    /// Whether this is the caller's own session.
    pub current: bool,
}

/// A user as the admin routes show it (never the hash).
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
}

impl From<&UserRecord> for UserInfo {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            roles: u.roles.clone(),
            disabled: u.disabled,
            created_at: u.created_at_ms / 1000,
        }
    }
}

/// A page of users.
#[derive(Debug, Clone, Serialize)]
pub struct UserPage {
    /// The users, ordered by username key.
    pub users: Vec<UserInfo>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn username_error(e: UsernameError) -> ServiceError {
    ServiceError::InvalidRequestOwned(e.to_string())
}

fn policy_error(e: PasswordPolicyError) -> ServiceError {
    ServiceError::InvalidRequestOwned(e.to_string())
}

fn admin_error(e: AdminError) -> ServiceError {
    match e {
        AdminError::Username(u) => username_error(u),
        AdminError::Exists(_) => ServiceError::InvalidRequestOwned("username is taken; choose another one".into()),
        AdminError::Unknown(_) => ServiceError::UnknownUser,
        AdminError::Password | AdminError::Role(_) => ServiceError::InvalidRequestOwned(e.to_string()),
        AdminError::Store(s) => ServiceError::Unavailable(s),
    }
}

fn secs(ms: UnixMs) -> i64 {
    ms.div_euclid(1000)
}

impl TokenService {
    /// The account rules, or 404 when the service runs on a custom directory.
    fn rules(&self) -> Result<&AccountRules, ServiceError> {
        self.accounts.as_ref().ok_or(ServiceError::NotAvailable("account routes need the built-in user directory"))
    }

    /// Enables the account routes with `rules`.
    pub fn with_accounts(mut self, rules: AccountRules) -> Self {
        self.accounts = Some(rules);
        self
    }

    /// Computes the password hasher's dummy hash now, so the first login of an unknown user does
    /// not pay for it (on failure a warning: that first login computes it instead).
    pub async fn warm_up(&self) {
        if let Some(accounts) = &self.accounts
            && let Err(e) = accounts.hasher.warm_up().await
        {
            tracing::warn!(error = %e, "password hasher warm-up failed");
        }
    }

    /// Sign-up: creates the account and starts a session (`POST /api/register`).
    pub async fn register(
        &self,
        username: &str,
        password: &Password,
        client: Client<'_>,
    ) -> Result<TokenPair, ServiceError> {
        let rules = self.rules()?;
        if rules.rules.registration == RegistrationMode::Closed {
            return Err(ServiceError::AccessDenied("registration is closed; ask an administrator for an account"));
        }
        profile::check_new_username(username).map_err(username_error)?;
        profile::check_new_password(password.expose(), username, rules.rules.password_min_chars)
            .map_err(policy_error)?;
        let now = self.clock.now_ms();
        rules.count_signup(client.address, now).map_err(|retry_after_ms| ServiceError::Locked { retry_after_ms })?;
        let user = users::add_user(self.store.as_ref(), &rules.hasher, username, password, &[], now)
            .await
            .map_err(admin_error)?;
        tracing::info!(user_id = %user.id, "account created by sign-up");
        let principal = Principal { id: user.id, name: user.username, roles: user.roles };
        let session = self.start_session(principal, now, client).await?;
        self.pair(&session, now)
    }

    /// Changes the caller's password after checking the current one; every *other* session of the
    /// caller ends. Returns how many ended.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &Password,
        new: &Password,
        client: &str,
    ) -> Result<u64, ServiceError> {
        let rules = self.rules()?;
        profile::check_new_password(new.expose(), &caller.username, rules.rules.password_min_chars)
            .map_err(policy_error)?;
        let now = self.clock.now_ms();
        let outcome = users::change_password(
            self.store.as_ref(),
            &rules.hasher,
            &rules.login,
            &caller.username,
            &caller.claims.sub,
            current,
            new,
            client,
            now,
        )
        .await?;
        match outcome {
            PasswordChange::Changed(_) => {}
            PasswordChange::Rejected => return Err(ServiceError::InvalidGrant(GrantFailure::BadCredentials)),
            PasswordChange::Locked { retry_after_ms } => return Err(ServiceError::Locked { retry_after_ms }),
            PasswordChange::Busy(why) => return Err(ServiceError::Busy(why)),
        }
        let ended = self.store.delete_user_sessions(&caller.claims.sub, Some(&caller.claims.sid)).await?;
        tracing::info!(ended, "password changed; other sessions ended");
        Ok(ended)
    }

    /// The caller's live sessions, newest first (one single-partition query).
    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>, ServiceError> {
        let now = self.clock.now_ms();
        let mut sessions: Vec<SessionRecord> = self
            .store
            .list_user_sessions(&caller.claims.sub)
            .await?
            .into_iter()
            .filter(|s| !self.has_ended(s, now))
            .collect();
        sessions.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.session_id.cmp(&a.session_id)));
        Ok(sessions
            .into_iter()
            .map(|s| SessionInfo {
                current: s.session_id == caller.claims.sid,
                created_at: secs(s.created_at_ms),
                last_used_at: secs(s.details.last_used_at_ms.max(s.created_at_ms)),
                expires_at: secs(s.ends_at_ms()),
                user_agent: s.details.user_agent,
                client_address: s.details.client_address,
                id: s.session_id,
            })
            .collect())
    }

    /// Ends one session of the caller; `UnknownSession` when the caller has none with this id
    /// (another user's session is never touched: the lookup is in the caller's partition).
    pub async fn end_session(&self, caller: &Caller, session_id: &str) -> Result<(), ServiceError> {
        if self.store.delete_session(&caller.claims.sub, session_id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("no such session"))
        }
    }

    /// Creates a user (`POST /api/users`, admin).
    pub async fn create_user(
        &self,
        caller: &Caller,
        username: &str,
        password: &Password,
        roles: &[String],
    ) -> Result<UserInfo, ServiceError> {
        self.require_admin(caller, ADMIN_NEEDED).await?;
        let rules = self.rules()?;
        profile::check_new_username(username).map_err(username_error)?;
        profile::check_new_password(password.expose(), username, rules.rules.password_min_chars)
            .map_err(policy_error)?;
        let now = self.clock.now_ms();
        let user = users::add_user(self.store.as_ref(), &rules.hasher, username, password, roles, now)
            .await
            .map_err(admin_error)?;
        tracing::info!(created = %user.id, "user created by an admin");
        Ok(UserInfo::from(&user))
    }

    /// A page of users after `cursor` (`GET /api/users`, admin).
    pub async fn list_users(
        &self,
        caller: &Caller,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<UserPage, ServiceError> {
        self.require_admin(caller, ADMIN_NEEDED).await?;
        self.rules()?;
        let after = match cursor {
            None => None,
            Some(c) => {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(ServiceError::InvalidRequest("cursor is not one this service returned"))?;
                Some(raw)
            }
        };
        let mut all = self.store.list_users().await?;
        all.sort_by(|a, b| a.username_key.cmp(&b.username_key));
        let page: Vec<&UserRecord> = all
            .iter()
            .filter(|u| after.as_deref().is_none_or(|a| u.username_key.as_str() > a))
            .take(limit + 1)
            .collect();
        let next_cursor = (page.len() > limit).then(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(page[limit - 1].username_key.as_bytes())
        });
        Ok(UserPage { users: page.into_iter().take(limit).map(UserInfo::from).collect(), next_cursor })
    }

    /// Changes a user (`PATCH /api/users/{username}`, admin). Disabling ends the user's sessions
    /// at once; a role change reaches the user's sessions, so their next refresh carries it.
    pub async fn change_user(
        &self,
        caller: &Caller,
        username: &str,
        change: &UserChange,
    ) -> Result<UserInfo, ServiceError> {
        self.require_admin(caller, ADMIN_NEEDED).await?;
        self.rules()?;
        let (user, ended) = users::change_user(self.store.as_ref(), username, change).await.map_err(admin_error)?;
        tracing::info!(changed = %user.id, ended, "user changed by an admin");
        Ok(UserInfo::from(&user))
    }

    /// Ends every session of every user (admin over HTTP, or `handler sessions revoke-all`): one
    /// store write; this instance at once, the others within [`crate::epoch::REFRESH_INTERVAL`].
    pub async fn revoke_everyone(&self, caller: Option<&Caller>) -> Result<UnixMs, ServiceError> {
        if let Some(caller) = caller {
            self.require_admin(caller, ADMIN_NEEDED).await?;
        }
        // One past now: a session started in this very millisecond ends too.
        let at = self.store.raise_sessions_epoch(self.clock.now_ms().saturating_add(1)).await?;
        self.epoch.raise(at);
        tracing::warn!(revoked_before_ms = at, "every session of every user ended");
        Ok(at)
    }

    /// Reads the store's revoke-everyone epoch into this instance's cache.
    pub async fn refresh_epoch(&self) -> Result<(), StoreError> {
        self.epoch.raise(self.store.sessions_epoch().await?);
        Ok(())
    }
}
