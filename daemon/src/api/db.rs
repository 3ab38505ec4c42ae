//! db.rs: the API's own read-only SQLite connections (never the writer's), used from the
//! blocking pool, a few at a time, each query bounded in time and stopped when its request goes.
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Queries running at the same time; more wait their turn (the machine may have 2 cores).
const CONCURRENT: usize = 4;
/// Queries waiting for their turn; past them, a query is refused at once.
pub const QUEUED: usize = 32;
/// SQLite virtual machine steps between two checks of the deadline.
const CHECK_EVERY_STEPS: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot open database {path} read-only: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the query took longer than {0:?} and was stopped; ask for a shorter range")]
    Timeout(Duration),
    #[error("database query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the query was cancelled")]
    Cancelled,
    /// The answer would be too large to build; the text says what to narrow.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0} queries are already running or waiting; try again later")]
    Busy(usize),
}

/// A small pool of read-only connections to the database at `path`.
pub struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    /// Queries running or waiting: at most CONCURRENT + QUEUED.
    admitted: Semaphore,
    timeout: Duration,
}

/// Sets the flag when dropped, which stops a query whose request was dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub fn open(path: &Path) -> Result<Connection, QueryError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let fail = |source| QueryError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
    Ok(conn)
}

impl Reader {
    pub fn new(path: PathBuf, timeout: Duration) -> Reader {
        Reader {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(CONCURRENT),
            admitted: Semaphore::new(CONCURRENT + QUEUED),
            timeout,
        }
    }

    /// Runs `f` on a read-only connection in the blocking pool. SQLite stops it (and `run`
    /// returns [`QueryError::Timeout`]) once it has run for longer than the timeout, or when the
    /// future of `run` is dropped. With CONCURRENT queries running and QUEUED waiting, it
    /// returns [`QueryError::Busy`] at once.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    {
        let _admitted = self
            .admitted
            .try_acquire()
            .map_err(|_| QueryError::Busy(CONCURRENT + QUEUED))?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| QueryError::Cancelled)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let me = self.clone();
        let task = tokio::task::spawn_blocking(move || me.run_blocking(f, &cancel));
        task.await.map_err(|_| QueryError::Cancelled)?
    }

    fn run_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<T, QueryError> {
        let pooled = self.idle.lock().map(|mut v| v.pop()).unwrap_or_default();
        let conn = match pooled {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let deadline = Instant::now() + self.timeout;
        let timed_out = Arc::new(AtomicBool::new(false));
        let (stop, flag) = (cancel.clone(), timed_out.clone());
        conn.progress_handler(
            CHECK_EVERY_STEPS,
            Some(move || {
                let late = Instant::now() > deadline;
                flag.store(late, Ordering::Relaxed);
                late || stop.load(Ordering::Relaxed)
            }),
        );
        let result = f(&conn);
        conn.progress_handler(0, None::<fn() -> bool>);
        // A connection whose query failed is closed rather than reused: its statement may
        // have been left mid-way, with temporary files and a read snapshot of its own.
        if result.is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < CONCURRENT {
                    idle.push(conn);
                }
            }
        }
        match result {
            Err(QueryError::Sql(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
            {
                if timed_out.load(Ordering::Relaxed) {
                    Err(QueryError::Timeout(self.timeout))
                } else {
                    Err(QueryError::Cancelled)
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_only_and_bounded_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        drop(crate::store::Store::open(&path).unwrap());
        let reader = Arc::new(Reader::new(path.clone(), Duration::from_millis(200)));
        let n: i64 = reader
            .run(|c| Ok(c.query_row("SELECT count(*) FROM connections", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 0);
        let write = reader
            .run(|c| Ok(c.execute("DELETE FROM connections", [])?))
            .await;
        assert!(matches!(write, Err(QueryError::Sql(_))), "{write:?}");
        let t = Instant::now();
        let slow = reader
            .run(|c| {
                Ok(c.query_row(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                     SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await;
        assert!(matches!(slow, Err(QueryError::Timeout(_))), "{slow:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // The connection that timed out is usable again.
        let n: i64 = reader
            .run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_queries_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        drop(crate::store::Store::open(&path).unwrap());
        let reader = Arc::new(Reader::new(path, Duration::from_secs(30)));
        let gate = Arc::new(std::sync::Barrier::new(CONCURRENT + 1));
        let mut held = Vec::new();
        for _ in 0..CONCURRENT + QUEUED {
            let (r, g) = (reader.clone(), gate.clone());
            held.push(tokio::spawn(async move {
                r.run(move |_| {
                    g.wait();
                    Ok(())
                })
                .await
            }));
        }
        // Wait until the first CONCURRENT run and the others wait for a permit.
        while reader.admitted.available_permits() > 0 || reader.permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = reader.run(|_| Ok(())).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} queries are already running or waiting; try again later",
                CONCURRENT + QUEUED
            )
        );
        // Each round of CONCURRENT queries passes the gate together.
        let rounds = (CONCURRENT + QUEUED) / CONCURRENT;
        let g = gate.clone();
        let opener = std::thread::spawn(move || {
            for _ in 0..rounds {
                g.wait();
            }
        });
        for h in held {
            h.await.unwrap().unwrap();
        }
        opener.join().unwrap();
        reader.run(|_| Ok(())).await.unwrap();
    }

    #[tokio::test]
    async fn missing_database_is_an_error_naming_it() {
        let reader = Arc::new(Reader::new(
            "/nonexistent/x.db".into(),
            Duration::from_secs(1),
        ));
        let e = reader.run(|_| Ok(())).await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.db"), "{e}");
    }
}
