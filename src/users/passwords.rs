//! argon2id password hashing with OWASP parameters (19 MiB, 2 passes, 1 lane) on a fixed pool of
//! worker threads.
//!
//! Memory is part of the design: each worker owns one argon2 memory block, mapped once and reused
//! for every hash it computes (pages stay faulted in, so a login flood costs no mmap/munmap per
//! hash), and unmapped when the worker has been idle for [`IDLE_RELEASE`] — or at once after the
//! start-up warm-up, so an idle service holds none. Resident memory for
//! hashing is therefore at most `workers × 19 MiB` under any load, and returns to idle after it.
//! Work reaches the workers through a bounded queue: when it is full, or a request has waited
//! longer than the queue timeout, the request is refused at once ([`HashError::Busy`]) so a login
//! flood sheds load instead of queueing forever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OnceCell, oneshot};

use crate::secret::Password;
use crate::settings::Hashing;

/// A worker that has had no work for this long gives its memory block back to the OS.
pub const IDLE_RELEASE: Duration = Duration::from_secs(30);
/// Bytes of the argon2 output.
const OUTPUT_LEN: usize = 32;
/// Bytes of a fresh salt.
const SALT_LEN: usize = 16;

/// Why hashing did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The queue is full or the request waited too long: the caller should answer 503.
    #[error("password hashing is saturated ({0})")]
    Busy(&'static str),
    /// The hash could not be computed (OS random number generator, memory); never the client's fault.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

enum Work {
    /// `release`: give the worker's block back right after this hash (the start-up warm-up, so that
    /// an idle service holds no 19 MiB block; every worker then maps its block on its first login,
    /// whoever logs in, so this reveals nothing about which usernames exist).
    Hash {
        password: Password,
        salt: [u8; SALT_LEN],
        release: bool,
    },
    Verify {
        password: Password,
        phc: String,
    },
}

enum Done {
    Hashed(String),
    Verified(bool),
}

struct Job {
    work: Work,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Done, HashError>>,
}

/// One argon2 memory block, mapped privately from the OS so that freeing it returns it at once
/// (glibc would keep a freed 19 MiB heap block in the thread's arena).
struct BlockMemory {
    ptr: std::ptr::NonNull<Block>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by one worker thread; nothing else holds the pointer.
unsafe impl Send for BlockMemory {}

impl BlockMemory {
    fn map(len: usize) -> Result<Self, HashError> {
        let bytes = len.checked_mul(Block::SIZE).ok_or_else(|| HashError::Failed("memory size overflow".into()))?;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(HashError::Failed(format!("cannot map {bytes} bytes: {}", std::io::Error::last_os_error())));
        }
        // Page-aligned, so aligned for Block (64 bytes); anonymous pages are zero, a valid Block.
        let ptr = std::ptr::NonNull::new(raw.cast::<Block>())
            .ok_or_else(|| HashError::Failed("mmap returned a null mapping".into()))?;
        Ok(Self { ptr, len })
    }
}

impl AsMut<[Block]> for BlockMemory {
    fn as_mut(&mut self) -> &mut [Block] {
        // SAFETY: `ptr` points to `len` zero-initialised (or argon2-written) Blocks we own exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len * Block::SIZE);
        }
    }
}

/// The bounded queue between requests and workers. Each worker waits on the condition variable
/// with its own timeout, so every idle worker (not only one) gives its memory back.
#[derive(Debug)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    capacity: usize,
    /// Set when the [`PasswordHasher`] is dropped: the workers finish what is queued and exit,
    /// giving back their memory and threads.
    closed: AtomicBool,
}

/// What a worker gets from the queue.
enum Next {
    Job(Job),
    Idle,
    Closed,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a job unless the queue is full (then hands it back).
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut jobs = self.lock();
        if jobs.len() >= self.capacity {
            return Err(job);
        }
        jobs.push_back(job);
        drop(jobs);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job; `Idle` after `idle` without one; `Closed` once the queue is closed and empty.
    fn pop(&self, idle: Duration) -> Next {
        let mut jobs = self.lock();
        let deadline = Instant::now() + idle;
        loop {
            if let Some(job) = jobs.pop_front() {
                return Next::Job(job);
            }
            if self.closed.load(Ordering::Acquire) {
                return Next::Closed;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return Next::Idle };
            jobs = self.ready.wait_timeout(jobs, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn close(&self) {
        // Under the lock, so no worker is between its check and its wait.
        let jobs = self.lock();
        self.closed.store(true, Ordering::Release);
        drop(jobs);
        self.ready.notify_all();
    }
}

/// Hashes and verifies passwords on the worker pool.
#[derive(Debug)]
pub struct PasswordHasher {
    queue: Arc<Queue>,
    /// Hash of a random password, verified against when a username is unknown so that the answer
    /// takes as long as for a wrong password.
    dummy: OnceCell<String>,
}

impl Drop for PasswordHasher {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("enqueued", &self.enqueued).finish_non_exhaustive()
    }
}

fn owasp_params() -> Params {
    Params::default()
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl PasswordHasher {
    /// A pool of `hashing.workers` threads with OWASP parameters.
    pub fn start(hashing: &Hashing) -> Result<Arc<Self>, HashError> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(VecDeque::with_capacity(hashing.queue_length)),
            ready: Condvar::new(),
            capacity: hashing.queue_length,
            closed: AtomicBool::new(false),
        });
        let queue_timeout = Duration::from_millis(hashing.queue_timeout_ms);
        for i in 0..hashing.workers {
            let jobs = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&jobs, queue_timeout))
                .map_err(|e| HashError::Failed(format!("cannot start a hashing worker: {e}")))?;
        }
        Ok(Arc::new(Self { queue, dummy: OnceCell::new() }))
    }

    async fn submit(&self, work: Work) -> Result<Done, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { work, enqueued: Instant::now(), reply };
        if self.queue.push(job).is_err() {
            return Err(HashError::Busy("queue full"));
        }
        answer.await.map_err(|_| HashError::Failed("a hashing worker stopped".into()))?
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        self.hash_then(password, false).await
    }

    async fn hash_then(&self, password: &Password, release: bool) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_LEN];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut salt)
            .map_err(|e| HashError::Failed(format!("OS random number generator failed: {e}")))?;
        match self.submit(Work::Hash { password: password.clone(), salt, release }).await? {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => Err(HashError::Failed("a worker answered the wrong job".into())),
        }
    }

    /// Computes the dummy hash now (called in the background at start-up, so the first login of an
    /// unknown user does not pay for it).
    pub async fn warm_up(&self) -> Result<(), HashError> {
        self.dummy_hash().await.map(|_| ())
    }

    async fn dummy_hash(&self) -> Result<&String, HashError> {
        self.dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut random)
                    .map_err(|e| HashError::Failed(format!("OS random number generator failed: {e}")))?;
                let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
                self.hash_then(&Password::new(text), true).await
            })
            .await
    }

    /// Whether `password` matches `phc`. With `phc = None` (unknown user) it verifies against the
    /// dummy hash, taking the same time, and answers `false`.
    pub async fn verify(&self, password: &Password, phc: Option<&str>) -> Result<bool, HashError> {
        let (phc, real) = match phc {
            Some(p) => (p.to_string(), true),
            None => (self.dummy_hash().await?.clone(), false),
        };
        match self.submit(Work::Verify { password: password.clone(), phc }).await? {
            Done::Verified(matched) => Ok(real && matched),
            Done::Hashed(_) => Err(HashError::Failed("a worker answered the wrong job".into())),
        }
    }
}

/// One worker: takes jobs for the life of the process; maps its block on first use and unmaps it
/// after [`IDLE_RELEASE`] without work.
fn worker(jobs: &Queue, queue_timeout: Duration) {
    let params = owasp_params();
    let mut memory: Option<BlockMemory> = None;
    loop {
        let job = match jobs.pop(IDLE_RELEASE) {
            Next::Job(job) => job,
            Next::Idle => {
                memory = None;
                continue;
            }
            Next::Closed => return,
        };
        if job.reply.is_closed() {
            continue; // the client went away while queued
        }
        if job.enqueued.elapsed() > queue_timeout {
            let _ = job.reply.send(Err(HashError::Busy("waited too long for a hashing worker")));
            continue;
        }
        let blocks = match memory.as_mut() {
            Some(m) => m,
            None => match BlockMemory::map(params.block_count()) {
                Ok(m) => memory.insert(m),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            },
        };
        let release = matches!(job.work, Work::Hash { release: true, .. });
        let result = run(&params, job.work, blocks);
        let _ = job.reply.send(result);
        if release {
            memory = None;
        }
    }
}

fn run(params: &Params, work: Work, blocks: &mut BlockMemory) -> Result<Done, HashError> {
    match work {
        Work::Hash { password, salt, release: _ } => {
            let mut out = [0u8; OUTPUT_LEN];
            argon2(params.clone())
                .hash_password_into_with_memory(password.expose().as_bytes(), &salt, &mut out, &mut *blocks)
                .map_err(|e| HashError::Failed(e.to_string()))?;
            let salt = Salt::new(&salt).map_err(|e| HashError::Failed(e.to_string()))?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: params
                    .try_into()
                    .map_err(|e: argon2::password_hash::Error| HashError::Failed(e.to_string()))?,
                salt: Some(salt),
                hash: Some(
                    out.as_slice()
                        .try_into()
                        .map_err(|e: argon2::password_hash::phc::Error| HashError::Failed(e.to_string()))?,
                ),
            };
            Ok(Done::Hashed(phc.to_string()))
        }
        Work::Verify { password, phc } => Ok(Done::Verified(verify_phc(params, &password, &phc, blocks))),
    }
}

/// Verifies against a stored PHC string on the worker's own memory. A hash with parameters larger
/// than the worker's block (not written by this service) is verified on a temporary block.
fn verify_phc(own: &Params, password: &Password, phc: &str, blocks: &mut BlockMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else { return false };
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let computed = if params.block_count() <= own.block_count() {
        hasher.hash_password_into_with_memory(password.expose().as_bytes(), &salt, &mut out, &mut *blocks)
    } else {
        hasher.hash_password_into(password.expose().as_bytes(), &salt, &mut out)
    };
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier as _;

    fn pool(workers: usize, queue_length: usize, queue_timeout_ms: u64) -> Arc<PasswordHasher> {
        PasswordHasher::start(&Hashing { workers, queue_length, queue_timeout_ms }).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let h = pool(1, 8, 10_000);
        let phc = h.hash(&Password::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&Password::new("correct horse"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&Password::new("correct hors"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&Password::new("correct horse"), Some("not a phc string")).await.unwrap());
        // The reference implementation agrees with the pooled one, both ways.
        assert!(Argon2::default().verify_password(b"correct horse", phc.as_str()).is_ok());
        let reference = {
            use argon2::PasswordHasher as _;
            Argon2::default().hash_password(b"pw-from-elsewhere").unwrap().to_string()
        };
        assert!(h.verify(&Password::new("pw-from-elsewhere"), Some(&reference)).await.unwrap());
    }

    #[tokio::test]
    async fn dropping_the_hasher_ends_its_workers() {
        let h = pool(3, 8, 2_000);
        h.hash(&Password::new("a password to hash")).await.unwrap();
        let queue = Arc::clone(&h.queue);
        assert_eq!(Arc::strong_count(&queue), 5, "the hasher, 3 workers and this test");
        drop(h);
        let started = Instant::now();
        while Arc::strong_count(&queue) > 1 {
            assert!(started.elapsed() < Duration::from_secs(5), "workers still running");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn unknown_users_never_verify_but_do_the_work() {
        let h = pool(1, 8, 10_000);
        assert!(!h.verify(&Password::new(""), None).await.unwrap());
        assert!(h.dummy.get().is_some(), "the dummy hash was computed and verified against");
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let h = pool(2, 8, 10_000);
        let a = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        let b = h.hash(&Password::new("pw-pw-pw-pw")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let h = pool(1, 1, 60_000);
        let password = Password::new("x");
        // One job runs, one waits; every further one is refused without waiting.
        let started = Instant::now();
        let jobs: Vec<_> = (0..6).map(|_| h.hash(&password)).collect();
        let results = futures_util::future::join_all(jobs).await;
        let busy = results.iter().filter(|r| matches!(r, Err(HashError::Busy(_)))).count();
        assert!(busy >= 3, "{busy} of 6 refused");
        assert!(results.iter().filter(|r| r.is_ok()).count() >= 1);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_request_that_waited_past_the_timeout_is_refused() {
        let h = pool(1, 16, 10);
        let password = Password::new("x");
        let results = futures_util::future::join_all((0..4).map(|_| h.hash(&password))).await;
        assert!(results[0].is_ok(), "the first job starts at once");
        assert!(
            results[1..].iter().all(|r| matches!(r, Err(HashError::Busy(_)))),
            "jobs queued behind a 19 MiB hash wait longer than 10 ms"
        );
    }
}
