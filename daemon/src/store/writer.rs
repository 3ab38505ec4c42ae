//! The read-write handle on the database: open with safe settings, batched inserts, retention.

use std::collections::HashMap;
use std::fs::DirBuilder;
use std::hash::Hash;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::{health, schema, to_i64, wal, StoreError};
use crate::model::{ExeIdent, Row};

/// How long a write waits for another connection's lock before it fails (and is retried).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Entries an id cache holds before it is emptied and refilled from the database.
const CACHE_CAP: usize = 65_536;
/// Bytes of keys an id cache holds before it is emptied (long command lines fill it sooner).
const CACHE_BYTES: usize = 16 << 20;

const INSERT_EXE: &str =
    "INSERT OR IGNORE INTO executables (exe, name, cmdline, sha256) VALUES (?1, ?2, ?3, ?4)";
const SELECT_EXE: &str =
    "SELECT id FROM executables WHERE exe = ?1 AND name = ?2 AND cmdline = ?3 AND sha256 = ?4";
const INSERT_ADDR: &str = "INSERT OR IGNORE INTO addresses (addr) VALUES (?1)";
const SELECT_ADDR: &str = "SELECT id FROM addresses WHERE addr = ?1";
const INSERT_DOMAIN: &str = "INSERT OR IGNORE INTO domains (domain) VALUES (?1)";
const SELECT_DOMAIN: &str = "SELECT id FROM domains WHERE domain = ?1";
const INSERT_CONTAINER: &str = "INSERT OR IGNORE INTO containers (container) VALUES (?1)";
const SELECT_CONTAINER: &str = "SELECT id FROM containers WHERE container = ?1";
const INSERT_CONNECTION: &str = "INSERT INTO connections (contime, send, recv, events, exe_id, \
     pexe_id, gpexe_id, uid, family, protocol, lport, rport, laddr_id, raddr_id, domain_id, netns, \
     container_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// Lookup-table ids already known, so repeated values skip the INSERT/SELECT round trip.
///
/// Ids learned inside a transaction are recorded in `added` and forgotten again if that
/// transaction rolls back (a rolled-back row id may later be given to a different value).
#[derive(Debug)]
struct IdCache<K> {
    map: HashMap<K, i64>,
    added: Vec<K>,
    cap: usize,
    bytes: usize,
}

impl<K: Eq + Hash + Clone> IdCache<K> {
    fn new(cap: usize) -> Self {
        IdCache {
            map: HashMap::new(),
            added: Vec::new(),
            cap,
            bytes: 0,
        }
    }

    fn get(&self, key: &K) -> Option<i64> {
        self.map.get(key).copied()
    }

    /// Remembers `key` (of `weight` bytes); a full cache (entries or bytes) is emptied first.
    fn insert(&mut self, key: K, id: i64, weight: usize) {
        if self.map.len() >= self.cap || self.bytes + weight > CACHE_BYTES {
            self.map.clear();
            self.added.clear();
            self.bytes = 0;
        }
        self.bytes += weight;
        self.added.push(key.clone());
        self.map.insert(key, id);
    }

    fn commit(&mut self) {
        self.added.clear();
    }

    fn rollback(&mut self) {
        for key in self.added.drain(..) {
            self.map.remove(&key);
        }
    }
}

#[derive(Debug)]
struct Caches {
    exes: IdCache<ExeIdent>,
    addrs: IdCache<String>,
    domains: IdCache<String>,
    containers: IdCache<String>,
}

impl Caches {
    fn commit(&mut self) {
        self.exes.commit();
        self.addrs.commit();
        self.domains.commit();
        self.containers.commit();
    }

    fn rollback(&mut self) {
        self.exes.rollback();
        self.addrs.rollback();
        self.domains.rollback();
        self.containers.rollback();
    }
}

/// The daemon's read-write connection to the database.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Connection,
    caches: Caches,
    pub(super) wal: wal::WalState,
}

/// Refuses `path` if it is a symbolic link; a missing path is fine (it will be created).
fn refuse_symlink(path: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(StoreError::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Stat {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn is_symlink_refusal(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CANTOPEN_SYMLINK)
}

impl Store {
    /// Like [`Store::open`], but a corrupt database (failed `quick_check`, or SQLite calls the
    /// file corrupt or not a database) is moved aside to `<path>.corrupt-<TIME>` with its -wal
    /// and -shm files, both facts are logged as errors, and a new database is started at `path`.
    pub fn open_or_replace(path: &Path) -> Result<Store, StoreError> {
        match Store::open(path) {
            Err(e) if e.is_corruption() => {
                tracing::error!("{e}");
                let aside = health::move_aside(path)?;
                tracing::error!(
                    "the corrupt database {} was moved to {} (with its -wal and -shm files); a \
                     new, empty database is started at {}",
                    path.display(),
                    aside.display(),
                    path.display()
                );
                Store::open(path)
            }
            r => r,
        }
    }

    /// Opens (creating if needed) the database at `path`, checks it with `PRAGMA quick_check`
    /// (a damaged one is [`StoreError::Corrupt`]) and brings its schema up to date.
    ///
    /// The parent directory is created with mode 0755 if missing. The database is refused if
    /// `path` is a symbolic link; SQLite is also opened with `SQLITE_OPEN_NOFOLLOW`, which refuses
    /// a symbolic link anywhere on the path and closes the gap between the check and the open.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        refuse_symlink(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|source| {
            if is_symlink_refusal(&source) {
                StoreError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let pragma = |pragma: &'static str| {
            move |source| StoreError::Pragma {
                path: path.to_path_buf(),
                pragma,
                source,
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(pragma("busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(pragma("journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(pragma("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(pragma("foreign_keys"))?;
        conn.pragma_update(None, "journal_size_limit", wal::JOURNAL_SIZE_LIMIT)
            .map_err(pragma("journal_size_limit"))?;
        health::quick_check(&conn, path)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn,
            caches: Caches {
                exes: IdCache::new(CACHE_CAP),
                addrs: IdCache::new(CACHE_CAP),
                domains: IdCache::new(CACHE_CAP),
                containers: IdCache::new(CACHE_CAP),
            },
            wal: wal::WalState::default(),
        })
    }

    /// The path the database was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(super) fn conn_ref(&self) -> &Connection {
        &self.conn
    }

    /// The underlying connection, for the read helpers in [`super::reader`].
    #[cfg(test)]
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Writes `rows` in one transaction and returns how many were written.
    ///
    /// On error the transaction is rolled back and the database is unchanged: nothing of the
    /// batch was stored, so the caller keeps the batch and may retry it later (e.g. when the
    /// error was `SQLITE_BUSY` or a full disk).
    pub fn write_batch(&mut self, rows: &[Row]) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.write_rows(rows, None)
    }

    /// Writes `rows` and sets `meta[key] = value` in the same transaction (an importer's
    /// position: a resumed import continues exactly after the last written batch).
    pub fn write_batch_at(
        &mut self,
        rows: &[Row],
        key: &str,
        value: &str,
    ) -> Result<usize, StoreError> {
        self.write_rows(rows, Some((key, value)))
    }

    /// The value of `key` in the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(StoreError::sql(&self.path, "read the meta table"))
    }

    fn write_rows(
        &mut self,
        rows: &[Row],
        meta: Option<(&str, &str)>,
    ) -> Result<usize, StoreError> {
        let result = insert_rows(&mut self.conn, &mut self.caches, rows, meta);
        match result {
            Ok(()) => {
                self.caches.commit();
                tracing::debug!(rows = rows.len(), "wrote connection rows");
                Ok(rows.len())
            }
            Err(source) => {
                self.caches.rollback();
                Err(StoreError::Sql {
                    path: self.path.clone(),
                    what: "write a batch of connection rows",
                    source,
                })
            }
        }
    }

    /// Completes rows stored since `since` with the executable `pending` (a `!pending` hash):
    /// they now name `done`, the same executable with its hash; with `drop_exe_rows` (its hash is
    /// ignored by `[log]`) the rows it is the executable of are deleted instead. Returns the rows
    /// changed.
    pub fn complete_hash(
        &mut self,
        pending: &ExeIdent,
        done: &ExeIdent,
        since: i64,
        drop_exe_rows: bool,
    ) -> Result<usize, StoreError> {
        let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
            let tx = conn.transaction()?;
            let find = |i: &ExeIdent| {
                tx.prepare_cached(SELECT_EXE)?
                    .query_row(params![i.exe, i.name, i.cmdline, i.sha256], |r| {
                        r.get::<_, i64>(0)
                    })
            };
            let Ok(old) = find(pending) else {
                return Ok(0);
            };
            tx.prepare_cached(INSERT_EXE)?.execute(params![
                done.exe,
                done.name,
                done.cmdline,
                done.sha256
            ])?;
            let new = find(done)?;
            let mut n = 0;
            if drop_exe_rows {
                // Its hash is in `[log] ignore_sha256`: the rows it sent are not kept.
                n += tx.execute(
                    "DELETE FROM connections WHERE exe_id = ?1 AND contime >= ?2",
                    params![old, since],
                )?;
            }
            for col in ["exe_id", "pexe_id", "gpexe_id"] {
                n += tx.execute(
                    &format!(
                        "UPDATE connections SET {col} = ?1 WHERE {col} = ?2 AND contime >= ?3"
                    ),
                    params![new, old, since],
                )?;
            }
            tx.commit()?;
            Ok(n)
        };
        run(&mut self.conn).map_err(StoreError::sql(&self.path, "complete a pending hash"))
    }

    /// Records that `count` events from `source` (ring buffer full, map full, unreadable /proc
    /// entry, …) were lost around `contime` (unix seconds).
    pub fn record_loss(
        &mut self,
        contime: i64,
        source: &str,
        count: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO losses (contime, source, count) VALUES (?1, ?2, ?3)")
            .and_then(|mut stmt| stmt.execute(params![contime, source, to_i64(count)]))
            .map_err(StoreError::sql(&self.path, "record a data loss"))?;
        Ok(())
    }

    /// Sets `key` to `value` in the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(StoreError::sql(&self.path, "write to the meta table"))?;
        Ok(())
    }

    /// Deletes connection and loss rows older than `retention_days` before `now_unix` and
    /// returns how many rows were deleted. `0` days keeps everything. Lookup tables are kept:
    /// known executables (and their hashes) survive retention.
    pub fn retention(&mut self, retention_days: u32, now_unix: i64) -> Result<usize, StoreError> {
        if retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now_unix.saturating_sub(i64::from(retention_days) * 86_400);
        let delete = |conn: &mut Connection| -> rusqlite::Result<usize> {
            let tx = conn.transaction()?;
            let n = tx.execute("DELETE FROM connections WHERE contime < ?1", [cutoff])?
                + tx.execute("DELETE FROM losses WHERE contime < ?1", [cutoff])?;
            tx.commit()?;
            Ok(n)
        };
        let n = delete(&mut self.conn).map_err(StoreError::sql(&self.path, "apply retention"))?;
        tracing::debug!(deleted = n, cutoff, "applied retention");
        Ok(n)
    }
}

/// Inserts `rows` in one transaction; dropping the transaction on error rolls it back.
fn insert_rows(
    conn: &mut Connection,
    caches: &mut Caches,
    rows: &[Row],
    meta: Option<(&str, &str)>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    if let Some((key, value)) = meta {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
    }
    for row in rows {
        let k = &row.key;
        let exe_id = intern_exe(&tx, &mut caches.exes, &k.exe)?;
        let pexe_id = intern_exe(&tx, &mut caches.exes, &k.parent)?;
        let gpexe_id = intern_exe(&tx, &mut caches.exes, &k.grandparent)?;
        let laddr_id = intern_text(&tx, &mut caches.addrs, &k.laddr, INSERT_ADDR, SELECT_ADDR)?;
        let raddr_id = intern_text(&tx, &mut caches.addrs, &k.raddr, INSERT_ADDR, SELECT_ADDR)?;
        let domain_id = intern_text(
            &tx,
            &mut caches.domains,
            &k.domain,
            INSERT_DOMAIN,
            SELECT_DOMAIN,
        )?;
        let container_id = intern_text(
            &tx,
            &mut caches.containers,
            &k.container,
            INSERT_CONTAINER,
            SELECT_CONTAINER,
        )?;
        tx.prepare_cached(INSERT_CONNECTION)?.execute(params![
            row.contime,
            to_i64(row.send),
            to_i64(row.recv),
            to_i64(row.events),
            exe_id,
            pexe_id,
            gpexe_id,
            k.uid,
            k.family,
            k.protocol,
            k.lport,
            k.rport,
            laddr_id,
            raddr_id,
            domain_id,
            k.netns,
            container_id,
        ])?;
    }
    tx.commit()
}

/// The `executables` id of `ident`, inserting it if new; an all-empty ident is the sentinel 0.
fn intern_exe(
    conn: &Connection,
    cache: &mut IdCache<ExeIdent>,
    ident: &ExeIdent,
) -> rusqlite::Result<i64> {
    if *ident == ExeIdent::default() {
        return Ok(0);
    }
    if let Some(id) = cache.get(ident) {
        return Ok(id);
    }
    let p = params![ident.exe, ident.name, ident.cmdline, ident.sha256];
    let id = if conn.prepare_cached(INSERT_EXE)?.execute(p)? == 1 {
        conn.last_insert_rowid()
    } else {
        conn.prepare_cached(SELECT_EXE)?
            .query_row(p, |r| r.get(0))?
    };
    let weight = ident.exe.len() + ident.name.len() + ident.cmdline.len() + ident.sha256.len();
    cache.insert(ident.clone(), id, weight);
    Ok(id)
}

/// The id of `value` in a one-column lookup table, inserting it if new; `""` is the sentinel 0.
fn intern_text(
    conn: &Connection,
    cache: &mut IdCache<String>,
    value: &str,
    insert: &str,
    select: &str,
) -> rusqlite::Result<i64> {
    if value.is_empty() {
        return Ok(0);
    }
    if let Some(id) = cache.map.get(value) {
        return Ok(*id);
    }
    let id = if conn.prepare_cached(insert)?.execute([value])? == 1 {
        conn.last_insert_rowid()
    } else {
        conn.prepare_cached(select)?
            .query_row([value], |r| r.get(0))?
    };
    cache.insert(value.to_owned(), id, value.len());
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::IdCache;

    #[test]
    fn id_cache_rollback_forgets_only_new_ids() {
        let mut c = IdCache::new(8);
        c.insert("a".to_owned(), 1, 1);
        c.commit();
        c.insert("b".to_owned(), 2, 1);
        c.rollback();
        assert_eq!(c.get(&"a".to_owned()), Some(1));
        assert_eq!(c.get(&"b".to_owned()), None);
    }

    #[test]
    fn id_cache_is_bounded() {
        let mut c = IdCache::new(2);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            c.insert(k.to_owned(), i as i64, 1);
            c.commit();
        }
        assert!(c.map.len() <= 2);
        assert_eq!(c.get(&"c".to_owned()), Some(2));
    }
}
