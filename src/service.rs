//! The token rules: log in, refresh with rotation and reuse detection, revoke. No HTTP here; every
//! operation reads time from the service's [`Clock`] once and uses that `now` throughout.
//!
//! Rotation (RFC 9700 §4.14.2): every refresh moves the session to the next generation with a
//! compare-and-swap on the session record. Presenting the immediately previous generation within
//! the reuse grace returns the same successor (a retry after a lost response, or the losers of a
//! concurrent refresh); any older generation, or the previous one after the grace, is a replay of a
//! stolen token and ends the whole session. A token whose tag does not verify never changes anything.

use std::sync::Arc;

use serde::Serialize;

use crate::clock::{Clock, UnixMs};
use crate::keyed::KeyedLocks;
use crate::mail::{Mailer, Notice, Queued};
use crate::secret::{Password, token_prefix};
use crate::store::{Cas, SessionDetails, SessionRecord, SessionStore, Store, StoreError, Versioned, retry_cas};
use crate::tokens::access::{AccessClaims, AccessTokenError, AccessTokens, Expiry, Subject};
use crate::tokens::dpop::{ProofError, Proofs, Target};
use crate::tokens::mfa::{self, FirstStep, MfaClaims, MfaTokenError, MfaTokens};
use crate::tokens::refresh::{RefreshTokenParts, RefreshTokens, session_id_text};
use crate::users::device::DeviceTokens;
use crate::users::lockout::Origin;
use crate::users::{ADMIN_ROLE, LoginOutcome, Principal, UserDirectory, UserState, username_key};

/// Why a grant was refused. Clients see one of two descriptions; logs see the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantFailure {
    /// Unknown user, wrong password or disabled account (indistinguishable by design).
    BadCredentials,
    /// Not a refresh token of ours (garbage, truncated, wrong format).
    Malformed,
    /// Well-formed, but its tag does not verify (tampered or forged).
    Tampered,
    /// The session does not exist (revoked, reused, purged or never existed).
    UnknownSession,
    /// The session's absolute lifetime is over.
    Expired,
    /// An old token was replayed; the session has been ended.
    Reused,
    /// The accompanying access token is not ours or not for this subject.
    AccessTokenMismatch,
    /// A sign-in provider's ID token failed a check (the text says which).
    IdToken(&'static str),
    /// A sign-in provider's ID token was exchanged before.
    IdTokenReplayed,
    /// The `mfa_token` of a second step is not valid, expired or used (the text says which).
    MfaToken(&'static str),
    /// The second factor's code is wrong, used before or out of its window.
    SecondFactor,
    /// A passkey ceremony or assertion was refused (the text says why).
    Passkey(&'static str),
    /// The account of a provider sign-in is disabled.
    AccountDisabled,
    /// An e-mail code is wrong, expired, used, void after too many tries, or for another address.
    EmailCode,
}

impl GrantFailure {
    /// Short reason, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::Malformed => "malformed_refresh_token",
            Self::Tampered => "tampered_refresh_token",
            Self::UnknownSession => "unknown_session",
            Self::Expired => "session_expired",
            Self::Reused => "refresh_token_reuse",
            Self::AccessTokenMismatch => "access_token_mismatch",
            Self::IdToken(_) => "id_token_refused",
            Self::IdTokenReplayed => "id_token_replayed",
            Self::AccountDisabled => "account_disabled",
            Self::MfaToken(_) => "mfa_token_refused",
            Self::SecondFactor => "second_factor_refused",
            Self::Passkey(_) => "passkey_refused",
            Self::EmailCode => "email_code_refused",
        }
    }

    /// What the client is told.
    pub fn description(self) -> &'static str {
        match self {
            Self::BadCredentials => "invalid username or password",
            Self::AccessTokenMismatch => "access_token does not belong to the refresh token's subject",
            Self::IdToken(why) => why,
            Self::IdTokenReplayed => "this ID token was used before; sign in with the provider again",
            Self::AccountDisabled => "this account is disabled",
            Self::MfaToken(why) => why,
            Self::SecondFactor => "the code is wrong, expired or was used before",
            Self::Passkey(why) => why,
            Self::EmailCode => "the code is wrong, expired or was used before; ask for a new one",
            _ => "the refresh token is invalid, expired or revoked",
        }
    }
}

/// Errors of the token service, named after what the client must do; only the HTTP edge maps them
/// to status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed in a way the HTTP layer could not see.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The request is not acceptable; the text says what to change (a password or username rule).
    #[error("invalid request: {0}")]
    InvalidRequestOwned(String),
    /// Not allowed for anyone (registration closed).
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    /// No such resource of the caller.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The operation is not available in this configuration.
    #[error("not available: {0}")]
    NotAvailable(&'static str),
    /// RFC 6749 `invalid_grant`.
    #[error("invalid grant: {}", .0.reason())]
    InvalidGrant(GrantFailure),
    /// The username is locked after too many failures.
    #[error("login locked for {retry_after_ms} ms")]
    Locked {
        /// Milliseconds until the lock opens.
        retry_after_ms: i64,
    },
    /// A Bearer token was refused.
    #[error(transparent)]
    InvalidToken(#[from] AccessTokenError),
    /// Authenticated, but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The change conflicts with the current state (it would leave no enabled admin).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The named user does not exist.
    #[error("unknown user")]
    UnknownUser,
    /// The store failed or stayed contended; the client may retry.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
    /// Client authentication failed (RFC 6749 §5.2 `invalid_client`): unknown client or wrong secret.
    #[error("invalid client: {0}")]
    InvalidClient(&'static str),
    /// The client used up its request budget; it may retry after this many milliseconds.
    #[error("rate limited for {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until a request is accepted again.
        retry_after_ms: i64,
    },
    /// A DPoP proof was missing where one is required, or refused (RFC 9449 `invalid_dpop_proof`).
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(&'static str),
    /// The DPoP proof lacks the current server nonce (RFC 9449 §8 `use_dpop_nonce`); the answer
    /// carries the nonce to retry with.
    #[error("a DPoP nonce is required")]
    UseDpopNonce(String),
    /// A DPoP-bound access token was presented as a bearer token (RFC 9449 §7.2).
    #[error("a DPoP-bound access token needs the DPoP scheme and a proof")]
    BoundTokenAsBearer,
    /// The first step of a login passed; a second factor must follow (`POST /api/token` with the
    /// mfa-otp grant and this `mfa_token`).
    #[error("a second factor is required")]
    MfaRequired {
        /// Proof of the first step, for the second.
        mfa_token: String,
        /// The factors the user can use.
        factors: Vec<&'static str>,
    },
    /// Too much work at once (the password-hashing queue); the client may retry shortly.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// A fault of ours that retrying will not fix (never shown to clients).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A successful login or refresh (RFC 6749 §5.1).
#[derive(Clone, Serialize)]
pub struct TokenPair {
    /// The JWT access token.
    pub access_token: String,
    /// `DPoP` for tokens bound to a proof key (RFC 9449 §5), else `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token.
    pub refresh_token: String,
    /// Seconds left in the session.
    pub refresh_expires_in: i64,
    /// The session the pair belongs to (not sent in the body; binds cookie-mode anti-forgery).
    #[serde(skip)]
    pub session_id: String,
    /// A password login's device token (see `users::device`): presented with later logins, they
    /// count in this device's own throttle, never blocked by failures elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &token_prefix(&self.access_token))
            .field("refresh_token", &token_prefix(&self.refresh_token))
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("device_token", &self.device_token.as_deref().map(token_prefix))
            .finish()
    }
}

/// Which sessions a scope revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    /// Every session of the caller.
    Global,
    /// Every session of the caller except the one the access token belongs to.
    Others,
    /// Every session of the named user (admin only).
    User(String),
}

/// Lifetimes and limits of the token rules.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Absolute session lifetime.
    pub session_ttl_ms: i64,
    /// How long the previous refresh token still yields the same successor.
    pub reuse_grace_ms: i64,
    /// Inactivity timeout (0 = off).
    pub idle_ttl_ms: i64,
    /// Most sessions one user may have (`JwtRefreshToken__Sessions__MaxPerUser`); a login beyond
    /// it ends the least recently used ones.
    pub max_sessions_per_user: usize,
}

/// Who is logging in, as far as the session list shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    /// The client address key (see `http::client_address`); `None` when no trusted source names
    /// one (no per-address throttle then; the session shows none).
    pub address: Option<&'a str>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
    /// The thumbprint of the key of the request's verified DPoP proof (see
    /// [`TokenService::proof_key`]): the session is bound to it.
    pub dpop_jkt: Option<&'a str>,
}

/// Who is logging in with a password: what lockout counts and the session list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginFrom<'a> {
    /// The client address key (see `http::client_address`); `None` when no trusted source names
    /// one (no per-address throttle then; the session shows none).
    pub address: Option<&'a str>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
    /// The device token the client presented, if any.
    pub device_token: Option<&'a str>,
    /// The thumbprint of the key of the request's verified DPoP proof, if any.
    pub dpop_jkt: Option<&'a str>,
}

/// A refresh of the generation just rotated that reached this process no later than this after the
/// rotation was written counts as concurrent with it: requests sent together are not always
/// scheduled together on a busy machine. It applies only to the immediately previous generation,
/// only in the process that rotated, and is not a grace for retries (that is `ReuseGraceMs`).
const CONCURRENCY_ALLOWANCE_MS: i64 = 100;

/// Rotations remembered to recognise concurrent refreshes (see `TokenService::rotated`).
const MAX_REMEMBERED_ROTATIONS: usize = 10_000;

/// Longest `User-Agent` kept with a session, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// The token service.
#[derive(Debug, Clone)]
pub struct TokenService {
    store: Arc<dyn Store>,
    directory: Arc<dyn UserDirectory>,
    access: AccessTokens,
    refresh: RefreshTokens,
    policy: Policy,
    clock: Arc<dyn Clock>,
    /// Refreshes of one session in flight in this process take turns.
    refreshing: Arc<KeyedLocks<()>>,
    /// Rotations this process completed recently: (session key) → (generation rotated from, when
    /// the rotation was written, on the service clock). A refresh of that generation that starts no
    /// later than [`CONCURRENCY_ALLOWANCE_MS`] after it was concurrent with it — not a replay — and
    /// gets the successor whatever the grace.
    rotated: Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, UnixMs)>>>,
    /// Sessions that began before this time are ended (revoke-everyone), as last read.
    epoch: Arc<crate::epoch::Epoch>,
    /// Issues a device token with every password login (none without).
    devices: Option<DeviceTokens>,
    /// Sends the new-device notice (a mailer that sends nothing without e-mail).
    mailer: Mailer,
    /// Verifies DPoP proofs (RFC 9449) and remembers their `jti`s.
    proofs: Arc<Proofs>,
    /// Token requests without a DPoP proof are refused.
    dpop_required: bool,
    /// Signs the `mfa_token` of logins that need a second factor.
    mfa_tokens: MfaTokens,
}

/// Label of the key DPoP nonces are made with (derived from the rotation secret).
const DPOP_NONCE_KEY_LABEL: &[u8] = b"jwt-refresh-token/dpop-nonce-key/v1";
/// The default `Dpop__ProofMaxAgeMs`.
const DEFAULT_PROOF_MAX_AGE_MS: i64 = 60_000;

fn random_bytes<const N: usize>() -> Result<[u8; N], ServiceError> {
    let mut out = [0u8; N];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut out)
        .map_err(|e| ServiceError::Internal(format!("OS random number generator failed: {e}")))?;
    Ok(out)
}

/// Lowercase hex SHA-256 of `bytes` (store keys of single-use markers).
fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn ms_to_s_ceil(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

impl TokenService {
    /// Assembles the service.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn UserDirectory>,
        access: AccessTokens,
        refresh: RefreshTokens,
        policy: Policy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let proofs = Arc::new(Proofs::new(DEFAULT_PROOF_MAX_AGE_MS, false, refresh.derive_key(DPOP_NONCE_KEY_LABEL)));
        let mfa_tokens = MfaTokens::new(refresh.derive_key(mfa::LABEL));
        Self {
            store,
            directory,
            access,
            refresh,
            policy,
            clock,
            refreshing: Arc::default(),
            rotated: Arc::default(),
            epoch: Arc::default(),
            devices: None,
            mailer: Mailer::off(),
            proofs,
            dpop_required: false,
            mfa_tokens,
        }
    }

    /// DPoP rules: proofs required on every token request (`required`), server nonces required
    /// (`require_nonce`), and how far a proof's `iat` may be from now.
    #[must_use]
    pub fn with_dpop(mut self, required: bool, require_nonce: bool, proof_max_age_ms: i64) -> Self {
        let key = self.refresh.derive_key(DPOP_NONCE_KEY_LABEL);
        self.proofs = Arc::new(Proofs::new(proof_max_age_ms, require_nonce, key));
        self.dpop_required = required;
        self
    }

    /// The key thumbprint of a token request's DPoP proof (`None` without one), after every check
    /// of RFC 9449 §4.3 for `target`; a request without a proof is refused when proofs are required.
    pub fn proof_key(&self, proof: Option<&str>, target: Target<'_>) -> Result<Option<String>, ServiceError> {
        match proof {
            None if self.dpop_required => Err(ServiceError::InvalidDpopProof("a DPoP proof is required")),
            None => Ok(None),
            Some(proof) => self.verify_proof(proof, target).map(Some),
        }
    }

    fn verify_proof(&self, proof: &str, target: Target<'_>) -> Result<String, ServiceError> {
        match self.proofs.verify(proof, target, self.clock.now_ms()) {
            Ok(verified) => Ok(verified.jkt),
            Err(ProofError::Invalid(why)) => Err(ServiceError::InvalidDpopProof(why)),
            Err(ProofError::UseNonce) => Err(ServiceError::UseDpopNonce(self.proofs.nonce(self.clock.now_ms()))),
            Err(ProofError::Busy) => Err(ServiceError::Busy("too many DPoP proofs at once")),
        }
    }

    /// The DPoP nonce clients must put in their proofs now, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.proofs.requires_nonce().then(|| self.proofs.nonce(self.clock.now_ms()))
    }

    /// Issues a device token with every password login, under `devices` (the key the lockout
    /// verifies them with).
    #[must_use]
    pub fn with_device_tokens(mut self, devices: DeviceTokens) -> Self {
        self.devices = Some(devices);
        self
    }

    /// Sends the new-device notice through `mailer`.
    #[must_use]
    pub fn with_mailer(mut self, mailer: Mailer) -> Self {
        self.mailer = mailer;
        self
    }

    /// How long the device tokens this service issues stay valid (0 when it issues none).
    pub fn device_token_ttl_ms(&self) -> i64 {
        self.devices.as_ref().map_or(0, DeviceTokens::ttl_ms)
    }

    /// The session id a refresh token names, without verifying it (`None` when malformed).
    pub fn session_of(&self, refresh_token: &str) -> Option<String> {
        self.refresh.parse(refresh_token).map(|p| p.session_id)
    }

    /// The anti-forgery value of a session (cookie transport).
    pub fn xsrf_value(&self, session_id: &str) -> String {
        self.refresh.xsrf_value(session_id)
    }

    /// Whether `presented` is the anti-forgery value of `session_id` (constant-time).
    pub fn xsrf_matches(&self, session_id: &str, presented: &str) -> bool {
        self.refresh.xsrf_matches(session_id, presented)
    }

    /// The access-token signer/verifier (JWKS, Bearer checks).
    pub fn access_tokens(&self) -> &AccessTokens {
        &self.access
    }

    /// The clock the service reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store the service uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resource-owner password grant: the directory checks lockout (counted per username and
    /// `client_address`) and credentials, then a session starts.
    ///
    /// The account is read again after the session is written, and the session deleted if the user
    /// was disabled meanwhile: a login racing `user disable` never leaves a live session, whatever
    /// the scheduling delays (the disable writes its flag before it sweeps the sessions).
    pub async fn login(
        &self,
        username: &str,
        password: &Password,
        client_address: &str,
    ) -> Result<TokenPair, ServiceError> {
        self.login_as(username, password, Client { address: Some(client_address), ..Client::default() }).await
    }

    /// [`TokenService::login`] recording the client's address and user agent with the session.
    pub async fn login_as(
        &self,
        username: &str,
        password: &Password,
        client: Client<'_>,
    ) -> Result<TokenPair, ServiceError> {
        let from = LoginFrom {
            address: client.address,
            user_agent: client.user_agent,
            device_token: None,
            dpop_jkt: client.dpop_jkt,
        };
        self.login_from(username, password, from).await
    }

    /// [`TokenService::login`] by a client `from`: its device token, when valid for the user,
    /// counts the attempt in that device's throttle; a successful login returns a device token
    /// (the same device's, renewed, or a new device's).
    pub async fn login_from(
        &self,
        username: &str,
        password: &Password,
        from: LoginFrom<'_>,
    ) -> Result<TokenPair, ServiceError> {
        let now = self.clock.now_ms();
        username_key(username).map_err(|_| ServiceError::InvalidRequest("username is not acceptable"))?;
        let origin = Origin { address: from.address, device_token: from.device_token };
        let principal = match self.directory.login(username, password, origin, now).await? {
            LoginOutcome::Authenticated(principal) => principal,
            LoginOutcome::Rejected => return Err(ServiceError::InvalidGrant(GrantFailure::BadCredentials)),
            LoginOutcome::Locked { retry_after_ms } => return Err(ServiceError::Locked { retry_after_ms }),
            LoginOutcome::Busy(why) => return Err(ServiceError::Busy(why)),
        };
        let (device_token, new_device) = self.device_token(&principal.id, from.device_token, now)?;
        if !principal.second_factors.is_empty() {
            // The password passed; the second step proves the rest (RFC 6749 has no such answer:
            // `mfa_required` as Auth0's MFA API names it). No session, no device token yet.
            return Err(self.mfa_required(&principal, FirstStep::Password, now));
        }
        let client = Client { address: from.address, user_agent: from.user_agent, dpop_jkt: from.dpop_jkt };
        let new_device = new_device.then(|| principal.clone());
        let session = self
            .start_checked_session(principal, now, client, GrantFailure::BadCredentials, &[FirstStep::Password.amr()])
            .await?;
        if let Some(principal) = new_device {
            self.notify_new_device(&principal, &client, now);
        }
        Ok(TokenPair { device_token, ..self.pair(&session, now)? })
    }

    /// The device token a completed login hands out: the presented one's device, renewed, when it
    /// is valid for the user, else a new device's (`None` without device tokens); and whether the
    /// device is new (no token of the user's verified), which the new-device notice follows.
    fn device_token(
        &self,
        user_id: &str,
        presented: Option<&str>,
        now: UnixMs,
    ) -> Result<(Option<String>, bool), ServiceError> {
        let Some(devices) = &self.devices else { return Ok((None, false)) };
        let (device, new) = match presented.and_then(|t| devices.verified(t, user_id, now)) {
            Some(device) => (device, false),
            None => (random_bytes::<16>()?, true),
        };
        Ok((Some(devices.issue(user_id, &device, now)), new))
    }

    /// The new-device notice of a completed login (to the user's verified address, if any).
    fn notify_new_device(&self, principal: &Principal, client: &Client<'_>, now: UnixMs) {
        let notice = Notice::NewDevice {
            at_ms: now,
            user_agent: client.user_agent.map(str::to_string),
            address: client.address.map(str::to_string),
        };
        if self.mailer.notify(principal.email.as_deref(), &principal.name, notice) == Queued::Yes {
            tracing::info!(user_id = %principal.id, "new-device notice queued");
        }
    }

    /// The `mfa_required` answer for `principal`, whose first step passed at `now`.
    pub fn mfa_required(&self, principal: &Principal, first_step: FirstStep, now: UnixMs) -> ServiceError {
        let claims = MfaClaims {
            user_id: principal.id.clone(),
            username: principal.name.clone(),
            password_fingerprint: principal.password_fingerprint.clone(),
            first_step,
            expires_at_ms: now.saturating_add(mfa::TTL_MS),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        tracing::info!(user_id = %principal.id, "first step passed; a second factor is required");
        ServiceError::MfaRequired {
            mfa_token: self.mfa_tokens.issue(&claims),
            factors: principal.second_factors.clone(),
        }
    }

    /// The claims of an `mfa_token` to start a second step with (its single use is recorded when
    /// the step finishes, by [`TokenService::redeem_mfa_token`]).
    pub fn peek_mfa_token(&self, token: &str) -> Result<MfaClaims, ServiceError> {
        self.mfa_tokens.verify(token, self.clock.now_ms()).map_err(|e| {
            ServiceError::InvalidGrant(match e {
                MfaTokenError::Invalid => GrantFailure::MfaToken("the mfa_token is not valid"),
                MfaTokenError::Expired => GrantFailure::MfaToken("the mfa_token expired; log in again"),
            })
        })
    }

    /// The claims of an `mfa_token` presented for the second step, recording its single use:
    /// [`GrantFailure::MfaToken`] when it is not ours, expired or used before.
    pub async fn redeem_mfa_token(&self, token: &str) -> Result<MfaClaims, ServiceError> {
        let now = self.clock.now_ms();
        let claims = self.mfa_tokens.verify(token, now).map_err(|e| {
            ServiceError::InvalidGrant(match e {
                MfaTokenError::Invalid => GrantFailure::MfaToken("the mfa_token is not valid"),
                MfaTokenError::Expired => GrantFailure::MfaToken("the mfa_token expired; log in again"),
            })
        })?;
        let marker = format!("mfa.{}", hex_digest(claims.jti.as_bytes()));
        if !self.store.mark_used(&marker, now, claims.expires_at_ms).await? {
            tracing::warn!(user_id = %claims.user_id, "mfa_token replayed");
            return Err(ServiceError::InvalidGrant(GrantFailure::MfaToken(
                "the mfa_token was used before; log in again",
            )));
        }
        Ok(claims)
    }

    /// Starts a session for `principal`, whom a sign-in provider's verified ID token named (the
    /// account service found or made the account), checked like a password login's: the account
    /// is read again after the session is written, and the session cap kept. A user with a
    /// second factor gets `mfa_required` unless `provider_mfa` (the provider asserted MFA and is
    /// trusted to).
    pub async fn federated_login(
        &self,
        principal: Principal,
        client: Client<'_>,
        provider_mfa: bool,
    ) -> Result<TokenPair, ServiceError> {
        let now = self.clock.now_ms();
        if !principal.second_factors.is_empty() && !provider_mfa {
            return Err(self.mfa_required(&principal, FirstStep::Federated, now));
        }
        let amr: &[&str] = if provider_mfa { &["fed", "mfa"] } else { &["fed"] };
        let session = self.start_checked_session(principal, now, client, GrantFailure::AccountDisabled, amr).await?;
        self.pair(&session, now)
    }

    /// Starts the session of a login whose second step passed (`amr` says how), checked like a
    /// password login's.
    pub async fn second_step_login(
        &self,
        principal: Principal,
        client: Client<'_>,
        amr: &[&str],
    ) -> Result<TokenPair, ServiceError> {
        self.second_step_login_from(principal, client, amr, None).await
    }

    /// [`TokenService::second_step_login`] of a client that presented `device_token`: a
    /// completed login hands out a device token, as a password login does.
    pub async fn second_step_login_from(
        &self,
        principal: Principal,
        client: Client<'_>,
        amr: &[&str],
        device_token: Option<&str>,
    ) -> Result<TokenPair, ServiceError> {
        let now = self.clock.now_ms();
        let (device_token, new_device) = self.device_token(&principal.id, device_token, now)?;
        let new_device = new_device.then(|| principal.clone());
        let session = self.start_checked_session(principal, now, client, GrantFailure::BadCredentials, amr).await?;
        if let Some(principal) = new_device {
            self.notify_new_device(&principal, &client, now);
        }
        Ok(TokenPair { device_token, ..self.pair(&session, now)? })
    }

    /// Writes a session for `principal`, then reads the account again (a disable racing the login
    /// withdraws the session: `refused`) and ends the least recently used sessions over the cap.
    async fn start_checked_session(
        &self,
        principal: Principal,
        now: UnixMs,
        client: Client<'_>,
        refused: GrantFailure,
        amr: &[&str],
    ) -> Result<SessionRecord, ServiceError> {
        let session = self.start_session(principal, now, client, amr).await?;
        // The re-read and the listing of the user's sessions (for the cap) go out together: one
        // round trip of latency for both.
        let (active, sessions) = tokio::join!(
            self.directory.is_active(&session.username, &session.user_id),
            self.store.list_user_sessions(&session.user_id)
        );
        if !active? {
            self.store.delete_session(&session.user_id, &session.session_id).await?;
            tracing::info!("login raced a disable; session withdrawn");
            return Err(ServiceError::InvalidGrant(refused));
        }
        self.keep_within_cap(&session, sessions?, now).await?;
        tracing::info!("session started");
        Ok(session)
    }

    /// Starts a session for a user an account operation has just created (sign-up): the caller
    /// vouches for the user, nothing is checked here.
    pub async fn open_session(&self, principal: Principal, client: Client<'_>) -> Result<TokenPair, ServiceError> {
        let now = self.clock.now_ms();
        let session = self.start_session(principal, now, client, &[FirstStep::Password.amr()]).await?;
        self.pair(&session, now)
    }

    /// Writes a new session for `principal` at `now`.
    async fn start_session(
        &self,
        principal: Principal,
        now: UnixMs,
        client: Client<'_>,
        amr: &[&str],
    ) -> Result<SessionRecord, ServiceError> {
        let session = SessionRecord {
            user_id: principal.id,
            session_id: session_id_text(&random_bytes::<16>()?),
            seed: random_bytes::<32>()?,
            generation: 0,
            rotated_at_ms: now,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(self.policy.session_ttl_ms),
            username: principal.name,
            roles: principal.roles,
            details: SessionDetails {
                last_used_at_ms: now,
                idle_expires_at_ms: self.idle_deadline(now),
                user_agent: client.user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
                client_address: client.address.map(str::to_string),
                dpop_jkt: client.dpop_jkt.map(str::to_string),
                amr: amr.iter().map(|a| (*a).to_string()).collect(),
            },
        };
        let span = tracing::Span::current();
        span.record("user_id", session.user_id.as_str());
        span.record("session_id", session.session_id.as_str());
        self.store.insert_session(&session).await?;
        Ok(session)
    }

    /// Ends the least recently used of `sessions` (the user's, listed after `new` was written) while
    /// the user has more live sessions than the cap; `new` is never ended. Sessions already ended
    /// do not count (Cosmos TTL or the purge removes them). Concurrent logins of one user may each
    /// end one: the user is then below the cap, never above it for long.
    async fn keep_within_cap(
        &self,
        new: &SessionRecord,
        sessions: Vec<SessionRecord>,
        now: UnixMs,
    ) -> Result<(), ServiceError> {
        let mut others: Vec<SessionRecord> =
            sessions.into_iter().filter(|s| s.session_id != new.session_id && !self.has_ended(s, now)).collect();
        let cap = self.policy.max_sessions_per_user.max(1);
        let excess = (others.len() + 1).saturating_sub(cap);
        if excess == 0 {
            return Ok(());
        }
        others.sort_by_key(|s| (s.details.last_used_at_ms.max(s.created_at_ms), s.created_at_ms));
        for old in others.iter().take(excess) {
            self.store.delete_session(&old.user_id, &old.session_id).await?;
        }
        tracing::info!(ended = excess, cap, "session cap reached; least recently used sessions ended");
        Ok(())
    }

    fn idle_deadline(&self, now: UnixMs) -> Option<UnixMs> {
        (self.policy.idle_ttl_ms > 0).then(|| now.saturating_add(self.policy.idle_ttl_ms))
    }

    /// Whether a session has ended at `now`: its absolute lifetime or inactivity deadline passed,
    /// or it began before the last revoke-everyone.
    fn has_ended(&self, session: &SessionRecord, now: UnixMs) -> bool {
        now >= session.ends_at_ms() || session.created_at_ms < self.epoch.revoked_before_ms()
    }

    fn pair(&self, session: &SessionRecord, now: UnixMs) -> Result<TokenPair, ServiceError> {
        let subject = Subject {
            user_id: &session.user_id,
            name: &session.username,
            roles: &session.roles,
            session_id: &session.session_id,
            jkt: session.details.dpop_jkt.as_deref(),
            amr: &session.details.amr,
            auth_time_ms: (!session.details.amr.is_empty()).then_some(session.created_at_ms),
        };
        let access =
            self.access.sign(subject, now).map_err(|e| ServiceError::Internal(format!("signing failed: {e}")))?;
        let refresh_token = self
            .refresh
            .issue(&session.user_id, &session.session_id, session.generation, &session.seed)
            .ok_or_else(|| ServiceError::Internal("user id too long for a refresh token".into()))?;
        Ok(TokenPair {
            access_token: access.token,
            token_type: if session.details.dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: access.expires_in,
            refresh_token,
            refresh_expires_in: ms_to_s_ceil(session.ends_at_ms() - now),
            session_id: session.session_id.clone(),
            device_token: None,
        })
    }

    /// Verifies a refresh token against its session. `Ok(None)` when the session is gone.
    async fn load(&self, parts: &RefreshTokenParts) -> Result<Option<Versioned<SessionRecord>>, ServiceError> {
        let Some(found) = self.store.get_session(&parts.user_id, &parts.session_id).await? else { return Ok(None) };
        if !self.refresh.verify(parts, &found.value.seed) {
            return Err(ServiceError::InvalidGrant(GrantFailure::Tampered));
        }
        Ok(Some(found))
    }

    /// Refresh-token grant: rotates the session and returns a new pair.
    ///
    /// `access_token`, when given, must be one of ours (signature, issuer, audience, type; its expiry
    /// is ignored) for the same subject, as tutorial clients send it.
    pub async fn refresh(&self, refresh_token: &str, access_token: Option<&str>) -> Result<TokenPair, ServiceError> {
        self.refresh_with_key(refresh_token, access_token, None).await
    }

    /// [`TokenService::refresh`] by a request whose DPoP proof verified with the key `jkt` (see
    /// [`TokenService::proof_key`]). A session bound to a key is refreshed only with a proof of
    /// that key; without one, or with another key, nothing changes: the session is neither rotated
    /// nor ended (whoever copied its refresh token cannot even burn it). An unbound session
    /// refreshed with a proof becomes bound to its key.
    pub async fn refresh_with_key(
        &self,
        refresh_token: &str,
        access_token: Option<&str>,
        jkt: Option<&str>,
    ) -> Result<TokenPair, ServiceError> {
        let now = self.clock.now_ms();
        let parts = self.refresh.parse(refresh_token).ok_or(ServiceError::InvalidGrant(GrantFailure::Malformed))?;
        if let Some(access) = access_token {
            let claims = self
                .access
                .verify(access, now, Expiry::Ignore)
                .map_err(|_| ServiceError::InvalidGrant(GrantFailure::AccessTokenMismatch))?;
            if claims.sub != parts.user_id {
                return Err(ServiceError::InvalidGrant(GrantFailure::AccessTokenMismatch));
            }
        }
        let span = tracing::Span::current();
        span.record("user_id", parts.user_id.as_str());
        span.record("session_id", parts.session_id.as_str());
        // Concurrent refreshes of one session in this process take turns; one that started no later
        // than the allowance after a rotation of its generation was concurrent with it.
        let key = format!("{}\u{0}{}", parts.user_id, parts.session_id);
        let _turn = self.refreshing.lock(key.clone()).await;
        let concurrent = self
            .lock_rotated()
            .get(&key)
            .is_some_and(|(g, done)| *g == parts.generation && now <= done.saturating_add(CONCURRENCY_ALLOWANCE_MS));
        let parts = &parts;
        // `lost_race`: this call was concurrent with a refresh of the same generation (queued
        // behind it here, or it lost the compare-and-swap to another instance). That is no replay:
        // it gets the successor whatever the grace.
        let result = retry_cas("session", concurrent, |lost_race| async move {
            let Some(current) = self.load(parts).await? else {
                return Err(ServiceError::InvalidGrant(GrantFailure::UnknownSession));
            };
            let session = current.value;
            match (session.details.dpop_jkt.as_deref(), jkt) {
                (Some(bound), Some(key)) if bound == key => {}
                (Some(_), Some(_)) => {
                    return Err(ServiceError::InvalidDpopProof(
                        "the proof key is not the key this session is bound to",
                    ));
                }
                (Some(_), None) => {
                    return Err(ServiceError::InvalidDpopProof(
                        "this session is bound to a DPoP key: send a DPoP proof signed by it",
                    ));
                }
                (None, _) => {}
            }
            if self.has_ended(&session, now) {
                self.store.delete_session(&session.user_id, &session.session_id).await?;
                return Err(ServiceError::InvalidGrant(GrantFailure::Expired));
            }
            if parts.generation == session.generation {
                // The write the rotation makes anyway also records the activity and moves the
                // inactivity deadline (never past the absolute end).
                let details = SessionDetails {
                    last_used_at_ms: now,
                    idle_expires_at_ms: self.idle_deadline(now),
                    dpop_jkt: session.details.dpop_jkt.clone().or_else(|| jkt.map(str::to_string)),
                    ..session.details.clone()
                };
                let next = SessionRecord { generation: session.generation + 1, rotated_at_ms: now, details, ..session };
                return match self.store.replace_session(&next, &current.version).await {
                    Ok(_) => Ok(Cas::Done((self.pair(&next, now)?, Some(parts.generation)))),
                    // Someone rotated first: read again; we are then the previous generation.
                    Err(StoreError::Precondition) => Ok(Cas::Retry(true)),
                    Err(StoreError::NotFound) => Err(ServiceError::InvalidGrant(GrantFailure::UnknownSession)),
                    Err(e) => Err(e.into()),
                };
            }
            let within_grace = now.saturating_sub(session.rotated_at_ms) <= self.policy.reuse_grace_ms;
            if parts.generation + 1 == session.generation && (within_grace || lost_race) {
                // A retry or a concurrent loser: hand out the same successor again.
                return Ok(Cas::Done((self.pair(&session, now)?, None)));
            }
            if parts.generation < session.generation {
                // RFC 9700 §4.14.2: a replayed refresh token ends the session it belongs to.
                self.store.delete_session(&session.user_id, &session.session_id).await?;
                tracing::warn!(
                    presented = parts.generation,
                    current = session.generation,
                    "refresh token reuse detected; session ended"
                );
                return Err(ServiceError::InvalidGrant(GrantFailure::Reused));
            }
            // A verified tag for a generation we never issued cannot happen; change nothing.
            Err(ServiceError::InvalidGrant(GrantFailure::Tampered))
        })
        .await;
        let (pair, rotated_from) = result?;
        if let Some(from) = rotated_from {
            let mut rotated = self.lock_rotated();
            let done = self.clock.now_ms();
            if rotated.len() >= MAX_REMEMBERED_ROTATIONS {
                // Only rotations inside the allowance can still matter; the map stays bounded by
                // the rotations of the last 100 ms.
                rotated.retain(|_, (_, at)| done - *at <= CONCURRENCY_ALLOWANCE_MS);
            }
            rotated.insert(key, (from, done));
        }
        Ok(pair)
    }

    fn lock_rotated(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (u64, UnixMs)>> {
        self.rotated.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// RFC 7009 revocation: ends the session a refresh token, or an unexpired access token of ours
    /// (its `sid`), belongs to. Unknown, malformed and unverifiable tokens succeed without changing
    /// anything (the endpoint reveals nothing). Returns whether a session ended.
    pub async fn revoke_token(&self, token: &str) -> Result<bool, ServiceError> {
        let Some(parts) = self.refresh.parse(token) else {
            return match self.access.verify(token, self.clock.now_ms(), Expiry::Enforce) {
                Ok(claims) => Ok(self.store.delete_session(&claims.sub, &claims.sid).await?),
                Err(_) => Ok(false),
            };
        };
        match self.load(&parts).await {
            Ok(Some(found)) if parts.generation <= found.value.generation => {
                Ok(self.store.delete_session(&parts.user_id, &parts.session_id).await?)
            }
            Ok(_) | Err(ServiceError::InvalidGrant(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Verifies a Bearer access token at the current time, and that its session is still live:
    /// an access token of a revoked, reused or expired session (or of a user that no longer
    /// exists, whose sessions are gone) authorises nothing here, even before it expires.
    /// A DPoP-bound token is refused here ([`ServiceError::BoundTokenAsBearer`], RFC 9449 §7.2):
    /// it is only good with its proof ([`TokenService::authenticate_dpop`]).
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Caller, ServiceError> {
        let now = self.clock.now_ms();
        let claims = self.access.verify(token, now, Expiry::Enforce)?;
        if claims.cnf.is_some() {
            return Err(ServiceError::BoundTokenAsBearer);
        }
        self.caller(claims, now).await
    }

    /// `Authorization: DPoP <token>` with its `proof` (RFC 9449 §7.1): the token must be bound
    /// (`cnf.jkt`), and the proof valid for `target` (method, URL, `ath` of this token) and signed
    /// by the bound key; then the checks of [`TokenService::authenticate_bearer`].
    pub async fn authenticate_dpop(
        &self,
        token: &str,
        proof: Option<&str>,
        target: Target<'_>,
    ) -> Result<Caller, ServiceError> {
        let now = self.clock.now_ms();
        let claims = self.access.verify(token, now, Expiry::Enforce)?;
        let bound = claims
            .jkt()
            .ok_or(ServiceError::InvalidToken(AccessTokenError::Invalid("the access token is not DPoP-bound")))?;
        let proof = proof.ok_or(ServiceError::InvalidDpopProof("the DPoP scheme needs a DPoP proof"))?;
        let key = self.verify_proof(proof, Target { access_token: Some(token), ..target })?;
        if key != bound {
            return Err(ServiceError::InvalidDpopProof("the proof key is not the key the access token is bound to"));
        }
        self.caller(claims, now).await
    }

    async fn caller(&self, claims: AccessClaims, now: UnixMs) -> Result<Caller, ServiceError> {
        let span = tracing::Span::current();
        span.record("user_id", claims.sub.as_str());
        span.record("session_id", claims.sid.as_str());
        let ended =
            || ServiceError::InvalidToken(AccessTokenError::Invalid("the session of this access token has ended"));
        let session = self.live_session(&claims, now).await?.ok_or_else(ended)?;
        Ok(Caller { claims, username: session.username })
    }

    /// The live session an access token's claims name, or `None` when it ended: one store read.
    /// Liveness follows the store: a revoked, reused, expired or idle session, or one from before
    /// revoke-everyone (the cached epoch), has ended; disabling a user or setting a password ends
    /// the user's sessions (`accounts::sessions::follow`), so the session read answers for those too.
    async fn live_session(&self, claims: &AccessClaims, now: UnixMs) -> Result<Option<SessionRecord>, ServiceError> {
        let session = self.store.get_session(&claims.sub, &claims.sid).await?;
        Ok(session.map(|s| s.value).filter(|s| !self.has_ended(s, now)))
    }

    /// Token introspection (RFC 7662 §2.2): whether `token` is an access token of ours that is
    /// active now, and if so its claims with the session's current username and roles. Anything
    /// else — a refresh token (not introspected here), an unknown type, a malformed, forged or
    /// expired token, or one whose session ended — is [`Introspection::Inactive`], with no reason
    /// (the answer reveals nothing). Exactly one store read, and none for a token that does not
    /// verify.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, ServiceError> {
        let now = self.clock.now_ms();
        if self.refresh.parse(token).is_some() {
            return Ok(Introspection::Inactive);
        }
        let Ok(claims) = self.access.verify(token, now, Expiry::Enforce) else { return Ok(Introspection::Inactive) };
        let span = tracing::Span::current();
        span.record("user_id", claims.sub.as_str());
        span.record("session_id", claims.sid.as_str());
        Ok(match self.live_session(&claims, now).await? {
            Some(session) => Introspection::Active(Box::new(ActiveToken {
                proof: match claims.jkt() {
                    Some(jkt) => TokenProof::Dpop { jkt: jkt.to_string() },
                    None => TokenProof::Bearer,
                },
                claims,
                username: session.username,
                roles: session.roles,
            })),
            None => Introspection::Inactive,
        })
    }

    /// 403 (`Forbidden(why)`) unless the caller acts as an admin (see [`Caller::is_admin`]; one
    /// account read, only when the token claims the role).
    pub async fn require_admin(&self, caller: &Caller, why: &'static str) -> Result<(), ServiceError> {
        if !caller.claims_admin() {
            return Err(ServiceError::Forbidden(why));
        }
        let me = self.directory.find(&caller.username).await?;
        if caller.is_admin(me.as_ref()) { Ok(()) } else { Err(ServiceError::Forbidden(why)) }
    }

    /// A page of at most `limit` of the caller's live sessions, newest first, after `cursor` (one
    /// single-partition query). The cursor names the last session of the previous page (its start
    /// time and id), so a session ended meanwhile does not shift the pages.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        limit: std::num::NonZeroUsize,
        cursor: Option<&str>,
    ) -> Result<SessionPage, ServiceError> {
        let now = self.clock.now_ms();
        let after = cursor.map(SessionCursor::decode).transpose()?;
        let mut sessions: Vec<SessionRecord> = self
            .store
            .list_user_sessions(&caller.claims.sub)
            .await?
            .into_iter()
            .filter(|s| !self.has_ended(s, now))
            .filter(|s| after.as_ref().is_none_or(|c| c.is_followed_by(s)))
            .collect();
        sessions.sort_by(newest_first);
        let limit = limit.get();
        let next_cursor = if sessions.len() > limit {
            sessions.get(limit - 1).map(|last| SessionCursor::of(last).encode())
        } else {
            None
        };
        let sessions = sessions
            .into_iter()
            .take(limit)
            .map(|s| SessionInfo {
                current: s.session_id == caller.claims.sid,
                created_at: secs(s.created_at_ms),
                last_used_at: secs(s.details.last_used_at_ms.max(s.created_at_ms)),
                expires_at: secs(s.ends_at_ms()),
                user_agent: s.details.user_agent,
                client_address: s.details.client_address,
                id: s.session_id,
            })
            .collect();
        Ok(SessionPage { sessions, next_cursor })
    }

    /// Ends one session of the caller; `NotFound` when the caller has none with this id (another
    /// user's session is never touched: the lookup is in the caller's partition).
    pub async fn end_session(&self, caller: &Caller, session_id: &str) -> Result<(), ServiceError> {
        if self.store.delete_session(&caller.claims.sub, session_id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("no such session"))
        }
    }

    /// Ends every session of every user (admin over HTTP): one store write; this instance at once,
    /// the others within [`crate::epoch::REFRESH_INTERVAL`].
    pub async fn revoke_everyone(&self, caller: &Caller) -> Result<UnixMs, ServiceError> {
        self.require_admin(caller, "this needs the admin role").await?;
        let at = end_every_session(self.store.as_ref(), self.clock.now_ms()).await?;
        self.epoch.raise(at);
        tracing::warn!(revoked_before_ms = at, "every session of every user ended");
        Ok(at)
    }

    /// Reads the store's revoke-everyone epoch into this instance's cache.
    pub async fn refresh_epoch(&self) -> Result<(), StoreError> {
        self.epoch.raise(self.store.sessions_epoch().await?);
        Ok(())
    }

    /// Ends the sessions `scope` names on behalf of `caller`; returns how many ended. Ending
    /// another user's sessions needs the `admin` role in the caller's *current* account (enabled,
    /// same id), not merely in the token.
    pub async fn revoke_scope(&self, caller: &Caller, scope: &RevokeScope) -> Result<u64, ServiceError> {
        let claims = &caller.claims;
        let ended = match scope {
            RevokeScope::Global => self.store.delete_user_sessions(&claims.sub, None).await?,
            RevokeScope::Others => self.store.delete_user_sessions(&claims.sub, Some(&claims.sid)).await?,
            RevokeScope::User(username) => {
                self.require_admin(caller, "ending another user's sessions needs the admin role").await?;
                let user = self.directory.find(username).await?.ok_or(ServiceError::UnknownUser)?;
                self.store.delete_user_sessions(&user.principal.id, None).await?
            }
        };
        tracing::info!(ended, scope = ?scope_name(scope), "sessions revoked");
        Ok(ended)
    }
}

/// Ends every session of every user that began before `now` (revoke-everyone: TokenService over
/// HTTP, `handler sessions revoke-all`): one store write. Returns the epoch as stored.
pub async fn end_every_session(store: &dyn SessionStore, now: UnixMs) -> Result<UnixMs, StoreError> {
    // One past now: a session started in this very millisecond ends too.
    store.raise_sessions_epoch(now.saturating_add(1)).await
}

/// What introspection found (see [`TokenService::introspect`]).
#[derive(Debug, Clone)]
pub enum Introspection {
    /// Not an active access token of ours (nothing more is said).
    Inactive,
    /// An active access token (boxed: the inactive answer is the common one and carries nothing).
    Active(Box<ActiveToken>),
}

/// How a token is bound to its holder: the one place introspection decides `token_type` and
/// `cnf` (RFC 9449 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProof {
    /// A bearer token: whoever holds it may use it (`token_type: "Bearer"`, no `cnf`).
    Bearer,
    /// A DPoP-bound token: only with a proof of the key whose thumbprint is `jkt`
    /// (`token_type: "DPoP"`, `cnf: {"jkt": …}`).
    Dpop {
        /// The JWK SHA-256 thumbprint (RFC 7638).
        jkt: String,
    },
}

impl TokenProof {
    /// The `token_type` introspection reports.
    pub fn token_type(&self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::Dpop { .. } => "DPoP",
        }
    }

    /// The thumbprint of the `cnf` claim introspection reports, if any.
    pub fn jkt(&self) -> Option<&str> {
        match self {
            Self::Bearer => None,
            Self::Dpop { jkt } => Some(jkt),
        }
    }
}

/// An active access token as introspection reports it.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    /// The token's verified claims.
    pub claims: AccessClaims,
    /// The username of its session.
    pub username: String,
    /// The session's current roles (an admin's role change reaches them at once).
    pub roles: Vec<String>,
    /// How the token is bound to its holder.
    pub proof: TokenProof,
}

/// The verified caller of a Bearer-authorised operation.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The access token's claims.
    pub claims: AccessClaims,
    /// The username the session was started with (to read the caller's current account).
    pub username: String,
}

impl Caller {
    /// Whether the access token carries the `admin` role (necessary, not sufficient).
    pub fn claims_admin(&self) -> bool {
        self.claims.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// Whether the caller acts as an admin: the token carries `admin` *and* the caller's current
    /// account (`current`, read afresh) is enabled, has the token's id and still holds `admin`.
    pub fn is_admin(&self, current: Option<&UserState>) -> bool {
        self.claims_admin()
            && current.is_some_and(|u| {
                !u.disabled && u.principal.id == self.claims.sub && u.principal.roles.iter().any(|r| r == ADMIN_ROLE)
            })
    }
}

/// Newest first: by start time, then by id (both descending), a total order.
fn newest_first(a: &SessionRecord, b: &SessionRecord) -> std::cmp::Ordering {
    b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.session_id.cmp(&a.session_id))
}

/// Where a page of sessions ended: the start time and id of its last session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionCursor {
    created_at_ms: UnixMs,
    session_id: String,
}

/// What a cursor this service did not hand out is told.
const BAD_CURSOR: &str = "cursor is not one this service returned";

impl SessionCursor {
    fn of(s: &SessionRecord) -> Self {
        Self { created_at_ms: s.created_at_ms, session_id: s.session_id.clone() }
    }

    /// Opaque to clients: base64url of `<ms>.<id>`.
    fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{}", self.created_at_ms, self.session_id))
    }

    fn decode(text: &str) -> Result<Self, ServiceError> {
        use base64::Engine as _;
        let bad = || ServiceError::InvalidRequest(BAD_CURSOR);
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (ms, id) = text.split_once('.').ok_or_else(bad)?;
        let created_at_ms = ms.parse().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Self { created_at_ms, session_id: id.to_string() })
    }

    /// Whether `s` comes after the cursor's session, newest first (older, or as old with a
    /// smaller id).
    fn is_followed_by(&self, s: &SessionRecord) -> bool {
        (s.created_at_ms, s.session_id.as_str()) < (self.created_at_ms, self.session_id.as_str())
    }
}

/// A page of "my devices".
#[derive(Debug, Clone, Serialize)]
pub struct SessionPage {
    /// The sessions, newest first.
    pub sessions: Vec<SessionInfo>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
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

fn secs(ms: UnixMs) -> i64 {
    ms.div_euclid(1000)
}

fn scope_name(scope: &RevokeScope) -> &'static str {
    match scope {
        RevokeScope::Global => "global",
        RevokeScope::Others => "others",
        RevokeScope::User(_) => "user",
    }
}
