//! How the embedded store executes its operations: group commit on one writer, reads on WAL readers.
//!
//! Every write (the operation closures of [`super::EmbeddedStore`]) goes to one writer thread that
//! owns the write connection. The writer takes everything that is queued, runs it in one
//! `BEGIN IMMEDIATE … COMMIT` with a `SAVEPOINT` around each operation (an operation that fails —
//! a lost compare-and-swap — is rolled back alone and does not touch the others), and answers each
//! operation with its own outcome only after the `COMMIT` returned. With `synchronous = FULL` in WAL
//! mode, `COMMIT` returns after the log is on disk, so an acknowledged write is durable exactly as
//! before; what changes is that writes arriving together share one fsync instead of paying one each.
//!
//! Operations that only read run on a small pool of reader connections instead (WAL readers see the
//! last committed — and therefore durable — state, and do not wait behind the writer's fsync), on
//! the calling thread: a read of the store's few hot pages takes microseconds, less than handing
//! it to another thread and back (two context switches) would. Which
//! operations only read is learnt, not declared: each operation closure has a type of its own, and
//! the first time a type runs it is tried on a reader whose authorizer denies anything but reading.
//! If it tried to write, nothing happened on the reader, the type is remembered as a writer, and the
//! operation runs on the writer — which is why operations are `Fn`: they may run twice.
//!
//! WAL checkpoints (copying the log back into the database file) are taken off the commit path: a
//! checkpointer thread runs PASSIVE checkpoints every [`CHECKPOINT_EVERY`] group commits, which never
//! wait for or block anyone; when the log has grown past [`WAL_RESTART_FRAMES`] anyway (a
//! checkpoint running beside commits never reaches the newest frame), the writer itself copies the
//! few frames left between two groups, and the log starts over.
//!
//! The in-memory mode (`:memory:`) has one connection, no readers and no writer thread: with no
//! fsync to share, each operation runs on the calling thread in a transaction of its own, under a
//! mutex (an operation takes microseconds; a thread handoff would cost more than the operation).

use std::any::TypeId;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Operations waiting for the writer; submitters wait for room when it is full.
const QUEUE_LENGTH: usize = 1024;
/// Most operations committed together (bounds the time the first of a group waits for the last).
const MAX_GROUP: usize = 256;
/// Reader connections kept open between reads.
const IDLE_READERS: usize = 8;
/// Group commits between two WAL checkpoints. The checkpoint (copying the log into the database
/// file and syncing it) runs on a thread of its own, so no commit waits for it; left to SQLite it
/// would run inside every thousandth page's commit and stall every write queued behind it.
const CHECKPOINT_EVERY: u32 = 16;
/// Log frames (pages) above which the writer finishes a checkpoint itself so that the log restarts
/// (SQLite's own default checkpoints at 1,000).
const WAL_RESTART_FRAMES: i64 = 1_000;

/// What the writer does with an operation once the group's commit has (or has not) happened.
type Deliver = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// An operation as the writer sees it: run it in its savepoint, keep the answer until the commit.
/// Without a connection (no transaction could be started), it answers with the commit's error unrun.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Deliver + Send>;
/// Opens a connection with the store's pragmas.
type Opener = Arc<dyn Fn() -> Result<Connection, StoreError> + Send + Sync>;

/// The writer thread, the reader pool, and what is known about which operations write.
pub(super) struct Engine {
    queue: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Option<Readers>,
    writing_ops: RwLock<HashSet<TypeId>>,
    /// The in-memory store's one connection (then there is no writer thread and no readers).
    inline: Option<Mutex<Connection>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("readers", &self.readers.is_some())
            .field("inline", &self.inline.is_some())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the writer on `conn` and the checkpointer; `open` opens reader connections (and the
    /// checkpointer's, at its first checkpoint: nothing of it delays start-up).
    pub(super) fn start(conn: Connection, open: Opener) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel(QUEUE_LENGTH);
        // The writer no longer checkpoints inside its commits; the checkpointer does.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(StoreError::unavailable)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let own = Arc::clone(&open);
        let log_frames = Arc::new(AtomicI64::new(0));
        let seen = Arc::clone(&log_frames);
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&*own, &woken, &seen))
            .map_err(StoreError::unavailable)?;
        let checkpoint = Some(Checkpoints { wake, log_frames });
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&conn, jobs, checkpoint))
            .map_err(StoreError::unavailable)?;
        let readers = Some(Readers { open, idle: Mutex::new(Vec::new()) });
        Ok(Self {
            queue: Some(queue),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers,
            writing_ops: RwLock::new(HashSet::new()),
            inline: None,
        })
    }

    /// The in-memory engine: every operation runs on the caller, on `conn`, in its own transaction.
    pub(super) fn inline(conn: Connection) -> Self {
        Self {
            queue: None,
            writer: None,
            checkpointer: None,
            readers: None,
            writing_ops: RwLock::new(HashSet::new()),
            inline: Some(Mutex::new(conn)),
        }
    }

    /// Runs `op`: on a reader when it only reads, else on the writer in the next group commit.
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(conn) = &self.inline {
            // Outside a transaction, SAVEPOINT begins one and RELEASE commits it.
            return in_savepoint(&conn.lock().unwrap_or_else(PoisonError::into_inner), &op);
        }
        let kind = TypeId::of::<F>();
        let op = match &self.readers {
            Some(readers) if !self.writing_ops.read().unwrap_or_else(PoisonError::into_inner).contains(&kind) => {
                match readers.try_read(op)? {
                    Attempt::Read(result) => return result,
                    Attempt::Writes(op) => {
                        self.writing_ops.write().unwrap_or_else(PoisonError::into_inner).insert(kind);
                        op
                    }
                }
            }
            _ => op,
        };
        self.write(op).await
    }

    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, &op),
                None => Err(StoreError::unavailable("no store transaction")),
            };
            Box::new(move |commit: Result<(), &str>| {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(why) => Err(StoreError::unavailable(why.to_string())),
                });
            })
        });
        let queue = self.queue.as_ref().ok_or_else(|| StoreError::unavailable("the store writer has stopped"))?;
        queue.send(job).await.map_err(|_| StoreError::unavailable("the store writer has stopped"))?;
        answer.await.map_err(|_| StoreError::unavailable("the store writer stopped before answering"))?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and close its connection.
        self.queue = None;
        // The writer's end drops the checkpointer's wake-up, which ends the checkpointer.
        for thread in [self.writer.take(), self.checkpointer.take()].into_iter().flatten() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Runs one operation in a savepoint of the group's transaction: kept when it succeeds, rolled back
/// alone when it fails (or panics), so the other operations of the group are unaffected.
fn in_savepoint<T>(conn: &Connection, op: &dyn Fn(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    statement(conn, "SAVEPOINT op")?;
    let result = catch_unwind(AssertUnwindSafe(|| op(conn)))
        .unwrap_or_else(|_| Err(StoreError::unavailable("a store operation panicked")));
    match &result {
        Ok(_) => statement(conn, "RELEASE op")?,
        Err(_) => {
            statement(conn, "ROLLBACK TO op")?;
            statement(conn, "RELEASE op")?;
        }
    }
    result
}

fn statement(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).map_err(StoreError::unavailable)
}

/// The writer: takes whatever is queued (at least one operation, at most [`MAX_GROUP`]) and commits
/// it as one transaction, until every handle on the store is gone.
/// The writer's side of the checkpointer: how to wake it, and the log size it last saw.
struct Checkpoints {
    wake: SyncSender<()>,
    log_frames: Arc<AtomicI64>,
}

fn write_loop(conn: &Connection, mut jobs: mpsc::Receiver<Job>, mut checkpoint: Option<Checkpoints>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut since_checkpoint = 0u32;
    while let Some(first) = jobs.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(conn, group.drain(..));
        let Some(checkpoints) = &checkpoint else { continue };
        if checkpoints.log_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
            // Under sustained writes the background checkpoints never catch up with the newest
            // frame, so the log never starts over. Between two groups the writer copies the few
            // frames they left (PASSIVE: it never waits), and its next transaction restarts the log.
            checkpoints.log_frames.store(0, Ordering::Relaxed);
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "WAL checkpoint on the writer failed; the next one retries");
            }
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            if let Err(TrySendError::Disconnected(())) = checkpoints.wake.try_send(()) {
                // The checkpointer is gone: let SQLite checkpoint inside the commits again.
                checkpoint = None;
                if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", 1000) {
                    tracing::warn!(error = %e, "cannot turn SQLite's own WAL checkpoints back on");
                }
            }
        }
    }
}

/// Checkpoints the WAL each time the writer asks, PASSIVE: it copies what no reader still needs
/// and never waits for (or blocks) the writer or a reader — a blocking mode would hold the write
/// lock while sleeping in SQLite's busy handler, and every write queued behind it would wait.
/// Reports the log's size to the writer, which restarts the log when it grew too long.
fn checkpoint_loop(
    open: &(dyn Fn() -> Result<Connection, StoreError> + Send + Sync),
    woken: &std::sync::mpsc::Receiver<()>,
    log_frames: &AtomicI64,
) {
    if woken.recv().is_err() {
        return;
    }
    let conn = match open() {
        Ok(conn) => conn,
        Err(e) => {
            // Ending here tells the writer to let SQLite checkpoint inside its commits again.
            tracing::warn!(error = %e, "no connection for the WAL checkpointer; the writer checkpoints itself");
            return;
        }
    };
    loop {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
            Ok(frames) => log_frames.store(frames, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries"),
        }
        if woken.recv().is_err() {
            return;
        }
    }
}

fn commit_group(conn: &Connection, group: impl Iterator<Item = Job>) {
    let mut answers: Vec<Deliver> = Vec::new();
    for job in group {
        if conn.is_autocommit()
            && let Err(e) = statement(conn, "BEGIN IMMEDIATE")
        {
            // Not even a transaction (the file is locked past the busy timeout, the disk failed):
            // this operation did not run; tell it so.
            let why = e.to_string();
            job(None)(Err(&why));
            continue;
        }
        answers.push(job(Some(conn)));
        if conn.is_autocommit() {
            // SQLite ended the transaction itself (an I/O or disk-full error inside an operation):
            // everything of the group so far is rolled back, none of it was acknowledged.
            fail(&mut answers, "the store transaction was rolled back by an I/O error");
        }
    }
    if answers.is_empty() {
        return;
    }
    match statement(conn, "COMMIT") {
        Ok(()) => answers.drain(..).for_each(|deliver| deliver(Ok(()))),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = statement(conn, "ROLLBACK");
            }
            fail(&mut answers, &format!("commit failed: {e}"));
        }
    }
}

fn fail(answers: &mut Vec<Deliver>, why: &str) {
    answers.drain(..).for_each(|deliver| deliver(Err(why)));
}

/// Reader connections, each denying (through its authorizer) any statement that is not a read.
struct Readers {
    open: Opener,
    idle: Mutex<Vec<Reader>>,
}

struct Reader {
    conn: Connection,
    /// Set by the authorizer when a statement tried to do more than read.
    denied: Arc<AtomicBool>,
}

enum Attempt<T, F> {
    /// The operation only read; this is its outcome.
    Read(Result<T, StoreError>),
    /// The operation tried to write (nothing happened): run it on the writer.
    Writes(F),
}

impl Readers {
    fn take(&self) -> Result<Reader, StoreError> {
        if let Some(reader) = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(reader);
        }
        let mut conn = (self.open)()?;
        let denied = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&denied);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match ctx.action {
            AuthAction::Select | AuthAction::Read { .. } | AuthAction::Function { .. } | AuthAction::Recursive => {
                Authorization::Allow
            }
            _ => {
                flag.store(true, Ordering::Relaxed);
                Authorization::Deny
            }
        }))
        .map_err(StoreError::unavailable)?;
        Ok(Reader { conn, denied })
    }

    fn put(&self, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(reader);
        }
    }

    fn try_read<T, F>(&self, op: F) -> Result<Attempt<T, F>, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = self.take()?;
        reader.denied.store(false, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(|| op(&reader.conn)))
            .unwrap_or_else(|_| Err(StoreError::unavailable("a store operation panicked")));
        let done = if reader.denied.load(Ordering::Relaxed) { Attempt::Writes(op) } else { Attempt::Read(result) };
        if reader.conn.is_autocommit() {
            self.put(reader);
        }
        Ok(done)
    }
}

/// Whether `dir` names the in-memory store rather than a directory.
pub(super) fn is_memory(dir: &Path) -> bool {
    dir.as_os_str() == super::MEMORY
}
