//! Small read helpers over any connection to the database (tests, later the CLI).

use rusqlite::{Connection, OptionalExtension, Row as SqlRow};

use super::{conn_path, StoreError};
use crate::model::ExeIdent;

/// One `connections` row with its lookup ids resolved back to values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub contime: i64,
    pub exe: ExeIdent,
    pub parent: ExeIdent,
    pub grandparent: ExeIdent,
    pub uid: u32,
    pub family: u16,
    pub protocol: u16,
    pub lport: i32,
    pub rport: i32,
    pub laddr: String,
    pub raddr: String,
    pub domain: String,
    pub netns: u32,
    pub container: String,
    /// Counters as stored: values above `i64::MAX` were saturated on write.
    pub send: u64,
    pub recv: u64,
    pub events: u64,
}

/// One `losses` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLoss {
    pub contime: i64,
    pub source: String,
    pub count: u64,
}

const ROWS: &str = "
SELECT c.contime, c.send, c.recv, c.events,
       COALESCE(e.exe, ''), COALESCE(e.name, ''), COALESCE(e.cmdline, ''), COALESCE(e.sha256, ''),
       COALESCE(p.exe, ''), COALESCE(p.name, ''), COALESCE(p.cmdline, ''), COALESCE(p.sha256, ''),
       COALESCE(g.exe, ''), COALESCE(g.name, ''), COALESCE(g.cmdline, ''), COALESCE(g.sha256, ''),
       c.uid, c.family, c.protocol, c.lport, c.rport,
       COALESCE(la.addr, ''), COALESCE(ra.addr, ''), COALESCE(d.domain, ''), c.netns,
       COALESCE(ct.container, '')
FROM connections AS c
LEFT JOIN executables AS e ON e.id = c.exe_id
LEFT JOIN executables AS p ON p.id = c.pexe_id
LEFT JOIN executables AS g ON g.id = c.gpexe_id
LEFT JOIN addresses AS la ON la.id = c.laddr_id
LEFT JOIN addresses AS ra ON ra.id = c.raddr_id
LEFT JOIN domains AS d ON d.id = c.domain_id
LEFT JOIN containers AS ct ON ct.id = c.container_id
ORDER BY c.rowid";

fn exe_at(r: &SqlRow<'_>, first: usize) -> rusqlite::Result<ExeIdent> {
    Ok(ExeIdent {
        exe: r.get(first)?,
        name: r.get(first + 1)?,
        cmdline: r.get(first + 2)?,
        sha256: r.get(first + 3)?,
    })
}

fn stored_row(r: &SqlRow<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        contime: r.get(0)?,
        send: r.get(1)?,
        recv: r.get(2)?,
        events: r.get(3)?,
        exe: exe_at(r, 4)?,
        parent: exe_at(r, 8)?,
        grandparent: exe_at(r, 12)?,
        uid: r.get(16)?,
        family: r.get(17)?,
        protocol: r.get(18)?,
        lport: r.get(19)?,
        rport: r.get(20)?,
        laddr: r.get(21)?,
        raddr: r.get(22)?,
        domain: r.get(23)?,
        netns: r.get(24)?,
        container: r.get(25)?,
    })
}

/// All connection rows, fully joined, in insertion order.
pub fn rows(conn: &Connection) -> Result<Vec<StoredRow>, StoreError> {
    let read = || -> rusqlite::Result<Vec<StoredRow>> {
        let mut stmt = conn.prepare(ROWS)?;
        let rows = stmt.query_map([], stored_row)?;
        rows.collect()
    };
    read().map_err(StoreError::sql(conn_path(conn), "read connection rows"))
}

/// All data-loss reports, in insertion order.
pub fn losses(conn: &Connection) -> Result<Vec<StoredLoss>, StoreError> {
    let read = || -> rusqlite::Result<Vec<StoredLoss>> {
        let mut stmt = conn.prepare("SELECT contime, source, count FROM losses ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredLoss {
                contime: r.get(0)?,
                source: r.get(1)?,
                count: r.get(2)?,
            })
        })?;
        rows.collect()
    };
    read().map_err(StoreError::sql(conn_path(conn), "read data-loss rows"))
}

/// The value of `key` in the `meta` table, if set.
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(StoreError::sql(conn_path(conn), "read the meta table"))
}
