//! Start-up: build the service from settings, bind, serve. Everything that can be prepared before
//! the first request is (keys parsed, store opened, schema ready); the two slow items, the dummy
//! password hash and the secrets' guessing-pattern score, run in the background once the port
//! answers, so readiness is not delayed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::accounts::AccountService;
use crate::clients::ClientService;
use crate::clock::Clock;
use crate::http::{Api, server};
use crate::service::{Policy, TokenService};
use crate::settings::names::{ALGORITHM_KEY, EMBEDDED_PATH, HASH_WORKERS};
use crate::settings::{CosmosAuth, DEFAULT_EMBEDDED_PATH, Env, Settings, SettingsError, StoreSettings, load_store};
use crate::store::Store;
use crate::store::cosmos::{ConnectError, CosmosStore, Provisioning};
use crate::store::embedded::EmbeddedStore;
use crate::tokens::access::AccessTokens;
use crate::tokens::keys::KeySet;
use crate::tokens::refresh::RefreshTokens;
use crate::users::device::{DeviceTokens, Pseudonyms};
use crate::users::{Lockout, PasswordHasher, StoreDirectory};

/// How often expired sessions are purged from stores that do not expire records by themselves.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Longest that start-up work no answer needs (key scoring, dummy hash, Cosmos connection, the
/// first purge) waits for the first request before it starts anyway.
const BACKGROUND_AFTER: Duration = Duration::from_millis(50);

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

/// An opened store, and for Cosmos the connection to establish in the background.
#[derive(Debug)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The Cosmos store and whether it may create missing resources.
    pub cosmos: Option<(Arc<CosmosStore>, Provisioning)>,
}

/// Opens the store the settings name; a failure names the setting that points at it. The Cosmos
/// store connects later (see [`connect_cosmos`]) so that readiness is not delayed.
pub fn open_store(settings: &StoreSettings, clock: Arc<dyn Clock>) -> Result<OpenedStore, SettingsError> {
    match settings {
        StoreSettings::Embedded { path } => {
            let store = EmbeddedStore::open(path).map_err(|e| {
                SettingsError::new(EMBEDDED_PATH, format!("cannot open store in {}: {e}", path.display()))
            })?;
            Ok(OpenedStore { store: Arc::new(store), cosmos: None })
        }
        StoreSettings::Cosmos(cosmos) => {
            let provisioning = match cosmos.auth {
                CosmosAuth::Key(_) => Provisioning::CreateMissing,
                CosmosAuth::EntraId { .. } => Provisioning::RequireExisting,
            };
            let store = Arc::new(CosmosStore::new(cosmos.clone(), clock));
            Ok(OpenedStore { store: store.clone(), cosmos: Some((store, provisioning)) })
        }
    }
}

/// Connects the Cosmos store, retrying transient failures with backoff. Returns only on success or
/// on a misconfiguration (a missing database or container that may not be created here).
pub async fn connect_cosmos(store: &CosmosStore, provisioning: Provisioning) -> Result<(), SettingsError> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match store.connect(provisioning).await {
            Ok(()) => {
                tracing::info!("connected to Cosmos DB");
                return Ok(());
            }
            Err(ConnectError::Missing { setting, what }) => {
                let how = match provisioning {
                    Provisioning::RequireExisting => {
                        "; with Entra ID authentication the handler cannot create it: deploy infra/main.bicep, \
                         or run `handler cosmos init` with a connection string"
                    }
                    Provisioning::CreateMissing => "",
                };
                return Err(SettingsError::new(setting, format!("{what}{how}")));
            }
            Err(ConnectError::Store(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Cosmos DB not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The two services over one store, sharing one hashing pool and one lockout.
#[derive(Debug, Clone)]
pub struct Services {
    /// The token rules: login, rotation, reuse detection, revocation.
    pub tokens: Arc<TokenService>,
    /// The account rules: sign-up, users, passwords, roles, and what they do to sessions.
    pub accounts: Arc<AccountService>,
    /// The introspection clients: authentication, cache, rate limit.
    pub clients: Arc<ClientService>,
}

/// Builds both services from validated settings.
pub fn build_services(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Services, SettingsError> {
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
    let hasher = PasswordHasher::start(&settings.hashing)
        .map_err(|e| SettingsError::new(HASH_WORKERS, format!("cannot start the hashing workers: {e}")))?;
    let devices =
        DeviceTokens::new(refresh.derive_key(DeviceTokens::LABEL)).valid_for(settings.login.device_token_ttl_ms);
    let pseudonyms = Pseudonyms::new(refresh.derive_key(Pseudonyms::LABEL));
    let lockout = Lockout::new(settings.login).with_keys(devices.clone(), pseudonyms);
    let directory = Arc::new(StoreDirectory::new(store.clone(), Arc::clone(&hasher), lockout.clone()));
    let policy = Policy {
        session_ttl_ms: settings.expires.refresh_expires_in_ms,
        reuse_grace_ms: settings.rotation.reuse_grace_ms,
        idle_ttl_ms: settings.expires.idle_expires_in_ms,
        max_sessions_per_user: settings.expires.max_sessions_per_user,
    };
    let accounts = AccountService::new(store.clone(), hasher, clock.clone(), settings.accounts.password_min_chars)
        .with_sign_up(settings.accounts)
        .with_lockout(lockout)
        .with_factors(crate::accounts::factors::FactorKeys {
            sealer: Arc::new(crate::tokens::sealed::Sealer::new(
                refresh.derive_key(crate::accounts::factors::SEAL_LABEL),
            )),
            recovery_key: refresh.derive_key(crate::accounts::factors::RECOVERY_LABEL),
            issuer: settings.totp_issuer.clone(),
        });
    let accounts = match &settings.passkeys {
        Some(passkeys) => accounts.with_passkeys(passkey_config(passkeys, &refresh)?),
        None => accounts,
    };
    let mailer = start_mailer(&settings.email)?;
    let accounts = if mailer.enabled() {
        let code_key = refresh.derive_key(crate::accounts::email::CODE_LABEL);
        accounts.with_email(crate::accounts::email::EmailRules::new(mailer.clone(), code_key, settings.email.codes))
    } else {
        accounts
    };
    let clients = ClientService::new(store.clone(), clock.clone(), settings.introspection_max_per_minute);
    let dpop = settings.dpop;
    let tokens = TokenService::new(store, directory, access, refresh, policy, clock)
        .with_device_tokens(devices)
        .with_mailer(mailer)
        .with_dpop(dpop.required, dpop.require_nonce, dpop.proof_max_age_ms);
    Ok(Services { tokens: Arc::new(tokens), accounts: Arc::new(accounts), clients: Arc::new(clients) })
}

/// The mailer of `email` (off without a transport); a transport that cannot start names its setting.
fn start_mailer(email: &crate::settings::email::Email) -> Result<crate::mail::Mailer, SettingsError> {
    use crate::settings::email::Transport;
    use crate::settings::names::{EMAIL_ACS_ENDPOINT, EMAIL_OUTBOX_PATH, EMAIL_SMTP_HOST, EMAIL_TRANSPORT};
    let setting = match &email.transport {
        Transport::None => return Ok(crate::mail::Mailer::off()),
        Transport::Outbox { path } => {
            tracing::info!(outbox = %path.display(), "e-mail goes to the outbox directory as .eml files");
            EMAIL_OUTBOX_PATH
        }
        Transport::Acs { endpoint, .. } => {
            tracing::info!(%endpoint, "e-mail goes through Azure Communication Services");
            EMAIL_ACS_ENDPOINT
        }
        Transport::Smtp { host, port, .. } => {
            tracing::info!(%host, port, "e-mail goes through an SMTP relay");
            EMAIL_SMTP_HOST
        }
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SettingsError::new(EMAIL_TRANSPORT, "the mail queue needs the async runtime (a bug)"));
    }
    crate::mail::Mailer::start(email).map_err(|e| SettingsError::new(setting, e.to_string()))
}

/// The WebAuthn relying party of `passkeys`; a refused origin names the setting.
fn passkey_config(
    passkeys: &crate::settings::Passkeys,
    refresh: &RefreshTokens,
) -> Result<crate::accounts::passkeys::PasskeyConfig, SettingsError> {
    use crate::settings::names::{PASSKEYS_ORIGINS, PASSKEYS_RP_ID};
    let parse = |o: &str| {
        webauthn_rs::prelude::Url::parse(o)
            .map_err(|e| SettingsError::new(PASSKEYS_ORIGINS, format!("{o:?} is not a URL: {e}")))
    };
    let mut origins = passkeys.origins.iter();
    let first = parse(origins.next().map(String::as_str).unwrap_or_default())?;
    let mut builder = webauthn_rs::WebauthnBuilder::new(&passkeys.rp_id, &first)
        .map_err(|e| SettingsError::new(PASSKEYS_RP_ID, format!("refused as a relying party with {first}: {e}")))?
        .rp_name(&passkeys.rp_name);
    for origin in origins {
        builder = builder.append_allowed_origin(&parse(origin)?);
    }
    let webauthn = builder.build().map_err(|e| SettingsError::new(PASSKEYS_RP_ID, format!("refused: {e}")))?;
    Ok(crate::accounts::passkeys::PasskeyConfig {
        webauthn: Arc::new(webauthn),
        sealer: Arc::new(crate::tokens::sealed::Sealer::new(
            refresh.derive_key(crate::accounts::passkeys::CEREMONY_LABEL),
        )),
    })
}

/// File in the store directory holding the development signing key.
pub const DEV_KEY_FILE: &str = "dev-signing-key";

/// `--dev`: the environment with the development signing key filled in when none is set (HS256
/// only), reading it from the store directory or creating it there (0600) on first use. This is
/// start-up's job, so that [`Settings::load`] stays pure.
pub fn development_env(env: &Env) -> Result<Env, SettingsError> {
    // The same parsers as `Settings::load`: an alias (`HMACSHA256`) or an invalid name is read as
    // loading reads it, and the invalid one is reported there.
    let hs256 = crate::settings::signing_algorithm(env).is_ok_and(|a| a == crate::settings::SigningAlgorithm::Hs256);
    if env.get(ALGORITHM_KEY).is_some() || !hs256 {
        return Ok(env.clone());
    }
    let key = match load_store(env) {
        // In memory, nothing is kept: a key for this process only.
        Ok(StoreSettings::Embedded { path }) if path.as_os_str() == crate::store::embedded::MEMORY => {
            generated_key().map_err(|e| SettingsError::new(ALGORITHM_KEY, format!("cannot be generated: {e}")))?
        }
        Ok(StoreSettings::Embedded { path }) => development_key(&path)?,
        // With Cosmos DB the key file lives where the embedded store would (its setting, else the
        // default); a store setting that does not load is reported by `Settings::load`.
        Ok(StoreSettings::Cosmos(_)) | Err(_) => {
            development_key(std::path::Path::new(env.get(EMBEDDED_PATH).unwrap_or(DEFAULT_EMBEDDED_PATH)))?
        }
    };
    let mut env = env.clone();
    env.set(ALGORITHM_KEY, key);
    Ok(env)
}

fn development_key(dir: &std::path::Path) -> Result<String, SettingsError> {
    let file = dir.join(DEV_KEY_FILE);
    let problem = |what: &str, e: &dyn std::fmt::Display| {
        SettingsError::new(
            ALGORITHM_KEY,
            format!("is missing and the development key {} could not be {what}: {e}", file.display()),
        )
    };
    match std::fs::read_to_string(&file) {
        Ok(existing) => return Ok(existing.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(problem("read", &e)),
    }
    crate::store::embedded::create_private_dir(dir).map_err(|e| problem("created", &e))?;
    let generated = generated_key().map_err(|e| problem("generated", &e))?;
    match write_private_file(&file, generated.as_bytes()) {
        Ok(()) => Ok(generated),
        // Another process started in the same directory wrote it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(&file).map(|k| k.trim().to_string()).map_err(|e| problem("read", &e))
        }
        Err(e) => Err(problem("written", &e)),
    }
}

fn generated_key() -> Result<String, String> {
    let generated =
        crate::tokens::generate::generate(crate::settings::SigningAlgorithm::Hs256).map_err(|e| e.to_string())?;
    String::from_utf8(generated.value.expose().to_vec()).map_err(|e| e.to_string())
}

fn write_private_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Where the guessing-pattern score of the secret settings is computed (zxcvbn; see
/// [`crate::settings::entropy`]): it takes ~13 ms and builds ~8 MiB of dictionaries that, once
/// built, stay resident for the life of the process that built them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretScoring {
    /// On a blocking thread of this process (library use and tests).
    InProcess,
    /// In a short-lived child process, `<program> internal score-secrets` (the served binary: this
    /// process never holds the dictionaries). If the child cannot run or answers nonsense, the
    /// score is computed in process instead.
    Subprocess(std::path::PathBuf),
}

/// Longest the scoring child may take (it needs ~15 ms) before it is killed and the score is
/// computed in process.
const SCORING_DEADLINE: Duration = Duration::from_secs(5);

/// The hidden subcommand that scores secrets for [`SecretScoring::Subprocess`]: reads a JSON
/// array of strings on stdin, writes a JSON array of their pattern scores in bits on stdout.
pub const SCORE_SECRETS_ARGS: [&str; 2] = ["internal", "score-secrets"];

/// Scores `secrets` as [`SCORE_SECRETS_ARGS`] does; for the child's side.
pub fn score_secrets_stdio(input: impl std::io::Read, mut output: impl std::io::Write) -> std::io::Result<()> {
    let secrets: Vec<String> = serde_json::from_reader(input)?;
    let scores: Vec<f64> = secrets.iter().map(|s| crate::settings::entropy::pattern_bits(s)).collect();
    serde_json::to_writer(&mut output, &scores)?;
    output.flush()
}

fn score_in_child(program: &std::path::Path, secrets: &[&str]) -> std::io::Result<Vec<f64>> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(SCORE_SECRETS_ARGS)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Written and closed at once: the child reads all of stdin before it answers.
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(&serde_json::to_vec(secrets)?));
    // A child that hangs must not hold every request at the gate: it is killed at the deadline
    // and the score is computed here instead. Its answer is a few bytes, so it cannot block on a
    // full stdout pipe before it exits.
    let deadline = std::time::Instant::now() + SCORING_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the scoring process did not answer in time"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    written.transpose()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("the scoring process exited with {status}")));
    }
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_end(&mut out, &mut stdout)?;
    }
    let scores: Vec<f64> = serde_json::from_slice(&stdout)?;
    if scores.len() != secrets.len() || scores.iter().any(|b| !b.is_finite()) {
        return Err(std::io::Error::other("the scoring process answered for other secrets"));
    }
    Ok(scores)
}

/// Scores the secrets `settings` lists ([`Settings::secrets_to_score`]) and checks them: the first
/// too easy to guess is the error, naming its setting.
pub async fn check_secrets(
    settings_secrets: Vec<(&'static str, crate::secret::SecretBytes)>,
    how: SecretScoring,
) -> Result<(), SettingsError> {
    if settings_secrets.is_empty() {
        return Ok(());
    }
    let scores = tokio::task::spawn_blocking(move || {
        // Settings come from environment strings, so each value is UTF-8.
        let texts: Vec<&str> =
            settings_secrets.iter().map(|(_, v)| std::str::from_utf8(v.expose()).unwrap_or_default()).collect();
        let bits = match &how {
            SecretScoring::Subprocess(program) => score_in_child(program, &texts).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "scoring the secrets in a child process failed; scoring them here");
                texts.iter().map(|t| crate::settings::entropy::pattern_bits(t)).collect()
            }),
            SecretScoring::InProcess => texts.iter().map(|t| crate::settings::entropy::pattern_bits(t)).collect(),
        };
        settings_secrets.iter().map(|(name, _)| *name).zip(bits).collect::<Vec<_>>()
    })
    .await
    .map_err(|e| SettingsError::new(ALGORITHM_KEY, format!("cannot score the key's strength: {e}")))?;
    crate::settings::check_secret_scores(&scores)
}

/// Sign-in with the providers the settings name (`None` without any): their key caches, and the
/// count of refused exchanges.
pub fn federated_sign_in(settings: &Settings) -> Result<Option<Arc<crate::federation::SignIn>>, SettingsError> {
    let federation = &settings.federation;
    let verifier = crate::federation::Verifier::new(federation, settings.descriptor.clock_skew_ms)
        .map_err(|e| SettingsError::new(crate::settings::names::FEDERATION_PROVIDERS, e.to_string()))?;
    Ok(verifier.map(|verifier| {
        tracing::info!(providers = ?verifier.provider_names(), "sign-in providers configured");
        Arc::new(crate::federation::SignIn {
            verifier,
            failures: crate::federation::Failures::default(),
            max_failures: federation.max_failures,
            failure_window_ms: federation.failure_window_ms,
        })
    }))
}

/// A bound, not yet serving, application.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    api: Api,
    services: Services,
    cosmos: Option<(Arc<CosmosStore>, Provisioning)>,
    http: crate::settings::Http,
    secrets: Vec<(&'static str, crate::secret::SecretBytes)>,
    scoring: SecretScoring,
    keys_checked: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Validates everything, opens the store and binds 127.0.0.1:`settings.port` (0 = any free port).
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let opened = open_store(&settings.store, clock.clone())?;
        let services = build_services(settings, opened.store, clock)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, settings.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { port: settings.port, source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { port: settings.port, source })?.port();
        let (keys_checked, gate) = tokio::sync::watch::channel(false);
        let sign_in = federated_sign_in(settings)?;
        Ok(Self {
            listener,
            port,
            api: Api::new(services.tokens.clone(), settings.cors.clone())
                .with_accounts(services.accounts.clone())
                .with_clients(services.clients.clone())
                .with_federation(sign_in)
                .with_service_documentation(settings.service_documentation.as_deref())
                .gated(gate),
            services,
            cosmos: opened.cosmos,
            http: settings.http,
            secrets: settings.secrets_to_score(),
            scoring: SecretScoring::InProcess,
            keys_checked,
        })
    }

    /// Where the secrets' guessing patterns are scored (default: in process).
    #[must_use]
    pub fn with_secret_scoring(mut self, scoring: SecretScoring) -> Self {
        self.scoring = scoring;
        self
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes. Once the first request arrived (or after
    /// [`BACKGROUND_AFTER`] without one), the secrets' guessing patterns are scored, the dummy
    /// password hash is computed and a Cosmos store connects, in the background; requests other
    /// than `GET /` wait for the score, and a secret too easy to guess or a missing Cosmos resource
    /// stops serving with that error.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        // Work no answer needs starts once the first request (the host's readiness probe) arrived,
        // or after a moment without one, so it does not compete with that first answer.
        let first = self.api.first_request();
        let later = move || {
            let mut first = first.clone();
            async move {
                let _ = tokio::time::timeout(BACKGROUND_AFTER, first.wait_for(|arrived| *arrived)).await;
            }
        };
        let service = self.services.tokens.clone();
        let after = later();
        let purge = tokio::spawn(async move {
            after.await;
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
        let service = self.services.tokens.clone();
        let epoch = tokio::spawn(async move {
            // Revoke-everyone written by any instance reaches this one within the interval.
            let mut tick = tokio::time::interval(crate::epoch::REFRESH_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = service.refresh_epoch().await {
                    tracing::debug!(error = %e, "reading the sessions epoch failed; keeping the last one");
                }
            }
        });
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<SettingsError>(2);
        let failed = fatal_tx.clone();
        let (secrets, scoring, keys_checked) = (self.secrets, self.scoring, self.keys_checked);
        let after = later();
        let check = tokio::spawn(async move {
            after.await;
            match check_secrets(secrets, scoring).await {
                Ok(()) => {
                    keys_checked.send_replace(true);
                }
                Err(e) => {
                    let _ = failed.send(e).await;
                }
            }
        });
        // The dummy password hash: one argon2id run, ~20 ms of a core.
        let warm = self.services.accounts.clone();
        let after = later();
        tokio::spawn(async move {
            after.await;
            warm.warm_up().await;
        });
        let connect = self.cosmos.map(|(store, provisioning)| {
            let after = later();
            tokio::spawn(async move {
                after.await;
                if let Err(e) = connect_cosmos(&store, provisioning).await {
                    let _ = fatal_tx.send(e).await;
                }
            })
        });
        tracing::info!(port = self.port, "listening");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(self.listener, self.api, self.http, async move {
            let _ = stop_rx.await;
        }));
        let outcome = tokio::select! {
            () = shutdown => Ok(()),
            Some(e) = fatal_rx.recv() => Err(StartupError::Settings(e)),
        };
        let _ = stop_tx.send(());
        let _ = server.await;
        purge.abort();
        epoch.abort();
        check.abort();
        if let Some(c) = connect {
            c.abort();
        }
        outcome
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::names::ROTATION_SECRET;

    #[tokio::test]
    async fn a_scoring_child_that_fails_is_replaced_by_scoring_in_process() {
        use crate::secret::SecretBytes;
        let strong = "Z-CwLcjDk02eEppH7j0U-AVm1mSKsbpp2QJ8MXsWRiS6vKcbBufSWm-x0VHFckSw";
        let words = "correct-horse-battery-staple-orange-0123456789";
        for program in ["/bin/false", "/nonexistent/handler"] {
            let how = SecretScoring::Subprocess(program.into());
            let ok = vec![(ALGORITHM_KEY, SecretBytes::new(strong))];
            assert!(check_secrets(ok, how.clone()).await.is_ok(), "{program}");
            let weak = vec![(ALGORITHM_KEY, SecretBytes::new(strong)), (ROTATION_SECRET, SecretBytes::new(words))];
            let err = check_secrets(weak, how).await.unwrap_err();
            assert_eq!(err.setting, ROTATION_SECRET, "{program}: the weak one is named");
        }
    }

    #[test]
    fn development_mode_generates_and_keeps_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let env = Env::from_pairs([(EMBEDDED_PATH, path.to_str().unwrap())]);
        let first = development_env(&env).unwrap();
        let second = development_env(&env).unwrap();
        let key = first.get(ALGORITHM_KEY).unwrap().to_string();
        assert_eq!(Some(key.as_str()), second.get(ALGORITHM_KEY));
        assert!(crate::settings::entropy::estimate_bits(&key) >= crate::settings::entropy::MIN_SECRET_BITS);
        Settings::load(&first, crate::settings::Mode::Development).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path.join(DEV_KEY_FILE)), 0o600);
            assert_eq!(mode(&path), 0o700);
        }
        let set = Env::from_pairs([(EMBEDDED_PATH, path.to_str().unwrap()), (ALGORITHM_KEY, "given")]);
        assert_eq!(development_env(&set).unwrap().get(ALGORITHM_KEY), Some("given"));
    }
}
