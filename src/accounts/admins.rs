//! The last-admin guard: no account change may leave the directory without an enabled admin.
//!
//! Each user is its own record (its own Cosmos partition), so two changes on two admins cannot be
//! made atomic together. The [`AdminRoster`] is the one record they both change: a change that
//! could end a user's admin rights first withdraws the user from the roster by compare-and-swap —
//! refused when the roster would become empty — and only then changes the user; if the user change
//! then fails, the user is enlisted again. Two admins demoting each other at once therefore race on
//! one record: one wins, the other is refused. A change that grants admin rights (or enables an
//! admin) enlists the user after the user change, so a failure between the two leaves the roster
//! short of an admin (it refuses more, never less).
//!
//! A grant and a removal of the *same* user racing each other may leave that user listed without
//! being an admin; [`withdraw`] therefore counts only listed ids that the user listing shows as
//! enabled admins, so such a leftover never stands in for the last real admin.

use crate::store::{AdminRoster, Cas, StoreError, UserRecord, UserStore, Versioned, retry_cas};
use crate::users::ADMIN_ROLE;

/// Whether `user` counts toward the roster: enabled and holding `admin`.
pub(super) fn is_enabled_admin(user: &UserRecord) -> bool {
    !user.disabled && user.roles.iter().any(|r| r == ADMIN_ROLE)
}

/// What [`withdraw`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Withdrawn {
    /// The user was listed and is no longer.
    Removed,
    /// The user was not listed; nothing changed.
    NotListed,
    /// The user is the last admin listed; nothing changed.
    LastAdmin,
}

/// The roster as stored, built from the user listing (and written) when none exists yet: a store
/// from before the roster, or a new one.
async fn read(store: &dyn UserStore) -> Result<Versioned<AdminRoster>, StoreError> {
    retry_cas("admin roster", (), |()| async move {
        if let Some(roster) = store.get_admins().await? {
            return Ok(Cas::Done(roster));
        }
        let mut admin_ids: Vec<String> =
            store.list_users().await?.into_iter().filter(is_enabled_admin).map(|u| u.id).collect();
        admin_ids.sort();
        admin_ids.dedup();
        let value = AdminRoster { admin_ids };
        match store.put_admins(&value, None).await {
            Ok(version) => Ok(Cas::Done(Versioned { value, version })),
            // Another instance built it first: read theirs.
            Err(StoreError::Conflict) => Ok(Cas::Retry(())),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Changes the roster with `change` (which returns `None` to write nothing) by compare-and-swap.
async fn update<T>(
    store: &dyn UserStore,
    mut change: impl FnMut(&AdminRoster) -> (Option<AdminRoster>, T),
) -> Result<T, StoreError> {
    let current = read(store).await?;
    retry_cas("admin roster", current, |current| {
        let (next, outcome) = change(&current.value);
        async move {
            let Some(next) = next else { return Ok(Cas::Done(outcome)) };
            match store.put_admins(&next, Some(&current.version)).await {
                Ok(_) => Ok(Cas::Done(outcome)),
                Err(StoreError::Precondition | StoreError::NotFound | StoreError::Conflict) => {
                    Ok(Cas::Retry(read(store).await?))
                }
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// Takes `user_id` off the roster, unless no other listed id is an enabled admin now.
///
/// The other ids are checked against the user listing (one query): a grant and a removal of the
/// same user racing each other can leave that user listed without being an admin, and such a
/// leftover must not count as the admin who remains. Only `user_id` is taken off: an id listed
/// after the listing was read (a grant finishing meanwhile) is never dropped.
pub(super) async fn withdraw(store: &dyn UserStore, user_id: &str) -> Result<Withdrawn, StoreError> {
    let admins: std::collections::HashSet<String> =
        store.list_users().await?.into_iter().filter(is_enabled_admin).map(|u| u.id).collect();
    update(store, |roster| {
        if !roster.admin_ids.iter().any(|id| id == user_id) {
            return (None, Withdrawn::NotListed);
        }
        let others: Vec<String> = roster.admin_ids.iter().filter(|id| *id != user_id).cloned().collect();
        if !others.iter().any(|id| admins.contains(id)) {
            return (None, Withdrawn::LastAdmin);
        }
        (Some(AdminRoster { admin_ids: others }), Withdrawn::Removed)
    })
    .await
}

/// Puts `user_id` on the roster (nothing when already listed).
pub(super) async fn enlist(store: &dyn UserStore, user_id: &str) -> Result<(), StoreError> {
    update(store, |roster| {
        if roster.admin_ids.iter().any(|id| id == user_id) {
            return (None, ());
        }
        let mut admin_ids = roster.admin_ids.clone();
        admin_ids.push(user_id.to_string());
        admin_ids.sort();
        (Some(AdminRoster { admin_ids }), ())
    })
    .await
}
