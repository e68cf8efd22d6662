//! E-mail addresses and recovery: an account's address (set at sign-up, by the user or by an
//! admin), its verification by a code sent to it, password recovery by a code sent to a verified
//! address, and the security notices.
//!
//! Codes are digits (`Email__CodeLength`), valid for `Email__CodeLifetimeMs`, single-use, and void
//! after `Email__CodeAttempts` wrong tries. Only a keyed hash of a code is stored, in a
//! [`CodeRecord`] of its own per account and purpose (`verify:<user id>`, `reset:<user id>`) that
//! expires by itself. The same record counts the codes sent to the account in the last hour
//! (`Email__CodesPerHour`), and a record per address (`address:<address>`) counts the code mails
//! it received (`Email__MailsPerAddressPerHour`), whichever accounts asked.
//!
//! `POST /api/password/forgot` is answered before anything is looked up: the lookup and the mail
//! run in the background ([`AccountService::forgot_password`]), so the answer and its timing are
//! the same for every account, known or not.
//!
//! Cosmos requests (point reads and writes of the accounts container), stated in
//! `docs/email.md` and checked by `tests/cosmos.rs`:
//! - set an address: 6 (the caller's account, the address and account budgets read and written, the
//!   account written);
//! - verify it: 6 (account, the code read and used, the address claim read and written, account);
//!   one more when another account's stale claim is taken over (its account read);
//! - forgot, by username: 5 (account, budgets and code); by address: 6 (the claim first); for an
//!   account without a verified address: 1;
//! - reset without a second factor: 7 (account, code read and used, account read and written, and
//!   the sessions' query; each session ended is one delete more).

use std::sync::Arc;

use hmac::{KeyInit as _, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use super::factors::SecondFactor;
use super::{AccountService, PasswordCheck, Reason, hash_error};
use crate::clock::UnixMs;
use crate::mail::{Mailer, Message, Notice, Queued};
use crate::secret::Password;
use crate::service::{Caller, GrantFailure, ServiceError};
use crate::settings::email::CodeRules;
use crate::store::{
    CodeRecord, EmailAddress, EmailClaim, MAX_CAS_ATTEMPTS, Step, Store, StoreError, UserRecord, update_account,
};
use crate::users::lockout::Origin;
use crate::users::{self, HashError};

/// The label of the key hashing e-mail codes (derived from the rotation secret).
pub const CODE_LABEL: &[u8] = b"jwt-refresh-token/email-code/v1";
/// Longest address accepted (RFC 5321 §4.5.3.1.3 path limit, less the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// The window of the send budgets.
const HOUR_MS: i64 = 3_600_000;
/// How long a fresh claim on an address holds off other accounts even before its account says the
/// address is verified (the claim is written first, the account right after).
const CLAIM_PENDING_MS: i64 = 60_000;
/// Recovery lookups running in the background at once per instance; more are dropped (logged).
const RECOVERY_IN_FLIGHT: usize = 64;

/// What e-mail needs: the mailer, the key codes are hashed with, and the codes' rules.
#[derive(Debug, Clone)]
pub struct EmailRules {
    /// Sends the mails.
    pub mailer: Mailer,
    /// Keys the codes' hashes.
    pub code_key: [u8; 32],
    /// Length, lifetime, tries and budgets of codes.
    pub codes: CodeRules,
    /// Background recovery lookups in flight.
    recovery: Arc<Semaphore>,
}

impl EmailRules {
    /// E-mail with `mailer`, hashing codes under `code_key`.
    pub fn new(mailer: Mailer, code_key: [u8; 32], codes: CodeRules) -> Self {
        Self { mailer, code_key, codes, recovery: Arc::new(Semaphore::new(RECOVERY_IN_FLIGHT)) }
    }

    /// The code as typed (spaces and dashes ignored), if it has the configured form.
    fn parse_code(&self, typed: &str) -> Result<String, ServiceError> {
        let code: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if code.len() == self.codes.length && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(code)
        } else {
            Err(ServiceError::InvalidRequestOwned(format!(
                "code must be the {} digits of the mail's `Code:` line",
                self.codes.length
            )))
        }
    }

    fn hash(&self, purpose: Purpose, user_id: &str, code: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.code_key)
            .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default()));
        for part in [purpose.key_prefix().as_bytes(), b"\0", user_id.as_bytes(), b"\0", code.as_bytes()] {
            mac.update(part);
        }
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fresh random code of the configured length.
    fn new_code(&self) -> Result<String, ServiceError> {
        let mut code = String::with_capacity(self.codes.length);
        while code.len() < self.codes.length {
            let mut bytes = [0u8; 16];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| ServiceError::Internal("OS random number generator failed".into()))?;
            // Bytes below 250 are uniform over the ten digits.
            for b in bytes.iter().filter(|b| **b < 250).take(self.codes.length - code.len()) {
                code.push(char::from(b'0' + b % 10));
            }
        }
        Ok(code)
    }
}

/// What a code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proving an address.
    Verify,
    /// Setting a new password.
    Reset,
}

impl Purpose {
    fn key_prefix(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
        }
    }

    fn key(self, user_id: &str) -> String {
        format!("{}:{user_id}", self.key_prefix())
    }
}

/// Which account a recovery request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// By username.
    Username(String),
    /// By (verified) address.
    Email(String),
}

/// The caller's address as `GET`/`POST /api/email` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailState {
    /// The address, normalised; `null` when none is set.
    pub email: Option<String>,
    /// Whether it is verified.
    pub verified: bool,
    /// Whether a verification code was just sent.
    pub verification_sent: bool,
}

impl EmailState {
    fn of(user: &UserRecord, sent: bool) -> Self {
        Self {
            email: user.email.as_ref().map(|e| e.address.clone()),
            verified: user.email.as_ref().is_some_and(|e| e.verified),
            verification_sent: sent,
        }
    }
}

/// An account's verified address, if it has one.
pub fn verified_address(user: &UserRecord) -> Option<&str> {
    user.email.as_ref().filter(|e| e.verified).map(|e| e.address.as_str())
}

/// The address as stored and compared: trimmed, lowercase, the domain in its ASCII (IDNA) form.
/// Refused: anything that is not one `local@domain` address — display names, comments, quoted or
/// non-ASCII local parts, IP-literal domains, domains without a dot, labels that DNS refuses.
pub fn normalise(raw: &str) -> Result<String, ServiceError> {
    let bad = |why: &str| ServiceError::InvalidRequestOwned(format!("email {why}"));
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_ADDRESS_LEN {
        return Err(bad(&format!("must be an address of 3 to {MAX_ADDRESS_LEN} characters")));
    }
    let Some((local, domain)) = raw.rsplit_once('@') else {
        return Err(bad("must be an address like name@example.com"));
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if local.is_empty()
        || local.len() > 64
        || !local.chars().all(atext)
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(bad(
            "has a local part (before @) this service does not accept: use letters, digits and .!#$%&'*+-/=?^_`{|}~",
        ));
    }
    let domain = idna::domain_to_ascii(domain).map_err(|_| bad("has a domain that is not a valid domain name"))?;
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2
        || !labels.iter().all(label_ok)
        || labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad("has a domain that is not a valid domain name"));
    }
    let address = format!("{}@{domain}", local.to_ascii_lowercase());
    if address.len() > MAX_ADDRESS_LEN {
        return Err(bad(&format!("must be at most {MAX_ADDRESS_LEN} characters")));
    }
    Ok(address)
}

/// What a change of a code record does.
enum CodeStep<T> {
    Write(CodeRecord, T),
    Done(T),
}

/// The one conditional update of a code record (see `store::update_account` for accounts).
async fn update_code<T>(
    store: &dyn Store,
    key: &str,
    now: UnixMs,
    step: impl Fn(Option<&CodeRecord>) -> CodeStep<T>,
) -> Result<T, ServiceError> {
    let mut current = store.get_code(key, now).await?;
    for _ in 0..MAX_CAS_ATTEMPTS {
        match step(current.as_ref().map(|c| &c.value)) {
            CodeStep::Done(t) => return Ok(t),
            CodeStep::Write(record, t) => {
                match store.put_code(key, &record, current.as_ref().map(|c| &c.version), now).await {
                    Ok(_) => return Ok(t),
                    Err(StoreError::Precondition | StoreError::Conflict | StoreError::NotFound) => {
                        current = store.get_code(key, now).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(StoreError::unavailable(format!("e-mail code record stayed contended after {MAX_CAS_ATTEMPTS} attempts"))
        .into())
}

/// The send times of the last hour; `Err(ms)` when `limit` of them are used (ms until one frees).
fn budget(sent: &[UnixMs], now: UnixMs, limit: u32) -> Result<Vec<UnixMs>, i64> {
    let recent: Vec<UnixMs> = sent.iter().copied().filter(|t| now.saturating_sub(*t) < HOUR_MS).collect();
    if recent.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
        let oldest = recent.first().copied().unwrap_or(now);
        return Err(oldest.saturating_add(HOUR_MS).saturating_sub(now).max(1));
    }
    Ok(recent)
}

/// How a code check ended.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// Right: the address it was sent to.
    Right(String),
    /// Wrong, void, expired or absent.
    Refused,
}

impl AccountService {
    /// E-mail with `rules` (and notices through its mailer).
    #[must_use]
    pub fn with_email(mut self, rules: EmailRules) -> Self {
        self.mailer = rules.mailer.clone();
        self.email = Some(rules);
        self
    }

    pub(super) fn email_rules(&self) -> Result<&EmailRules, ServiceError> {
        self.email.as_ref().filter(|r| r.mailer.enabled()).ok_or(ServiceError::NotAvailable(
            "e-mail is not configured on this service (JwtRefreshToken__Email__Transport)",
        ))
    }

    /// Sends `notice` to `user`'s verified address, if any (never waits, never fails the caller).
    pub(super) fn notify(&self, user: &UserRecord, notice: Notice) {
        let kind = notice.kind();
        if self.mailer.notify(verified_address(user), &user.username, notice) == Queued::Yes {
            tracing::info!(user_id = %user.id, kind, "security notice queued");
        }
    }

    /// The caller's address (`GET /api/email`).
    pub async fn my_email(&self, caller: &Caller) -> Result<EmailState, ServiceError> {
        let (user, _) = self.my_account(caller).await?;
        Ok(EmailState::of(&user, false))
    }

    /// Sets the caller's address, unverified, and sends a verification code to it (`POST /api/email`).
    /// The same address again, unverified, sends a new code; already verified, changes nothing.
    pub async fn set_my_email(&self, caller: &Caller, raw: &str) -> Result<EmailState, ServiceError> {
        let rules = self.email_rules()?;
        let address = normalise(raw)?;
        let (user, account) = self.my_account(caller).await?;
        if user.disabled {
            return Err(ServiceError::InvalidGrant(GrantFailure::AccountDisabled));
        }
        if user.email.as_ref().is_some_and(|e| e.verified && e.address == address) {
            return Ok(EmailState::of(&user, false));
        }
        let now = self.clock.now_ms();
        self.send_code(rules, Purpose::Verify, &user, &address, now).await?;
        let key = account.value.username_key.clone();
        let user_id = user.id.clone();
        let (changed, _) = update_account(self.store.as_ref(), &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(None) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user_id) else { return Step::Done(None) };
            let before = u.email.replace(EmailAddress { address: address.clone(), verified: false });
            let after = u.clone();
            Step::Write(next, Some((before, after)))
        })
        .await?;
        let (before, after) = changed.ok_or(ServiceError::InvalidGrant(GrantFailure::BadCredentials))?;
        if let Some(old) = before.filter(|b| b.verified && b.address != address) {
            // Tell the old address, which the change takes recovery away from.
            if self.mailer.notify(Some(&old.address), &after.username, Notice::EmailChanged) == Queued::Yes {
                tracing::info!(user_id = %after.id, "address change notice queued");
            }
        }
        tracing::info!(user_id = %after.id, "e-mail address set; verification code sent");
        Ok(EmailState::of(&after, true))
    }

    /// Verifies the caller's address with the code sent to it (`POST /api/email/verify`).
    pub async fn verify_my_email(&self, caller: &Caller, typed: &str) -> Result<EmailState, ServiceError> {
        let rules = self.email_rules()?;
        let code = rules.parse_code(typed)?;
        let (user, account) = self.my_account(caller).await?;
        if user.disabled {
            return Err(ServiceError::InvalidGrant(GrantFailure::AccountDisabled));
        }
        let Some(email) = user.email.clone() else {
            return Err(ServiceError::InvalidRequest("there is no address to verify: set one with POST /api/email"));
        };
        let now = self.clock.now_ms();
        match self.use_code(rules, Purpose::Verify, &user.id, &code, now, true).await? {
            Checked::Right(address) if address == email.address => {}
            _ => return Err(ServiceError::InvalidGrant(GrantFailure::EmailCode)),
        }
        self.claim_address(&email.address, &user, now).await?;
        let user_id = user.id.clone();
        let key = account.value.username_key.clone();
        let (changed, _) = update_account(self.store.as_ref(), &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(None) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user_id) else { return Step::Done(None) };
            match u.email.as_mut() {
                Some(e) if e.address == email.address => e.verified = true,
                // Changed meanwhile: the code proved the other address.
                _ => return Step::Done(None),
            }
            let after = u.clone();
            Step::Write(next, Some(after))
        })
        .await?;
        let after = changed.ok_or(ServiceError::InvalidGrant(GrantFailure::EmailCode))?;
        tracing::info!(user_id = %after.id, "e-mail address verified");
        Ok(EmailState::of(&after, false))
    }

    /// Makes `address` the verified address of `user` alone, before the account says so: writes
    /// its claim by compare-and-swap (created, or replaced at the version read — also when the
    /// claim is already the user's, so that a racing takeover loses). Refused while the claim's
    /// account holds the address verified, or holds it unverified and claimed it within
    /// [`CLAIM_PENDING_MS`] (its verification is writing the account right now). A claim whose
    /// account moved to another address, or never finished, is taken over.
    async fn claim_address(&self, address: &str, user: &UserRecord, now: UnixMs) -> Result<(), ServiceError> {
        let store = self.store.as_ref();
        let claim = EmailClaim { owner_key: user.username_key.clone(), owner_id: user.id.clone(), claimed_at_ms: now };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = store.get_email_claim(address).await?;
            if let Some(c) = current.as_ref().filter(|c| c.value.owner_id != user.id) {
                let owner = store.get_account(&c.value.owner_key).await?.and_then(|a| a.value.user);
                let held = owner
                    .as_ref()
                    .filter(|o| o.id == c.value.owner_id)
                    .and_then(|o| o.email.as_ref())
                    .filter(|e| e.address == address);
                match held {
                    Some(e) if e.verified => {
                        return Err(ServiceError::Conflict("this address belongs to another account"));
                    }
                    // Its owner is verifying it right now (the claim is written before the account).
                    Some(_) if now.saturating_sub(c.value.claimed_at_ms) < CLAIM_PENDING_MS => {
                        return Err(ServiceError::Conflict("this address is being verified for another account"));
                    }
                    _ => {}
                }
            }
            match store.put_email_claim(address, &claim, current.as_ref().map(|c| &c.version)).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict | StoreError::Precondition | StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::unavailable("e-mail claim stayed contended").into())
    }

    /// Counts a code mail to `address` for `user` against both budgets, stores the new code's hash
    /// (replacing any earlier one of `purpose`) and queues the mail.
    async fn send_code(
        &self,
        rules: &EmailRules,
        purpose: Purpose,
        user: &UserRecord,
        address: &str,
        now: UnixMs,
    ) -> Result<(), ServiceError> {
        let store = self.store.as_ref();
        let limits = rules.codes;
        let limited = |retry_after_ms| ServiceError::RateLimited { retry_after_ms };
        // The address's budget first: many accounts cannot flood one mailbox.
        update_code(store, &format!("address:{address}"), now, |current| {
            let sent = current.map(|c| c.sent_at_ms.as_slice()).unwrap_or_default();
            match budget(sent, now, limits.per_address_per_hour) {
                Err(ms) => CodeStep::Done(Err(limited(ms))),
                Ok(mut recent) => {
                    recent.push(now);
                    let record = CodeRecord {
                        sent_at_ms: recent,
                        expires_at_ms: now.saturating_add(HOUR_MS),
                        ..Default::default()
                    };
                    CodeStep::Write(record, Ok(()))
                }
            }
        })
        .await??;
        let code = rules.new_code()?;
        let hash = rules.hash(purpose, &user.id, &code);
        let code_expires = now.saturating_add(limits.lifetime_ms);
        update_code(store, &purpose.key(&user.id), now, |current| {
            let sent = current.map(|c| c.sent_at_ms.as_slice()).unwrap_or_default();
            match budget(sent, now, limits.per_hour) {
                Err(ms) => CodeStep::Done(Err(limited(ms))),
                Ok(mut recent) => {
                    recent.push(now);
                    let record = CodeRecord {
                        code_hash: Some(hash.clone()),
                        address: Some(address.to_string()),
                        code_expires_at_ms: code_expires,
                        failures: 0,
                        sent_at_ms: recent,
                        expires_at_ms: code_expires.max(now.saturating_add(HOUR_MS)),
                    };
                    CodeStep::Write(record, Ok(()))
                }
            }
        })
        .await??;
        let message = match purpose {
            Purpose::Verify => Message::VerifyAddress { code },
            Purpose::Reset => Message::ResetPassword { code },
        };
        if rules.mailer.send(address, &user.username, &message) != Queued::Yes {
            tracing::warn!(user_id = %user.id, kind = message.kind(), "code mail not queued");
        }
        Ok(())
    }

    /// Checks `code` against the outstanding code of `purpose` for `user_id`: a wrong one counts a
    /// failure (the code is void after the last allowed); a right one is used up when `consume`.
    async fn use_code(
        &self,
        rules: &EmailRules,
        purpose: Purpose,
        user_id: &str,
        code: &str,
        now: UnixMs,
        consume: bool,
    ) -> Result<Checked, ServiceError> {
        let hash = rules.hash(purpose, user_id, code);
        let attempts = rules.codes.attempts;
        update_code(self.store.as_ref(), &purpose.key(user_id), now, |current| {
            let Some(record) = current else { return CodeStep::Done(Checked::Refused) };
            let Some(expected) = record.code_hash.as_deref().filter(|_| record.code_expires_at_ms > now) else {
                return CodeStep::Done(Checked::Refused);
            };
            let mut next = record.clone();
            if bool::from(expected.as_bytes().ct_eq(hash.as_bytes())) {
                let address = record.address.clone().unwrap_or_default();
                if !consume {
                    return CodeStep::Done(Checked::Right(address));
                }
                next.code_hash = None;
                return CodeStep::Write(next, Checked::Right(address));
            }
            next.failures = next.failures.saturating_add(1);
            if next.failures >= attempts {
                next.code_hash = None;
            }
            CodeStep::Write(next, Checked::Refused)
        })
        .await
    }

    /// The account a recovery request names, when it is enabled and has a verified address (and,
    /// by address, the address is that account's verified one).
    async fn recovery_account(&self, who: &Who) -> Result<Option<(UserRecord, String)>, ServiceError> {
        let store = self.store.as_ref();
        let user = match who {
            Who::Username(name) => users::find_user(store, name).await?,
            Who::Email(raw) => {
                let Ok(address) = normalise(raw) else { return Ok(None) };
                match store.get_email_claim(&address).await? {
                    None => None,
                    Some(claim) => store
                        .get_account(&claim.value.owner_key)
                        .await?
                        .and_then(|a| a.value.user)
                        .filter(|u| u.id == claim.value.owner_id && verified_address(u) == Some(address.as_str())),
                }
            }
        };
        Ok(user.filter(|u| !u.disabled).and_then(|u| verified_address(&u).map(str::to_string).map(|a| (u, a))))
    }

    /// `POST /api/password/forgot`: starts [`AccountService::request_password_reset`] in the
    /// background and returns at once, so the answer is the same, in content and time, for every
    /// account. When too many are running, the request is dropped and logged.
    pub fn forgot_password(&self, who: Who) -> Result<(), ServiceError> {
        let rules = self.email_rules()?;
        match rules.recovery.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = service.request_password_reset(&who).await {
                        tracing::warn!(error = %e, "password reset request failed");
                    }
                    drop(permit);
                });
            }
            Err(_) => tracing::warn!("too many password reset requests at once: one dropped"),
        }
        Ok(())
    }

    /// Sends a reset code to the verified address of the account `who` names, if there is one;
    /// `Ok(false)` when nothing was sent (no such account, none verified, or a budget used up).
    pub async fn request_password_reset(&self, who: &Who) -> Result<bool, ServiceError> {
        let rules = self.email_rules()?;
        let Some((user, address)) = self.recovery_account(who).await? else {
            tracing::info!("password reset asked for an account without a verified address; nothing sent");
            return Ok(false);
        };
        let now = self.clock.now_ms();
        match self.send_code(rules, Purpose::Reset, &user, &address, now).await {
            Ok(()) => {
                tracing::info!(user_id = %user.id, "password reset code sent");
                Ok(true)
            }
            Err(ServiceError::RateLimited { .. }) => {
                tracing::warn!(user_id = %user.id, "password reset code not sent: the hourly budget is used up");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /api/password/reset`: sets a new password with the reset code (and, for an account
    /// with a second factor, a current code of it or a recovery code); every session ends. Returns
    /// how many.
    pub async fn reset_password(
        &self,
        who: &Who,
        typed: &str,
        new: &Password,
        factor: Option<SecondFactor<'_>>,
        client: Option<&str>,
    ) -> Result<u64, ServiceError> {
        let rules = self.email_rules()?;
        let code = rules.parse_code(typed)?;
        let refused = || ServiceError::InvalidGrant(GrantFailure::EmailCode);
        let Some((user, address)) = self.recovery_account(who).await? else { return Err(refused()) };
        let now = self.clock.now_ms();
        // The code is checked first: without it, every account answers `invalid_grant` alike
        // (a password or factor answer would tell which accounts have a verified address). With
        // it, a weak password or a missing factor is answered and the code kept for the retry.
        let policy = self.check_password(new, &user.username, PasswordCheck::Policy);
        let needs_factor = user.factors.any_active();
        let missing_factor = needs_factor && factor.is_none();
        let consume = policy.is_ok() && !missing_factor;
        match self.use_code(rules, Purpose::Reset, &user.id, &code, now, consume).await? {
            Checked::Right(sent_to) if sent_to == address => {}
            _ => return Err(refused()),
        }
        policy?;
        if missing_factor {
            return Err(ServiceError::InvalidRequest(
                "this account has a second factor: send `otp` (a current code of the authenticator app) or \
                 `recovery_code` with the reset code",
            ));
        }
        let hash = match self.hasher.hash(new).await {
            Ok(hash) => hash,
            Err(HashError::Busy(why)) => return Err(ServiceError::Busy(why)),
            Err(e @ HashError::Failed(_)) => return Err(hash_error(e)),
        };
        let changed = match factor.filter(|_| needs_factor) {
            Some(factor) => {
                let origin = Origin { address: client, device_token: None };
                self.check_factor(&user.username, &user.id, factor, origin, false, |u, _| {
                    u.password_hash.clone_from(&hash);
                })
                .await?
            }
            None => {
                let key = users::username_key(&user.username).map_err(|_| refused())?;
                let (key, current) = users::read_account(self.store.as_ref(), &key, &user.username).await?;
                let (changed, _) = update_account(self.store.as_ref(), &key, current, |current| {
                    let Some(mut next) = current.cloned() else { return Step::Done(None) };
                    let Some(u) = next.user.as_mut().filter(|u| u.id == user.id && !u.disabled) else {
                        return Step::Done(None);
                    };
                    u.password_hash.clone_from(&hash);
                    let after = u.clone();
                    users::lockout::unlock(&mut next);
                    Step::Write(next, Some(after))
                })
                .await?;
                changed.ok_or_else(refused)?
            }
        };
        let ended = self.end_sessions(&changed.id, Reason::PasswordReset).await?;
        self.notify(&changed, Notice::PasswordChanged);
        tracing::info!(user_id = %changed.id, ended, "password reset by e-mail code; every session ended");
        Ok(ended)
    }

    /// Sets `username`'s address as an admin or the operator does (`verified`: without a code; it
    /// must then belong to no other account), or removes it (`None`).
    pub(super) async fn admin_email(
        &self,
        user: &UserRecord,
        address: Option<&str>,
        verified: bool,
    ) -> Result<Option<EmailAddress>, ServiceError> {
        let Some(raw) = address else { return Ok(None) };
        let address = normalise(raw)?;
        if verified {
            self.claim_address(&address, user, self.clock.now_ms()).await?;
        }
        Ok(Some(EmailAddress { address, verified }))
    }

    /// After sign-up with an address: a verification code to it (a budget used up is logged; the
    /// account stays).
    pub(super) async fn verify_new_address(&self, user: &UserRecord) {
        let (Ok(rules), Some(email)) = (self.email_rules(), user.email.as_ref()) else { return };
        if let Err(e) = self.send_code(rules, Purpose::Verify, user, &email.address, self.clock.now_ms()).await {
            tracing::warn!(user_id = %user.id, error = %e, "no verification code sent after sign-up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::settings::Hashing;
    use crate::store::Account;
    use crate::store::testing::Contended;

    /// Writes user `name` (id `id-<name>`) with `email`.
    async fn put_user(store: &dyn Store, name: &str, email: Option<EmailAddress>) -> UserRecord {
        let user = UserRecord {
            id: format!("id-{name}"),
            username: name.into(),
            username_key: name.into(),
            password_hash: String::new(),
            roles: vec![],
            disabled: false,
            created_at_ms: 0,
            identities: vec![],
            factors: Default::default(),
            email,
        };
        let current = store.get_account(name).await.unwrap();
        let mut account = current.as_ref().map_or_else(|| Account::empty(name), |a| a.value.clone());
        account.user = Some(user.clone());
        store.put_account(&account, current.as_ref().map(|a| &a.version)).await.unwrap();
        user
    }

    #[tokio::test]
    async fn a_claim_is_refused_while_its_owner_holds_or_is_verifying_the_address_and_taken_over_after() {
        let store: Arc<dyn Store> = Arc::new(Contended::new(0));
        let clock = ManualClock::new(1_000_000);
        let hasher =
            crate::users::PasswordHasher::start(&Hashing { workers: 1, queue_length: 4, queue_timeout_ms: 1_000 })
                .unwrap();
        let accounts = AccountService::new(store.clone(), hasher, Arc::new(clock.clone()), 8);
        let x = "x@example.com";
        let unverified = Some(EmailAddress { address: x.into(), verified: false });
        let ann = put_user(store.as_ref(), "ann", unverified.clone()).await;
        let bob = put_user(store.as_ref(), "bob", unverified).await;
        let now = clock.now_ms();
        accounts.claim_address(x, &ann, now).await.unwrap();
        // Ann is verifying (her account does not say so yet): Bob waits.
        let r = accounts.claim_address(x, &bob, now + 1_000).await;
        assert!(matches!(r, Err(ServiceError::Conflict(_))), "{r:?}");
        // Ann never finished: after the pending time the claim is Bob's.
        accounts.claim_address(x, &bob, now + CLAIM_PENDING_MS).await.unwrap();
        assert_eq!(store.get_email_claim(x).await.unwrap().unwrap().value.owner_id, "id-bob");
        // Bob's account says verified: Ann is refused however late.
        let bob = put_user(store.as_ref(), "bob", Some(EmailAddress { address: x.into(), verified: true })).await;
        let r = accounts.claim_address(x, &ann, now + 10 * CLAIM_PENDING_MS).await;
        assert!(matches!(r, Err(ServiceError::Conflict(_))), "{r:?}");
        // Bob moves to another address: the claim is free at once.
        put_user(store.as_ref(), "bob", Some(EmailAddress { address: "b@example.com".into(), verified: false })).await;
        accounts.claim_address(x, &ann, now + 10 * CLAIM_PENDING_MS + 1).await.unwrap();
        // A claim by its owner again is a write too (a racing takeover at the old version loses).
        let before = store.get_email_claim(x).await.unwrap().unwrap();
        accounts.claim_address(x, &ann, now + 11 * CLAIM_PENDING_MS).await.unwrap();
        let after = store.get_email_claim(x).await.unwrap().unwrap();
        assert_ne!(before.version, after.version);
        let stale = EmailClaim { owner_key: "bob".into(), owner_id: bob.id.clone(), claimed_at_ms: 0 };
        assert!(matches!(store.put_email_claim(x, &stale, Some(&before.version)).await, Err(StoreError::Precondition)));
    }

    #[test]
    fn addresses_are_normalised_and_odd_ones_refused() {
        assert_eq!(normalise("  Eve.Smith+tag@Example.COM ").unwrap(), "eve.smith+tag@example.com");
        assert_eq!(normalise("eve@bücher.example").unwrap(), "eve@xn--bcher-kva.example");
        for bad in [
            "",
            "eve",
            "@example.com",
            "eve@",
            "eve@localhost",
            "eve@[127.0.0.1]",
            "eve@127.0.0.1",
            "\"eve\"@example.com",
            "Eve <eve@example.com>",
            "ève@example.com",
            "eve..x@example.com",
            ".eve@example.com",
            "eve@-example.com",
            "eve@exa mple.com",
            "eve@example.com\r\nBcc: x@y.z",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(normalise(&long).is_err());
        let labels = ["b".repeat(50), "c".repeat(50), "d".repeat(50), "e".repeat(50)];
        let longest = format!("{}@{}.com", "a".repeat(64), labels.join("."));
        assert!(normalise(&longest).is_err(), "over 254 in all");
    }

    #[test]
    fn budgets_count_the_last_hour_only() {
        assert_eq!(budget(&[], 10, 1), Ok(vec![]));
        assert_eq!(budget(&[0], HOUR_MS, 1), Ok(vec![]), "an hour old no longer counts");
        assert_eq!(budget(&[100, 200], 1_000, 2), Err(HOUR_MS + 100 - 1_000));
        assert_eq!(budget(&[100, 200], 1_000, 3), Ok(vec![100, 200]));
    }

    #[test]
    fn codes_have_the_configured_digits_and_hashes_bind_purpose_and_user() {
        let codes = CodeRules { length: 8, lifetime_ms: 1, attempts: 1, per_hour: 1, per_address_per_hour: 1 };
        let rules = EmailRules::new(Mailer::off(), [7; 32], codes);
        let code = rules.new_code().unwrap();
        assert!(code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(rules.parse_code("1234 5678").unwrap(), "12345678");
        assert!(rules.parse_code("1234567").is_err() && rules.parse_code("1234567a").is_err());
        let h = rules.hash(Purpose::Reset, "u1", "12345678");
        assert_ne!(h, rules.hash(Purpose::Verify, "u1", "12345678"));
        assert_ne!(h, rules.hash(Purpose::Reset, "u2", "12345678"));
        assert_eq!(h.len(), 64);
    }
}
