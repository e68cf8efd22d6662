//! The service on the in-memory embedded store as a process of its own, with one user, for the
//! benchmark (`examples/load.rs`): an in-memory store lives and dies with its process, so the `user`
//! command of another process cannot reach it. Settings come from the environment as for `handler`
//! (`JwtRefreshToken__Embedded__Path` is forced to `:memory:`); the users are the comma-separated
//! `BENCH_USERS`, each with the password `BENCH_PASSWORD`.
//!
//! `BENCH_USERS=bench0,bench1 BENCH_PASSWORD=… FUNCTIONS_CUSTOMHANDLER_PORT=… target/release/examples/memory_server`
// Test and benchmark code fails by unwrap, expect, panic and indexing; Cargo.toml's `[lints]`
// denies them in the service only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use jwt_refresh_token::accounts::{Actor, PasswordCheck};
use jwt_refresh_token::clock::SystemClock;
use jwt_refresh_token::http::{Api, server};
use jwt_refresh_token::secret::Password;
use jwt_refresh_token::settings::names::EMBEDDED_PATH;
use jwt_refresh_token::settings::{Env, Mode, Settings};
use jwt_refresh_token::startup::{build_services, shutdown_signal};
use jwt_refresh_token::store::embedded::{EmbeddedStore, MEMORY};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut env = Env::from_process();
    env.set(EMBEDDED_PATH, MEMORY);
    let settings = Settings::load(&env, Mode::Production)?;
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(MEMORY))?);
    let names = std::env::var("BENCH_USERS")?;
    let password = Password::new(std::env::var("BENCH_PASSWORD")?);
    let services = build_services(&settings, store, Arc::new(SystemClock))?;
    for name in names.split(',').filter(|n| !n.is_empty()) {
        // The benchmark's own fixture password: its strength is not what is measured.
        services.accounts.create_user(Actor::Operator, name, &password, &[], PasswordCheck::AllowWeak).await?;
    }
    let api = Api::new(services.tokens, settings.cors.clone()).with_accounts(services.accounts);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    server::serve(listener, api, settings.http, shutdown_signal()).await;
    Ok(())
}
