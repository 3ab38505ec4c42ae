//! bounded.rs: runs reads that a user can make block (a path on a hanging FUSE mount, the command
//! line of a process whose memory is held) on a helper thread, so the main loop waits at most a
//! deadline for them.
//!
//! A call that misses its deadline leaves its thread behind, stuck in the kernel, and the next
//! call gets a fresh thread. At most `max_stuck` threads may be stuck at once; past that, calls fail
//! at once (the caller records the marker it would have recorded for a failure) until one returns.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the main loop waits for one read that may block.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// Helper threads that may be stuck in the kernel at once, per kind of read.
pub const MAX_STUCK: usize = 8;
/// Stack of a helper thread: they only make system calls and copy small buffers.
const STACK: usize = 256 * 1024;

/// Why a bounded read gave no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Stalled {
    #[error("{what} did not answer within {ms} ms")]
    Deadline { what: &'static str, ms: u128 },
    #[error("{what}: {stuck} earlier reads are still blocked")]
    TooManyStuck { what: &'static str, stuck: usize },
    #[error("{what}: cannot start a helper thread: {reason}")]
    NoThread { what: &'static str, reason: String },
}

type Job = Box<dyn FnOnce() + Send>;

/// One kind of read that may block (each kind has its own stuck threads).
pub struct Bounded {
    what: &'static str,
    deadline: Duration,
    max_stuck: usize,
    worker: Mutex<Option<SyncSender<Job>>>,
    stuck: Arc<AtomicUsize>,
}

impl Bounded {
    pub fn new(what: &'static str, deadline: Duration, max_stuck: usize) -> Self {
        Bounded {
            what,
            deadline,
            max_stuck,
            worker: Mutex::new(None),
            stuck: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Threads still blocked in a read that missed its deadline.
    pub fn stuck(&self) -> usize {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Runs `f` on the helper thread and waits for it at most the deadline.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stalled> {
        let stuck = self.stuck();
        if stuck >= self.max_stuck {
            return Err(Stalled::TooManyStuck {
                what: self.what,
                stuck,
            });
        }
        let (answer_tx, answer_rx) = sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = answer_tx.send(f());
        });
        let mut worker = self.worker.lock().expect("bounded worker lock");
        let tx = match worker.take() {
            Some(tx) => tx,
            None => self.spawn()?,
        };
        let job = match tx.send(job) {
            Ok(()) => Some(tx),
            Err(e) => {
                // The thread is gone (it cannot panic out of a job, but be safe): a new one.
                let tx = self.spawn()?;
                tx.send(e.0).ok().map(|()| tx)
            }
        };
        let Some(tx) = job else {
            return Err(Stalled::NoThread {
                what: self.what,
                reason: "helper thread exited".into(),
            });
        };
        match answer_rx.recv_timeout(self.deadline) {
            Ok(v) => {
                *worker = Some(tx);
                Ok(v)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                // Leave the thread to finish (or not) on its own; it exits once it returns.
                self.stuck.fetch_add(1, Ordering::Relaxed);
                let stuck = self.stuck.clone();
                // The stuck thread drops `tx`'s receiver when its job returns; count it back then.
                let _ = tx.send(Box::new(move || {
                    stuck.fetch_sub(1, Ordering::Relaxed);
                }));
                Err(Stalled::Deadline {
                    what: self.what,
                    ms: self.deadline.as_millis(),
                })
            }
        }
    }

    fn spawn(&self) -> Result<SyncSender<Job>, Stalled> {
        // Room for the job being run and the "no longer stuck" note after it.
        let (tx, rx): (SyncSender<Job>, Receiver<Job>) = sync_channel(2);
        std::thread::Builder::new()
            .name(format!("bounded-{}", self.what.replace(' ', "-")))
            .stack_size(STACK)
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Stalled::NoThread {
                what: self.what,
                reason: e.to_string(),
            })?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn answers_pass_through_on_one_thread() {
        let b = Bounded::new("test", Duration::from_secs(5), 2);
        let first = b.run(|| std::thread::current().id()).unwrap();
        for i in 0..100u32 {
            assert_eq!(b.run(move || i * 2), Ok(i * 2));
        }
        assert_eq!(b.run(|| std::thread::current().id()).unwrap(), first);
        assert_eq!(b.stuck(), 0);
    }

    /// A blocking open of a FIFO nobody writes to: the caller gets its answer at the deadline,
    /// later calls still work, and past `max_stuck` they fail at once.
    #[test]
    fn a_fifo_open_costs_the_deadline_not_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let b = Bounded::new("test open", Duration::from_millis(100), 2);
        for n in 1..=2 {
            let f = fifo.clone();
            let t = Instant::now();
            let r = b.run(move || std::fs::File::open(f).is_ok());
            assert_eq!(
                r,
                Err(Stalled::Deadline {
                    what: "test open",
                    ms: 100
                })
            );
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            assert_eq!(b.stuck(), n);
            if n < 2 {
                assert_eq!(b.run(|| 7), Ok(7), "a fresh thread answers");
            }
        }
        let f = fifo.clone();
        let t = Instant::now();
        let r = b.run(move || std::fs::File::open(f).is_ok());
        assert_eq!(
            r,
            Err(Stalled::TooManyStuck {
                what: "test open",
                stuck: 2
            })
        );
        assert!(t.elapsed() < Duration::from_millis(50));
        // A writer releases both stuck opens; their threads count themselves back.
        let _w1 = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let t = Instant::now();
        while b.stuck() > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(b.stuck(), 0);
        assert_eq!(b.run(|| 8), Ok(8));
    }
}
