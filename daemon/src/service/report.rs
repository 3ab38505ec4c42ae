//! service::report: `picosnitch status`: whether the daemon runs (pidfile lock and a published
//! pid that is picosnitch, systemd unit), its hook set and live counters, the losses recorded in
//! the database by source, and the end of error.log. Exit status 0 when it runs, 3 when it does
//! not (as LSB init scripts do).
use super::control::systemd_in_use;
use super::pidfile;
use super::status::{human_bytes, Snapshot};
use crate::notify::exelog::local_time;
use crate::paths::Paths;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Exit status of `status` when the daemon does not run.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// How many lines of error.log `status` shows.
const ERROR_LINES: usize = 5;

pub fn status() -> ExitCode {
    let paths = Paths::from_env();
    let (text, running) = report(&paths);
    print!("{text}");
    if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    }
}

/// The report and whether the daemon runs.
pub fn report(paths: &Paths) -> (String, bool) {
    let mut out = String::new();
    let (pid, untrusted) = match pidfile::daemon(&paths.pidfile) {
        Ok(pid) => (pid, None),
        Err(e) => (None, Some(e)),
    };
    let unit = systemd_in_use().then(unit_state);
    let _ = writeln!(out, "picosnitch {}", env!("CARGO_PKG_VERSION"));
    match (pid, &unit) {
        (Some(pid), Some(u)) => {
            let _ = writeln!(
                out,
                "daemon:    running (pid {pid}; picosnitch.service {u})"
            );
        }
        (Some(pid), None) => {
            let _ = writeln!(out, "daemon:    running (pid {pid})");
        }
        (None, Some(u)) => {
            let _ = writeln!(out, "daemon:    not running (picosnitch.service {u})");
        }
        (None, None) => {
            let _ = writeln!(out, "daemon:    not running");
        }
    }
    if let Some(e) = untrusted {
        let _ = writeln!(out, "pidfile:   {e}");
    }
    if let Some(s) = pid.and(Snapshot::read(&paths.status)) {
        live(&mut out, &s);
    }
    database(&mut out, &paths.db);
    error_log(&mut out, &paths.error_log);
    (out, pid.is_some())
}

fn unit_state() -> String {
    std::process::Command::new("systemctl")
        .args(["is-active", "picosnitch.service"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown: {e}"))
}

fn live(out: &mut String, s: &Snapshot) {
    let _ = writeln!(out, "started:   {}", local_time(s.started));
    let _ = writeln!(out, "hook set:  {}", s.hook_set);
    let _ = writeln!(
        out,
        "written:   {} rows, {} sent, {} received (since start, as of {})",
        s.rows_written,
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received),
        local_time(s.updated)
    );
    let _ = writeln!(out, "losses:    {} since start", s.losses);
    let ident = s
        .identity
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(out, "identity:  {ident}");
    if !s.dns.is_empty() {
        let dns = s
            .dns
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "dns:       {dns}");
    }
}

/// Rows in `connections`, the last run's hook set, and losses summed by source.
struct DbFacts {
    rows: i64,
    hook_set: Option<String>,
    losses: Vec<(String, i64)>,
}

fn read_db(db: &Path) -> rusqlite::Result<DbFacts> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(db, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM connections", [], |r| r.get(0))?;
    let hook_set: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'hook_set'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let mut st = conn.prepare(
        "SELECT source, sum(count) FROM losses GROUP BY source ORDER BY sum(count) DESC, source",
    )?;
    let losses = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(DbFacts {
        rows,
        hook_set,
        losses,
    })
}

fn database(out: &mut String, db: &Path) {
    if !db.exists() {
        let _ = writeln!(out, "database:  {} (not created yet)", db.display());
        return;
    }
    match read_db(db) {
        Ok(DbFacts {
            rows,
            hook_set,
            losses,
        }) => {
            let hook = hook_set
                .map(|h| format!(", last hook set {h}"))
                .unwrap_or_default();
            let _ = writeln!(out, "database:  {}, {rows} rows{hook}", db.display());
            if losses.is_empty() {
                let _ = writeln!(out, "losses by source (recorded): none");
            } else {
                let _ = writeln!(out, "losses by source (recorded):");
                for (source, n) in losses {
                    let _ = writeln!(out, "  {source:<24} {n}");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "database:  {}: cannot read: {e}", db.display());
        }
    }
}

fn error_log(out: &mut String, path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        let _ = writeln!(out, "error.log: {} (empty)", path.display());
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let _ = writeln!(out, "error.log: {}, {} lines", path.display(), lines.len());
    for l in &lines[lines.len().saturating_sub(ERROR_LINES)..] {
        let _ = writeln!(out, "  {l}");
    }
}
