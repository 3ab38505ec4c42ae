//! sink.rs: the SQLite writer thread. Hashes closed windows, writes each in one transaction,
//! keeps failed batches to retry (nothing is dropped while the process lives), runs retention,
//! and publishes what it committed to the query side (`api::Feed`).
use crate::api::Feed;
use crate::connlog::ConnLog;
use crate::filter::Filter;
use crate::identity::exe_cache::ExeCache;
use crate::model::{FileId, Row};
use crate::notify::{Decision, Kind, Notifier};
use crate::store::Store;
use crate::window::Closed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub enum Msg {
    Window(Closed),
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
}

pub struct Sink {
    tx: mpsc::Sender<Msg>,
    handle: Option<JoinHandle<()>>,
    pub stats: Arc<SinkStats>,
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
        mut store: Store,
        cache: ExeCache,
        mut notifier: Notifier,
        opts: Options,
    ) -> std::io::Result<Sink> {
        let Options {
            retention_days,
            mut conn_log,
            filter,
            feed,
        } = opts;
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(SinkStats::default());
        let stats2 = stats.clone();
        let handle = std::thread::Builder::new()
            .name("picosnitch-sink".into())
            .spawn(move || {
                let mut pending: Vec<Vec<Row>> = Vec::new();
                let mut losses: Vec<(i64, String, u64)> = Vec::new();
                let mut last_retention: Option<Instant> = None;
                loop {
                    let msg = rx.recv_timeout(Duration::from_secs(5));
                    let stop = matches!(
                        msg,
                        Ok(Msg::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected)
                    );
                    match msg {
                        Ok(Msg::Window(closed)) => {
                            let rows = closed.into_rows(&cache);
                            let now = now_unix();
                            // Decisions see every row; the [log] rules apply to what is kept.
                            for d in notifier.on_rows(&mut store, &rows, now) {
                                notifier.report(&d, now);
                            }
                            let rows = filter.apply(rows);
                            if let Some(log) = conn_log.as_mut() {
                                if let Err(e) = log.append(&rows) {
                                    tracing::error!("cannot write {}: {e}", log.path().display());
                                }
                            }
                            pending.push(rows);
                        }
                        Ok(Msg::Modified(id)) => {
                            if let Some(d) = modified(&cache, id) {
                                notifier.report(&d, now_unix());
                            }
                        }
                        Ok(Msg::RehashAll) => {
                            let ids = cache.ids();
                            let changed: Vec<Decision> =
                                ids.iter().filter_map(|&id| changed(&cache, id)).collect();
                            tracing::info!(
                                rehashed = ids.len(),
                                changed = changed.len(),
                                "rehashed every cached executable"
                            );
                            for d in changed {
                                notifier.report(&d, now_unix());
                            }
                        }
                        Ok(Msg::Loss {
                            contime,
                            source,
                            count,
                        }) => losses.push((contime, source, count)),
                        _ => {}
                    }
                    write_pending(&mut store, &mut pending, &mut losses, &stats2, &feed);
                    store.maintain().into_iter().for_each(|w| feed.wal(w));
                    if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                        last_retention = Some(Instant::now());
                        match store.retention(retention_days, now_unix()) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "retention removed old rows"),
                            Err(e) => tracing::error!("retention failed: {e}"),
                        }
                    }
                    if stop {
                        let rows: usize = pending.iter().map(Vec::len).sum();
                        if rows > 0 {
                            tracing::error!(
                                rows,
                                "database still failing at exit: {rows} rows not written"
                            );
                        }
                        return;
                    }
                }
            })?;
        Ok(Sink {
            tx,
            handle: Some(handle),
            stats,
        })
    }

    pub fn send(&self, msg: Msg) {
        // The thread only exits on Shutdown; a send error would mean it panicked.
        if self.tx.send(msg).is_err() {
            tracing::error!("database writer has stopped; data of this window is lost");
        }
    }

    /// Writes everything queued and waits for the writer to finish.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Rehashes a cached executable whose write events were lost; a decision when its hash changed.
fn changed(cache: &ExeCache, id: FileId) -> Option<Decision> {
    // Never hashed: nothing it could have changed from (its next row hashes it).
    cache.hash_known(id).then(|| modified(cache, id)).flatten()
}

/// Rehashes a written-to executable; a decision when its content changed.
fn modified(cache: &ExeCache, id: FileId) -> Option<Decision> {
    let old = cache.forget_hash(id);
    let new = cache.sha256(id)?;
    if old.as_deref() == Some(new.as_str()) {
        return None;
    }
    Some(Decision {
        kind: Kind::Modified,
        level: 0,
        exe: cache.path_of(id).unwrap_or_default(),
        name: String::new(),
        sha256: new,
        previous_sha256: old,
        uid: None,
        parent_exe: String::new(),
        container: String::new(),
    })
}

fn write_pending(
    store: &mut Store,
    pending: &mut Vec<Vec<Row>>,
    losses: &mut Vec<(i64, String, u64)>,
    stats: &SinkStats,
    feed: &Feed,
) {
    while let Some(batch) = pending.first() {
        let started = Instant::now();
        match store.write_batch(batch) {
            Ok(_) => {
                let took = started.elapsed();
                stats.written(batch);
                let rows = pending.remove(0);
                feed.committed(&rows, took);
            }
            Err(e) => {
                feed.write_failed();
                tracing::error!(
                    queued = pending.len(),
                    "cannot write to the database, will retry: {e}"
                );
                return;
            }
        }
    }
    while let Some((t, s, n)) = losses.first() {
        if let Err(e) = store.record_loss(*t, s, *n) {
            tracing::error!("cannot record a loss report, will retry: {e}");
            return;
        }
        feed.loss(*t, s, *n);
        losses.remove(0);
    }
}
