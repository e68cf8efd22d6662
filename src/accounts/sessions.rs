//! What an account change does to the user's sessions: the one place that answers "when do
//! sessions end because of an account change?".

use crate::store::{Cas, SessionStore, StoreError, retry_cas};

/// Why an account change reaches the user's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    /// The user was disabled: every session ends at once. The flag is written before the sessions
    /// are deleted, and a login re-reads the account after writing its session (deleting it when
    /// the user is disabled): a login racing this either sees the flag, or wrote its session before
    /// the flag and so before the sweep, which ends it.
    Disabled,
    /// An operator set the password: every session ends.
    PasswordSet,
    /// The password was reset with a code mailed to the verified address: every session ends
    /// (whoever holds one may be why the owner lost the password).
    PasswordReset,
    /// An admin removed the user's second factors: every session ends (whoever holds one may be
    /// the reason for the reset).
    FactorsReset,
    /// The user changed their own password from session `kept`: every other session ends.
    PasswordChanged {
        /// The session the change was made from.
        kept: &'a str,
    },
    /// The roles changed: no session ends; each carries the new roles from its next refresh.
    RolesChanged(&'a [String]),
}

/// Applies `reason` to the sessions of `user_id`; returns how many ended.
pub(super) async fn follow(store: &dyn SessionStore, user_id: &str, reason: Reason<'_>) -> Result<u64, StoreError> {
    match reason {
        Reason::Disabled | Reason::PasswordSet | Reason::PasswordReset | Reason::FactorsReset => {
            store.delete_user_sessions(user_id, None).await
        }
        Reason::PasswordChanged { kept } => store.delete_user_sessions(user_id, Some(kept)).await,
        Reason::RolesChanged(roles) => {
            for session in store.list_user_sessions(user_id).await? {
                copy_roles(store, user_id, &session.session_id, roles).await?;
            }
            Ok(0)
        }
    }
}

/// Writes `roles` into one session with compare-and-swap (a session gone meanwhile is fine).
async fn copy_roles(
    store: &dyn SessionStore,
    user_id: &str,
    session_id: &str,
    roles: &[String],
) -> Result<(), StoreError> {
    let current = store.get_session(user_id, session_id).await?;
    retry_cas("session", current, |current| async move {
        let Some(current) = current else { return Ok(Cas::Done(())) };
        let mut session = current.value.clone();
        if session.roles == roles {
            return Ok(Cas::Done(()));
        }
        session.roles = roles.to_vec();
        match store.replace_session(&session, &current.version).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(Cas::Done(())),
            Err(StoreError::Precondition) => Ok(Cas::Retry(store.get_session(user_id, session_id).await?)),
            Err(e) => Err(e),
        }
    })
    .await
}
