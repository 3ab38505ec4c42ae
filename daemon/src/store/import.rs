//! import.rs: reads picosnitch 1 (`snitch.db`) and picosnitch 2 (`picosnitch.db`) histories as rows
//! of this schema, in batches that record their position, so an import can be resumed.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, Row as SqlRow};

use super::schema::{has_table, user_version};
use super::Store;
use crate::model::{ExeIdent, Row, RowKey};

/// Rows read and written per transaction.
pub const BATCH: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// picosnitch 1: one `connections` table of text, local times (`user_version` 3).
    V1,
    /// picosnitch 2: lookup tables and unix times (`user_version` 4).
    V2,
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
    #[error("{path}: cannot read {what}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("{path}: row {rowid} has a time that is not 'YYYY-MM-DD HH:MM:SS': {value:?}")]
    BadTime {
        path: PathBuf,
        rowid: i64,
        value: String,
    },
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// An open picosnitch database to import.
pub struct Source {
    path: PathBuf,
    conn: Connection,
    pub kind: Kind,
}

impl Source {
    /// Opens `path` read-only and recognises which picosnitch wrote it.
    pub fn open(path: &Path) -> Result<Source, ImportError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let open_err = |source| ImportError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        let version = user_version(&conn).map_err(open_err)?;
        let table = has_table(&conn, "connections");
        let kind = match version {
            3 if table && !has_table(&conn, "executables") => Kind::V1,
            4 if table && has_table(&conn, "executables") && !has_table(&conn, "meta") => Kind::V2,
            _ => {
                return Err(ImportError::NotPicosnitch {
                    path: path.to_path_buf(),
                    version,
                    table: if table { "present" } else { "missing" },
                })
            }
        };
        Ok(Source {
            path: path.to_path_buf(),
            conn,
            kind,
        })
    }

    fn read_err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> ImportError {
        let path = self.path.clone();
        move |source| ImportError::Read { path, what, source }
    }

    /// Number of connection rows after `rowid`.
    pub fn remaining(&self, after: i64) -> Result<u64, ImportError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM connections WHERE rowid > ?1",
                [after],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or_default())
            .map_err(self.read_err("the connections table"))
    }

    /// The next batch of rows after `rowid`, with the rowid of the last one.
    pub fn batch(&self, after: i64) -> Result<(Vec<Row>, i64), ImportError> {
        let sql = match self.kind {
            Kind::V1 => V1_ROWS.to_string(),
            Kind::V2 => v2_rows(&self.conn),
        };
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.read_err("the connections table"))?;
        let mut rows = st
            .query([after, BATCH as i64])
            .map_err(self.read_err("the connections table"))?;
        let mut out = Vec::new();
        let mut last = after;
        while let Some(r) = rows.next().map_err(self.read_err("a connection row"))? {
            last = r.get(0).map_err(self.read_err("a row id"))?;
            let row = match self.kind {
                Kind::V1 => v1_row(r).map_err(self.read_err("a picosnitch 1 row"))?,
                Kind::V2 => v2_row(r).map_err(self.read_err("a picosnitch 2 row"))?,
            };
            let row = match row {
                Ok(row) => row,
                Err(value) => {
                    return Err(ImportError::BadTime {
                        path: self.path.clone(),
                        rowid: last,
                        value,
                    })
                }
            };
            out.push(row);
        }
        Ok((out, last))
    }
}

/// Imports every row of `src` not imported before into `store`; `progress(done, total)` is
/// called after each batch. Returns the number of rows written.
pub fn import(
    store: &mut Store,
    src: &Source,
    key: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ImportError> {
    let mut after: i64 = store
        .meta(key)?
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let total = src.remaining(after)?;
    let mut done = 0u64;
    progress(0, total);
    loop {
        let (rows, last) = src.batch(after)?;
        if rows.is_empty() {
            return Ok(done);
        }
        store.write_batch_at(&rows, key, &last.to_string())?;
        done += rows.len() as u64;
        after = last;
        progress(done, total);
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
            "COALESCE({alias}.exe, ''), COALESCE({alias}.name, ''), COALESCE({alias}.cmdline, ''), \
             COALESCE({alias}.sha256, '')"
        )
    };
    format!(
        "SELECT c.rowid, c.contime, c.send, c.recv, {events}, {e}, {p}, {g}, c.uid, {family},
            {protocol}, c.lport, c.rport, COALESCE(la.addr, ''), COALESCE(ra.addr, ''),
            COALESCE(d.domain, ''), {netns}
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

fn ident(r: &SqlRow<'_>, first: usize) -> rusqlite::Result<Arc<ExeIdent>> {
    Ok(Arc::new(ExeIdent {
        exe: r.get(first)?,
        name: r.get(first + 1)?,
        cmdline: r.get(first + 2)?,
        sha256: r.get(first + 3)?,
    }))
}

/// An integer column that may hold NULL or text in old databases; 0 then.
fn int(r: &SqlRow<'_>, i: usize) -> i64 {
    r.get::<_, Option<i64>>(i)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn text(r: &SqlRow<'_>, i: usize) -> String {
    r.get::<_, Option<String>>(i)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn counter(r: &SqlRow<'_>, i: usize) -> u64 {
    u64::try_from(int(r, i)).unwrap_or_default()
}

fn v2_row(r: &SqlRow<'_>) -> rusqlite::Result<Result<Row, String>> {
    Ok(Ok(Row {
        contime: int(r, 1),
        send: counter(r, 2),
        recv: counter(r, 3),
        events: counter(r, 4),
        key: RowKey {
            exe: ident(r, 5)?,
            parent: ident(r, 9)?,
            grandparent: ident(r, 13)?,
            uid: u32::try_from(int(r, 17)).unwrap_or(u32::MAX),
            family: u16::try_from(int(r, 18)).unwrap_or_default(),
            protocol: u16::try_from(int(r, 19)).unwrap_or_default(),
            lport: i32::try_from(int(r, 20)).unwrap_or(-1),
            rport: i32::try_from(int(r, 21)).unwrap_or(-1),
            laddr: text(r, 22),
            raddr: text(r, 23),
            domain: text(r, 24),
            netns: u32::try_from(int(r, 25)).unwrap_or_default(),
            container: String::new(),
        },
    }))
}

fn v1_row(r: &SqlRow<'_>) -> rusqlite::Result<Result<Row, String>> {
    let when = text(r, 1);
    let Some(contime) = local_unix(&when) else {
        return Ok(Err(when));
    };
    let v1_ident = |first: usize| ExeIdent {
        exe: text(r, first),
        name: text(r, first + 1),
        cmdline: text(r, first + 2),
        sha256: text(r, first + 3),
    };
    let laddr = text(r, 15);
    let raddr = text(r, 16);
    let family = [&raddr, &laddr]
        .iter()
        .find_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map_or(0, |a| if a.is_ipv4() { 2 } else { 10 });
    Ok(Ok(Row {
        contime,
        send: counter(r, 2),
        recv: counter(r, 3),
        events: 1,
        key: RowKey {
            exe: Arc::new(v1_ident(4)),
            parent: Arc::new(v1_ident(8)),
            grandparent: Arc::new(ExeIdent::default()),
            uid: u32::try_from(int(r, 12)).unwrap_or(u32::MAX),
            family,
            protocol: 0,
            lport: i32::try_from(int(r, 13)).unwrap_or(-1),
            rport: i32::try_from(int(r, 14)).unwrap_or(-1),
            laddr,
            raddr,
            domain: reverse_domain(&text(r, 17)),
            netns: 0,
            container: String::new(),
        },
    }))
}

/// picosnitch 1 stored `YYYY-MM-DD HH:MM:SS` in local time.
fn local_unix(s: &str) -> Option<i64> {
    use chrono::{Local, NaiveDateTime, TimeZone};
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
}

/// picosnitch 1 stored names as written (`www.example.com`); this schema reverses them
/// (`com.example.www`). Addresses and empty values are kept as they are.
pub fn reverse_domain(d: &str) -> String {
    if d.is_empty() || d.parse::<std::net::IpAddr>().is_ok() {
        return d.to_string();
    }
    crate::filter::reverse_notation(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_times() {
        assert_eq!(reverse_domain("www.example.com."), "com.example.www");
        assert_eq!(reverse_domain("10.0.0.1"), "10.0.0.1");
        assert_eq!(reverse_domain("::1"), "::1");
        assert_eq!(reverse_domain(""), "");
        assert!(local_unix("2022-02-30 10:00:00").is_none());
        assert!(local_unix("yesterday").is_none());
        let t = local_unix("2022-03-01 10:00:00").unwrap();
        assert!((1_646_000_000..1_646_200_000).contains(&t), "{t}");
    }
}
