//! Black-box HTTP tests: each test runs the real `handler` binary on a store of its own.

mod bearer;
mod concurrency;
mod configuration;
mod helpers;
mod host_modes;
mod jwks;
mod lockout;
mod login;
mod logs;
mod persistence;
mod requests;
mod revocation;
mod rotation;
mod users;
