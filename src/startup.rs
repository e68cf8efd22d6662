//! Start-up: build the service from settings, bind, serve. Everything that can be prepared before
//! the first request is (keys parsed, store opened, schema ready); the one slow item, the dummy
//! password hash, is computed in the background so readiness is not delayed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::http::{Api, server};
use crate::service::{Policy, TokenService};
use crate::settings::{Settings, SettingsError, StoreSettings};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::tokens::access::AccessTokens;
use crate::tokens::keys::KeySet;
use crate::tokens::refresh::RefreshTokens;
use crate::users::{PasswordHasher, StoreDirectory};

/// How often expired sessions are purged from stores that do not expire records by themselves.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Opens the store the settings name; a failure names the setting that points at it.
pub fn open_store(settings: &StoreSettings) -> Result<Arc<dyn Store>, SettingsError> {
    match settings {
        StoreSettings::Embedded { path } => {
            EmbeddedStore::open(path).map(|s| Arc::new(s) as Arc<dyn Store>).map_err(|e| {
                SettingsError::new(
                    "JwtRefreshToken__Embedded__Path",
                    format!("cannot open store in {}: {e}", path.display()),
                )
            })
        }
    }
}

/// Builds the token service from validated settings.
pub fn build_service(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<TokenService, SettingsError> {
    let d = &settings.descriptor;
    let keys = KeySet::from_descriptor(d)?;
    let access = AccessTokens::new(
        keys,
        d.issuer.clone(),
        d.audience.clone(),
        settings.expires.create_expires_in_ms,
        d.clock_skew_ms,
    );
    let refresh = match &settings.rotation.secret {
        Some(secret) => RefreshTokens::new(secret.clone()),
        None => RefreshTokens::derived_from(&d.algorithm_key),
    };
    let hasher = PasswordHasher::owasp();
    let warm = Arc::clone(&hasher);
    tokio::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::warn!(error = %e, "password hasher warm-up failed");
        }
    });
    let directory = Arc::new(StoreDirectory::new(store.clone(), hasher, settings.login));
    let policy = Policy {
        session_ttl_ms: settings.expires.refresh_expires_in_ms,
        reuse_grace_ms: settings.rotation.reuse_grace_ms,
    };
    Ok(TokenService::new(store, directory, access, refresh, policy, clock))
}

/// A bound, not yet serving, application.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    api: Api,
    service: Arc<TokenService>,
}

impl Application {
    /// Validates everything, opens the store and binds 127.0.0.1:`settings.port` (0 = any free port).
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let store = open_store(&settings.store)?;
        let service = Arc::new(build_service(settings, store, clock)?);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, settings.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { port: settings.port, source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { port: settings.port, source })?.port();
        Ok(Self { listener, port, api: Api::new(service.clone()), service })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let service = self.service.clone();
        let purge = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_INTERVAL);
            loop {
                tick.tick().await;
                let now = service.clock().now_ms();
                let store = service.store();
                match (store.purge_expired(now).await, store.purge_expired_accounts(now).await) {
                    (Ok(sessions), Ok(accounts)) if sessions + accounts > 0 => {
                        tracing::info!(sessions, accounts, "expired records purged");
                    }
                    (Ok(_), Ok(_)) => {}
                    (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "purging expired records failed"),
                }
            }
        });
        tracing::info!(port = self.port, "listening");
        warp::serve(server::routes(self.api)).incoming(self.listener).graceful(shutdown).run().await;
        purge.abort();
    }
}

/// Completes on Ctrl-C or SIGTERM (the host stops the handler with SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
