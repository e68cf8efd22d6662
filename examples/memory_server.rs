//! The service on the in-memory embedded store as a process of its own, with one user, for the
//! benchmark (`examples/load.rs`): an in-memory store lives and dies with its process, so the `user`
//! command of another process cannot reach it. Settings come from the environment as for `handler`
//! (`JwtRefreshToken__Embedded__Path` is forced to `:memory:`); the users are the comma-separated
//! `BENCH_USERS`, each with the password `BENCH_PASSWORD`.
//!
//! `BENCH_USERS=bench0,bench1 BENCH_PASSWORD=… FUNCTIONS_CUSTOMHANDLER_PORT=… target/release/examples/memory_server`

use std::sync::Arc;

use jwt_refresh_token::clock::{Clock as _, SystemClock};
use jwt_refresh_token::http::{Api, server};
use jwt_refresh_token::secret::Password;
use jwt_refresh_token::settings::names::EMBEDDED_PATH;
use jwt_refresh_token::settings::{Env, Mode, Settings};
use jwt_refresh_token::startup::{build_service, shutdown_signal};
use jwt_refresh_token::store::embedded::{EmbeddedStore, MEMORY};
use jwt_refresh_token::users::{self, PasswordHasher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut env = Env::from_process();
    env.set(EMBEDDED_PATH, MEMORY);
    let settings = Settings::load(&env, Mode::Production)?;
    let store = Arc::new(EmbeddedStore::open(std::path::Path::new(MEMORY))?);
    let names = std::env::var("BENCH_USERS")?;
    let password = Password::new(std::env::var("BENCH_PASSWORD")?);
    let clock = Arc::new(SystemClock);
    {
        let hasher = PasswordHasher::start(&settings.hashing)?;
        for name in names.split(',').filter(|n| !n.is_empty()) {
            users::add_user(store.as_ref(), &hasher, name, &password, &[], clock.now_ms()).await?;
        }
    }
    let service = Arc::new(build_service(&settings, store, clock)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    server::serve(listener, Api::new(service, settings.cors.clone()), settings.http, shutdown_signal()).await;
    Ok(())
}
