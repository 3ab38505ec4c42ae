//! Numbered schema migrations, tracked with `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from `user_version = i` to `user_version = i + 1`. The list is
//! append-only: a released migration is never edited, a change is a new entry at the end.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Schema version 1: the picosnitch 2 tables (STRICT), data-loss reports and a key/value table.
const V1: &str = "
CREATE TABLE executables (
    id INTEGER PRIMARY KEY,
    exe TEXT NOT NULL,
    name TEXT NOT NULL,
    cmdline TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    UNIQUE (exe, name, cmdline, sha256)
) STRICT;
INSERT INTO executables (id, exe, name, cmdline, sha256) VALUES (0, '', '', '', '');

CREATE TABLE domains (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO domains (id, domain) VALUES (0, '');

CREATE TABLE addresses (
    id INTEGER PRIMARY KEY,
    addr TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO addresses (id, addr) VALUES (0, '');

CREATE TABLE connections (
    contime INTEGER NOT NULL,
    send INTEGER NOT NULL,
    recv INTEGER NOT NULL,
    events INTEGER NOT NULL,
    exe_id INTEGER NOT NULL,
    pexe_id INTEGER NOT NULL,
    gpexe_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    family INTEGER NOT NULL,
    protocol INTEGER NOT NULL,
    lport INTEGER NOT NULL,
    rport INTEGER NOT NULL,
    laddr_id INTEGER NOT NULL,
    raddr_id INTEGER NOT NULL,
    domain_id INTEGER NOT NULL,
    netns INTEGER NOT NULL
) STRICT;
CREATE INDEX connections_contime ON connections (contime);
CREATE INDEX connections_exe_contime ON connections (exe_id, contime);

CREATE TABLE losses (
    contime INTEGER NOT NULL,
    source TEXT NOT NULL,
    count INTEGER NOT NULL
) STRICT;
CREATE INDEX losses_contime ON losses (contime);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Schema version 2: executables seen on the network, per container and level (0 the process,
/// 1 its parent, 2 its grandparent), with every name and hash they had. Survives retention, so
/// "new program" and "new hash" decisions survive restarts.
const V2: &str = "
CREATE TABLE known_executables (
    container TEXT NOT NULL,
    level INTEGER NOT NULL,
    exe TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (container, level, exe, name, sha256)
) STRICT;
";

/// Schema version 3: the container (or system unit) a row's process ran in, from its cgroup, as
/// a lookup table like the other text columns; 0 is the host.
const V3: &str = "
CREATE TABLE containers (
    id INTEGER PRIMARY KEY,
    container TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO containers (id, container) VALUES (0, '');
ALTER TABLE connections ADD COLUMN container_id INTEGER NOT NULL DEFAULT 0;
";

/// All migrations, in order; append new ones at the end.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The `user_version` a fully migrated database has.
pub fn schema_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Whether the main database has a table called `name`.
pub fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

pub fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies the pending migrations, each in its own IMMEDIATE transaction together with its
/// `user_version` bump, so a crash or a concurrent opener never sees a half-applied step.
/// Returns the resulting schema version.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let known = schema_version();
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql(path, "begin a migration transaction"))?;
        let found = user_version(&tx).map_err(StoreError::sql(path, "read PRAGMA user_version"))?;
        if found > 0 && !has_table(&tx, "meta") {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                found,
            });
        }
        if found > i64::from(known) || found < 0 {
            return Err(StoreError::UnknownSchema {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        if found == i64::from(known) {
            tx.commit()
                .map_err(StoreError::sql(path, "end a migration transaction"))?;
            return Ok(known);
        }
        // 0 <= found < known here, so `found` indexes MIGRATIONS.
        let index = usize::try_from(found).unwrap_or_default();
        let version = u32::try_from(index + 1).unwrap_or(known);
        let sql = MIGRATIONS[index];
        let fail = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(path = %path.display(), version, "applied database migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Connection {
        Connection::open(path).expect("open")
    }

    #[test]
    fn fresh_database_reaches_latest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        assert_eq!(
            migrate(&mut conn, &path).expect("migrate"),
            schema_version()
        );
        assert_eq!(user_version(&conn).expect("uv"), 3);
        assert_eq!(schema_version(), 3);
    }

    #[test]
    fn version_2_rows_become_host_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        for (i, m) in MIGRATIONS[..2].iter().enumerate() {
            conn.execute_batch(m).expect("old migration");
            conn.pragma_update(None, "user_version", i + 1).expect("uv");
        }
        conn.execute(
            "INSERT INTO connections VALUES (1, 2, 3, 1, 0, 0, 0, 0, 2, 6, 1, 2, 0, 0, 0, 9)",
            [],
        )
        .expect("old row");
        migrate(&mut conn, &path).expect("migrate");
        let c: String = conn
            .query_row(
                "SELECT ct.container FROM connections c JOIN containers ct ON ct.id = c.container_id",
                [],
                |r| r.get(0),
            )
            .expect("joined row");
        assert_eq!(c, "");
    }

    #[test]
    fn migrate_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        migrate(&mut conn, &path).expect("first");
        migrate(&mut conn, &path).expect("second");
        drop(conn);
        let mut conn = open(&path);
        migrate(&mut conn, &path).expect("after reopen");
        let sentinels: i64 = conn
            .query_row("SELECT count(*) FROM executables WHERE id = 0", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(sentinels, 1);
        assert_eq!(
            user_version(&conn).expect("uv"),
            i64::from(schema_version())
        );
    }

    #[test]
    fn tables_are_strict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        migrate(&mut conn, &path).expect("migrate");
        for table in [
            "executables",
            "domains",
            "addresses",
            "connections",
            "losses",
            "meta",
            "known_executables",
            "containers",
        ] {
            let strict: i64 = conn
                .query_row(
                    "SELECT strict FROM pragma_table_list WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .expect("table_list");
            assert_eq!(strict, 1, "{table} is not STRICT");
        }
        let err = conn.execute("INSERT INTO losses VALUES ('x', 'y', 1)", []);
        assert!(
            err.is_err(),
            "STRICT table accepted TEXT in an INTEGER column"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        conn.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .expect("meta");
        conn.pragma_update(None, "user_version", 99)
            .expect("set uv");
        match migrate(&mut conn, &path) {
            Err(StoreError::UnknownSchema { found: 99, .. }) => {}
            other => panic!("expected UnknownSchema, got {other:?}"),
        }
    }

    #[test]
    fn picosnitch_databases_are_not_opened_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        // picosnitch 1 (snitch.db, user_version 3) and 2 (picosnitch.db, user_version 4).
        for uv in [3, 4] {
            let path = dir.path().join(format!("{uv}.db"));
            let mut conn = open(&path);
            conn.execute_batch("CREATE TABLE connections (contime TEXT)")
                .expect("old table");
            conn.pragma_update(None, "user_version", uv)
                .expect("set uv");
            match migrate(&mut conn, &path) {
                Err(e @ StoreError::Foreign { .. }) => {
                    assert!(e.to_string().contains("picosnitch migrate"), "{e}");
                }
                other => panic!("expected Foreign, got {other:?}"),
            }
            assert_eq!(user_version(&conn).expect("uv"), i64::from(uv));
        }
    }

    #[test]
    fn failed_migration_leaves_version_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let mut conn = open(&path);
        conn.execute_batch("CREATE TABLE domains (x INTEGER)")
            .expect("clash");
        assert!(matches!(
            migrate(&mut conn, &path),
            Err(StoreError::Migrate { version: 1, .. })
        ));
        assert_eq!(user_version(&conn).expect("uv"), 0);
        let executables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'executables'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(executables, 0);
    }
}
