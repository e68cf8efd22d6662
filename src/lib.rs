//! jwt-refresh-token: short-lived JWT access tokens and rotating, reuse-detecting refresh tokens,
//! served as an Azure Functions custom handler.
//!
//! Layout (ARCHITECTURE.md has the import rules): [`settings`] (typed configuration), [`service`]
//! (the token rules, every operation takes `now` from a [`clock::Clock`]), [`accounts`] (the
//! account rules and what they do to sessions), [`tokens`] (JWT and refresh-token formats),
//! [`users`] (passwords, lockout, the user-directory seam), [`store`] (the storage seam and its
//! backends), [`http`] (the only place that knows status codes), [`startup`] (bind and serve).
//! Lints are in Cargo.toml's `[lints]`.

pub mod accounts;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod epoch;
pub mod federation;
pub mod http;
pub mod keyed;
pub mod mail;
pub mod secret;
pub mod service;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod users;
