//! import.rs: reads picosnitch 1 (`snitch.db`) and picosnitch 2 (`picosnitch.db`) histories as rows
//! of this schema, in batches that record their position, so an import can be resumed.
//!
//! The source is untrusted: every table read must be a plain table (not a view or a virtual
//! table), no value may exceed [`MAX_VALUE_BYTES`], every statement is stopped after
//! [`STATEMENT_DEADLINE`], a batch holds at most [`BATCH`] rows and [`BATCH_BYTES`] bytes of text,
//! and a row that cannot be read (a blob, bad UTF-8, a wrong type, no time) is skipped, counted
//! and named by its rowid; the position moves past it, so a resumed import does not meet it again.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::limits::Limit;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::import_rows::{v1_row, v2_row, weight};
use super::schema::user_version;
use super::Store;
use crate::model::Row;

/// Rows read and written per transaction (at most).
pub const BATCH: usize = 5_000;
/// Bytes of text read per transaction (at most; a batch always takes at least one row).
pub const BATCH_BYTES: usize = 32 << 20;
/// The largest string or blob the source may hand over (SQLITE_LIMIT_LENGTH); a row holding a
/// larger one is skipped.
pub const MAX_VALUE_BYTES: i32 = 64 << 20;
/// How long one statement on the source may run before it is stopped.
pub const STATEMENT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// picosnitch 1: one `connections` table of text, local times (`user_version` 3).
    V1,
    /// picosnitch 2: lookup tables and unix times (`user_version` 4).
    V2,
}

impl Kind {
    /// The tables the import reads.
    fn tables(self) -> &'static [&'static str] {
        match self {
            Kind::V1 => &["connections"],
            Kind::V2 => &["connections", "executables", "addresses", "domains"],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot open {path} read-only: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a picosnitch 1 or 2 database (user_version {version}, connections table \
         {table})"
    )]
    NotPicosnitch {
        path: PathBuf,
        version: i64,
        table: &'static str,
    },
    #[error(
        "{path}: {name} is {found}, not a table; refusing to read it (picosnitch 1 and 2 wrote \
         plain tables only)"
    )]
    NotATable {
        path: PathBuf,
        name: &'static str,
        found: &'static str,
    },
    #[error(
        "{path}: reading {what} took longer than {} s and was stopped (a damaged or hostile \
         database?)", STATEMENT_DEADLINE.as_secs()
    )]
    Timeout { path: PathBuf, what: &'static str },
    #[error("{path}: cannot read {what}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub written: u64,
    pub skipped: u64,
}

/// An open picosnitch database to import.
pub struct Source {
    path: PathBuf,
    conn: Connection,
    pub kind: Kind,
    /// When the running statement must stop, in milliseconds after `epoch`.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

/// What `name` is in the source's schema: `None` for a plain table.
fn not_a_table(conn: &Connection, name: &str) -> rusqlite::Result<Option<&'static str>> {
    let found: Option<(String, String)> = conn
        .query_row(
            "SELECT type, COALESCE(sql, '') FROM sqlite_master WHERE name = ?1 COLLATE NOCASE",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match found {
        None => Some("missing"),
        Some((t, sql)) if t == "table" => sql
            .trim_start()
            .get(..14)
            .is_some_and(|h| h.eq_ignore_ascii_case("create virtual"))
            .then_some("a virtual table"),
        Some((t, _)) if t == "view" => Some("a view"),
        Some(_) => Some("not a table"),
    })
}

impl Source {
    /// Opens `path` read-only, recognises which picosnitch wrote it and checks that every table
    /// the import reads is a plain table.
    pub fn open(path: &Path) -> Result<Source, ImportError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let open_err = |source| ImportError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            .map_err(open_err)?;
        conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON;")
            .map_err(open_err)?;
        let version = user_version(&conn).map_err(open_err)?;
        let is = |name: &str| not_a_table(&conn, name).map_err(open_err);
        let table = is("connections")?.is_none();
        let kind = match version {
            3 if is("executables")? == Some("missing") => Kind::V1,
            4 if is("meta")? == Some("missing") => Kind::V2,
            _ => None.ok_or(ImportError::NotPicosnitch {
                path: path.to_path_buf(),
                version,
                table: if table { "present" } else { "missing" },
            })?,
        };
        for &name in kind.tables() {
            if let Some(found) = is(name)? {
                return Err(ImportError::NotATable {
                    path: path.to_path_buf(),
                    name,
                    found,
                });
            }
        }
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let d = deadline.clone();
        // Checked every 1,000 virtual machine steps: a step may be one costly function call.
        conn.progress_handler(
            1_000,
            Some(move || epoch.elapsed().as_millis() as u64 > d.load(Ordering::Relaxed)),
        );
        Ok(Source {
            path: path.to_path_buf(),
            conn,
            kind,
            deadline,
            epoch,
        })
    }

    /// Starts the clock of the next statement.
    fn arm(&self) {
        let until = (self.epoch.elapsed() + STATEMENT_DEADLINE).as_millis() as u64;
        self.deadline.store(until, Ordering::Relaxed);
    }

    fn read_err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> ImportError {
        let path = self.path.clone();
        move |source| {
            if source.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
                ImportError::Timeout { path, what }
            } else {
                ImportError::Read { path, what, source }
            }
        }
    }

    /// Number of connection rows after `rowid`.
    pub fn remaining(&self, after: i64) -> Result<u64, ImportError> {
        self.arm();
        self.conn
            .query_row(
                "SELECT count(*) FROM connections WHERE rowid > ?1",
                [after],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or_default())
            .map_err(self.read_err("the connections table"))
    }

    /// The rowid of the first row after `rowid` (the one a failed step stopped at).
    fn next_rowid(&self, after: i64) -> Result<Option<i64>, ImportError> {
        self.arm();
        self.conn
            .query_row(
                "SELECT rowid FROM connections WHERE rowid > ?1 ORDER BY rowid LIMIT 1",
                [after],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.read_err("the connections table"))
    }

    /// The next batch of rows after `rowid` (at most [`BATCH`] rows and [`BATCH_BYTES`] bytes),
    /// with the rowid of the last row read; rows that cannot be read are passed to `skip` with
    /// their rowid and left out.
    pub fn batch(
        &self,
        after: i64,
        skip: &mut dyn FnMut(i64, &str),
    ) -> Result<(Vec<Row>, i64), ImportError> {
        let sql = match self.kind {
            Kind::V1 => V1_ROWS.to_string(),
            Kind::V2 => v2_rows(&self.conn),
        };
        self.arm();
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.read_err("the connections table"))?;
        let mut rows = st
            .query([after, BATCH as i64])
            .map_err(self.read_err("the connections table"))?;
        let (mut out, mut last, mut bytes) = (Vec::new(), after, 0usize);
        loop {
            let r = match rows.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::TooBig) => {
                    // The row after `last` holds a value over the limit: skip it.
                    drop(rows);
                    if let Some(id) = self.next_rowid(last)? {
                        skip(
                            id,
                            &format!("a value is larger than {MAX_VALUE_BYTES} bytes"),
                        );
                        last = id;
                    }
                    return Ok((out, last));
                }
                Err(e) => return Err(self.read_err("a connection row")(e)),
            };
            last = match r.get_ref(0).map_err(self.read_err("a row id"))? {
                rusqlite::types::ValueRef::Integer(id) => id,
                _ => return Err(self.read_err("a row id")(rusqlite::Error::InvalidQuery)),
            };
            let row = match self.kind {
                Kind::V1 => v1_row(r),
                Kind::V2 => v2_row(r),
            };
            match row {
                Ok(row) => {
                    bytes += weight(&row);
                    out.push(row);
                }
                Err(problem) => skip(last, &problem),
            }
            if bytes >= BATCH_BYTES {
                break;
            }
        }
        Ok((out, last))
    }
}

/// Imports every row of `src` not imported before into `store`; `progress(done, total)` is
/// called after each batch and `skip(rowid, problem)` for each row that cannot be read.
pub fn import(
    store: &mut Store,
    src: &Source,
    key: &str,
    mut progress: impl FnMut(u64, u64),
    mut skip: impl FnMut(i64, &str),
) -> Result<Outcome, ImportError> {
    let mut after: i64 = store
        .meta(key)?
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let total = src.remaining(after)?;
    let mut outcome = Outcome::default();
    progress(0, total);
    loop {
        let mut skipped = 0u64;
        let (rows, last) = src.batch(after, &mut |id, p| {
            skipped += 1;
            skip(id, p);
        })?;
        if last == after {
            return Ok(outcome);
        }
        store.write_batch_at(&rows, key, &last.to_string())?;
        outcome.written += rows.len() as u64;
        outcome.skipped += skipped;
        after = last;
        progress(outcome.written + outcome.skipped, total);
    }
}

const V1_ROWS: &str = "SELECT rowid, contime, send, recv, exe, name, cmdline, sha256, pexe, pname,
    pcmdline, psha256, uid, lport, rport, laddr, raddr, domain
    FROM connections WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";

/// The picosnitch 2 query; columns added in later picosnitch 2 versions default when absent.
fn v2_rows(conn: &Connection) -> String {
    let has = |col: &str| {
        conn.prepare("SELECT * FROM connections LIMIT 0")
            .map(|st| st.column_names().contains(&col))
            .unwrap_or(false)
    };
    let col = |name: &str, default: &str| {
        if has(name) {
            format!("c.{name}")
        } else {
            default.to_string()
        }
    };
    let exe = |alias: &str| {
        format!(
            "{alias}.exe AS {alias}_exe, {alias}.name AS {alias}_name, \
             {alias}.cmdline AS {alias}_cmdline, {alias}.sha256 AS {alias}_sha256"
        )
    };
    format!(
        "SELECT c.rowid, c.contime, c.send, c.recv, {events}, {e}, {p}, {g}, c.uid, {family},
            {protocol}, c.lport, c.rport, la.addr AS laddr, ra.addr AS raddr,
            d.domain AS domain, {netns}
         FROM connections AS c
         LEFT JOIN executables AS e ON e.id = c.exe_id
         LEFT JOIN executables AS p ON p.id = c.pexe_id
         LEFT JOIN executables AS g ON g.id = {gp}
         LEFT JOIN addresses AS la ON la.id = c.laddr_id
         LEFT JOIN addresses AS ra ON ra.id = c.raddr_id
         LEFT JOIN domains AS d ON d.id = c.domain_id
         WHERE c.rowid > ?1 ORDER BY c.rowid LIMIT ?2",
        events = col("events", "1"),
        e = exe("e"),
        p = exe("p"),
        g = exe("g"),
        gp = col("gpexe_id", "0"),
        family = col("family", "0"),
        protocol = col("protocol", "0"),
        netns = col("netns", "0"),
    )
}
