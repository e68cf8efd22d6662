//! The black-box HTTP suite of `tests/api/` again, with every handler on the Cosmos store: the
//! local Cosmos DB test peer (`emulator/`), one database per test store. Two handlers pointed at
//! the same database must behave as one (see `concurrency`).
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

/// The store every handler in this test binary uses.
const BACKEND: helpers::Backend = helpers::Backend::Cosmos;

#[path = "api/accounts.rs"]
mod accounts;
#[path = "support/acs_endpoint.rs"]
mod acs_endpoint;
#[path = "api/admins.rs"]
mod admins;
#[path = "api/bearer.rs"]
mod bearer;
#[path = "api/browser.rs"]
mod browser;
#[path = "api/concurrency.rs"]
mod concurrency;
#[path = "api/configuration.rs"]
mod configuration;
#[path = "api/discovery.rs"]
mod discovery;
#[path = "api/dpop.rs"]
mod dpop;
#[path = "support/dpop_client.rs"]
mod dpop_client;
#[path = "api/email.rs"]
mod email;
#[path = "support/emulator.rs"]
mod emulator;
#[path = "api/federation.rs"]
mod federation;
#[path = "api/hardening.rs"]
mod hardening;
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/host_modes.rs"]
mod host_modes;
#[path = "api/introspection.rs"]
mod introspection;
#[path = "api/jwks.rs"]
mod jwks;
#[path = "api/lockout.rs"]
mod lockout;
#[path = "api/lockout_owner.rs"]
mod lockout_owner;
#[path = "api/login.rs"]
mod login;
#[path = "api/logs.rs"]
mod logs;
#[path = "api/mfa.rs"]
mod mfa;
#[path = "support/oidc_provider.rs"]
mod oidc_provider;
#[path = "api/passkeys.rs"]
mod passkeys;
#[path = "api/persistence.rs"]
mod persistence;
#[path = "api/requests.rs"]
mod requests;
#[path = "api/revocation.rs"]
mod revocation;
#[path = "api/rotation.rs"]
mod rotation;
#[path = "api/sessions.rs"]
mod sessions;
#[path = "support/soft_authenticator.rs"]
mod soft_authenticator;
#[path = "api/users.rs"]
mod users;
