//! Black-box HTTP tests: each test runs the real `handler` binary on a store of its own — here the
//! embedded store; `tests/api_cosmos.rs` runs the same modules on the Cosmos store.
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

/// The store every handler in this test binary uses.
const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "../support/acs_endpoint.rs"]
mod acs_endpoint;
#[path = "../support/dpop_client.rs"]
mod dpop_client;
#[path = "../support/emulator.rs"]
mod emulator;
#[path = "../support/oidc_provider.rs"]
mod oidc_provider;
#[path = "../support/soft_authenticator.rs"]
mod soft_authenticator;

mod accounts;
mod admins;
mod bearer;
mod browser;
mod concurrency;
mod configuration;
mod discovery;
mod dpop;
mod email;
mod federation;
mod hardening;
mod helpers;
mod host_modes;
mod introspection;
mod jwks;
mod lockout;
mod lockout_owner;
mod login;
mod logs;
mod mfa;
mod passkeys;
mod persistence;
mod requests;
mod revocation;
mod rotation;
mod sessions;
mod users;
