//! exe.rs: the drill-down of one executable, chosen by path or by sha256: its paths, names and
//! hashes, when it was first and last seen (known_executables), and its totals, top peers,
//! domains, parents, users, containers, command lines and (with GeoIP) countries in a time range.
use super::budget::Budget;
use super::db::QueryError;
use super::dims::find;
use super::params::{Filter, Range};
use super::query::{Aggregate, Order};
use crate::geoip::Lookup;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Map, Value as Json};

/// Most names, hashes, paths or known-executable records listed.
const MAX_LISTED: i64 = 1000;

/// Which executable to describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Exe(String),
    Sha256(String),
}

impl Selector {
    fn column(&self) -> &'static str {
        match self {
            Selector::Exe(_) => "exe",
            Selector::Sha256(_) => "sha256",
        }
    }

    fn value(&self) -> &str {
        match self {
            Selector::Exe(v) | Selector::Sha256(v) => v,
        }
    }
}

/// Distinct values of `column` in `table` among the rows matching the selector.
fn listed(
    conn: &Connection,
    table: &str,
    column: &str,
    sel: &Selector,
) -> rusqlite::Result<Vec<String>> {
    // `table`, `column` and the selector's column come from the fixed strings of this module.
    let sql = format!(
        "SELECT DISTINCT {column} FROM {table} WHERE {} = ?1 ORDER BY 1 LIMIT ?2",
        sel.column()
    );
    let mut st = conn.prepare(&sql)?;
    let out = st
        .query_map(rusqlite::params![sel.value(), MAX_LISTED], |r| r.get(0))?
        .collect();
    out
}

fn known(conn: &Connection, sel: &Selector) -> rusqlite::Result<Vec<Json>> {
    let sql = format!(
        "SELECT container, level, exe, name, sha256, first_seen, last_seen FROM known_executables
         WHERE {} = ?1 ORDER BY level, container, first_seen, exe, name, sha256 LIMIT ?2",
        sel.column()
    );
    let mut st = conn.prepare(&sql)?;
    let out = st
        .query_map(rusqlite::params![sel.value(), MAX_LISTED], |r| {
            Ok(json!({
                "container": r.get::<_, String>(0)?,
                "level": r.get::<_, i64>(1)?,
                "exe": r.get::<_, String>(2)?,
                "name": r.get::<_, String>(3)?,
                "sha256": r.get::<_, String>(4)?,
                "first_seen": r.get::<_, i64>(5)?,
                "last_seen": r.get::<_, i64>(6)?,
            }))
        })?
        .collect();
    out
}

/// The drill-down, or `None` when the executable was never recorded.
pub fn drill(
    conn: &Connection,
    sel: &Selector,
    range: Range,
    limit: u32,
    geo: Option<&Lookup>,
) -> Result<Option<Json>, QueryError> {
    let paths = listed(conn, "executables", "exe", sel)?;
    let known = known(conn, sel)?;
    if paths.is_empty() && known.is_empty() {
        return Ok(None);
    }
    let seen_sql = format!(
        "SELECT min(first_seen), max(last_seen) FROM known_executables WHERE {} = ?1",
        sel.column()
    );
    let (first, last): (Option<i64>, Option<i64>) = conn
        .query_row(&seen_sql, [sel.value()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    // The selector as a filter of the aggregate queries.
    let dim = find(sel.column()).expect("exe and sha256 are dimensions");
    let filter = Filter {
        dim,
        value: rusqlite::types::Value::Text(sel.value().to_owned()),
    };
    let mut budget = Budget::answer();
    let mut top = |by: &[&str], limit: u32| -> Result<Json, QueryError> {
        let q = Aggregate {
            by: by
                .iter()
                .map(|n| find(n).expect("fixed dimension"))
                .collect(),
            range,
            filters: vec![filter.clone()],
            order: Order::Bytes,
            limit,
        };
        q.run(conn, geo, &mut budget)
    };
    let totals = top(&[], 1)?["rows"][0].clone();
    let mut out = Map::new();
    out.insert(sel.column().into(), sel.value().into());
    out.insert("from".into(), range.from.into());
    out.insert("to".into(), range.to.into());
    out.insert("first_seen".into(), first.into());
    out.insert("last_seen".into(), last.into());
    out.insert("paths".into(), paths.into());
    out.insert(
        "names".into(),
        listed(conn, "executables", "name", sel)?.into(),
    );
    out.insert(
        "hashes".into(),
        listed(conn, "executables", "sha256", sel)?.into(),
    );
    out.insert("known".into(), known.into());
    out.insert("totals".into(), totals);
    for (key, by) in [
        ("peers", &["raddr", "rport", "protocol"][..]),
        ("domains", &["domain"][..]),
        ("parents", &["pexe", "gpexe"][..]),
        ("users", &["uid"][..]),
        ("containers", &["container"][..]),
        ("cmdlines", &["cmdline"][..]),
        ("countries", &["country"][..]),
    ] {
        if key == "countries" && geo.is_none() {
            continue;
        }
        out.insert(key.into(), top(by, limit)?);
    }
    Ok(Some(Json::Object(out)))
}
