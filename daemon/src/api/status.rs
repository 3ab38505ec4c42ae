//! status.rs: what the daemon is (version, kernel, attached hook set, refused sets, skipped
//! optional hooks, start time, GeoIP databases) and the `/api/v1/status` answer built from it
//! and the counters.
use super::metrics::Snapshot;
use crate::geoip::Lookup;
use rusqlite::Connection;
use serde_json::{json, Value as Json};

/// Facts fixed when the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    pub kernel: String,
    pub hook_set: String,
    /// Hook sets tried first and refused, with the reason.
    pub refused: Vec<(String, String)>,
    /// Optional hooks of the attached set this kernel does not offer.
    pub skipped: Vec<String>,
    /// Unix time the daemon started.
    pub started: i64,
}

/// What the database says: its schema version and the time of its newest row.
pub fn database(conn: &Connection) -> rusqlite::Result<Json> {
    let schema: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let newest: Option<i64> =
        conn.query_row("SELECT max(contime) FROM connections", [], |r| r.get(0))?;
    Ok(json!({ "schema_version": schema, "newest_row": newest }))
}

/// The status answer.
pub fn status(
    info: &Info,
    s: &Snapshot,
    subscribers: usize,
    database: Json,
    geoip: Option<&Lookup>,
    now: i64,
) -> Json {
    let geoip: Vec<Json> = geoip
        .map(|l| l.databases())
        .unwrap_or_default()
        .into_iter()
        .map(|(path, kind)| json!({ "path": path, "type": kind }))
        .collect();
    let refused: Vec<Json> = info
        .refused
        .iter()
        .map(|(set, why)| json!({ "hook_set": set, "reason": why }))
        .collect();
    json!({
        "version": info.version,
        "kernel": info.kernel,
        "hook_set": info.hook_set,
        "refused_hook_sets": refused,
        "skipped_optional_hooks": info.skipped,
        "started": info.started,
        "geoip_databases": geoip,
        "uptime_seconds": (now - info.started).max(0),
        "database": database,
        "counters": {
            "windows_written": s.windows,
            "rows_written": s.rows,
            "write_failures": s.write_failures,
            "losses": s.losses,
            "event_subscribers": subscribers,
        },
    })
}
