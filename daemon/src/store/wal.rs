//! wal.rs: keeps the write-ahead log small: a TRUNCATE checkpoint every [`CHECKPOINT_EVERY`], and a
//! counted, logged report when a reader's open transaction keeps the log from shrinking.
//!
//! A reader that holds a transaction pins the snapshot it started on: no checkpoint may copy the
//! frames written after it back into the database, so the log grows with every write until that
//! reader ends its transaction. Writes never wait for it (WAL readers do not block the writer);
//! the checkpoint waits at most [`CHECKPOINT_WAIT`] and is tried again at the next turn.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::writer::BUSY_TIMEOUT;
use super::Store;

/// How often the writer runs `PRAGMA wal_checkpoint(TRUNCATE)`.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// `PRAGMA journal_size_limit`: what SQLite's own (passive) checkpoints leave of the log.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;
/// How long a checkpoint waits for readers before it reports the log as pinned.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// What one checkpoint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalReport {
    /// Size of the -wal file after the checkpoint, in bytes.
    pub bytes: u64,
    /// The log could not be copied back and reset: a reader holds an old snapshot (or another
    /// connection was writing).
    pub blocked: bool,
}

/// Checkpoint bookkeeping of one [`Store`].
#[derive(Debug, Default)]
pub struct WalState {
    last: Option<Instant>,
    /// Checkpoints blocked in a row, and when the first of them ran.
    blocked_in_a_row: u64,
    blocked_since: Option<Instant>,
    /// The log size the last warning named (the next one comes when it has doubled).
    warned_bytes: u64,
}

impl Store {
    /// Runs a TRUNCATE checkpoint when one is due (every [`CHECKPOINT_EVERY`]) and returns what
    /// it found; `None` when none was due. A log that cannot shrink is logged as a warning naming
    /// its size (again each time it has doubled), and its recovery as information.
    pub fn maintain(&mut self) -> Option<WalReport> {
        if self
            .wal
            .last
            .is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY)
        {
            return None;
        }
        self.wal.last = Some(Instant::now());
        let (report, behind) = self.checkpoint();
        let wal = self.wal_path();
        let state = &mut self.wal;
        if report.blocked {
            state.blocked_in_a_row += 1;
            let since = *state.blocked_since.get_or_insert_with(Instant::now);
            if state.blocked_in_a_row == 1 || report.bytes >= state.warned_bytes.saturating_mul(2) {
                state.warned_bytes = report.bytes;
                tracing::warn!(
                    wal_bytes = report.bytes,
                    "the write-ahead log {} cannot shrink: {} bytes, {behind} ({} checkpoints \
                     blocked over {} s); a reader is holding a transaction open, and the log grows \
                     with every write until it ends",
                    wal.display(),
                    report.bytes,
                    state.blocked_in_a_row,
                    since.elapsed().as_secs()
                );
            }
        } else if state.blocked_in_a_row > 0 {
            tracing::info!(
                "the write-ahead log {} was checkpointed and truncated to {} bytes after {} \
                 blocked checkpoints",
                wal.display(),
                report.bytes,
                state.blocked_in_a_row
            );
            *state = WalState {
                last: state.last,
                ..WalState::default()
            };
        }
        Some(report)
    }

    /// One `PRAGMA wal_checkpoint(TRUNCATE)`, waiting at most [`CHECKPOINT_WAIT`] for readers;
    /// the report and a description of the frames left behind.
    fn checkpoint(&mut self) -> (WalReport, String) {
        let _ = self.conn_ref().busy_timeout(CHECKPOINT_WAIT);
        let result = self
            .conn_ref()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        let _ = self.conn_ref().busy_timeout(BUSY_TIMEOUT);
        let bytes = std::fs::metadata(self.wal_path()).map_or(0, |m| m.len());
        let (blocked, behind) = match result {
            Ok((busy, log, done)) => (
                busy != 0 || done < log,
                format!("{} of {log} frames not copied back", log - done.max(0)),
            ),
            Err(e) => (true, format!("checkpoint failed: {e}")),
        };
        (WalReport { bytes, blocked }, behind)
    }

    /// The -wal file next to the database.
    fn wal_path(&self) -> PathBuf {
        let mut p = self.path().as_os_str().to_os_string();
        p.push("-wal");
        PathBuf::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::row;

    #[test]
    fn a_held_reader_blocks_truncation_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let mut store = Store::open(&path).unwrap();
        store
            .write_batch(&[row(1, "/usr/bin/a", "::1", "")])
            .unwrap();
        let reader = rusqlite::Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        for i in 0..50 {
            store
                .write_batch(&[row(i, "/usr/bin/b", "::2", "")])
                .unwrap();
        }
        let held = store.maintain().expect("the first call checkpoints");
        assert!(held.blocked && held.bytes > 0, "{held:?}");
        assert_eq!(store.maintain(), None, "not due again yet");
        reader.execute_batch("COMMIT").unwrap();
        store.wal.last = None;
        let free = store.maintain().unwrap();
        assert_eq!(
            free,
            WalReport {
                bytes: 0,
                blocked: false
            }
        );
        assert_eq!(store.wal.blocked_in_a_row, 0);
    }
}
