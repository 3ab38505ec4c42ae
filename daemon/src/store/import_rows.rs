//! import_rows.rs: turns one row of a picosnitch 1 or 2 `connections` query into a row of this
//! schema, or names what is wrong with it (a blob, bad UTF-8, a wrong type, no time).
//!
//! NULL means unknown and stays unknown: a NULL text is the empty value (lookup id 0), a NULL uid
//! is [`UNKNOWN_UID`] (never root), a NULL port -1, a NULL family, protocol or netns 0, NULL
//! byte counts 0 and NULL events 1. A row without a time cannot be placed and is skipped.
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::Row as SqlRow;

use crate::model::{ExeIdent, Row, RowKey};

/// The uid stored for a row whose source has none: `(uid_t) -1`, which no process runs as.
pub const UNKNOWN_UID: u32 = u32::MAX;

/// Why a source row was skipped.
pub type Problem = String;

fn column(r: &SqlRow<'_>, i: usize) -> String {
    r.as_ref()
        .column_name(i)
        .map_or_else(|_| format!("#{i}"), str::to_owned)
}

fn kind(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// A whole-number column: `None` for NULL.
fn int(r: &SqlRow<'_>, i: usize) -> Result<Option<i64>, Problem> {
    match r.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => Ok(Some(n)),
        other => Err(format!(
            "column {} holds {} where a whole number belongs",
            column(r, i),
            kind(other)
        )),
    }
}

/// A text column: `""` for NULL.
fn text(r: &SqlRow<'_>, i: usize) -> Result<String, Problem> {
    match r.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(String::new()),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(str::to_owned)
            .map_err(|_| format!("column {} is not valid UTF-8", column(r, i))),
        other => Err(format!(
            "column {} holds {} where text belongs",
            column(r, i),
            kind(other)
        )),
    }
}

fn counter(r: &SqlRow<'_>, i: usize) -> Result<u64, Problem> {
    Ok(u64::try_from(int(r, i)?.unwrap_or(0)).unwrap_or(0))
}

fn port(r: &SqlRow<'_>, i: usize) -> Result<i32, Problem> {
    Ok(int(r, i)?.and_then(|n| i32::try_from(n).ok()).unwrap_or(-1))
}

fn uid(r: &SqlRow<'_>, i: usize) -> Result<u32, Problem> {
    Ok(int(r, i)?
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(UNKNOWN_UID))
}

fn ident(r: &SqlRow<'_>, first: usize) -> Result<Arc<ExeIdent>, Problem> {
    Ok(Arc::new(ExeIdent {
        exe: text(r, first)?,
        name: text(r, first + 1)?,
        cmdline: text(r, first + 2)?,
        sha256: text(r, first + 3)?,
    }))
}

/// A picosnitch 2 row of [`super::import::v2_rows`]'s query.
pub fn v2_row(r: &SqlRow<'_>) -> Result<Row, Problem> {
    let Some(contime) = int(r, 1)? else {
        return Err("column contime is NULL: the row has no time".into());
    };
    Ok(Row {
        contime,
        send: counter(r, 2)?,
        recv: counter(r, 3)?,
        events: int(r, 4)?.map_or(1, |n| u64::try_from(n).unwrap_or(0)),
        key: RowKey {
            exe: ident(r, 5)?,
            parent: ident(r, 9)?,
            grandparent: ident(r, 13)?,
            uid: uid(r, 17)?,
            family: int(r, 18)?.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            protocol: int(r, 19)?.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            lport: port(r, 20)?,
            rport: port(r, 21)?,
            laddr: text(r, 22)?,
            raddr: text(r, 23)?,
            domain: text(r, 24)?,
            netns: int(r, 25)?.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            container: String::new(),
        },
    })
}

/// A picosnitch 1 row of [`super::import::V1_ROWS`].
pub fn v1_row(r: &SqlRow<'_>) -> Result<Row, Problem> {
    let when = text(r, 1)?;
    if when.is_empty() {
        return Err("column contime is empty: the row has no time".into());
    }
    let Some(contime) = local_unix(&when) else {
        return Err(format!(
            "column contime is not 'YYYY-MM-DD HH:MM:SS': {when:?}"
        ));
    };
    let v1_ident = |first: usize| -> Result<Arc<ExeIdent>, Problem> {
        Ok(Arc::new(ExeIdent {
            exe: text(r, first)?,
            name: text(r, first + 1)?,
            cmdline: text(r, first + 2)?,
            sha256: text(r, first + 3)?,
        }))
    };
    let laddr = text(r, 15)?;
    let raddr = text(r, 16)?;
    let family = [&raddr, &laddr]
        .iter()
        .find_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map_or(0, |a| if a.is_ipv4() { 2 } else { 10 });
    Ok(Row {
        contime,
        send: counter(r, 2)?,
        recv: counter(r, 3)?,
        events: 1,
        key: RowKey {
            exe: v1_ident(4)?,
            parent: v1_ident(8)?,
            grandparent: Arc::new(ExeIdent::default()),
            uid: uid(r, 12)?,
            family,
            protocol: 0,
            lport: port(r, 13)?,
            rport: port(r, 14)?,
            laddr,
            raddr,
            domain: reverse_domain(&text(r, 17)?),
            netns: 0,
            container: String::new(),
        },
    })
}

/// Bytes of text a row holds (each of its executables counted whole), for batch bounds.
pub fn weight(row: &Row) -> usize {
    let k = &row.key;
    let exe = |e: &ExeIdent| e.exe.len() + e.name.len() + e.cmdline.len() + e.sha256.len();
    exe(&k.exe)
        + exe(&k.parent)
        + exe(&k.grandparent)
        + k.laddr.len()
        + k.raddr.len()
        + k.domain.len()
        + 128
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

    #[test]
    fn cells_name_what_is_wrong() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let mut st = c
            .prepare("SELECT NULL AS a, x'ff' AS b, CAST(x'ff' AS TEXT) AS c, 1.5 AS d, 7 AS e")
            .unwrap();
        let mut rows = st.query([]).unwrap();
        let r = rows.next().unwrap().unwrap();
        assert_eq!(uid(r, 0), Ok(UNKNOWN_UID));
        assert_eq!(text(r, 0), Ok(String::new()));
        assert_eq!(port(r, 0), Ok(-1));
        assert_eq!(
            text(r, 1),
            Err("column b holds a blob where text belongs".into())
        );
        assert_eq!(text(r, 2), Err("column c is not valid UTF-8".into()));
        assert_eq!(
            int(r, 3),
            Err("column d holds a real number where a whole number belongs".into())
        );
        assert_eq!(int(r, 4), Ok(Some(7)));
    }
}
