//! Sign-in providers' identities (provider, subject) and the accounts they sign in to.
//!
//! The account is the source of truth: it lists its linked identities. An [`IdentityRecord`] per
//! identity finds the account, and is created (never blindly overwritten) *before* the account
//! lists the identity, so two first sign-ins of one person racing on any instances agree on one
//! account. A record whose account does not (yet) list the identity is a claim in progress; after
//! [`STALE_AFTER_MS`] it is abandoned and may be taken over.
//!
//! Linking is always explicit (`POST /api/identities` by a signed-in user): an identity is never
//! linked to an existing account because an e-mail address matches — that is how pre-account
//! takeover works (someone registers the victim's address first and waits).
//!
//! Every use of an ID token — sign-in or link — first records its single use ([`consume`]), so a
//! token copied off a device cannot be exchanged again while it is valid.

use std::time::Duration;

use serde::Serialize;

use super::{AccountService, NewUser, username_error};
use crate::clock::UnixMs;
use crate::federation::Verified;
use crate::service::{Caller, GrantFailure, ServiceError};
use crate::settings::RegistrationMode;
use crate::store::{
    Account, IdentityRecord, LinkedIdentity, Step, Store, StoreError, UserRecord, Versioned, update_account,
};
use crate::users::{self, Principal, profile};

/// A claim whose account does not list the identity after this long was abandoned.
pub const STALE_AFTER_MS: i64 = 60_000;
/// Most identities one account may link.
pub const MAX_IDENTITIES: usize = 16;
/// How long a sign-in waits for a racing first sign-in of the same person to finish its account.
const WAIT_FOR_CLAIM: Duration = Duration::from_millis(3_000);
const POLL: Duration = Duration::from_millis(25);

/// An identity as its owner and admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    /// The provider's name.
    pub provider: String,
    /// The provider's subject.
    pub subject: String,
    /// The e-mail address the provider gave when it was linked.
    pub email: Option<String>,
    /// Whether the provider said it verified that address.
    pub email_verified: bool,
    /// When it was linked (Unix seconds).
    pub linked_at: i64,
}

impl From<&LinkedIdentity> for IdentityInfo {
    fn from(i: &LinkedIdentity) -> Self {
        Self {
            provider: i.provider.clone(),
            subject: i.subject.clone(),
            email: i.email.clone(),
            email_verified: i.email_verified,
            linked_at: i.linked_at_ms / 1000,
        }
    }
}

/// A federated sign-in's account.
#[derive(Debug, Clone)]
pub struct FederatedAccount {
    /// Who signs in.
    pub principal: Principal,
    /// The account was created by this sign-in.
    pub created: bool,
}

/// Records the single use of a verified ID token: [`GrantFailure::IdTokenReplayed`] when it was
/// used before (its marker lives until the token expires).
pub async fn consume(store: &dyn Store, verified: &Verified, now: UnixMs) -> Result<(), ServiceError> {
    let until = verified.expires_at_ms.max(now.saturating_add(1_000));
    if store.mark_used(&verified.token_hash, now, until).await? {
        Ok(())
    } else {
        tracing::warn!(provider = %verified.provider, "ID token replayed");
        Err(ServiceError::InvalidGrant(GrantFailure::IdTokenReplayed))
    }
}

fn linked(user: &UserRecord, provider: &str, subject: &str) -> bool {
    user.identities.iter().any(|i| i.provider == provider && i.subject == subject)
}

fn link_of(verified: &Verified, now: UnixMs) -> LinkedIdentity {
    LinkedIdentity {
        provider: verified.provider.clone(),
        subject: verified.subject.clone(),
        email: verified.email.clone(),
        email_verified: verified.email_verified,
        linked_at_ms: now,
    }
}

fn principal(user: &UserRecord) -> Principal {
    Principal::from(user)
}

/// A username for a new account: the e-mail's local part or the display name, reduced to letters,
/// digits, `.`, `_` and `-`, plus a random number (the person sees and may keep it).
fn derived_username(verified: &Verified) -> String {
    let source = verified
        .email
        .as_deref()
        .filter(|_| verified.email_verified)
        .and_then(|e| e.split('@').next())
        .or(verified.name.as_deref())
        .unwrap_or(&verified.provider);
    let mut base: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(24)
        .collect::<String>()
        .trim_matches(['.', '_', '-'])
        .to_ascii_lowercase();
    if base.is_empty() {
        base.clone_from(&verified.provider);
    }
    let n: u32 = rand::random_range(1000..100_000);
    let name = format!("{base}{n}");
    if profile::check_new_username(&name).is_ok() { name } else { format!("{}{n}", verified.provider) }
}

/// What the identity record says.
enum Found {
    /// Linked to this account (it lists the identity).
    Linked(UserRecord),
    /// A claim in progress (the account does not list it yet).
    Pending,
    /// No record, an unlinked one, or an abandoned claim: free to claim at this version.
    Free(Option<Versioned<IdentityRecord>>),
}

impl AccountService {
    fn store_ref(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The caller's current account (one read): the user, and the record for a later update.
    pub(super) async fn my_account(&self, caller: &Caller) -> Result<(UserRecord, Versioned<Account>), ServiceError> {
        let gone = || ServiceError::InvalidGrant(GrantFailure::BadCredentials);
        let key = users::username_key(&caller.username).map_err(|_| gone())?;
        let (_, account) = users::read_account(self.store_ref(), &key, &caller.username).await?;
        let account = account.ok_or_else(gone)?;
        let user = account.value.user.clone().filter(|u| u.id == caller.claims.sub).ok_or_else(gone)?;
        Ok((user, account))
    }

    /// Where the identity of `verified` stands now.
    async fn find_identity(&self, provider: &str, subject: &str, now: UnixMs) -> Result<Found, ServiceError> {
        let store = self.store_ref();
        let Some(record) = store.get_identity(provider, subject).await? else { return Ok(Found::Free(None)) };
        let Some(owner_key) = record.value.owner_key.clone() else { return Ok(Found::Free(Some(record))) };
        let user = store.get_account(&owner_key).await?.and_then(|a| a.value.user);
        match user {
            Some(u) if Some(&u.id) == record.value.owner_id.as_ref() && linked(&u, provider, subject) => {
                Ok(Found::Linked(u))
            }
            _ if now.saturating_sub(record.value.claimed_at_ms) < STALE_AFTER_MS => Ok(Found::Pending),
            _ => Ok(Found::Free(Some(record))),
        }
    }

    /// Claims the identity for (`owner_key`, `owner_id`): `Ok(None)` when someone else claimed or
    /// linked it first (read again).
    async fn claim_identity(
        &self,
        verified: &Verified,
        at: Option<&Versioned<IdentityRecord>>,
        owner_key: &str,
        owner_id: &str,
        now: UnixMs,
    ) -> Result<Option<Versioned<IdentityRecord>>, ServiceError> {
        let record = IdentityRecord {
            provider: verified.provider.clone(),
            subject: verified.subject.clone(),
            owner_key: Some(owner_key.to_string()),
            owner_id: Some(owner_id.to_string()),
            claimed_at_ms: now,
        };
        match self.store_ref().put_identity(&record, at.map(|r| &r.version)).await {
            Ok(version) => Ok(Some(Versioned { value: record, version })),
            Err(StoreError::Conflict | StoreError::Precondition | StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The account a verified ID token signs in to. A linked identity signs in to its account
    /// (refused when disabled); an unknown one creates an account when sign-up is open (counted
    /// in the sign-up throttle of `client`), else [`ServiceError::AccessDenied`]. Never links to an
    /// existing account. The token must have been [`consume`]d.
    pub async fn federated_account(
        &self,
        verified: &Verified,
        client: Option<&str>,
    ) -> Result<FederatedAccount, ServiceError> {
        let started = self.clock.now_ms();
        let (provider, subject) = (verified.provider.as_str(), verified.subject.as_str());
        loop {
            let now = self.clock.now_ms();
            let free_at = match self.find_identity(provider, subject, now).await? {
                Found::Linked(user) if user.disabled => {
                    return Err(ServiceError::InvalidGrant(GrantFailure::AccountDisabled));
                }
                Found::Linked(user) => return Ok(FederatedAccount { principal: principal(&user), created: false }),
                Found::Pending => {
                    if now.saturating_sub(started) > i64::try_from(WAIT_FOR_CLAIM.as_millis()).unwrap_or(3_000) {
                        return Err(ServiceError::Busy(
                            "a first sign-in of this identity is still creating its account",
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Found::Free(at) => at,
            };
            let signup = match &self.signup {
                Some(signup) if signup.rules.registration == RegistrationMode::Open => signup,
                _ => {
                    return Err(ServiceError::AccessDenied(
                        "no account is linked to this identity and registration is closed; sign in another way and link it",
                    ));
                }
            };
            let id = uuid::Uuid::new_v4().to_string();
            let mut username = derived_username(verified);
            let mut key = users::username_key(&username).map_err(username_error)?;
            let Some(mut claim) = self.claim_identity(verified, free_at.as_ref(), &key, &id, now).await? else {
                continue; // Another sign-in of this identity claimed it: follow theirs.
            };
            signup.count(client, now).map_err(|retry_after_ms| ServiceError::Locked { retry_after_ms })?;
            for _ in 0..4 {
                let new = NewUser {
                    id: id.clone(),
                    password_hash: String::new(),
                    roles: Vec::new(),
                    identities: vec![link_of(verified, now)],
                    email: None,
                };
                match self.insert_new_user(&username, new, now).await {
                    Ok(user) => {
                        tracing::info!(user_id = %user.id, provider, "account created by a provider sign-in");
                        return Ok(FederatedAccount { principal: principal(&user), created: true });
                    }
                    // The derived name is taken (or looks like a taken one): another number.
                    Err(ServiceError::InvalidRequestOwned(_)) => {
                        username = derived_username(verified);
                        key = users::username_key(&username).map_err(username_error)?;
                        claim = self
                            .claim_identity(verified, Some(&claim), &key, &id, now)
                            .await?
                            .ok_or(ServiceError::Busy("the identity's claim changed while its account was made"))?;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Err(ServiceError::Busy("no free username could be derived for the new account"));
        }
    }

    /// Links the identity of a verified (and [`consume`]d) ID token to the caller's account
    /// (`POST /api/identities`). [`ServiceError::Conflict`] when it is linked to another account;
    /// linking it again to the same account changes nothing.
    pub async fn link_identity(&self, caller: &Caller, verified: &Verified) -> Result<IdentityInfo, ServiceError> {
        let now = self.clock.now_ms();
        let store = self.store_ref();
        let (me, account) = self.my_account(caller).await?;
        if me.disabled {
            return Err(ServiceError::InvalidGrant(GrantFailure::AccountDisabled));
        }
        let (provider, subject) = (verified.provider.as_str(), verified.subject.as_str());
        if let Some(existing) = me.identities.iter().find(|i| i.provider == provider && i.subject == subject) {
            return Ok(IdentityInfo::from(existing));
        }
        if me.identities.iter().any(|i| i.provider == provider) {
            return Err(ServiceError::Conflict(
                "another identity of this provider is linked to your account; unlink it first",
            ));
        }
        if me.identities.len() >= MAX_IDENTITIES {
            return Err(ServiceError::Conflict("this account has as many linked identities as it may"));
        }
        let free_at = match self.find_identity(provider, subject, now).await? {
            Found::Linked(_) | Found::Pending => {
                return Err(ServiceError::Conflict("this identity is linked to another account"));
            }
            Found::Free(at) => at,
        };
        let claim = self
            .claim_identity(verified, free_at.as_ref(), &me.username_key, &me.id, now)
            .await?
            .ok_or(ServiceError::Conflict("this identity is linked to another account"))?;
        let link = link_of(verified, now);
        let key = account.value.username_key.clone();
        let (added, _) = update_account(store, &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(false) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == me.id && !u.disabled) else {
                return Step::Done(false);
            };
            if u.identities.iter().any(|i| i.provider == link.provider) {
                return Step::Done(false);
            }
            u.identities.push(link.clone());
            Step::Write(next, true)
        })
        .await?;
        if !added {
            // Give the claim back: the account changed under us.
            let free = IdentityRecord { owner_key: None, owner_id: None, ..claim.value.clone() };
            let _ = store.put_identity(&free, Some(&claim.version)).await;
            return Err(ServiceError::Conflict("the account changed meanwhile; try again"));
        }
        tracing::info!(provider, "identity linked");
        Ok(IdentityInfo::from(&link))
    }

    /// The caller's linked identities (`GET /api/identities`).
    pub async fn identities(&self, caller: &Caller) -> Result<Vec<IdentityInfo>, ServiceError> {
        let (me, _) = self.my_account(caller).await?;
        Ok(me.identities.iter().map(IdentityInfo::from).collect())
    }

    /// Unlinks the caller's identity of `provider` (`DELETE /api/identities/{provider}`), unless it
    /// is the account's last way to sign in (no password and no other identity):
    /// [`ServiceError::Conflict`]. [`ServiceError::NotFound`] when none is linked.
    pub async fn unlink_identity(&self, caller: &Caller, provider: &str) -> Result<(), ServiceError> {
        let store = self.store_ref();
        let (me, account) = self.my_account(caller).await?;
        let provider = provider.to_ascii_lowercase();
        #[derive(PartialEq)]
        enum Outcome {
            Removed(String),
            NotLinked,
            LastWay,
        }
        let key = account.value.username_key.clone();
        let (outcome, _) = update_account(store, &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(Outcome::NotLinked) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == me.id) else { return Step::Done(Outcome::NotLinked) };
            let Some(at) = u.identities.iter().position(|i| i.provider == provider) else {
                return Step::Done(Outcome::NotLinked);
            };
            if !u.has_password() && u.identities.len() == 1 {
                return Step::Done(Outcome::LastWay);
            }
            let removed = u.identities.remove(at);
            Step::Write(next, Outcome::Removed(removed.subject))
        })
        .await?;
        let subject = match outcome {
            Outcome::Removed(subject) => subject,
            Outcome::NotLinked => return Err(ServiceError::NotFound("no identity of that provider is linked")),
            Outcome::LastWay => {
                return Err(ServiceError::Conflict(
                    "this identity is the account's only way to sign in; set a password or link another first",
                ));
            }
        };
        // The account no longer lists it, so it no longer signs in; free the record too.
        if let Some(record) = store.get_identity(&provider, &subject).await?
            && record.value.owner_id.as_deref() == Some(me.id.as_str())
        {
            let free = IdentityRecord { owner_key: None, owner_id: None, ..record.value.clone() };
            if let Err(e) = store.put_identity(&free, Some(&record.version)).await {
                tracing::warn!(error = %e, "unlinked identity's record left claimed; the account no longer lists it");
            }
        }
        tracing::info!(provider, "identity unlinked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(email: Option<&str>, verified: bool, name: Option<&str>) -> Verified {
        Verified {
            provider: "google".into(),
            subject: "1".into(),
            email: email.map(str::to_string),
            email_verified: verified,
            name: name.map(str::to_string),
            expires_at_ms: 0,
            token_hash: String::new(),
            amr: Vec::new(),
            mfa_asserted: false,
        }
    }

    #[test]
    fn derived_usernames_are_valid_and_come_from_verified_addresses_or_names() {
        let n = derived_username(&verified(Some("Marta.K@example.com"), true, None));
        assert!(n.starts_with("marta.k") && profile::check_new_username(&n).is_ok(), "{n}");
        let n = derived_username(&verified(Some("boss@example.com"), false, Some("Zoë Ünal")));
        assert!(n.starts_with("zonal"), "an unverified address is not used: {n}");
        let n = derived_username(&verified(None, false, Some("山田")));
        assert!(n.starts_with("google") && profile::check_new_username(&n).is_ok(), "{n}");
    }
}
