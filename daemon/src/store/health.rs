//! health.rs: the integrity check run when the database is opened, and moving a corrupt database
//! (with its -wal and -shm files) aside so the daemon starts a new one instead of failing for ever.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::StoreError;

/// Problems `quick_check` lists at most (the first ones name the damage well enough).
const MAX_PROBLEMS: u32 = 5;

/// Runs `PRAGMA quick_check` on the main database: `Ok` when it answers "ok", otherwise the
/// problems it found as [`StoreError::Corrupt`].
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let problems = conn
        .prepare(&format!("PRAGMA quick_check({MAX_PROBLEMS})"))
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|source| {
            let e = StoreError::sql(path, "run PRAGMA quick_check")(source);
            match &e {
                StoreError::Sql { source, .. } if e.is_corruption() => StoreError::Corrupt {
                    path: path.to_path_buf(),
                    problems: source.to_string(),
                },
                _ => e,
            }
        })?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        problems: problems.join("; "),
    })
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// The first `<path>.corrupt-<UTC time>[-N]` that does not exist yet (nor its -wal or -shm).
fn aside_name(path: &Path, now: chrono::DateTime<chrono::Utc>) -> PathBuf {
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let taken = |p: &Path| {
        ["", "-wal", "-shm"]
            .iter()
            .any(|s| std::fs::symlink_metadata(with_suffix(p, s)).is_ok())
    };
    let mut aside = with_suffix(path, &format!(".corrupt-{stamp}"));
    let mut n = 1;
    while taken(&aside) {
        aside = with_suffix(path, &format!(".corrupt-{stamp}-{n}"));
        n += 1;
    }
    aside
}

/// Renames the database at `path` and its -wal and -shm files to `<path>.corrupt-<TIME>`
/// (keeping them for inspection or recovery) and returns the new name of the database.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let aside = aside_name(path, chrono::Utc::now());
    for suffix in ["", "-wal", "-shm"] {
        let (from, to) = (with_suffix(path, suffix), with_suffix(&aside, suffix));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && !suffix.is_empty() => {}
            Err(source) => {
                return Err(StoreError::MoveAside {
                    path: from,
                    to,
                    source,
                })
            }
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let t = chrono::DateTime::from_timestamp(1_764_775_200, 0).unwrap();
        let first = aside_name(&db, t);
        assert_eq!(
            first.file_name().unwrap().to_str().unwrap(),
            "p.db.corrupt-20251203T152000Z"
        );
        std::fs::write(with_suffix(&first, "-wal"), b"x").unwrap();
        let second = aside_name(&db, t);
        assert_eq!(
            second.file_name().unwrap().to_str().unwrap(),
            "p.db.corrupt-20251203T152000Z-1"
        );
    }
}
