//! Second factors: a TOTP authenticator (RFC 6238 over RFC 4226, SHA-1, 6 digits, 30 s steps, one
//! step of skew either way) and ten one-time recovery codes.
//!
//! - Enrolment (`POST /api/mfa/totp`) keeps a *pending* authenticator: its secret sealed at rest
//!   (AES-256-GCM, a key of its own derived from the rotation secret, the user id as associated
//!   data). Logins do not need it until a code confirms it (`POST /api/mfa/totp/verify`), which
//!   answers the recovery codes — shown once, kept only as keyed hashes.
//! - A code is accepted at most once: its time step must be later than the last one accepted
//!   (RFC 6238 §5.2), written by compare-and-swap, so a code replayed on any instance is refused.
//! - Every code check goes through the login lockout: wrong codes count with wrong passwords, per
//!   device and address, and a locked username checks no code.
//! - Removing the authenticator (`DELETE /api/mfa/totp`) takes a current code or a recovery code;
//!   an admin reset (`PATCH /api/users/{name}` `reset_mfa`, `handler user reset-mfa`) removes every
//!   factor and ends the user's sessions.

use std::sync::Arc;

use hmac::{KeyInit as _, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, Builder, Totp};

use super::{AccountService, Actor, Changed, Reason, UserInfo, username_error};
use crate::mail::Notice;
use crate::service::{Caller, GrantFailure, ServiceError};
use crate::store::{Account, Factors, Step, TotpFactor, UserRecord, Versioned, update_account};
use crate::tokens::mfa::{FirstStep, MfaClaims};
use crate::tokens::sealed::Sealer;
use crate::users::lockout::{Attempt, Check, Origin};
use crate::users::{self, Principal};

/// Recovery codes handed out per confirmation.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (no 0/o, 1/l/i): 31 symbols.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// Symbols per recovery code (10 × log2(31) ≈ 50 bits), shown as `xxxxx-xxxxx`.
const RECOVERY_LEN: usize = 10;
/// Bytes of a TOTP secret (RFC 4226 §4 recommends 160 bits).
const SECRET_BYTES: usize = 20;
/// The time step (RFC 6238 §5.2).
const STEP_SECONDS: u64 = 30;
/// Longest code accepted (a recovery code with its dash; a TOTP code is 6 digits).
pub const MAX_CODE_LEN: usize = 32;
/// The label of the key sealing TOTP secrets.
pub const SEAL_LABEL: &[u8] = b"jwt-refresh-token/totp-secret/v1";
/// The label of the key hashing recovery codes.
pub const RECOVERY_LABEL: &[u8] = b"jwt-refresh-token/recovery-code/v1";

/// The keys and names the factors need.
#[derive(Debug, Clone)]
pub struct FactorKeys {
    /// Seals TOTP secrets.
    pub sealer: Arc<Sealer>,
    /// Keys the recovery-code hashes.
    pub recovery_key: [u8; 32],
    /// The `issuer` authenticator apps show next to the account.
    pub issuer: String,
}

/// A new, pending TOTP authenticator, for the user to add to their app.
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (RFC 4648), for typing in.
    pub secret: String,
    /// The `otpauth://totp/…` URI authenticator apps read.
    pub otpauth_uri: String,
    /// That URI as a QR code (SVG).
    pub qr_svg: String,
}

/// The state of the caller's factors (`GET /api/mfa`).
#[derive(Debug, Clone, Serialize)]
pub struct FactorState {
    /// A confirmed authenticator is required at login.
    pub totp: bool,
    /// An authenticator waits for its first code.
    pub totp_pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: usize,
}

/// The second step of a login.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A code of the authenticator.
    Otp(&'a str),
    /// One of the recovery codes.
    RecoveryCode(&'a str),
}

impl SecondFactor<'_> {
    /// The `amr` of a login whose first step was `first` and second this (RFC 8176).
    pub fn amr(self, first: FirstStep) -> Vec<&'static str> {
        match self {
            Self::Otp(_) => vec![first.amr(), "otp", "mfa"],
            Self::RecoveryCode(_) => vec![first.amr(), "mfa"],
        }
    }
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, ServiceError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| ServiceError::Internal(format!("TOTP parameters refused: {e}")))
}

fn random<const N: usize>() -> Result<[u8; N], ServiceError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| ServiceError::Internal("OS random number generator failed".into()))?;
    Ok(out)
}

/// Normalises a recovery code as typed: lowercase, without spaces and dashes.
fn normalise_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// The QR code of `uri` as SVG.
fn qr_svg(uri: &str) -> Result<String, ServiceError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| ServiceError::Internal(format!("QR code: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
}

impl FactorKeys {
    fn recovery_hash(&self, user_id: &str, code: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.recovery_key)
            .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default()));
        mac.update(user_id.as_bytes());
        mac.update(b"\0");
        mac.update(normalise_code(code).as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Ten fresh codes for `user_id`: what the user sees, and what is kept.
    pub(super) fn recovery_codes_for(&self, user_id: &str) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        self.recovery_codes(user_id)
    }

    fn recovery_codes(&self, user_id: &str) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        let mut shown = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let bytes = random::<RECOVERY_LEN>()?;
            // Rejection sampling keeps the symbols uniform: bytes ≥ 248 (8 × 31) are drawn again.
            let mut code = String::with_capacity(RECOVERY_LEN + 1);
            for (i, b) in bytes.iter().enumerate() {
                let mut b = *b;
                while usize::from(b) >= RECOVERY_ALPHABET.len() * 8 {
                    let [fresh] = random::<1>()?;
                    b = fresh;
                }
                if i == RECOVERY_LEN / 2 {
                    code.push('-');
                }
                let symbol = RECOVERY_ALPHABET.get(usize::from(b) % RECOVERY_ALPHABET.len()).copied().unwrap_or(b'2');
                code.push(char::from(symbol));
            }
            shown.push(code);
        }
        let kept = shown.iter().map(|c| self.recovery_hash(user_id, c)).collect();
        Ok((shown, kept))
    }
}

/// What a checked code matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Matched {
    /// The authenticator's code of this time step.
    Step(u64),
    /// This recovery code (its keyed hash).
    Recovery(String),
}

impl AccountService {
    fn keys(&self) -> Result<&FactorKeys, ServiceError> {
        self.factor_keys.as_ref().ok_or(ServiceError::NotAvailable("second factors are not enabled"))
    }

    /// The caller's current account (one read), refused when the user is disabled.
    pub(super) async fn caller_account(
        &self,
        caller: &Caller,
    ) -> Result<(UserRecord, Versioned<Account>), ServiceError> {
        let (user, account) = self.my_account(caller).await?;
        if user.disabled {
            return Err(ServiceError::InvalidGrant(GrantFailure::BadCredentials));
        }
        Ok((user, account))
    }

    /// The caller's factors (`GET /api/mfa`).
    pub async fn factor_state(&self, caller: &Caller) -> Result<FactorState, ServiceError> {
        let (user, _) = self.caller_account(caller).await?;
        let totp = user.factors.totp.as_ref();
        Ok(FactorState {
            totp: totp.is_some_and(|t| t.active),
            totp_pending: totp.is_some_and(|t| !t.active),
            recovery_codes_left: user.factors.recovery_codes.len(),
        })
    }

    /// Starts a TOTP enrolment for the caller (`POST /api/mfa/totp`): a new pending
    /// authenticator, replacing a pending one; [`ServiceError::Conflict`] while one is active.
    pub async fn enrol_totp(&self, caller: &Caller) -> Result<TotpEnrolment, ServiceError> {
        let keys = self.keys()?;
        let (user, account) = self.caller_account(caller).await?;
        if user.factors.totp.as_ref().is_some_and(|t| t.active) {
            return Err(ServiceError::Conflict("an authenticator is already active; remove it first"));
        }
        let secret = random::<SECRET_BYTES>()?;
        let sealed = keys.sealer.seal(&secret, &user.id).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let code = totp(&secret, &keys.issuer, &user.username)?;
        let uri = code.to_url().map_err(|e| ServiceError::Internal(format!("otpauth URI: {e}")))?;
        let now = self.clock.now_ms();
        let pending = TotpFactor { sealed_secret: sealed, active: false, last_step: 0, enrolled_at_ms: now };
        let key = account.value.username_key.clone();
        let (written, _) = update_account(self.store.as_ref(), &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(false) };
            let Some(u) =
                next.user.as_mut().filter(|u| u.id == user.id && !u.factors.totp.as_ref().is_some_and(|t| t.active))
            else {
                return Step::Done(false);
            };
            u.factors.totp = Some(pending.clone());
            Step::Write(next, true)
        })
        .await?;
        if !written {
            return Err(ServiceError::Conflict("the account changed meanwhile; try again"));
        }
        tracing::info!("TOTP enrolment started");
        let qr_svg = qr_svg(&uri)?;
        Ok(TotpEnrolment { secret: totp_rs::Secret::from(secret.to_vec()).to_base32(), otpauth_uri: uri, qr_svg })
    }

    /// Checks `factor` for `username` through the lockout (wrong codes count as failed logins
    /// from `origin`), and on success records its use by compare-and-swap (a step, or a recovery
    /// code, is accepted once); `pending`: check the authenticator awaiting confirmation.
    pub(super) async fn check_factor(
        &self,
        username: &str,
        user_id: &str,
        factor: SecondFactor<'_>,
        origin: Origin<'_>,
        pending: bool,
        apply: impl Fn(&mut UserRecord, &Matched),
    ) -> Result<UserRecord, ServiceError> {
        let keys = self.keys()?;
        let lockout = self.lockout.as_ref().ok_or(ServiceError::NotAvailable("second factors are not enabled"))?;
        let now = self.clock.now_ms();
        let time = u64::try_from(now.div_euclid(1000)).unwrap_or(0);
        let store = self.store.as_ref();
        let attempt = lockout.attempt(store, username, origin, now, |user| async move {
            let Some(user) = user.filter(|u| u.id == user_id && !u.disabled) else { return Ok(Check::Failed) };
            let matched = match factor {
                SecondFactor::Otp(code) => {
                    let Some(t) = user.factors.totp.as_ref().filter(|t| t.active != pending) else {
                        return Ok(Check::Failed);
                    };
                    let Ok(secret) = keys.sealer.open(&t.sealed_secret, &user.id) else {
                        tracing::error!("a TOTP secret does not open: was the rotation secret changed?");
                        return Ok(Check::Failed);
                    };
                    let Ok(generator) = totp(secret.expose(), &keys.issuer, &user.username) else {
                        return Ok(Check::Failed);
                    };
                    let digits_only = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
                    match generator.check(code, time).filter(|step| digits_only && *step > t.last_step) {
                        Some(step) => Matched::Step(step),
                        None => return Ok(Check::Failed),
                    }
                }
                SecondFactor::RecoveryCode(code) => {
                    let hash = keys.recovery_hash(&user.id, code);
                    let found =
                        user.factors.recovery_codes.iter().any(|h| bool::from(h.as_bytes().ct_eq(hash.as_bytes())));
                    if pending || !found {
                        return Ok(Check::Failed);
                    }
                    Matched::Recovery(hash)
                }
            };
            Ok(Check::Passed(matched))
        });
        let (matched, key, account) = match attempt.await? {
            Attempt::Passed { outcome, key, account } => (outcome, key, account),
            Attempt::Failed => return Err(ServiceError::InvalidGrant(GrantFailure::SecondFactor)),
            Attempt::Locked { retry_after_ms } => return Err(ServiceError::Locked { retry_after_ms }),
            Attempt::Unchecked(why) => return Err(ServiceError::Busy(why)),
        };
        // Record the use: a step later than the last one, or a code still unused — else someone
        // used the same code meanwhile (on any instance) and this use is refused.
        let (changed, _) = update_account(store, &key, account, |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(None) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user_id && !u.disabled) else {
                return Step::Done(None);
            };
            let fresh = match &matched {
                Matched::Step(step) => u.factors.totp.as_ref().is_some_and(|t| *step > t.last_step),
                Matched::Recovery(hash) => u.factors.recovery_codes.contains(hash),
            };
            if !fresh {
                return Step::Done(None);
            }
            match &matched {
                Matched::Step(step) => {
                    if let Some(t) = u.factors.totp.as_mut() {
                        t.last_step = *step;
                    }
                }
                Matched::Recovery(hash) => u.factors.recovery_codes.retain(|h| h != hash),
            }
            apply(u, &matched);
            let user = u.clone();
            Step::Write(next, Some(user))
        })
        .await?;
        changed.ok_or(ServiceError::InvalidGrant(GrantFailure::SecondFactor))
    }

    /// Confirms the caller's pending authenticator with a code of it (`POST /api/mfa/totp/verify`):
    /// logins need it from now on. Answers the recovery codes, shown this once.
    pub async fn confirm_totp(
        &self,
        caller: &Caller,
        code: &str,
        address: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        let keys = self.keys()?;
        let (shown, kept) = keys.recovery_codes(&caller.claims.sub)?;
        let origin = Origin { address, device_token: None };
        let user = self
            .check_factor(&caller.username, &caller.claims.sub, SecondFactor::Otp(code), origin, true, |u, _| {
                if let Some(t) = u.factors.totp.as_mut() {
                    t.active = true;
                }
                // New codes for a new factor (a passkey holder's old ones are replaced too).
                u.factors.recovery_codes.clone_from(&kept);
            })
            .await?;
        self.notify(&user, Notice::FactorAdded { what: "An authenticator app".into() });
        tracing::info!("TOTP authenticator confirmed");
        Ok(shown)
    }

    /// Removes the caller's authenticator (`DELETE /api/mfa/totp`), with a current code or a
    /// recovery code; the recovery codes go too unless a passkey remains.
    pub async fn remove_totp(
        &self,
        caller: &Caller,
        factor: SecondFactor<'_>,
        address: Option<&str>,
    ) -> Result<(), ServiceError> {
        let (user, _) = self.caller_account(caller).await?;
        if !user.factors.totp.as_ref().is_some_and(|t| t.active) {
            return Err(ServiceError::NotFound("no authenticator is active"));
        }
        let origin = Origin { address, device_token: None };
        let user = self
            .check_factor(&caller.username, &caller.claims.sub, factor, origin, false, |u, _| {
                u.factors.totp = None;
                // The recovery codes stay while a passkey is a second factor still.
                if u.factors.passkeys.is_empty() {
                    u.factors.recovery_codes.clear();
                }
            })
            .await?;
        self.notify(&user, Notice::FactorRemoved { what: "The authenticator app".into() });
        tracing::info!("TOTP authenticator removed");
        Ok(())
    }

    /// The second step of a login (the mfa-otp grant): the user of `claims` (whose first step
    /// passed, against the password they still have) passes `factor`; a wrong code counts in
    /// the lockout of `origin` (its address, and its device when it presents a device token). The caller starts the
    /// session with [`SecondFactor::amr`].
    pub async fn second_step(
        &self,
        claims: &MfaClaims,
        factor: SecondFactor<'_>,
        origin: Origin<'_>,
    ) -> Result<Principal, ServiceError> {
        let fingerprint = claims.password_fingerprint.clone();
        let user = self.check_factor(&claims.username, &claims.user_id, factor, origin, false, |_, _| {}).await?;
        // The first step was checked against the password the user had then.
        if claims.first_step == FirstStep::Password && users::password_fingerprint(&user.password_hash) != fingerprint {
            return Err(ServiceError::InvalidGrant(GrantFailure::MfaToken("the password changed since; log in again")));
        }
        Ok(Principal::from(&user))
    }

    /// Removes every second factor of `username` and ends their sessions (`PATCH /api/users/{name}`
    /// `reset_mfa`, `handler user reset-mfa`).
    pub async fn reset_factors(&self, actor: Actor<'_>, username: &str) -> Result<Changed, ServiceError> {
        self.authorize(actor).await?;
        users::username_key(username).map_err(username_error)?;
        let user = self
            .update_user(username, |a| {
                if let Some(u) = a.user.as_mut() {
                    u.factors = Factors::default();
                }
            })
            .await?;
        let sessions_ended = self.end_sessions(&user.id, Reason::FactorsReset).await?;
        self.notify(&user, Notice::FactorsReset);
        tracing::info!(changed = %user.id, ended = sessions_ended, "second factors reset");
        Ok(Changed { user: UserInfo::from(&user), sessions_ended })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the SHA-1 test vectors (seed "12345678901234567890", 8 digits there;
    /// the 6-digit codes are their last six digits, RFC 4226 §5.3 truncation).
    #[test]
    fn rfc_6238_sha1_vectors() {
        let seed = b"12345678901234567890";
        let vectors = [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight) in vectors {
            let t = Builder::new()
                .with_algorithm(Algorithm::SHA1)
                .with_digits(8)
                .with_skew(0)
                .with_step_duration(30)
                .with_secret(seed.to_vec())
                .with_account_name("rfc")
                .build()
                .unwrap();
            assert_eq!(t.generate(time).to_string(), eight, "8 digits at {time}");
            let six = totp(seed, "x", "rfc").unwrap();
            assert_eq!(six.generate(time).to_string(), eight[2..], "6 digits at {time}");
            assert_eq!(six.check(&eight[2..], time), Some(time / 30), "the code checks in its own step");
        }
    }

    #[test]
    fn recovery_codes_are_distinct_normalised_and_hash_per_user() {
        let keys = FactorKeys { sealer: Arc::new(Sealer::new([1; 32])), recovery_key: [2; 32], issuer: "t".into() };
        let (shown, kept) = keys.recovery_codes("u-1").unwrap();
        assert_eq!(shown.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = shown.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for (code, hash) in shown.iter().zip(&kept) {
            assert_eq!(code.len(), RECOVERY_LEN + 1);
            assert_eq!(&keys.recovery_hash("u-1", &code.to_uppercase().replace('-', " ")), hash, "typed loosely");
            assert_ne!(&keys.recovery_hash("u-2", code), hash, "another user's code does not match");
        }
    }
}
