//! store: the SQLite database (schema, migrations, batched writes, retention, read helpers), the source of truth for recorded traffic.
//!
//! The database lives at `/var/lib/picosnitch/picosnitch.db` by default (DESIGN §5). Lookup tables
//! (`executables`, `domains`, `addresses`) hold row id 0 as the empty/unknown sentinel, as
//! picosnitch 2 did; `connections` rows reference them by id.

// The read side serves the tests today and the query commands of the CLI next.
mod health;
pub mod import;
mod import_rows;
mod known;
#[cfg(test)]
mod reader;
mod schema;
mod wal;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use known::Novelty;
#[cfg(test)]
pub use reader::{losses, meta, rows, StoredLoss, StoredRow};
#[cfg(test)]
pub use schema::schema_version;
pub use wal::WalReport;
pub use writer::Store;

/// Everything that can go wrong in the store; every variant names the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "refusing to open database {path}: it, or a directory on its path, is a symbolic link"
    )]
    Symlink { path: PathBuf },
    #[error("cannot inspect database path {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot create database directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: cannot set PRAGMA {pragma}: {source}")]
    Pragma {
        path: PathBuf,
        pragma: &'static str,
        source: rusqlite::Error,
    },
    #[error("database {path}: journal_mode=WAL was refused (journal mode is {mode:?})")]
    JournalMode { path: PathBuf, mode: String },
    #[error(
        "database {path} has schema version {found}, which this build does not know (it knows up \
         to {known}; a picosnitch 1 or 2 database is not opened in place)"
    )]
    UnknownSchema {
        path: PathBuf,
        found: i64,
        known: u32,
    },
    #[error(
        "database {path} is a picosnitch 1 or 2 database (user_version {found}), not opened in \
         place: move it away and import it with `picosnitch migrate {path}`"
    )]
    Foreign { path: PathBuf, found: i64 },
    #[error("database {path}: migration to schema version {version} failed: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error("database {path} is corrupt (PRAGMA quick_check: {problems})")]
    Corrupt { path: PathBuf, problems: String },
    #[error("cannot move the corrupt database {path} aside to {to}: {source}")]
    MoveAside {
        path: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("database {path}: cannot {what}: {source}")]
    Sql {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether this error means the database file itself is damaged (a failed quick_check, or
    /// SQLite's SQLITE_CORRUPT / SQLITE_NOTADB on any step of opening it).
    pub fn is_corruption(&self) -> bool {
        let code = |e: &rusqlite::Error| {
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            )
        };
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Open { source, .. }
            | StoreError::Pragma { source, .. }
            | StoreError::Migrate { source, .. }
            | StoreError::Sql { source, .. } => code(source),
            _ => false,
        }
    }

    /// Wraps a SQLite error from `what` on the database at `path`.
    fn sql(path: impl Into<PathBuf>, what: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Sql { path, what, source }
    }
}

/// Converts a counter to SQLite's signed 64-bit integer, saturating at `i64::MAX`.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
/// The path of the main database of `conn`, for error messages (empty for in-memory databases).
fn conn_path(conn: &rusqlite::Connection) -> PathBuf {
    PathBuf::from(conn.path().unwrap_or_default())
}
