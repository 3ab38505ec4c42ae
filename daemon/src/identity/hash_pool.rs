//! hash_pool.rs: hashes cached executables on a few threads of their own, never on the writer,
//! with a size cap and a deadline; a worker stuck in a read (a hanging FUSE file, a FIFO) is
//! abandoned at the deadline and replaced, up to a fixed number of abandoned threads.
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Stored instead of a hash when the file is larger than `[monitoring] hash_max_bytes`.
pub const HASH_TOO_LARGE: &str = "!too-large";
/// Stored instead of a hash when hashing took longer than `[monitoring] hash_timeout_seconds`.
pub const HASH_TIMEOUT: &str = "!timeout";
/// Stored instead of a hash when the file was written to after a run executed it and before its
/// content could be hashed: the bytes that ran are gone, and no other hash may stand for them.
pub const HASH_MODIFIED: &str = "!modified";

/// Threads that hash at the same time.
pub const WORKERS: usize = 2;
/// Workers abandoned in a read that never returned, at most; past it no replacement is started
/// (the remaining workers carry on, and requests wait in the queue).
pub const MAX_ABANDONED: u64 = 8;
/// Requests waiting for a worker, at most; more are refused (and asked again later).
pub const QUEUE: usize = 4096;

/// How much of a file is hashed, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 30,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the pool did since it started (status and `/metrics`).
#[derive(Debug, Default)]
pub struct HashCounters {
    /// Executable levels stored as `!pending` (their hash was not ready when their window was
    /// written; their rows are completed when it arrives).
    pub pending: AtomicU64,
    /// Files not hashed because they were larger than the cap.
    pub too_large: AtomicU64,
    /// Hashes abandoned at the deadline.
    pub timeout: AtomicU64,
    /// Workers abandoned in a read that did not return by the deadline.
    pub abandoned_workers: AtomicU64,
    /// Runs whose executable was written to before their content was hashed (`!modified`).
    pub modified_before_hash: AtomicU64,
}

/// Size, modification and change times (ns) of a file when it was hashed: another stamp means
/// other content. The change time names a version of the content (the kernel reports it at exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i64,
}

/// What a job found: the hash (or a `!` marker), None when the file still had stamp `known`.
pub struct Outcome {
    pub hash: Option<String>,
    pub stamp: Option<Stamp>,
}

/// An open file to hash.
pub trait Source: Send + Sync {
    fn file(&self) -> &File;
}

impl Source for File {
    fn file(&self) -> &File {
        self
    }
}

type Done = Box<dyn FnOnce(Outcome) + Send>;

/// One file to hash; `done` receives the outcome.
pub struct Job {
    pub file: Arc<dyn Source>,
    /// The stamp of the hash already known: the file is hashed only when it changed.
    pub known: Option<Stamp>,
    /// The change time (ns) of the content wanted (a run's, reported at exec): a file with
    /// another one before or after hashing gives [`HASH_MODIFIED`].
    pub version: Option<i64>,
    pub done: Done,
}

/// The stamp of an open file (fstat).
pub fn stamp(f: &File) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    Some(Stamp {
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

/// What a worker is doing: since when, and the job's completion if it is abandoned.
struct Slot {
    busy: Mutex<Option<(Instant, Option<Done>)>>,
    abandoned: std::sync::atomic::AtomicBool,
}

struct Shared {
    limits: Limits,
    rx: Mutex<Receiver<Job>>,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Abandoned workers whose read has not returned yet.
    stuck: AtomicU64,
    counters: Arc<HashCounters>,
}

#[derive(Clone)]
pub struct HashPool {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

impl HashPool {
    pub fn new(limits: Limits, counters: Arc<HashCounters>) -> HashPool {
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            limits,
            rx: Mutex::new(rx),
            slots: Mutex::new(Vec::new()),
            stuck: AtomicU64::new(0),
            counters,
        });
        for _ in 0..WORKERS {
            spawn_worker(&shared);
        }
        HashPool { tx, shared }
    }

    /// Queues a job; false when the queue is full (the caller asks again later).
    pub fn submit(&self, job: Job) -> bool {
        self.check_deadlines();
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Abandons every job past its deadline whose worker is stuck in a read: the job completes
    /// with `!timeout` and a new worker takes the stuck one's place.
    pub fn check_deadlines(&self) {
        let timeout = self.shared.limits.timeout;
        let slots: Vec<Arc<Slot>> = self.shared.slots.lock().expect("slots").clone();
        for slot in slots {
            let done = {
                let mut busy = slot.busy.lock().expect("slot");
                match busy.as_mut() {
                    Some((since, done)) if since.elapsed() > timeout => done.take(),
                    _ => None,
                }
            };
            let Some(done) = done else { continue };
            slot.abandoned.store(true, Ordering::SeqCst);
            self.shared
                .slots
                .lock()
                .expect("slots")
                .retain(|s| !Arc::ptr_eq(s, &slot));
            let c = &self.shared.counters;
            c.timeout.fetch_add(1, Ordering::Relaxed);
            c.abandoned_workers.fetch_add(1, Ordering::Relaxed);
            let stuck = self.shared.stuck.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::warn!(
                stuck,
                "hashing an executable did not finish within {} s: stored as {HASH_TIMEOUT}",
                timeout.as_secs()
            );
            done(Outcome {
                hash: Some(HASH_TIMEOUT.to_string()),
                stamp: None,
            });
            if stuck <= MAX_ABANDONED {
                spawn_worker(&self.shared);
            } else {
                tracing::error!(
                    "{stuck} hashing threads are stuck in reads that never return; no more are started"
                );
            }
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>) {
    let slot = Arc::new(Slot {
        busy: Mutex::new(None),
        abandoned: Default::default(),
    });
    shared.slots.lock().expect("slots").push(slot.clone());
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("picosnitch-hash".into())
        .spawn(move || worker(&shared, &slot));
    if let Err(e) = spawned {
        tracing::error!("cannot start a hashing thread: {e}");
    }
}

fn worker(shared: &Shared, slot: &Slot) {
    loop {
        let job = {
            let rx = shared.rx.lock().expect("hash queue");
            rx.recv()
        };
        let Ok(job) = job else { return };
        let started = Instant::now();
        *slot.busy.lock().expect("slot") = Some((started, Some(job.done)));
        let deadline = started + shared.limits.timeout;
        let file = job.file.file();
        let now = stamp(file);
        let result = if now.is_some() && now == job.known {
            Ok(None)
        } else if now.is_none() {
            Err(Limited::Io(std::io::Error::other("cannot stat the file")))
        } else if job.version.is_some() && now.map(|s| s.ctime_ns) != job.version {
            Err(Limited::Modified)
        } else {
            hash_limited(file, shared.limits.max_bytes, deadline).and_then(|h| {
                // Written to while it was read: the hash names no version of it.
                if stamp(file) == now {
                    Ok(Some(h))
                } else {
                    Err(Limited::Modified)
                }
            })
        };
        let done = slot.busy.lock().expect("slot").take().and_then(|(_, d)| d);
        if slot.abandoned.load(Ordering::SeqCst) {
            // Replaced at the deadline: the job was already completed as timed out.
            shared.stuck.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let Some(done) = done else { continue };
        let hash = match result {
            Ok(None) => None,
            Ok(Some(h)) => Some(h),
            Err(Limited::TooLarge) => {
                shared.counters.too_large.fetch_add(1, Ordering::Relaxed);
                Some(HASH_TOO_LARGE.to_string())
            }
            Err(Limited::Timeout) => {
                shared.counters.timeout.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "hashing an executable did not finish within {} s: stored as {HASH_TIMEOUT}",
                    shared.limits.timeout.as_secs()
                );
                Some(HASH_TIMEOUT.to_string())
            }
            Err(Limited::Io(_)) => Some(super::exe_cache::HASH_UNREADABLE.to_string()),
            Err(Limited::Modified) => Some(HASH_MODIFIED.to_string()),
        };
        done(Outcome { hash, stamp: now });
    }
}

/// Why a file was not hashed.
#[derive(Debug)]
pub enum Limited {
    TooLarge,
    Timeout,
    /// The file does not have (or lost while being read) the content asked for.
    Modified,
    Io(#[allow(dead_code)] std::io::Error),
}

/// Hashes a whole file with positional reads, refusing files over `max_bytes` and giving up at
/// `deadline` (checked between reads).
pub fn hash_limited(f: &File, max_bytes: u64, deadline: Instant) -> Result<String, Limited> {
    let size = f.metadata().map_err(Limited::Io)?.len();
    if size > max_bytes {
        return Err(Limited::TooLarge);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(Limited::Timeout);
        }
        let n = f.read_at(&mut buf, off).map_err(Limited::Io)?;
        if n == 0 {
            break;
        }
        off += n as u64;
        if off > max_bytes {
            // It grew while being hashed.
            return Err(Limited::TooLarge);
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn job(file: File) -> (Job, Receiver<String>) {
        let (tx, rx) = channel();
        let job = Job {
            file: Arc::new(file),
            known: None,
            version: None,
            done: Box::new(move |o: Outcome| {
                let _ = tx.send(o.hash.unwrap_or_default());
            }),
        };
        (job, rx)
    }

    #[test]
    fn caps_size_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let f = File::create(&p).unwrap();
        f.set_len(10 << 20).unwrap();
        let f = File::open(&p).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        assert!(matches!(
            hash_limited(&f, 1 << 20, far),
            Err(Limited::TooLarge)
        ));
        assert!(matches!(
            hash_limited(&f, 1 << 30, Instant::now()),
            Err(Limited::Timeout)
        ));
        assert!(hash_limited(&f, 1 << 30, far).is_ok());
    }

    /// A file whose reads hang until released (as on a FUSE mount whose server stopped).
    struct Hanging {
        file: File,
        release: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Source for Hanging {
        fn file(&self) -> &File {
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            &self.file
        }
    }

    /// A worker stuck in a read is abandoned at the deadline (its job stored as `!timeout`) and
    /// replaced: the pool still hashes the next file; the stuck thread leaves once it returns.
    #[test]
    fn a_stuck_read_is_abandoned_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(HashCounters::default());
        let limits = Limits {
            max_bytes: 1 << 20,
            timeout: Duration::from_millis(300),
        };
        let pool = HashPool::new(limits, counters.clone());
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stuck = Vec::new();
        for _ in 0..WORKERS {
            let (tx, rx) = channel();
            let j = Job {
                file: Arc::new(Hanging {
                    file: tempfile::tempfile().unwrap(),
                    release: release.clone(),
                }),
                known: None,
                version: None,
                done: Box::new(move |o: Outcome| {
                    let _ = tx.send(o.hash.unwrap_or_default());
                }),
            };
            assert!(pool.submit(j));
            stuck.push(rx);
        }
        let p = dir.path().join("small");
        std::fs::write(&p, b"abc").unwrap();
        let (j, rx) = job(File::open(&p).unwrap());
        assert!(pool.submit(j));
        let t = Instant::now();
        let hash = loop {
            pool.check_deadlines();
            if let Ok(h) = rx.try_recv() {
                break h;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no hash");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for rx in stuck {
            assert_eq!(rx.recv().unwrap(), HASH_TIMEOUT);
        }
        assert_eq!(counters.abandoned_workers.load(Ordering::Relaxed), 2);
        assert_eq!(pool.shared.stuck.load(Ordering::SeqCst), 2);
        release.store(true, Ordering::SeqCst);
        let t = Instant::now();
        while pool.shared.stuck.load(Ordering::SeqCst) > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "stuck workers did not leave"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
