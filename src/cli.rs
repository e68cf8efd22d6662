//! The `handler` command line: serve (what the Functions host runs, with no arguments) and the
//! `user` commands, which work on the store while the service runs.

use std::io::BufRead as _;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::accounts::{AccountService, Actor, MAX_PAGE, PasswordCheck, UserChange};
use crate::clock::{Clock, SystemClock};
use crate::secret::Password;
use crate::settings::{Env, Hashing, Mode, Settings, SigningAlgorithm, StoreSettings, load_store};
use crate::startup::{Application, SecretScoring, development_env, open_store, shutdown_signal};
use crate::users::PasswordHasher;

/// Printed after the settings are found missing, for the newcomer who started without any.
const MISSING_HINT: &str = "hint: for local work run `handler --dev`; otherwise start from local.settings.json.example \
                            (every setting: docs/configuration.md)";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "handler",
    version,
    about = "JWT access tokens and rotating refresh tokens (Azure Functions custom handler)",
    after_help = "Settings are read from the environment (JwtRefreshToken__*): every setting, its type, default and \
                  bounds are in docs/configuration.md. Local work: `handler --dev`."
)]
pub struct Cli {
    /// Local development: missing Issuer/Audience get local defaults and a signing key is generated
    /// once and kept in the store directory. Never use in production.
    #[arg(long, global = true)]
    pub dev: bool,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (default 7071).
    Serve,
    /// Manage users of the built-in directory.
    User {
        /// Create the embedded store if it does not exist yet (otherwise a missing store is an
        /// error: a mistyped path would silently start an empty one).
        #[arg(long, global = true)]
        create: bool,
        /// The user command.
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Sessions of every user.
    Sessions {
        /// Create the embedded store if it does not exist yet.
        #[arg(long, global = true)]
        create: bool,
        /// The sessions command.
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Resource-server clients allowed to call token introspection (`POST /api/introspect`).
    Clients {
        /// Create the embedded store if it does not exist yet.
        #[arg(long, global = true)]
        create: bool,
        /// The clients command.
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Key material.
    Keys {
        /// The keys command.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Cosmos DB administration.
    Cosmos {
        /// The Cosmos command.
        #[command(subcommand)]
        command: CosmosCommand,
    },
    /// What the handler runs of itself (not for operators).
    #[command(hide = true)]
    Internal {
        /// The internal command.
        #[command(subcommand)]
        command: InternalCommand,
    },
}

/// `handler internal …`.
#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Score secrets (JSON array of strings on stdin) by their guessing patterns, in bits (JSON
    /// array on stdout): the server runs this in a child so it never holds zxcvbn's dictionaries.
    ScoreSecrets,
}

/// `handler cosmos …`.
#[derive(Debug, Subcommand)]
pub enum CosmosCommand {
    /// Create the database and containers if missing (connection string / account key only; with
    /// Entra ID it checks that they exist).
    Init,
}

/// `handler sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// End every session of every user at once (after a breach): one store write; every running
    /// instance refuses the old sessions within a few seconds.
    RevokeAll,
}

/// `handler clients …`.
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Add a client; prints `client_id=… client_secret=…` once (only a hash of the secret is kept).
    Add {
        /// The client id: 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
    },
    /// List clients: id and when each was added (never a secret).
    List,
    /// Remove a client; running instances refuse it within 60 s (their cache).
    Remove {
        /// The client id.
        name: String,
    },
}

/// `handler keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print fresh key material in exactly the form the settings take: HS256, a random base64url
    /// secret (also right for JwtRefreshToken__Rotation__Secret); ES256/EdDSA, a PKCS#8 PEM private
    /// key for AlgorithmKey.
    Generate {
        /// HS256, ES256 or EdDSA.
        #[arg(long, value_parser = parse_algorithm)]
        algorithm: SigningAlgorithm,
        /// ES256/EdDSA: also write the SPKI PEM public key here (for PreviousKeys after a rotation).
        #[arg(long)]
        public_key_file: Option<std::path::PathBuf>,
    },
}

fn parse_algorithm(raw: &str) -> Result<SigningAlgorithm, String> {
    SigningAlgorithm::parse(raw).ok_or_else(|| format!("must be HS256, ES256 or EdDSA, got {raw:?}"))
}

/// `handler user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from one line of standard input.
    Add {
        /// Username (compared without case).
        username: String,
        /// A role to grant (repeatable), e.g. --role admin.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Accept a password the strength policy refuses (scripted test fixtures only; warns).
        #[arg(long)]
        allow_weak_password: bool,
    },
    /// Disable a user and end all of their sessions.
    Disable {
        /// Username.
        username: String,
    },
    /// Enable a disabled user again (recovery: e.g. the only admin was disabled).
    Enable {
        /// Username.
        username: String,
    },
    /// Add or remove roles of a user, e.g. `user role NAME --add admin` (recovery: make an admin).
    /// Removing `admin` from the last enabled admin is refused.
    Role {
        /// Username.
        username: String,
        /// A role to add (repeatable).
        #[arg(long = "add")]
        add: Vec<String>,
        /// A role to remove (repeatable).
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Set a user's password (read from one line of standard input) and end all of their sessions.
    Password {
        /// Username.
        username: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Accept a password the strength policy refuses (scripted test fixtures only; warns).
        #[arg(long)]
        allow_weak_password: bool,
    },
    /// Clear a user's failed-login counts and locks, from every address.
    Unlock {
        /// Username.
        username: String,
    },
    /// Remove a user's second factors (authenticator and recovery codes) and end their sessions,
    /// for a user who lost their authenticator.
    ResetMfa {
        /// Username.
        username: String,
    },
    /// List users (never prints password hashes).
    List,
}

/// What went wrong, with the process exit code to use.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// Exit code: 2 for configuration, 1 otherwise.
    pub code: i32,
}

impl Failure {
    fn config(message: impl std::fmt::Display) -> Self {
        Self { message: message.to_string(), code: 2 }
    }
    fn other(message: impl std::fmt::Display) -> Self {
        Self { message: message.to_string(), code: 1 }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli, env: Env) -> Result<(), Failure> {
    let mode = if cli.dev { Mode::Development } else { Mode::Production };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&env, mode).await,
        Command::User { create, command } => user(command, &env, StoreMissing::from_flag(create)).await,
        Command::Sessions { create, command: SessionsCommand::RevokeAll } => {
            revoke_all(&env, StoreMissing::from_flag(create)).await
        }
        Command::Clients { create, command } => clients(command, &env, StoreMissing::from_flag(create)).await,
        Command::Keys { command: KeysCommand::Generate { algorithm, public_key_file } } => {
            keys_generate(algorithm, public_key_file.as_deref())
        }
        Command::Cosmos { command: CosmosCommand::Init } => cosmos_init(&env).await,
        Command::Internal { command: InternalCommand::ScoreSecrets } => {
            crate::startup::score_secrets_stdio(std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(|e| Failure::other(format!("cannot score the secrets: {e}")))
        }
    }
}

fn keys_generate(algorithm: SigningAlgorithm, public_key_file: Option<&std::path::Path>) -> Result<(), Failure> {
    use std::io::Write as _;
    let key = crate::tokens::generate::generate(algorithm).map_err(Failure::other)?;
    match (&key.public_pem, public_key_file) {
        (Some(public), Some(path)) => {
            std::fs::write(path, public).map_err(|e| Failure::other(format!("cannot write {}: {e}", path.display())))?
        }
        (None, Some(_)) => return Err(Failure::other("--public-key-file applies to ES256 and EdDSA only")),
        _ => {}
    }
    let mut out = std::io::stdout().lock();
    let mut value = key.value.expose().to_vec();
    if !value.ends_with(b"\n") {
        value.push(b'\n');
    }
    out.write_all(&value).and_then(|()| out.flush()).map_err(|e| Failure::other(format!("cannot write the key: {e}")))
}

async fn serve(env: &Env, mode: Mode) -> Result<(), Failure> {
    let env = if mode == Mode::Development { development_env(env).map_err(Failure::config)? } else { env.clone() };
    let unknown = crate::settings::unknown_settings(&env);
    let settings = Settings::load(&env, mode).map_err(|errors| {
        let mut message = errors.to_string();
        if errors.any_missing() {
            message.push_str(&format!("\n{MISSING_HINT}"));
        }
        Failure::config(message)
    })?;
    if crate::settings::strict_settings(&env) && !unknown.is_empty() {
        let lines: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        return Err(Failure::config(format!(
            "{}\n({} is true: unknown settings stop start-up)",
            lines.join("\n"),
            crate::settings::names::STRICT_SETTINGS
        )));
    }
    for u in &unknown {
        tracing::warn!(setting = %u.name, suggestion = u.suggestion.unwrap_or(""), "{u}");
    }
    if mode == Mode::Production
        && let Some(problem) = crate::settings::issuer_problem(&settings.descriptor.issuer)
    {
        tracing::warn!(setting = crate::settings::names::ISSUER, "{problem}");
    }
    if mode == Mode::Development {
        tracing::warn!("development mode: local defaults for missing settings; never use in production");
        if let crate::settings::email::Transport::Outbox { path } = &settings.email.transport {
            // Where sign-up, verification and reset codes can be read (`Code: …` lines).
            eprintln!("development mode: e-mail is written to {} (one .eml file per message)", path.display());
        }
    }
    let app = Application::build(&settings, Arc::new(SystemClock)).await.map_err(|e| match e {
        crate::startup::StartupError::Settings(s) => Failure::config(s),
        other => Failure::other(other),
    })?;
    // Score the secrets in a child of this binary, so the server never holds zxcvbn's dictionaries.
    let app = match std::env::current_exe() {
        Ok(program) => app.with_secret_scoring(SecretScoring::Subprocess(program)),
        Err(_) => app,
    };
    app.run_until(shutdown_signal()).await.map_err(|e| match e {
        crate::startup::StartupError::Settings(s) => Failure::config(s),
        other => Failure::other(other),
    })
}

fn read_password_line() -> Result<Password, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::other(format!("cannot read the password: {e}")))?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Password::new(trimmed))
}

/// What a command does when the embedded store it names does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreMissing {
    /// Refuse: a mistyped path must not silently start an empty store.
    Refuse,
    /// Create it (`--create`).
    Create,
}

impl StoreMissing {
    fn from_flag(create: bool) -> Self {
        if create { Self::Create } else { Self::Refuse }
    }
}

/// The store the settings name, connected (Cosmos connects before any command touches it).
async fn connected_store(env: &Env, missing: StoreMissing) -> Result<Arc<dyn crate::store::Store>, Failure> {
    let settings = load_store(env).map_err(Failure::config)?;
    if let StoreSettings::Embedded { path } = &settings
        && missing == StoreMissing::Refuse
        && !crate::store::embedded::EmbeddedStore::exists(path)
    {
        return Err(Failure::config(format!("no store at {}; serve creates one, or pass --create", path.display())));
    }
    let opened = open_store(&settings, Arc::new(SystemClock)).map_err(Failure::config)?;
    if let Some((cosmos, provisioning)) = &opened.cosmos {
        cosmos.connect(*provisioning).await.map_err(connect_failure)?;
    }
    Ok(opened.store)
}

/// The account service the `user` commands act through: the same rules as HTTP, one hashing
/// worker (the CLI hashes at most one password).
fn account_service(env: &Env, store: Arc<dyn crate::store::Store>) -> Result<AccountService, Failure> {
    let hasher = PasswordHasher::start(&Hashing { workers: 1, queue_length: 1, queue_timeout_ms: 60_000 })
        .map_err(Failure::other)?;
    // The same setting, default and bounds as `Settings::load` reads for the HTTP routes; the
    // commands do not need (or load) the token settings.
    let min_chars = env.int(crate::settings::names::PASSWORD_MIN_LENGTH).map_err(Failure::config)?;
    Ok(AccountService::new(store, hasher, Arc::new(SystemClock), min_chars))
}

fn password_check(allow_weak: bool) -> PasswordCheck {
    if allow_weak {
        eprintln!("warning: --allow-weak-password: the password strength policy is not applied");
        PasswordCheck::AllowWeak
    } else {
        PasswordCheck::Policy
    }
}

async fn user(command: UserCommand, env: &Env, missing: StoreMissing) -> Result<(), Failure> {
    let store = connected_store(env, missing).await?;
    let accounts = account_service(env, store)?;
    let operator = Actor::Operator;
    match command {
        UserCommand::Add { username, roles, password_stdin: _, allow_weak_password } => {
            let password = read_password_line()?;
            let check = password_check(allow_weak_password);
            let user = accounts
                .create_user(operator, &username, &password, &roles, check)
                .await
                .map_err(|e| Failure::other(format!("cannot add user {username:?}: {e}")))?;
            println!("added user {} (id {}, roles: {})", user.username, user.id, roles_text(&user.roles));
        }
        UserCommand::Disable { username } => {
            let change = UserChange { disabled: Some(true), ..UserChange::default() };
            let changed = accounts
                .change_user(operator, &username, &change)
                .await
                .map_err(|e| Failure::other(format!("cannot disable user {username:?}: {e}")))?;
            println!("disabled user {} and ended {} session(s)", changed.user.username, changed.sessions_ended);
        }
        UserCommand::Enable { username } => {
            let change = UserChange { disabled: Some(false), ..UserChange::default() };
            let changed = accounts
                .change_user(operator, &username, &change)
                .await
                .map_err(|e| Failure::other(format!("cannot enable user {username:?}: {e}")))?;
            println!("enabled user {}", changed.user.username);
        }
        UserCommand::Role { username, add, remove } => {
            if add.is_empty() && remove.is_empty() {
                return Err(Failure::config("say which roles change: --add ROLE and/or --remove ROLE"));
            }
            let change = UserChange { add_roles: add, remove_roles: remove, ..UserChange::default() };
            let changed = accounts
                .change_user(operator, &username, &change)
                .await
                .map_err(|e| Failure::other(format!("cannot change the roles of {username:?}: {e}")))?;
            println!("user {} now has roles: {}", changed.user.username, roles_text(&changed.user.roles));
        }
        UserCommand::Password { username, password_stdin: _, allow_weak_password } => {
            let password = read_password_line()?;
            let check = password_check(allow_weak_password);
            let changed = accounts
                .set_password(operator, &username, &password, check)
                .await
                .map_err(|e| Failure::other(format!("cannot set the password of {username:?}: {e}")))?;
            println!("set the password of {} and ended {} session(s)", changed.user.username, changed.sessions_ended);
        }
        UserCommand::Unlock { username } => {
            let change = UserChange { unlock: true, ..UserChange::default() };
            let changed = accounts
                .change_user(operator, &username, &change)
                .await
                .map_err(|e| Failure::other(format!("cannot unlock user {username:?}: {e}")))?;
            println!("unlocked user {}", changed.user.username);
        }
        UserCommand::ResetMfa { username } => {
            let changed = accounts
                .reset_factors(operator, &username)
                .await
                .map_err(|e| Failure::other(format!("cannot reset the second factors of {username:?}: {e}")))?;
            println!(
                "removed the second factors of {} and ended {} session(s)",
                changed.user.username, changed.sessions_ended
            );
        }
        UserCommand::List => {
            let mut cursor = None;
            loop {
                let page = accounts.list_users(operator, MAX_PAGE, cursor.as_deref()).await.map_err(Failure::other)?;
                for u in &page.users {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!("{}\t{}\t{}\troles: {}", u.username, u.id, state, roles_text(&u.roles));
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

async fn clients(command: ClientsCommand, env: &Env, missing: StoreMissing) -> Result<(), Failure> {
    let store = connected_store(env, missing).await?;
    let max_per_minute = env.int(crate::settings::names::INTROSPECTION_MAX_PER_MINUTE).map_err(Failure::config)?;
    let clients = crate::clients::ClientService::new(store, Arc::new(SystemClock), max_per_minute);
    match command {
        ClientsCommand::Add { name } => {
            let new =
                clients.add(&name).await.map_err(|e| Failure::other(format!("cannot add client {name:?}: {e}")))?;
            println!("client_id={} client_secret={}", new.client_id, new.client_secret.expose());
        }
        ClientsCommand::List => {
            for c in clients.list().await.map_err(Failure::other)? {
                println!("{}\tcreated_at={}", c.client_id, c.created_at_ms.div_euclid(1000));
            }
        }
        ClientsCommand::Remove { name } => {
            clients.remove(&name).await.map_err(|e| Failure::other(format!("cannot remove client {name:?}: {e}")))?;
            println!(
                "removed client {name}; running instances refuse it within {} s",
                crate::clients::CLIENT_CACHE_TTL_MS / 1000
            );
        }
    }
    Ok(())
}

async fn revoke_all(env: &Env, missing: StoreMissing) -> Result<(), Failure> {
    let store = connected_store(env, missing).await?;
    let at = crate::service::end_every_session(store.as_ref(), SystemClock.now_ms()).await.map_err(Failure::other)?;
    println!(
        "ended every session that began before {at} (Unix ms); running instances refuse them within {} s",
        crate::epoch::REFRESH_INTERVAL.as_secs() + 1
    );
    Ok(())
}

async fn cosmos_init(env: &Env) -> Result<(), Failure> {
    let settings = load_store(env).map_err(Failure::config)?;
    let opened = open_store(&settings, Arc::new(SystemClock)).map_err(Failure::config)?;
    let Some((store, provisioning)) = opened.cosmos else {
        return Err(Failure::config(crate::settings::SettingsError::new(
            crate::settings::names::COSMOS_CONNECTION_STRING,
            format!("no Cosmos DB configured (set it or {})", crate::settings::names::COSMOS_ENDPOINT),
        )));
    };
    store.connect(provisioning).await.map_err(connect_failure)?;
    println!("Cosmos DB ready: {}", store.describe_resources());
    Ok(())
}

/// A missing Cosmos resource is a configuration problem (exit 2); anything else is not.
fn connect_failure(e: crate::store::cosmos::ConnectError) -> Failure {
    match e {
        crate::store::cosmos::ConnectError::Missing { .. } => Failure::config(e),
        other => Failure::other(other),
    }
}

fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() { "-".into() } else { roles.join(",") }
}
