//! The embedded store: SQLite (bundled) in WAL mode, so the `user` commands of a second process can
//! work on the same file while the service runs, and the service sees their effect at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{
    Account, AdminRoster, ClientRecord, ClientStore, CodeRecord, EmailClaim, IdentityRecord, LoginThrottle, NameClaim,
    SessionRecord, SessionStore, StoreError, UserRecord, UserStore, Version, Versioned,
};
use crate::clock::UnixMs;

/// File name of the database inside the store directory.
pub const DATABASE_FILE: &str = "store.db";
const SCHEMA_VERSION: i64 = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    username_key TEXT PRIMARY KEY,
    user_id TEXT UNIQUE,
    username TEXT,
    password_hash TEXT,
    roles TEXT,
    disabled INTEGER,
    created_at_ms INTEGER,
    failures INTEGER NOT NULL,
    last_failure_ms INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    version INTEGER NOT NULL,
    address_throttles TEXT NOT NULL DEFAULT '[]',
    strikes INTEGER NOT NULL DEFAULT 0,
    device_throttles TEXT NOT NULL DEFAULT '[]',
    identities TEXT NOT NULL DEFAULT '[]',
    factors TEXT NOT NULL DEFAULT '{}',
    email TEXT
);
CREATE INDEX IF NOT EXISTS accounts_by_expiry ON accounts (expires_at_ms) WHERE user_id IS NULL;
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    seed BLOB NOT NULL,
    generation INTEGER NOT NULL,
    rotated_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    username TEXT NOT NULL,
    roles TEXT NOT NULL,
    version INTEGER NOT NULL,
    idle_expires_at_ms INTEGER,
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at_ms);
CREATE INDEX IF NOT EXISTS sessions_by_idle_expiry ON sessions (idle_expires_at_ms) WHERE idle_expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS store_values (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_records (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used_tokens (
    marker TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_tokens_by_expiry ON used_tokens (expires_at_ms);
CREATE TABLE IF NOT EXISTS codes (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS codes_by_expiry ON codes (expires_at_ms);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The row of `store_records` holding the admin roster (schema 5 and later; JSON body).
const ADMINS: &str = "admins";

/// The rows of `store_records` holding the look-alike name claims start with this, then the skeleton.
const NAME_CLAIM: &str = "name-claim:";

/// The rows of `store_records` holding sign-in identities start with this, then the provider, a
/// NUL and the subject.
const IDENTITY: &str = "identity:";

/// The rows of `store_records` holding the claims on verified e-mail addresses start with this,
/// then the address.
const EMAIL_CLAIM: &str = "email-claim:";

/// The row of `store_values` holding the revoke-everyone epoch.
const SESSIONS_EPOCH: &str = "sessions_epoch";

/// Before schema 4 the revoke-everyone epoch was an account under this key (NUL first, so no
/// username maps to it), its time in `last_failure_ms`. Opening such a store moves it into
/// `store_values` and deletes the account.
const LEGACY_EPOCH_KEY: &str = "\u{0}sessions-epoch";

mod engine;

/// The `JwtRefreshToken__Embedded__Path` that selects the in-memory store: nothing is written to
/// disk and everything is gone when the process ends (tests, demos, measuring the handler's CPU cost
/// apart from disk sync).
pub const MEMORY: &str = ":memory:";

/// SQLite-backed [`super::Store`]. Cheap to clone; clones share one writer and one reader pool.
///
/// Writes are group-committed (see [`engine`]): writes that arrive together share one transaction
/// and one fsync, and each is answered only after that commit is on disk.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    engine: Arc<engine::Engine>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating when needed) the store in directory `dir`; `dir` = [`MEMORY`] opens an empty
    /// in-memory store instead.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if engine::is_memory(dir) {
            let conn = Connection::open_in_memory().map_err(map_err)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            conn.execute_batch(SCHEMA).map_err(map_err)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(map_err)?;
            let engine = engine::Engine::inline(conn);
            return Ok(Self { engine: Arc::new(engine), path: dir.to_path_buf() });
        }
        create_private_dir(dir).map_err(StoreError::unavailable)?;
        let path = dir.join(DATABASE_FILE);
        private_file(&path).map_err(StoreError::unavailable)?;
        // SQLite gives the -wal and -shm files the database file's permissions.
        let conn = connect(&path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(map_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::unavailable(format!(
                "{} has schema version {version}, newer than this build understands ({SCHEMA_VERSION})",
                path.display()
            )));
        }
        if (1..2).contains(&version) {
            // Version 2 adds per-address login throttles.
            conn.execute_batch("ALTER TABLE accounts ADD COLUMN address_throttles TEXT NOT NULL DEFAULT '[]'")
                .map_err(map_err)?;
        }
        if (1..3).contains(&version) {
            // Version 3 adds session details (device, activity) and the inactivity deadline.
            conn.execute_batch(
                "ALTER TABLE sessions ADD COLUMN idle_expires_at_ms INTEGER;
                 ALTER TABLE sessions ADD COLUMN details TEXT NOT NULL DEFAULT '{}';",
            )
            .map_err(map_err)?;
        }
        if (1..5).contains(&version) {
            // Version 5 adds per-device login throttles and the username-wide lock's strikes.
            conn.execute_batch(
                "ALTER TABLE accounts ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE accounts ADD COLUMN device_throttles TEXT NOT NULL DEFAULT '[]';",
            )
            .map_err(map_err)?;
        }
        if (1..7).contains(&version) {
            // Version 7 adds the sign-in identities linked to a user, their second factors (and the used-token markers'
            // table, created by `SCHEMA` below).
            conn.execute_batch(
                "ALTER TABLE accounts ADD COLUMN identities TEXT NOT NULL DEFAULT '[]';
                 ALTER TABLE accounts ADD COLUMN factors TEXT NOT NULL DEFAULT '{}';",
            )
            .map_err(map_err)?;
        }
        if (1..8).contains(&version) {
            // Version 8 adds the user's e-mail address (and the e-mail codes' table, created by
            // `SCHEMA` below).
            conn.execute_batch("ALTER TABLE accounts ADD COLUMN email TEXT;").map_err(map_err)?;
        }
        // Version 6 adds the introspection clients' table (created by `SCHEMA` below).
        if version != SCHEMA_VERSION {
            // Only a new or upgraded store is written at start-up: an up-to-date one opens without
            // a transaction (each would be an fsync before the port answers).
            conn.execute_batch(SCHEMA).map_err(map_err)?;
            if (1..4).contains(&version) {
                // Version 4 keeps the revoke-everyone epoch in a record of its own.
                migrate_legacy_epoch(&conn)?;
            }
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(map_err)?;
        }
        let reader_path = path.clone();
        let engine = engine::Engine::start(conn, Arc::new(move || connect(&reader_path)))?;
        Ok(Self { engine: Arc::new(engine), path })
    }

    /// Whether a store exists in directory `dir` (the in-memory store always does).
    pub fn exists(dir: &Path) -> bool {
        engine::is_memory(dir) || dir.join(DATABASE_FILE).is_file()
    }

    /// The database file ([`MEMORY`] for the in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` on the store: on a reader connection when it only reads, else in the writer's next
    /// group commit, answering after the commit is durable. `op` may run twice (once on a reader
    /// that refuses its first write, then on the writer), so it must not consume what it captures.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.engine.run(op).await
    }
}

/// Moves an epoch kept as a fake account (schema 3 and before) into `store_values`, keeping the
/// later of the two if both exist, in one transaction.
fn migrate_legacy_epoch(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction().map_err(map_err)?;
    tx.execute(
        "INSERT INTO store_values (name, value)
             SELECT ?1, last_failure_ms FROM accounts WHERE username_key = ?2 AND user_id IS NULL
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![SESSIONS_EPOCH, LEGACY_EPOCH_KEY],
    )
    .map_err(map_err)?;
    tx.execute("DELETE FROM accounts WHERE username_key = ?1 AND user_id IS NULL", params![LEGACY_EPOCH_KEY])
        .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

/// A connection to the database file with the store's pragmas.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    // WAL lets readers and one writer of other processes work side by side; FULL sync makes a
    // committed rotation survive a power cut (a lost rotation would log the client out).
    conn.pragma_update(None, "journal_mode", "WAL").map_err(map_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(map_err)?;
    Ok(conn)
}

/// Creates `dir` (and missing parents) readable by the owner only (0700); an existing directory is
/// left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 if missing, and takes group and other permissions away
/// from an existing one (a store written by an older version).
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    options.open(path)?;
    Ok(())
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        _ => StoreError::unavailable(e),
    }
}

fn version_of(v: i64) -> Version {
    Version(v.to_string())
}

fn expected_counter(v: &Version) -> Option<i64> {
    v.0.parse().ok()
}

fn details_to_text(details: &super::SessionDetails) -> Result<String, StoreError> {
    serde_json::to_string(details).map_err(StoreError::unavailable)
}

fn roles_to_text(roles: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(roles).map_err(StoreError::unavailable)
}

fn roles_from_text(text: &str) -> Result<Vec<String>, rusqlite::Error> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(StoreError::unavailable)
}

/// Statements are prepared once per connection and reused: rusqlite's `Connection::execute` and
/// `query_row` parse and plan the SQL on every call, which was most of a refresh's CPU in SQLite.
trait CachedSql {
    fn exec_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize>;
    fn row_cached<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl CachedSql for Connection {
    fn exec_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row_cached<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Distinct statements the store prepares (rusqlite keeps 16 by default; the store has more).
const STATEMENT_CACHE: usize = 64;

/// After a conditional write matched no row: was the row gone, or at another version?
fn missing_or_stale(conn: &Connection, sql: &str, key: &[&dyn rusqlite::ToSql]) -> Result<StoreError, StoreError> {
    let exists = conn.row_cached(sql, key, |_| Ok(())).optional().map_err(map_err)?.is_some();
    Ok(if exists { StoreError::Precondition } else { StoreError::NotFound })
}

const SESSION_COLUMNS: &str = "user_id, session_id, seed, generation, rotated_at_ms, created_at_ms, expires_at_ms, username, roles, version, \
     idle_expires_at_ms, details";

fn session_from_row(row: &rusqlite::Row<'_>) -> Result<Versioned<SessionRecord>, rusqlite::Error> {
    let seed: Vec<u8> = row.get(2)?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, "session seed is not 32 bytes".into())
    })?;
    let generation: i64 = row.get(3)?;
    let roles: String = row.get(8)?;
    Ok(Versioned {
        value: SessionRecord {
            user_id: row.get(0)?,
            session_id: row.get(1)?,
            seed,
            generation: u64::try_from(generation).unwrap_or(0),
            rotated_at_ms: row.get(4)?,
            created_at_ms: row.get(5)?,
            expires_at_ms: row.get(6)?,
            username: row.get(7)?,
            roles: roles_from_text(&roles)?,
            details: {
                let text: String = row.get(11)?;
                serde_json::from_str(&text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, Box::new(e))
                })?
            },
        },
        version: version_of(row.get(9)?),
    })
}

const ACCOUNT_COLUMNS: &str = "username_key, user_id, username, password_hash, roles, disabled, created_at_ms, \
     failures, last_failure_ms, locked_until_ms, expires_at_ms, version, address_throttles, strikes, device_throttles, \
     identities, factors, email";

fn account_from_row(row: &rusqlite::Row<'_>) -> Result<Versioned<Account>, rusqlite::Error> {
    let username_key: String = row.get(0)?;
    let user_id: Option<String> = row.get(1)?;
    let user = match user_id {
        None => None,
        Some(id) => {
            let roles: String = row.get(4)?;
            Some(UserRecord {
                id,
                username: row.get(2)?,
                username_key: username_key.clone(),
                password_hash: row.get(3)?,
                roles: roles_from_text(&roles)?,
                disabled: row.get(5)?,
                created_at_ms: row.get(6)?,
                identities: {
                    let text: String = row.get(15)?;
                    serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(15, rusqlite::types::Type::Text, Box::new(e))
                    })?
                },
                factors: {
                    let text: String = row.get(16)?;
                    serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(16, rusqlite::types::Type::Text, Box::new(e))
                    })?
                },
                email: {
                    let text: Option<String> = row.get(17)?;
                    text.map(|t| serde_json::from_str(&t)).transpose().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, Box::new(e))
                    })?
                },
            })
        }
    };
    Ok(Versioned {
        value: Account {
            username_key,
            user,
            throttle: LoginThrottle {
                failures: row.get(7)?,
                last_failure_ms: row.get(8)?,
                locked_until_ms: row.get(9)?,
                strikes: row.get(13)?,
            },
            expires_at_ms: row.get(10)?,
            devices: {
                let text: String = row.get(14)?;
                serde_json::from_str(&text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, Box::new(e))
                })?
            },
            addresses: {
                let text: String = row.get(12)?;
                serde_json::from_str(&text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e))
                })?
            },
        },
        version: version_of(row.get(11)?),
    })
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<Version, StoreError> {
        let s = session.clone();
        self.run(move |conn| {
            conn.exec_cached(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11)"
                ),
                params![
                    s.user_id,
                    s.session_id,
                    s.seed.as_slice(),
                    to_i64(s.generation)?,
                    s.rotated_at_ms,
                    s.created_at_ms,
                    s.expires_at_ms,
                    s.username,
                    roles_to_text(&s.roles)?,
                    s.details.idle_expires_at_ms,
                    details_to_text(&s.details)?
                ],
            )
            .map_err(map_err)?;
            Ok(version_of(1))
        })
        .await
    }

    async fn get_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<Versioned<SessionRecord>>, StoreError> {
        let (user_id, session_id) = (user_id.to_string(), session_id.to_string());
        self.run(move |conn| {
            conn.row_cached(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND session_id = ?2"),
                params![user_id, session_id],
                session_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn replace_session(&self, session: &SessionRecord, expected: &Version) -> Result<Version, StoreError> {
        let s = session.clone();
        let Some(expected) = expected_counter(expected) else { return Err(StoreError::Precondition) };
        self.run(move |conn| {
            let changed = conn
                .exec_cached(
                    "UPDATE sessions SET seed = ?3, generation = ?4, rotated_at_ms = ?5, created_at_ms = ?6,
                         expires_at_ms = ?7, username = ?8, roles = ?9, version = version + 1,
                         idle_expires_at_ms = ?11, details = ?12
                     WHERE user_id = ?1 AND session_id = ?2 AND version = ?10",
                    params![
                        s.user_id,
                        s.session_id,
                        s.seed.as_slice(),
                        to_i64(s.generation)?,
                        s.rotated_at_ms,
                        s.created_at_ms,
                        s.expires_at_ms,
                        s.username,
                        roles_to_text(&s.roles)?,
                        expected,
                        s.details.idle_expires_at_ms,
                        details_to_text(&s.details)?
                    ],
                )
                .map_err(map_err)?;
            if changed == 1 {
                return Ok(version_of(expected + 1));
            }
            Err(missing_or_stale(
                conn,
                "SELECT 1 FROM sessions WHERE user_id = ?1 AND session_id = ?2",
                params![s.user_id, s.session_id],
            )?)
        })
        .await
    }

    async fn delete_session(&self, user_id: &str, session_id: &str) -> Result<bool, StoreError> {
        let (user_id, session_id) = (user_id.to_string(), session_id.to_string());
        self.run(move |conn| {
            let n = conn
                .exec_cached(
                    "DELETE FROM sessions WHERE user_id = ?1 AND session_id = ?2",
                    params![user_id, session_id],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        let (user_id, keep) = (user_id.to_string(), keep.map(str::to_string));
        self.run(move |conn| {
            let n = conn
                .exec_cached(
                    "DELETE FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR session_id <> ?2)",
                    params![user_id, keep],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let user_id = user_id.to_string();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1"))
                .map_err(map_err)?;
            let rows = stmt.query_map(params![user_id], session_from_row).map_err(map_err)?;
            rows.map(|r| r.map(|v| v.value).map_err(map_err)).collect()
        })
        .await
    }

    async fn purge_expired(&self, now: UnixMs) -> Result<u64, StoreError> {
        self.run(move |conn| {
            let n = conn
                .exec_cached("DELETE FROM sessions WHERE expires_at_ms <= ?1 OR idle_expires_at_ms <= ?1", params![now])
                .map_err(map_err)?;
            conn.exec_cached("DELETE FROM used_tokens WHERE expires_at_ms <= ?1", params![now]).map_err(map_err)?;
            conn.exec_cached("DELETE FROM codes WHERE expires_at_ms <= ?1", params![now]).map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn mark_used(&self, marker: &str, now: UnixMs, expires_at_ms: UnixMs) -> Result<bool, StoreError> {
        let marker = marker.to_string();
        self.run(move |conn| {
            // An expired marker is taken over; a live one stays and the use is refused.
            let changed = conn
                .exec_cached(
                    "INSERT INTO used_tokens (marker, expires_at_ms) VALUES (?1, ?2)
                     ON CONFLICT (marker) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
                     WHERE used_tokens.expires_at_ms <= ?3",
                    params![marker, expires_at_ms, now],
                )
                .map_err(map_err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn sessions_epoch(&self) -> Result<UnixMs, StoreError> {
        self.run(|conn| {
            conn.row_cached("SELECT value FROM store_values WHERE name = ?1", params![SESSIONS_EPOCH], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(map_err)
        })
        .await
    }

    async fn raise_sessions_epoch(&self, at: UnixMs) -> Result<UnixMs, StoreError> {
        self.run(move |conn| {
            // One statement: concurrent raises cannot lower it, and it never goes back.
            conn.row_cached(
                "INSERT INTO store_values (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)
                 RETURNING value",
                params![SESSIONS_EPOCH, at],
                |r| r.get(0),
            )
            .map_err(map_err)
        })
        .await
    }
}

impl EmbeddedStore {
    /// The `store_records` row `name` (a JSON body), with its version.
    async fn get_record<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: String,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        self.run(move |conn| {
            let row: Option<(String, i64)> = conn
                .row_cached("SELECT body, version FROM store_records WHERE name = ?1", params![name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(map_err)?;
            row.map(|(body, version)| {
                let value = serde_json::from_str(&body).map_err(StoreError::unavailable)?;
                Ok(Versioned { value, version: version_of(version) })
            })
            .transpose()
        })
        .await
    }

    /// Writes the `store_records` row `name`: created when `expected` is `None`
    /// ([`StoreError::Conflict`] when it exists), else replaced only at `expected`.
    async fn put_record<T: serde::Serialize>(
        &self,
        name: String,
        value: &T,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let body = serde_json::to_string(value).map_err(StoreError::unavailable)?;
        let expected = match expected {
            None => None,
            Some(v) => Some(expected_counter(v).ok_or(StoreError::Precondition)?),
        };
        self.run(move |conn| match expected {
            None => {
                conn.exec_cached(
                    "INSERT INTO store_records (name, body, version) VALUES (?1, ?2, 1)",
                    params![name, body],
                )
                .map_err(map_err)?;
                Ok(version_of(1))
            }
            Some(expected) => {
                let changed = conn
                    .exec_cached(
                        "UPDATE store_records SET body = ?2, version = version + 1 WHERE name = ?1 AND version = ?3",
                        params![name, body, expected],
                    )
                    .map_err(map_err)?;
                if changed == 1 {
                    return Ok(version_of(expected + 1));
                }
                Err(missing_or_stale(conn, "SELECT 1 FROM store_records WHERE name = ?1", params![name])?)
            }
        })
        .await
    }
}

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn get_account(&self, username_key: &str) -> Result<Option<Versioned<Account>>, StoreError> {
        let key = username_key.to_string();
        self.run(move |conn| {
            conn.row_cached(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username_key = ?1"),
                params![key],
                account_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn put_account(&self, account: &Account, expected: Option<&Version>) -> Result<Version, StoreError> {
        let a = account.clone();
        let expected = match expected {
            None => None,
            Some(v) => Some(expected_counter(v).ok_or(StoreError::Precondition)?),
        };
        self.run(move |conn| {
            let u = a.user.as_ref();
            let roles = u.map(|u| roles_to_text(&u.roles)).transpose()?;
            let t = &a.throttle;
            let addresses = serde_json::to_string(&a.addresses).map_err(StoreError::unavailable)?;
            let devices = serde_json::to_string(&a.devices).map_err(StoreError::unavailable)?;
            let identities =
                serde_json::to_string(&u.map(|u| u.identities.as_slice()).unwrap_or_default()).map_err(StoreError::unavailable)?;
            let factors = serde_json::to_string(&u.map(|u| u.factors.clone()).unwrap_or_default())
                .map_err(StoreError::unavailable)?;
            let email = u
                .and_then(|u| u.email.as_ref())
                .map(serde_json::to_string)
                .transpose()
                .map_err(StoreError::unavailable)?;
            let values = params![
                a.username_key,
                u.map(|u| &u.id),
                u.map(|u| &u.username),
                u.map(|u| &u.password_hash),
                roles,
                u.map(|u| u.disabled),
                u.map(|u| u.created_at_ms),
                t.failures,
                t.last_failure_ms,
                t.locked_until_ms,
                a.expires_at_ms,
                expected.unwrap_or(0),
                addresses,
                t.strikes,
                devices,
                identities,
                factors,
                email
            ];
            match expected {
                None => {
                    conn.exec_cached(
                        &format!(
                            "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 + 1, ?13, ?14, ?15, ?16, ?17, ?18)"
                        ),
                        values,
                    )
                    .map_err(map_err)?;
                    Ok(version_of(1))
                }
                Some(expected) => {
                    let changed = conn
                        .exec_cached(
                            "UPDATE accounts SET user_id = ?2, username = ?3, password_hash = ?4, roles = ?5, disabled = ?6,
                                 created_at_ms = ?7, failures = ?8, last_failure_ms = ?9, locked_until_ms = ?10,
                                 expires_at_ms = ?11, address_throttles = ?13, strikes = ?14, device_throttles = ?15,
                                 identities = ?16, factors = ?17, email = ?18,
                                 version = version + 1
                             WHERE username_key = ?1 AND version = ?12",
                            values,
                        )
                        .map_err(map_err)?;
                    if changed == 1 {
                        return Ok(version_of(expected + 1));
                    }
                    let key = &a.username_key;
                    Err(missing_or_stale(conn, "SELECT 1 FROM accounts WHERE username_key = ?1", params![key])?)
                }
            }
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id IS NOT NULL ORDER BY username_key"
                ))
                .map_err(map_err)?;
            let rows = stmt.query_map([], account_from_row).map_err(map_err)?;
            rows.filter_map(|r| r.map(|v| v.value.user).map_err(map_err).transpose()).collect()
        })
        .await
    }

    async fn get_admins(&self) -> Result<Option<Versioned<AdminRoster>>, StoreError> {
        self.get_record(ADMINS.to_string()).await
    }

    async fn put_admins(&self, roster: &AdminRoster, expected: Option<&Version>) -> Result<Version, StoreError> {
        self.put_record(ADMINS.to_string(), roster, expected).await
    }

    async fn get_name_claim(&self, skeleton: &str) -> Result<Option<Versioned<NameClaim>>, StoreError> {
        self.get_record(format!("{NAME_CLAIM}{skeleton}")).await
    }

    async fn put_name_claim(
        &self,
        skeleton: &str,
        claim: &NameClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.put_record(format!("{NAME_CLAIM}{skeleton}"), claim, expected).await
    }

    async fn get_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<Versioned<IdentityRecord>>, StoreError> {
        self.get_record(format!("{IDENTITY}{provider}\u{0}{subject}")).await
    }

    async fn put_identity(&self, identity: &IdentityRecord, expected: Option<&Version>) -> Result<Version, StoreError> {
        let name = format!("{IDENTITY}{}\u{0}{}", identity.provider, identity.subject);
        self.put_record(name, identity, expected).await
    }

    async fn get_email_claim(&self, address: &str) -> Result<Option<Versioned<EmailClaim>>, StoreError> {
        self.get_record(format!("{EMAIL_CLAIM}{address}")).await
    }

    async fn put_email_claim(
        &self,
        address: &str,
        claim: &EmailClaim,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.put_record(format!("{EMAIL_CLAIM}{address}"), claim, expected).await
    }

    async fn get_code(&self, key: &str, now: UnixMs) -> Result<Option<Versioned<CodeRecord>>, StoreError> {
        let key = key.to_string();
        self.run(move |conn| {
            let row: Option<(String, i64)> = conn
                .row_cached(
                    "SELECT body, version FROM codes WHERE name = ?1 AND expires_at_ms > ?2",
                    params![key, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            row.map(|(body, version)| {
                let value = serde_json::from_str(&body).map_err(StoreError::unavailable)?;
                Ok(Versioned { value, version: version_of(version) })
            })
            .transpose()
        })
        .await
    }

    async fn put_code(
        &self,
        key: &str,
        code: &CodeRecord,
        expected: Option<&Version>,
        now: UnixMs,
    ) -> Result<Version, StoreError> {
        let body = serde_json::to_string(code).map_err(StoreError::unavailable)?;
        let (key, expires) = (key.to_string(), code.expires_at_ms);
        let expected = match expected {
            None => None,
            Some(v) => Some(expected_counter(v).ok_or(StoreError::Precondition)?),
        };
        self.run(move |conn| match expected {
            None => {
                // A record that expired is taken over; a live one stays.
                let version: Option<i64> = conn
                    .row_cached(
                        "INSERT INTO codes (name, body, version, expires_at_ms) VALUES (?1, ?2, 1, ?3)
                         ON CONFLICT (name) DO UPDATE SET body = excluded.body, version = codes.version + 1,
                             expires_at_ms = excluded.expires_at_ms
                         WHERE codes.expires_at_ms <= ?4
                         RETURNING version",
                        params![key, body, expires, now],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(map_err)?;
                version.map(version_of).ok_or(StoreError::Conflict)
            }
            Some(expected) => {
                let changed = conn
                    .exec_cached(
                        "UPDATE codes SET body = ?2, expires_at_ms = ?3, version = version + 1
                         WHERE name = ?1 AND version = ?4 AND expires_at_ms > ?5",
                        params![key, body, expires, expected, now],
                    )
                    .map_err(map_err)?;
                if changed == 1 {
                    return Ok(version_of(expected + 1));
                }
                Err(missing_or_stale(conn, "SELECT 1 FROM codes WHERE name = ?1", params![key])?)
            }
        })
        .await
    }

    async fn purge_expired_accounts(&self, now: UnixMs) -> Result<u64, StoreError> {
        self.run(move |conn| {
            let n = conn
                .exec_cached("DELETE FROM accounts WHERE user_id IS NULL AND expires_at_ms <= ?1", params![now])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}

fn client_from_row(row: &rusqlite::Row<'_>) -> Result<ClientRecord, rusqlite::Error> {
    let hash: Vec<u8> = row.get(1)?;
    let secret_hash: [u8; 32] = hash.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "client secret hash is not 32 bytes".into(),
        )
    })?;
    Ok(ClientRecord { client_id: row.get(0)?, secret_hash, created_at_ms: row.get(2)? })
}

#[async_trait]
impl ClientStore for EmbeddedStore {
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let c = client.clone();
        self.run(move |conn| {
            conn.exec_cached(
                "INSERT INTO clients (client_id, secret_hash, created_at_ms) VALUES (?1, ?2, ?3)",
                params![c.client_id, c.secret_hash.as_slice(), c.created_at_ms],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let id = client_id.to_string();
        self.run(move |conn| {
            conn.row_cached(
                "SELECT client_id, secret_hash, created_at_ms FROM clients WHERE client_id = ?1",
                params![id],
                client_from_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT client_id, secret_hash, created_at_ms FROM clients ORDER BY client_id")
                .map_err(map_err)?;
            let rows = stmt.query_map([], client_from_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let id = client_id.to_string();
        self.run(move |conn| {
            let n = conn.exec_cached("DELETE FROM clients WHERE client_id = ?1", params![id]).map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }
}
