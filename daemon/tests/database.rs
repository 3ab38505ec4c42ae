//! database: the database under pressure. A reader holding a transaction open cannot stop the
//! daemon's writes, the pinned write-ahead log is reported while it is held and truncated once it
//! is let go, the database is not readable by other users, and a database with a corrupt page is
//! moved aside and replaced by a new one instead of stopping the daemon.
mod common;
mod service_support;

use common::{copy_exe, rows_for_exe, run_json, trafficgen};
use service_support::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CONFIG: &str = "[database]\nwrite_limit_seconds = 1\n[api]\nlisten = \"127.0.0.1:0\"\n\
                      socket = false\n";

fn db_of(root: &Path) -> PathBuf {
    root.join("var/lib/picosnitch/picosnitch.db")
}

fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn start(root: &Path) -> Service {
    let svc = Service::spawn(daemon_command(root, CONFIG));
    svc.wait_log("picosnitch is monitoring", SECS(30));
    svc
}

/// `GET /metrics` from the daemon's TCP listener (its port read from its log).
fn metrics(svc: &Service) -> String {
    let log = svc.log();
    let addr = log
        .lines()
        .find_map(|l| l.split("API listening on http://").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no API address in the log:\n{log}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the unlabelled metric `name`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Runs the probe with a distinct byte count and waits until its row is stored.
fn probe_is_stored(db: &Path, exe: &Path, bytes: i64, within: Duration) -> Duration {
    let json = run_json(Command::new(exe).args(["tcp-up", "--bytes", &bytes.to_string()]));
    let lport = json["lport"].as_i64().unwrap();
    let t = Instant::now();
    loop {
        let rows = rows_for_exe(db, exe);
        let sent: i64 = rows
            .iter()
            .filter(|r| r.lport == lport)
            .map(|r| r.send)
            .sum();
        if sent == bytes {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "the probe's {bytes} bytes were not stored within {within:?}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `runuser -u nobody -- head -c 1 PATH`: (succeeded, stderr).
fn nobody_reads(path: &Path) -> (bool, String) {
    let o = Command::new("runuser")
        .args(["-u", "nobody", "--", "head", "-c", "1"])
        .arg(path)
        .output()
        .expect("runuser must be installed for this test");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_held_read_transaction_neither_stops_writes_nor_grows_the_log_for_ever() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path());
    let db = db_of(root.path());
    let dir = tempfile::tempdir().unwrap();
    let probe = copy_exe(&trafficgen(), dir.path(), "tg-db-pressure");
    println!(
        "first probe: {:?}",
        probe_is_stored(&db, &probe, 1001, SECS(5))
    );

    // Other users cannot open the database at all: only the mode stands in their way (every
    // directory on the path is open to them, a 0644 file next to it is readable).
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let control = db.with_file_name("readable-by-all");
    std::fs::write(&control, "x").unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(nobody_reads(&control), (true, String::new()));
    let (ok, err) = nobody_reads(&db);
    assert!(!ok && err.contains("Permission denied"), "{err}");

    // A reader allowed to read (root here) opens a transaction and holds it.
    let mut reader = Command::new("sqlite3")
        .arg("-readonly")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sqlite3 must be installed for this test");
    let mut stdin = reader.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; SELECT 'held', count(*) FROM connections;").unwrap();
    stdin.flush().unwrap();
    let wal_at_start = len(&wal_of(&db));
    let held = Instant::now();
    let mut bytes = 2000;
    // For 45 s (the checkpoint runs every 30 s): every probe's row still arrives at once.
    while held.elapsed() < SECS(45) {
        bytes += 1;
        let took = std::panic::catch_unwind(|| probe_is_stored(&db, &probe, bytes, SECS(15)))
            .unwrap_or_else(|e| {
                let why = e.downcast_ref::<String>().cloned().unwrap_or_default();
                panic!("{why}\n{}", svc.log())
            });
        println!("probe {bytes} stored after {took:?}");
        assert!(
            took <= SECS(4),
            "a write took {took:?} while the reader held on"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let wal_held = len(&wal_of(&db));
    assert!(wal_held > wal_at_start, "{wal_held} <= {wal_at_start}");
    let log = svc.log();
    assert!(
        log.contains(&format!(
            "the write-ahead log {} cannot shrink: ",
            wal_of(&db).display()
        )) && log.contains("a reader is holding a transaction open"),
        "{log}"
    );
    let m = metrics(&svc);
    assert!(
        metric(&m, "picosnitch_wal_checkpoints_blocked_total") >= 1,
        "{m}"
    );
    assert!(metric(&m, "picosnitch_wal_bytes") > 0, "{m}");

    // The reader lets go: the next checkpoint truncates the log.
    writeln!(stdin, "COMMIT;\n.quit").unwrap();
    drop(stdin);
    let mut out = String::new();
    reader
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(reader.wait().unwrap().success());
    assert!(out.starts_with("held|"), "{out}");
    svc.wait_log("was checkpointed and truncated to 0 bytes", SECS(35));
    let wal_after = len(&wal_of(&db));
    assert!(
        wal_after < 1 << 20,
        "{wal_after} bytes after the checkpoint"
    );
    assert_eq!(metric(&metrics(&svc), "picosnitch_wal_bytes"), 0);
    println!("WAL: {wal_at_start} bytes, {wal_held} while held 45 s, {wal_after} after");
    probe_is_stored(&db, &probe, 9999, SECS(5));
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
}

/// The first page of the `connections` table (a b-tree page) and the page size.
fn connections_root_page(db: &Path) -> (u64, u64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let page: u64 = c
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'connections'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    (page, size)
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_new_one_started() {
    let root = tempfile::tempdir().unwrap();
    let db = db_of(root.path());
    let dir = tempfile::tempdir().unwrap();
    let probe = copy_exe(&trafficgen(), dir.path(), "tg-db-corrupt");
    let mut svc = start(root.path());
    probe_is_stored(&db, &probe, 4321, SECS(5));
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());

    // Garbage over the table's b-tree page, as a failing disk or a stray write would leave it.
    let (page, size) = connections_root_page(&db);
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, vec![0xa5u8; size as usize]).unwrap();
    let dd = Command::new("dd")
        .arg(format!("if={}", garbage.display()))
        .arg(format!("of={}", db.display()))
        .args([
            &format!("bs={size}"),
            &format!("seek={}", page - 1),
            "count=1",
            "conv=notrunc",
        ])
        .output()
        .expect("dd must be installed for this test");
    assert!(
        dd.status.success(),
        "{}",
        String::from_utf8_lossy(&dd.stderr)
    );
    let corrupt_len = len(&db);

    let mut svc = start(root.path());
    let log = svc.log();
    let aside: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("picosnitch.db.corrupt-") && !name.ends_with("-wal")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}\n{log}");
    let aside = &aside[0];
    assert_eq!(len(aside), corrupt_len);
    for line in [
        format!(
            "ERROR database {} is corrupt (PRAGMA quick_check: ",
            db.display()
        ),
        format!(
            "ERROR the corrupt database {} was moved to {} (with its -wal and -shm files); a \
             new, empty database is started at {}",
            db.display(),
            aside.display(),
            db.display()
        ),
    ] {
        assert!(log.contains(&line), "no {line:?} in\n{log}");
        let errors = std::fs::read_to_string(root.path().join("var/log/picosnitch/error.log"));
        assert!(errors.is_ok_and(|t| t.contains(&line[6..])), "{line}");
    }
    // The new database takes rows; the old one's rows are not in it.
    probe_is_stored(&db, &probe, 5678, SECS(5));
    let only_new = |db: &Path| rows_for_exe(db, &probe).iter().all(|r| r.send != 4321);
    assert!(only_new(&db));
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
    // Started again: the new database is healthy and kept.
    let mut svc = start(root.path());
    assert!(!svc.log().contains("corrupt"), "{}", svc.log());
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
    assert!(only_new(&db) && !rows_for_exe(&db, &probe).is_empty());
}
