//! sink.rs: the SQLite writer thread. Takes each closed window's hashes from the hash pool
//! (never waiting for one), writes it in one transaction, keeps failed batches to retry, runs
//! retention, publishes what it committed to the query side (`api::Feed`), and reports its
//! health (queued bytes, last window written) to the main loop that supervises it.
use crate::api::Feed;
use crate::completion::Waiting;
use crate::connlog::ConnLog;
use crate::filter::Filter;
use crate::identity::exe_cache::ExeCache;
use crate::model::{FileId, Row};
use crate::notify::Notifier;
use crate::store::Store;
use crate::window::Closed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub enum Msg {
    /// A closed window and its estimated size in memory.
    Window(Closed, u64),
    /// A cached executable was written to: rehash it and report the change.
    Modified(FileId),
    /// Write events were lost: rehash every cached executable and report those that changed.
    RehashAll,
    Loss {
        contime: i64,
        source: String,
        count: u64,
    },
    Shutdown,
}

/// What the writer thread does besides writing the database.
pub struct Options {
    pub retention_days: u32,
    /// `[database] text_log`: conn.log.
    pub conn_log: Option<ConnLog>,
    /// `[log]` rules for stored rows.
    pub filter: Filter,
    /// Where committed rows and loss reports are published (event feed, metrics).
    pub feed: Feed,
    /// `[database] enabled`: false keeps connection rows and loss reports out of SQLite (the
    /// other sinks still get them).
    pub db_enabled: bool,
    /// `[database] queue_max_bytes`: windows waiting for the writer, at most (estimated).
    pub queue_max_bytes: u64,
}

/// What the main loop sees of the writer: how much waits for it and when it last made progress.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    queued_bytes: AtomicU64,
    sent: AtomicU64,
    done: AtomicU64,
    /// Milliseconds after `epoch` of the last window written, or of the first window queued
    /// while none was waiting.
    progress_ms: AtomicU64,
}

impl Health {
    fn new() -> Health {
        Health {
            epoch: Instant::now(),
            queued_bytes: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn written(&self, bytes: u64) {
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.progress_ms.store(self.now_ms(), Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// How long windows have been waiting without one being written.
    pub fn stalled_for(&self) -> Duration {
        if self.sent.load(Ordering::SeqCst) <= self.done.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let since = self.progress_ms.load(Ordering::SeqCst);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::SeqCst)
    }
}

pub struct Sink {
    tx: mpsc::Sender<Msg>,
    handle: Option<JoinHandle<Result<(), String>>>,
    pub stats: Arc<SinkStats>,
    pub health: Arc<Health>,
    queue_max_bytes: u64,
}

/// What the writer has stored since it started (for STATUS= and `picosnitch status`).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub rows: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl SinkStats {
    fn written(&self, rows: &[Row]) {
        let (send, recv) = rows
            .iter()
            .fold((0u64, 0u64), |(s, r), row| (s + row.send, r + row.recv));
        self.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.bytes_sent.fetch_add(send, Ordering::Relaxed);
        self.bytes_received.fetch_add(recv, Ordering::Relaxed);
    }
}

/// At exit, how long the writer waits for hashes still pending (rows keep `!pending` after).
const SHUTDOWN_HASH_WAIT: Duration = Duration::from_secs(5);

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Sink {
    pub fn start(
        store: Store,
        cache: ExeCache,
        notifier: Notifier,
        opts: Options,
    ) -> std::io::Result<Sink> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(SinkStats::default());
        let health = Arc::new(Health::new());
        let queue_max_bytes = opts.queue_max_bytes;
        let mut w = Writer {
            store,
            cache,
            notifier,
            opts,
            stats: stats.clone(),
            health: health.clone(),
            pending: Vec::new(),
            losses: Vec::new(),
            waiting: Waiting::default(),
        };
        let handle = std::thread::Builder::new()
            .name("picosnitch-sink".into())
            .spawn(move || w.run(&rx))?;
        Ok(Sink {
            tx,
            handle: Some(handle),
            stats,
            health,
            queue_max_bytes,
        })
    }

    pub fn send(&self, msg: Msg) {
        // The thread only exits on Shutdown; a send error would mean it panicked.
        if self.tx.send(msg).is_err() {
            tracing::error!("database writer has stopped; data of this window is lost");
        }
    }

    /// Queues a closed window unless the queue would pass `queue_max_bytes`; then the window is
    /// dropped and its number of rows (before hashing) returned for the loss report.
    pub fn send_window(&self, closed: Closed) -> Result<(), usize> {
        let bytes = closed.estimated_bytes();
        let h = &self.health;
        if h.queued_bytes().saturating_add(bytes) > self.queue_max_bytes {
            return Err(closed.groups.len());
        }
        h.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        if h.sent.load(Ordering::SeqCst) == h.done.load(Ordering::SeqCst) {
            h.progress_ms.store(h.now_ms(), Ordering::SeqCst);
        }
        h.sent.fetch_add(1, Ordering::SeqCst);
        self.send(Msg::Window(closed, bytes));
        Ok(())
    }

    /// Why the writer cannot be called healthy: it stopped, or it has not written a window for
    /// `stall` while windows wait.
    pub fn problem(&self, stall: Duration) -> Option<String> {
        if self.handle.as_ref().is_none_or(|h| h.is_finished()) {
            return Some("the database writer has stopped".into());
        }
        let stalled = self.health.stalled_for();
        (stalled > stall).then(|| {
            format!(
                "the database writer has not written a window for {} s ({} bytes queued)",
                stalled.as_secs(),
                self.health.queued_bytes()
            )
        })
    }

    /// Writes everything queued and waits for the writer to finish; an error says what was not
    /// written (or that the writer died).
    pub fn shutdown(mut self) -> Result<(), String> {
        let _ = self.tx.send(Msg::Shutdown);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the database writer panicked".into()),
            None => Ok(()),
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Store,
    cache: ExeCache,
    notifier: Notifier,
    opts: Options,
    stats: Arc<SinkStats>,
    health: Arc<Health>,
    /// Windows not written yet (the database failed), with their estimated bytes.
    pending: Vec<(Vec<Row>, u64)>,
    losses: Vec<(i64, String, u64)>,
    waiting: Waiting,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) -> Result<(), String> {
        let mut last_retention: Option<Instant> = None;
        loop {
            // A rehash in the pool is looked for often, so "modified on disk" is reported soon.
            let wait = if self.waiting.has_modified() {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(1)
            };
            let msg = rx.recv_timeout(wait);
            let stop = matches!(
                msg,
                Ok(Msg::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected)
            );
            match msg {
                Ok(Msg::Window(closed, bytes)) => self.on_window(closed, bytes),
                Ok(Msg::Modified(id)) => self.waiting.add_modified(&self.cache, id),
                Ok(Msg::RehashAll) => {
                    // Never hashed: nothing it could have changed from (its next row hashes it).
                    let ids: Vec<FileId> = self
                        .cache
                        .ids()
                        .into_iter()
                        .filter(|&id| self.cache.hash_known(id))
                        .collect();
                    tracing::info!(rehashed = ids.len(), "rehashing every cached executable");
                    for id in ids {
                        self.waiting.add_modified(&self.cache, id);
                    }
                }
                Ok(Msg::Loss {
                    contime,
                    source,
                    count,
                }) => self.losses.push((contime, source, count)),
                _ => {}
            }
            self.write_pending();
            if self.opts.db_enabled {
                if let Some(w) = self.store.maintain() {
                    self.opts.feed.wal(w);
                }
            }
            for d in self.waiting.modified(&self.cache) {
                self.notifier.report(&d, now_unix());
            }
            if self.pending.is_empty() {
                self.complete_hashes();
            }
            if self.opts.db_enabled && last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
            {
                last_retention = Some(Instant::now());
                match self.store.retention(self.opts.retention_days, now_unix()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "retention removed old rows"),
                    Err(e) => tracing::error!("retention failed: {e}"),
                }
            }
            if stop {
                self.finish_hashes();
                let rows: usize = self.pending.iter().map(|(r, _)| r.len()).sum();
                if rows > 0 {
                    return Err(format!(
                        "database still failing at exit: {rows} rows not written"
                    ));
                }
                return Ok(());
            }
        }
    }

    fn on_window(&mut self, closed: Closed, bytes: u64) {
        let hashed = closed.into_rows(&self.cache);
        let now = now_unix();
        // Decisions see every row; the [log] rules apply to what is kept.
        for d in self.notifier.on_rows(&mut self.store, &hashed.rows, now) {
            self.notifier.report(&d, now);
        }
        let rows = self.opts.filter.apply(hashed.rows);
        if let Some(log) = self.opts.conn_log.as_mut() {
            if let Err(e) = log.append(&rows) {
                tracing::error!("cannot write {}: {e}", log.path().display());
            }
        }
        if self.opts.db_enabled {
            self.waiting.add_pending(hashed.pending, &rows);
        }
        self.pending.push((rows, bytes));
    }

    /// At exit: waits a little for the hashes still pending, so the last windows are completed.
    fn finish_hashes(&mut self) {
        let until = Instant::now() + SHUTDOWN_HASH_WAIT;
        while self.pending.is_empty() && self.waiting.has_pending() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            self.complete_hashes();
        }
    }

    /// Rows stored as `!pending` whose hash arrived now name the hashed executable.
    fn complete_hashes(&mut self) {
        for c in self.waiting.completed(&self.cache) {
            let ignored = self.opts.filter.ignores_sha256(&c.done.sha256);
            match self
                .store
                .complete_hash(&c.pending, &c.done, c.since, ignored)
            {
                Ok(n) => tracing::debug!(exe = c.done.exe, columns = n, "completed a pending hash"),
                Err(e) => tracing::error!("cannot complete a pending hash: {e}"),
            }
            let now = now_unix();
            for d in self
                .notifier
                .on_rows(&mut self.store, std::slice::from_ref(&c.row), now)
            {
                self.notifier.report(&d, now);
            }
        }
    }

    fn write_pending(&mut self) {
        let feed = &self.opts.feed;
        while let Some((batch, bytes)) = self.pending.first() {
            let started = Instant::now();
            let result = if self.opts.db_enabled {
                self.store.write_batch(batch)
            } else {
                Ok(batch.len())
            };
            match result {
                Ok(_) => {
                    let took = started.elapsed();
                    self.stats.written(batch);
                    self.health.written(*bytes);
                    let (rows, _) = self.pending.remove(0);
                    feed.committed(&rows, took);
                }
                Err(e) => {
                    feed.write_failed();
                    tracing::error!(
                        queued = self.pending.len(),
                        "cannot write to the database, will retry: {e}"
                    );
                    return;
                }
            }
        }
        while let Some((t, s, n)) = self.losses.first() {
            if self.opts.db_enabled {
                if let Err(e) = self.store.record_loss(*t, s, *n) {
                    tracing::error!("cannot record a loss report, will retry: {e}");
                    return;
                }
            }
            feed.loss(*t, s, *n);
            self.losses.remove(0);
        }
    }
}
