//! Passkeys (WebAuthn Level 2/3 through kanidm's `webauthn-rs`): registration by a signed-in
//! user, sign-in without a password (a discoverable credential: empty `allowCredentials`), and a
//! passkey as the second factor after a password or a provider's ID token.
//!
//! Ceremony state (the challenge and what the library must check the answer against) travels
//! with the client, sealed: AES-256-GCM under a key of its own derived from the rotation secret,
//! with its kind and (registration, second factor) its user inside, five minutes to live, and a
//! single-use marker in the store when it is finished — so a ceremony works across instances and
//! its answer cannot be replayed, and the client can neither read nor alter it.
//!
//! A credential id belongs to one account: an [`IdentityRecord`] of provider `passkey` per id,
//! created before the account lists the passkey, finds the account at sign-in (the account must
//! still list the passkey). The signature counter and the backup flags are kept; a counter that
//! does not grow (for an authenticator that counts) is refused as a possible clone.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid, Webauthn,
};

use super::AccountService;
use crate::clock::UnixMs;
use crate::mail::Notice;
use crate::service::{Caller, GrantFailure, ServiceError};
use crate::store::{Account, IdentityRecord, Step, StoredPasskey, UserRecord, Versioned, update_account};
use crate::tokens::mfa::MfaClaims;
use crate::tokens::sealed::Sealer;
use crate::users::{self, Principal};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// The provider name of the records that map credential ids to accounts.
pub const PASSKEY_PROVIDER: &str = "passkey";
/// The label of the key sealing ceremony states.
pub const CEREMONY_LABEL: &[u8] = b"jwt-refresh-token/passkey-ceremony/v1";
/// How long a ceremony may take.
const CEREMONY_TTL_MS: i64 = 300_000;
/// Most passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 16;
/// Longest passkey name kept.
const MAX_NAME_CHARS: usize = 64;

/// What passkeys need: the relying party and the sealer of ceremony states.
#[derive(Clone)]
pub struct PasskeyConfig {
    /// The WebAuthn relying party (id, origins, name).
    pub webauthn: Arc<Webauthn>,
    /// Seals ceremony states.
    pub sealer: Arc<Sealer>,
}

impl std::fmt::Debug for PasskeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyConfig").finish_non_exhaustive()
    }
}

/// The first half of a ceremony: options for `navigator.credentials.create()`/`get()`, and the
/// sealed state to send back with the answer.
#[derive(Debug, Clone, Serialize)]
pub struct Ceremony {
    /// `PublicKeyCredentialCreationOptions` or `…RequestOptions` (under `publicKey`), base64url
    /// for the binary members.
    pub options: Value,
    /// The sealed ceremony state.
    pub ceremony: String,
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyInfo {
    /// The credential id (base64url): the `{id}` of `DELETE /api/passkeys/{id}`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was registered (Unix seconds).
    pub created_at: i64,
    /// When it last signed in (Unix seconds), if ever.
    pub last_used_at: Option<i64>,
    /// The signature counter last seen.
    pub counter: u32,
    /// A synced passkey (may be backed up).
    pub backup_eligible: bool,
    /// Backed up now.
    pub backup_state: bool,
}

impl From<&StoredPasskey> for PasskeyInfo {
    fn from(p: &StoredPasskey) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            created_at: p.created_at_ms / 1000,
            last_used_at: p.last_used_at_ms.map(|t| t / 1000),
            counter: p.counter,
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
        }
    }
}

/// A finished registration.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// The new passkey.
    pub passkey: PasskeyInfo,
    /// Recovery codes, when this passkey made the account's first second factor (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// A passkey sign-in: who, and the RFC 8176 `amr` of the key (`hwk` device-bound, `swk` synced).
#[derive(Debug, Clone)]
pub struct PasskeySignIn {
    /// Who signs in.
    pub principal: Principal,
    /// `hwk` or `swk`.
    pub key_amr: &'static str,
}

/// The sealed state of a ceremony.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// `register`, `login` (discoverable) or `second` (a second factor).
    k: String,
    /// The user of a registration or second factor ("" for a discoverable sign-in).
    u: String,
    /// The library's state.
    s: Value,
    /// Expiry (ms).
    e: UnixMs,
    /// Unique id (single use).
    j: String,
}

fn refused(why: &'static str) -> ServiceError {
    ServiceError::InvalidGrant(GrantFailure::Passkey(why))
}

fn internal(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("{what}: {e}"))
}

/// The WebAuthn user handle of a user: its id when it is a UUID (every id this service makes),
/// else the first 16 bytes of its SHA-256.
fn user_handle(user_id: &str) -> Uuid {
    Uuid::parse_str(user_id).unwrap_or_else(|_| {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(user_id.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        Uuid::from_bytes(bytes)
    })
}

/// The `cred` members of a serialised passkey.
fn flags(credential: &Value) -> (u32, bool, bool) {
    let cred = &credential["cred"];
    let counter = cred["counter"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(0);
    (counter, cred["backup_eligible"].as_bool().unwrap_or(false), cred["backup_state"].as_bool().unwrap_or(false))
}

impl AccountService {
    fn passkey_config(&self) -> Result<&PasskeyConfig, ServiceError> {
        self.passkeys
            .as_ref()
            .ok_or(ServiceError::NotAvailable("passkeys are not enabled (JwtRefreshToken__Passkeys__RpId)"))
    }

    fn seal_ceremony(&self, kind: &str, user: &str, state: Value) -> Result<String, ServiceError> {
        let config = self.passkey_config()?;
        let sealed = Sealed {
            k: kind.into(),
            u: user.into(),
            s: state,
            e: self.clock.now_ms().saturating_add(CEREMONY_TTL_MS),
            j: uuid::Uuid::new_v4().to_string(),
        };
        let plain = serde_json::to_vec(&sealed).map_err(|e| internal("ceremony", e))?;
        config.sealer.seal(&plain, "passkey-ceremony").map_err(|e| internal("ceremony", e))
    }

    /// Opens a ceremony of `kind` (for `user`, when given) and records its single use.
    async fn open_ceremony(&self, ceremony: &str, kind: &str, user: Option<&str>) -> Result<Value, ServiceError> {
        let config = self.passkey_config()?;
        if ceremony.len() > 32 * 1024 {
            return Err(refused("the ceremony is not one this service started"));
        }
        let plain = config
            .sealer
            .open(ceremony, "passkey-ceremony")
            .map_err(|_| refused("the ceremony is not one this service started"))?;
        let sealed: Sealed = serde_json::from_slice(plain.expose())
            .map_err(|_| refused("the ceremony is not one this service started"))?;
        let now = self.clock.now_ms();
        if sealed.k != kind || user.is_some_and(|u| u != sealed.u) {
            return Err(refused("the ceremony was started for something else"));
        }
        if now >= sealed.e {
            return Err(refused("the ceremony expired; start again"));
        }
        let marker = {
            use sha2::Digest as _;
            let d = sha2::Sha256::digest(sealed.j.as_bytes());
            format!("ceremony.{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
        };
        if !self.store.mark_used(&marker, now, sealed.e).await? {
            return Err(refused("the ceremony was finished before; start again"));
        }
        Ok(sealed.s)
    }

    /// Starts registering a passkey for the caller (`POST /api/passkeys/register/start`): the
    /// creation options ask for a discoverable credential with user verification.
    pub async fn start_passkey_registration(&self, caller: &Caller) -> Result<Ceremony, ServiceError> {
        let config = self.passkey_config()?;
        let (user, _) = self.caller_account(caller).await?;
        if user.factors.passkeys.len() >= MAX_PASSKEYS {
            return Err(ServiceError::Conflict("this account has as many passkeys as it may"));
        }
        let exclude: Vec<_> = user.factors.passkeys.iter().filter_map(|p| B64.decode(&p.id).ok()).collect();
        let (options, state) = config
            .webauthn
            .start_passkey_registration(user_handle(&user.id), &user.username, &user.username, Some(exclude))
            .map_err(|e| internal("passkey registration", e))?;
        let mut options = serde_json::to_value(&options).map_err(|e| internal("passkey options", e))?;
        // A passkey signs in without a username: the credential must be discoverable.
        if let Some(selection) = options
            .get_mut("publicKey")
            .and_then(|k| k.get_mut("authenticatorSelection"))
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        let state = serde_json::to_value(&state).map_err(|e| internal("passkey state", e))?;
        Ok(Ceremony { options, ceremony: self.seal_ceremony("register", &user.id, state)? })
    }

    /// Finishes a registration (`POST /api/passkeys/register/finish`) with the authenticator's
    /// answer. The credential id must be new to every account.
    pub async fn finish_passkey_registration(
        &self,
        caller: &Caller,
        ceremony: &str,
        credential: &Value,
        name: Option<&str>,
    ) -> Result<Registered, ServiceError> {
        let config = self.passkey_config()?;
        let (user, _) = self.caller_account(caller).await?;
        let state = self.open_ceremony(ceremony, "register", Some(&user.id)).await?;
        let state: PasskeyRegistration = serde_json::from_value(state).map_err(|e| internal("passkey state", e))?;
        let answer: RegisterPublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|_| refused("the credential is not a WebAuthn registration"))?;
        let passkey = config.webauthn.finish_passkey_registration(&answer, &state).map_err(|e| {
            tracing::info!(error = %e, "passkey registration refused");
            refused("the authenticator's answer does not verify")
        })?;
        let id = B64.encode(passkey.cred_id());
        let now = self.clock.now_ms();
        let stored_json = serde_json::to_value(&passkey).map_err(|e| internal("passkey", e))?;
        let (counter, backup_eligible, backup_state) = flags(&stored_json);
        let name: String = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("passkey")
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME_CHARS)
            .collect();
        let stored = StoredPasskey {
            id: id.clone(),
            name,
            credential: stored_json,
            counter,
            backup_eligible,
            backup_state,
            created_at_ms: now,
            last_used_at_ms: None,
        };
        // The id claims its record first: one account per credential id, on every instance.
        let record = IdentityRecord {
            provider: PASSKEY_PROVIDER.into(),
            subject: id.clone(),
            owner_key: Some(user.username_key.clone()),
            owner_id: Some(user.id.clone()),
            claimed_at_ms: now,
        };
        let store = self.store.as_ref();
        let claim = match store.get_identity(PASSKEY_PROVIDER, &id).await? {
            None => store.put_identity(&record, None).await,
            Some(found) if found.value.owner_key.is_none() => store.put_identity(&record, Some(&found.version)).await,
            Some(found) => {
                // Held by an account that no longer lists it (an admin reset, or a registration
                // that never finished a while ago) is free; else it is someone's passkey.
                let owner = match &found.value.owner_key {
                    Some(key) => store.get_account(key).await?.and_then(|a| a.value.user),
                    None => None,
                };
                let listed = owner.is_some_and(|u| u.factors.passkeys.iter().any(|p| p.id == id));
                if listed || now.saturating_sub(found.value.claimed_at_ms) < super::identities::STALE_AFTER_MS {
                    return Err(ServiceError::Conflict("this passkey is registered already"));
                }
                store.put_identity(&record, Some(&found.version)).await
            }
        };
        let claim = match claim {
            Ok(version) => version,
            Err(crate::store::StoreError::Conflict | crate::store::StoreError::Precondition) => {
                return Err(ServiceError::Conflict("this passkey is registered already"));
            }
            Err(e) => return Err(e.into()),
        };
        let keys = self.factor_keys.as_ref().ok_or(ServiceError::NotAvailable("second factors are not enabled"))?;
        let (shown, kept) = keys.recovery_codes_for(&user.id)?;
        let key = user.username_key.clone();
        let known = store.get_account(&key).await?;
        let (outcome, _) = update_account(store, &key, known, |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(None) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user.id && !u.disabled) else {
                return Step::Done(None);
            };
            if u.factors.passkeys.len() >= MAX_PASSKEYS {
                return Step::Done(None);
            }
            let first_factor = !u.factors.any_active();
            u.factors.passkeys.push(stored.clone());
            if first_factor || u.factors.recovery_codes.is_empty() {
                u.factors.recovery_codes.clone_from(&kept);
                Step::Write(next, Some(true))
            } else {
                Step::Write(next, Some(false))
            }
        })
        .await?;
        let Some(new_codes) = outcome else {
            let free = IdentityRecord { owner_key: None, owner_id: None, ..record };
            let _ = store.put_identity(&free, Some(&claim)).await;
            return Err(ServiceError::Conflict("the account changed meanwhile; try again"));
        };
        self.notify(&user, Notice::FactorAdded { what: format!("The passkey \"{}\"", stored.name) });
        tracing::info!("passkey registered");
        Ok(Registered { passkey: PasskeyInfo::from(&stored), recovery_codes: new_codes.then_some(shown) })
    }

    /// Starts a passkey sign-in (`POST /api/passkeys/login/start`): without `mfa`, a discoverable
    /// one (empty `allowCredentials`, any passkey of any account); with the claims of a login's
    /// first step, one of that user's passkeys as the second factor.
    pub async fn start_passkey_login(&self, mfa: Option<&MfaClaims>) -> Result<Ceremony, ServiceError> {
        let config = self.passkey_config()?;
        let Some(claims) = mfa else {
            let (options, state) =
                config.webauthn.start_discoverable_authentication().map_err(|e| internal("passkey sign-in", e))?;
            let mut options = serde_json::to_value(&options).map_err(|e| internal("passkey options", e))?;
            // A modal sign-in: the page asks when the person chooses to (no autofill mediation).
            if let Some(fields) = options.as_object_mut() {
                fields.remove("mediation");
            }
            let state = serde_json::to_value(&state).map_err(|e| internal("passkey state", e))?;
            return Ok(Ceremony { options, ceremony: self.seal_ceremony("login", "", state)? });
        };
        let (user, _) = self.user_by_claims(claims).await?;
        let passkeys: Vec<Passkey> =
            user.factors.passkeys.iter().filter_map(|p| serde_json::from_value(p.credential.clone()).ok()).collect();
        if passkeys.is_empty() {
            return Err(refused("this account has no passkey"));
        }
        let (options, state) =
            config.webauthn.start_passkey_authentication(&passkeys).map_err(|e| internal("passkey sign-in", e))?;
        let options = serde_json::to_value(&options).map_err(|e| internal("passkey options", e))?;
        let state = serde_json::to_value(&state).map_err(|e| internal("passkey state", e))?;
        Ok(Ceremony { options, ceremony: self.seal_ceremony("second", &user.id, state)? })
    }

    /// The user of a first step's claims, and their account as read (one read).
    async fn user_by_claims(
        &self,
        claims: &MfaClaims,
    ) -> Result<(UserRecord, Option<Versioned<Account>>), ServiceError> {
        let gone = || ServiceError::InvalidGrant(GrantFailure::BadCredentials);
        let key = users::username_key(&claims.username).map_err(|_| gone())?;
        let (_, known) = users::read_account(self.store.as_ref(), &key, &claims.username).await?;
        let user = known
            .as_ref()
            .and_then(|a| a.value.user.clone())
            .filter(|u| u.id == claims.user_id && !u.disabled)
            .ok_or_else(gone)?;
        Ok((user, known))
    }

    /// Finishes a passkey sign-in (`POST /api/passkeys/login/finish`) with the authenticator's
    /// assertion: who signs in. `mfa`: the redeemed claims of the first step, for a second factor.
    pub async fn finish_passkey_login(
        &self,
        ceremony: &str,
        credential: &Value,
        mfa: Option<&MfaClaims>,
    ) -> Result<PasskeySignIn, ServiceError> {
        let config = self.passkey_config()?;
        let answer: PublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|_| refused("the credential is not a WebAuthn assertion"))?;
        let id = B64.encode(answer.get_credential_id());
        let store = self.store.as_ref();
        let (user, result, known) = match mfa {
            None => {
                let state = self.open_ceremony(ceremony, "login", Some("")).await?;
                let state: DiscoverableAuthentication =
                    serde_json::from_value(state).map_err(|e| internal("passkey state", e))?;
                let (handle, _) = config
                    .webauthn
                    .identify_discoverable_authentication(&answer)
                    .map_err(|_| refused("the assertion names no user (not a discoverable passkey)"))?;
                let record = store
                    .get_identity(PASSKEY_PROVIDER, &id)
                    .await?
                    .ok_or(refused("this passkey is not registered"))?;
                let owner_key = record.value.owner_key.ok_or(refused("this passkey is not registered"))?;
                let known = store.get_account(&owner_key).await?;
                let user = known
                    .as_ref()
                    .and_then(|a| a.value.user.clone())
                    .filter(|u| Some(&u.id) == record.value.owner_id.as_ref() && user_handle(&u.id) == handle)
                    .ok_or(refused("this passkey is not registered"))?;
                let passkey = stored_passkey(&user, &id)?;
                let result =
                    config.webauthn.finish_discoverable_authentication_v2(&answer, state, &passkey).map_err(|e| {
                        tracing::info!(error = %e, "passkey assertion refused");
                        refused("the assertion does not verify")
                    })?;
                (user, result, known)
            }
            Some(claims) => {
                let (user, known) = self.user_by_claims(claims).await?;
                let state = self.open_ceremony(ceremony, "second", Some(&user.id)).await?;
                let state: PasskeyAuthentication =
                    serde_json::from_value(state).map_err(|e| internal("passkey state", e))?;
                let result = config.webauthn.finish_passkey_authentication(&answer, &state).map_err(|e| {
                    tracing::info!(error = %e, "passkey assertion refused");
                    refused("the assertion does not verify")
                })?;
                (user, result, known)
            }
        };
        if user.disabled {
            return Err(ServiceError::InvalidGrant(GrantFailure::AccountDisabled));
        }
        if !result.user_verified() {
            return Err(refused("the authenticator did not verify the user"));
        }
        // Record the use: counter, flags, time — by compare-and-swap; a counter that does not grow
        // (for an authenticator that counts) may be a cloned key.
        let now = self.clock.now_ms();
        let counter = result.counter();
        let (updated, _) = update_account(store, &user.username_key, known, |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(Err("gone")) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user.id && !u.disabled) else {
                return Step::Done(Err("gone"));
            };
            let Some(stored) = u.factors.passkeys.iter_mut().find(|p| p.id == id) else {
                return Step::Done(Err("gone"));
            };
            if counter != 0 && counter <= stored.counter {
                return Step::Done(Err("clone"));
            }
            let Ok(mut passkey) = serde_json::from_value::<Passkey>(stored.credential.clone()) else {
                return Step::Done(Err("gone"));
            };
            passkey.update_credential(&result);
            stored.credential = serde_json::to_value(&passkey).unwrap_or_else(|_| stored.credential.clone());
            stored.counter = counter;
            stored.backup_state = result.backup_state();
            stored.backup_eligible = result.backup_eligible();
            stored.last_used_at_ms = Some(now);
            let user = u.clone();
            Step::Write(next, Ok(user))
        })
        .await?;
        let user = match updated {
            Ok(user) => user,
            Err("clone") => {
                tracing::warn!(user_id = %user.id, "passkey counter did not grow: possibly a cloned authenticator");
                return Err(refused("the authenticator's counter went back; the passkey may be cloned"));
            }
            Err(_) => return Err(refused("this passkey is not registered")),
        };
        let key_amr = if result.backup_eligible() { "swk" } else { "hwk" };
        Ok(PasskeySignIn { principal: Principal::from(&user), key_amr })
    }

    /// The caller's passkeys (`GET /api/passkeys`).
    pub async fn passkeys(&self, caller: &Caller) -> Result<Vec<PasskeyInfo>, ServiceError> {
        let (user, _) = self.caller_account(caller).await?;
        Ok(user.factors.passkeys.iter().map(PasskeyInfo::from).collect())
    }

    /// Removes one of the caller's passkeys (`DELETE /api/passkeys/{id}`), unless it is the
    /// account's last way to sign in (no password, no linked identity, no other passkey).
    pub async fn remove_passkey(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let (user, account) = self.caller_account(caller).await?;
        let key = account.value.username_key.clone();
        #[derive(PartialEq)]
        enum Outcome {
            Removed,
            NotFound,
            LastWay,
        }
        let (outcome, _) = update_account(self.store.as_ref(), &key, Some(account), |current| {
            let Some(mut next) = current.cloned() else { return Step::Done(Outcome::NotFound) };
            let Some(u) = next.user.as_mut().filter(|u| u.id == user.id) else { return Step::Done(Outcome::NotFound) };
            let Some(at) = u.factors.passkeys.iter().position(|p| p.id == id) else {
                return Step::Done(Outcome::NotFound);
            };
            if !u.has_password() && u.identities.is_empty() && u.factors.passkeys.len() == 1 {
                return Step::Done(Outcome::LastWay);
            }
            u.factors.passkeys.remove(at);
            if !u.factors.any_active() {
                u.factors.recovery_codes.clear();
            }
            Step::Write(next, Outcome::Removed)
        })
        .await?;
        match outcome {
            Outcome::Removed => {}
            Outcome::NotFound => return Err(ServiceError::NotFound("no such passkey")),
            Outcome::LastWay => {
                return Err(ServiceError::Conflict("this passkey is the account's only way to sign in"));
            }
        }
        let store = self.store.as_ref();
        if let Some(record) = store.get_identity(PASSKEY_PROVIDER, id).await?
            && record.value.owner_id.as_deref() == Some(user.id.as_str())
        {
            let free = IdentityRecord { owner_key: None, owner_id: None, ..record.value.clone() };
            if let Err(e) = store.put_identity(&free, Some(&record.version)).await {
                tracing::warn!(error = %e, "removed passkey's record left claimed; the account no longer lists it");
            }
        }
        let name = user.factors.passkeys.iter().find(|p| p.id == id).map_or("", |p| p.name.as_str());
        self.notify(&user, Notice::FactorRemoved { what: format!("The passkey \"{name}\"") });
        tracing::info!("passkey removed");
        Ok(())
    }
}

/// The stored passkey `id` of `user`, as the library reads it.
fn stored_passkey(user: &UserRecord, id: &str) -> Result<Passkey, ServiceError> {
    let stored = user.factors.passkeys.iter().find(|p| p.id == id).ok_or(refused("this passkey is not registered"))?;
    serde_json::from_value(stored.credential.clone()).map_err(|e| internal("stored passkey", e))
}
