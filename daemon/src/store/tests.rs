//! Tests of the store against real SQLite files in a temporary directory.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::{losses, meta, rows, schema_version, Store, StoreError, StoredLoss, StoredRow};
use crate::model::{ExeIdent, Row, RowKey};

fn ident(exe: &str, sha: &str) -> Arc<ExeIdent> {
    Arc::new(ExeIdent {
        exe: exe.to_owned(),
        name: Path::new(exe)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cmdline: format!("{exe} --flag"),
        sha256: sha.to_owned(),
    })
}

pub(super) fn row(contime: i64, exe: &str, raddr: &str, domain: &str) -> Row {
    Row {
        contime,
        key: RowKey {
            exe: ident(exe, "aa11"),
            parent: ident("/usr/bin/bash", "bb22"),
            grandparent: ident("/usr/lib/systemd/systemd", "!unreadable"),
            uid: 1000,
            family: 10,
            protocol: 6,
            lport: 51234,
            rport: 443,
            laddr: "fd00::2".to_owned(),
            raddr: raddr.to_owned(),
            domain: domain.to_owned(),
            netns: 4_026_531_840,
            container: if domain.is_empty() {
                String::new()
            } else {
                format!("podman:{}", "ab12".repeat(16))
            },
        },
        send: 1200,
        recv: 34_000,
        events: 7,
    }
}

fn expected(r: &Row) -> StoredRow {
    let k = &r.key;
    StoredRow {
        contime: r.contime,
        exe: (*k.exe).clone(),
        parent: (*k.parent).clone(),
        grandparent: (*k.grandparent).clone(),
        uid: k.uid,
        family: k.family,
        protocol: k.protocol,
        lport: k.lport,
        rport: k.rport,
        laddr: k.laddr.clone(),
        raddr: k.raddr.clone(),
        domain: k.domain.clone(),
        netns: k.netns,
        container: k.container.clone(),
        send: r.send.min(i64::MAX as u64),
        recv: r.recv.min(i64::MAX as u64),
        events: r.events.min(i64::MAX as u64),
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count query")
}

fn ids(conn: &Connection) -> Vec<[i64; 6]> {
    let mut stmt = conn
        .prepare(
            "SELECT exe_id, pexe_id, gpexe_id, laddr_id, raddr_id, domain_id \
             FROM connections ORDER BY rowid",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok([
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ])
        })
        .expect("query");
    rows.collect::<Result<_, _>>().expect("ids")
}

#[test]
fn open_creates_directory_and_sets_pragmas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("var/lib/picosnitch/picosnitch.db");
    let store = Store::open(&path).expect("open");
    assert_eq!(store.path(), path);
    assert!(path.parent().expect("parent").is_dir());
    let conn = store.conn();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("synchronous");
    assert_eq!(sync, 1, "synchronous is not NORMAL");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .expect("foreign_keys");
    assert_eq!(fk, 0);
    let uv: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(uv, i64::from(schema_version()));
}

#[test]
fn reopen_is_idempotent_and_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let batch = vec![row(100, "/usr/bin/curl", "2001:db8::1", "com.example.www")];
    Store::open(&path)
        .expect("open")
        .write_batch(&batch)
        .expect("write");
    let store = Store::open(&path).expect("reopen");
    let again = Store::open(&path).expect("open a second handle");
    drop(again);
    assert_eq!(rows(store.conn()).expect("rows"), vec![expected(&batch[0])]);
    assert_eq!(
        count(
            store.conn(),
            "SELECT count(*) FROM executables WHERE id = 0"
        ),
        1
    );
    assert_eq!(
        count(store.conn(), "PRAGMA user_version"),
        i64::from(super::schema::schema_version())
    );
}

#[test]
fn write_batch_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    let mut big = row(200, "/usr/bin/firefox", "93.184.216.34", "com.example");
    big.send = u64::MAX;
    big.recv = i64::MAX as u64;
    big.key.family = 2;
    big.key.protocol = 17;
    big.key.lport = -1;
    big.key.rport = -1;
    big.key.uid = u32::MAX;
    let batch = vec![
        row(100, "/usr/bin/curl", "2001:db8::1", "com.example.www"),
        big,
        row(300, "/usr/bin/curl", "2001:db8::2", ""),
    ];
    assert_eq!(store.write_batch(&batch).expect("write"), 3);
    assert_eq!(store.write_batch(&[]).expect("empty"), 0);
    let got = rows(store.conn()).expect("rows");
    let want: Vec<StoredRow> = batch.iter().map(expected).collect();
    assert_eq!(got, want);
    assert_eq!(
        got[1].send,
        i64::MAX as u64,
        "u64::MAX saturates to i64::MAX"
    );
}

#[test]
fn empty_values_use_sentinel_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    for (table, column) in [
        ("executables", "exe"),
        ("domains", "domain"),
        ("addresses", "addr"),
    ] {
        let sql = format!("SELECT count(*) FROM {table} WHERE id = 0 AND {column} = ''");
        assert_eq!(count(store.conn(), &sql), 1, "{table} lacks the sentinel");
    }
    let mut r = row(100, "/usr/bin/curl", "", "");
    r.key.exe = Arc::new(ExeIdent::default());
    r.key.parent = Arc::new(ExeIdent::default());
    r.key.grandparent = Arc::new(ExeIdent::default());
    r.key.laddr = String::new();
    store.write_batch(&[r.clone()]).expect("write");
    assert_eq!(ids(store.conn()), vec![[0; 6]]);
    assert_eq!(count(store.conn(), "SELECT count(*) FROM executables"), 1);
    assert_eq!(count(store.conn(), "SELECT count(*) FROM addresses"), 1);
    assert_eq!(count(store.conn(), "SELECT count(*) FROM domains"), 1);
    assert_eq!(rows(store.conn()).expect("rows"), vec![expected(&r)]);
}

#[test]
fn interning_reuses_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let mut store = Store::open(&path).expect("open");
    let a = row(100, "/usr/bin/curl", "2001:db8::1", "com.example.www");
    // Same executable, different remote address and domain.
    let b = row(110, "/usr/bin/curl", "2001:db8::2", "org.example");
    store.write_batch(&[a.clone(), b.clone()]).expect("first");
    store.write_batch(std::slice::from_ref(&a)).expect("second");
    drop(store);
    // A fresh handle has an empty cache and must find the existing ids in the database.
    let mut store = Store::open(&path).expect("reopen");
    store.write_batch(std::slice::from_ref(&b)).expect("third");
    let conn = store.conn();
    // Sentinel + curl + bash + systemd.
    assert_eq!(count(conn, "SELECT count(*) FROM executables"), 4);
    // Sentinel + fd00::2 + two remote addresses.
    assert_eq!(count(conn, "SELECT count(*) FROM addresses"), 4);
    assert_eq!(count(conn, "SELECT count(*) FROM domains"), 3);
    let ids = ids(conn);
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], ids[2]);
    assert_eq!(ids[1], ids[3]);
    assert_eq!(ids[0][..3], ids[1][..3]);
    assert!(ids.iter().all(|i| i[3] == ids[0][3]), "laddr interned once");
    assert_ne!(ids[0][4], ids[1][4]);
    let want: Vec<StoredRow> = [&a, &b, &a, &b].into_iter().map(expected).collect();
    assert_eq!(rows(conn).expect("rows"), want);
}

#[test]
fn retention_deletes_old_rows_but_keeps_executables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    let now = 1_750_000_000;
    let day = 86_400;
    let old = row(
        now - 31 * day,
        "/usr/bin/old-tool",
        "2001:db8::9",
        "org.old",
    );
    let edge = row(
        now - 30 * day,
        "/usr/bin/curl",
        "2001:db8::1",
        "com.example",
    );
    let new = row(now - 60, "/usr/bin/curl", "2001:db8::1", "com.example");
    store
        .write_batch(&[old, edge.clone(), new.clone()])
        .expect("write");
    store
        .record_loss(now - 40 * day, "ringbuf", 3)
        .expect("loss");
    store.record_loss(now - 10, "proc", 1).expect("loss");
    let exes = count(store.conn(), "SELECT count(*) FROM executables");

    assert_eq!(store.retention(0, now).expect("keep forever"), 0);
    assert_eq!(rows(store.conn()).expect("rows").len(), 3);

    assert_eq!(store.retention(30, now).expect("retention"), 2);
    assert_eq!(
        rows(store.conn()).expect("rows"),
        vec![expected(&edge), expected(&new)]
    );
    assert_eq!(
        losses(store.conn()).expect("losses"),
        vec![StoredLoss {
            contime: now - 10,
            source: "proc".to_owned(),
            count: 1
        }]
    );
    assert_eq!(
        count(store.conn(), "SELECT count(*) FROM executables"),
        exes
    );
    let kept = "SELECT count(*) FROM executables WHERE exe = '/usr/bin/old-tool'";
    assert_eq!(count(store.conn(), kept), 1);
}

#[test]
fn symlinked_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.db");
    drop(Store::open(&real).expect("open real"));
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    match Store::open(&link) {
        Err(StoreError::Symlink { path }) => assert_eq!(path, link),
        other => panic!("expected Symlink, got {other:?}"),
    }
    // A dangling link (to a file that does not exist yet) is refused too.
    let dangling = dir.path().join("dangling.db");
    std::os::unix::fs::symlink(dir.path().join("nowhere.db"), &dangling).expect("symlink");
    assert!(matches!(
        Store::open(&dangling),
        Err(StoreError::Symlink { .. })
    ));
    assert!(!dir.path().join("nowhere.db").exists());
    // So is a symbolic link to a directory on the path.
    let linked_dir = dir.path().join("linkdir");
    std::os::unix::fs::symlink(dir.path(), &linked_dir).expect("symlink dir");
    let err = Store::open(&linked_dir.join("real.db")).expect_err("linked directory");
    assert!(matches!(err, StoreError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("linkdir"), "{err}");
}

#[test]
fn failed_batch_leaves_database_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    store
        .conn()
        .execute_batch(
            "CREATE TRIGGER reject BEFORE INSERT ON connections WHEN NEW.uid = 666 \
             BEGIN SELECT RAISE(ABORT, 'rejected'); END;",
        )
        .expect("trigger");
    let snapshot = |conn: &Connection| {
        [
            "SELECT count(*) FROM connections",
            "SELECT count(*) FROM executables",
            "SELECT count(*) FROM addresses",
            "SELECT count(*) FROM domains",
        ]
        .map(|sql| count(conn, sql))
    };
    let before = snapshot(store.conn());
    let good = row(100, "/usr/bin/curl", "2001:db8::1", "com.example");
    let mut bad = row(101, "/usr/bin/wget", "2001:db8::2", "org.example");
    bad.key.uid = 666;
    let err = store
        .write_batch(&[good.clone(), bad])
        .expect_err("batch must fail");
    assert!(err.to_string().contains("p.db"), "{err}");
    assert_eq!(snapshot(store.conn()), before);
    assert!(rows(store.conn()).expect("rows").is_empty());

    // Ids cached during the failed transaction must not be reused: a different executable now
    // takes the first free id, and curl must still resolve to itself.
    let other = row(102, "/usr/bin/ssh", "2001:db8::3", "net.example");
    store
        .write_batch(&[other.clone(), good.clone()])
        .expect("retry");
    assert_eq!(
        rows(store.conn()).expect("rows"),
        vec![expected(&other), expected(&good)]
    );
}

#[test]
fn losses_and_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    store.record_loss(5, "map full", u64::MAX).expect("loss");
    assert_eq!(
        losses(store.conn()).expect("losses"),
        vec![StoredLoss {
            contime: 5,
            source: "map full".to_owned(),
            count: i64::MAX as u64
        }]
    );
    assert_eq!(meta(store.conn(), "remote.hwm").expect("meta"), None);
    store.set_meta("remote.hwm", "10").expect("set");
    store.set_meta("remote.hwm", "42").expect("set again");
    assert_eq!(
        meta(store.conn(), "remote.hwm").expect("meta"),
        Some("42".to_owned())
    );
}

/// Two runs of one path waiting for different hashes are completed apart; an ignored hash
/// deletes only the rows of its own run.
#[test]
fn pending_runs_of_one_path_complete_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("p.db")).expect("open");
    let (a, b, c) = (
        ident("/bin/tg", "!pending:1:2:10"),
        ident("/bin/tg", "!pending:1:2:20"),
        ident("/bin/tg", "!pending:1:3:10"),
    );
    let mut rows_ = Vec::new();
    for (i, id) in [&a, &b, &c].into_iter().enumerate() {
        let mut r = row(100, "/bin/tg", "2001:db8::1", "");
        r.key.exe = id.clone();
        r.key.lport = i as i32;
        rows_.push(r);
    }
    store.write_batch(&rows_).expect("write");
    let done = |i: &Arc<ExeIdent>, sha: &str| {
        Arc::new(ExeIdent {
            sha256: sha.into(),
            ..(**i).clone()
        })
    };
    store
        .complete_hash(&a, &done(&a, "aaaa"), 100, false)
        .expect("complete a");
    store
        .complete_hash(&c, &done(&c, "cccc"), 100, true)
        .expect("drop c");
    store
        .complete_hash(&b, &done(&b, "bbbb"), 100, false)
        .expect("complete b");
    let mut got: Vec<(i32, String)> = rows(store.conn())
        .expect("rows")
        .into_iter()
        .map(|r| (r.lport, r.exe.sha256))
        .collect();
    got.sort();
    assert_eq!(got, vec![(0, "aaaa".into()), (1, "bbbb".into())]);
}
