//! writer: the database writer cannot be stalled by what it hashes, its queue is bounded in
//! bytes, a writer that stops writing stops the watchdog and fails the exit status, and
//! `[database] enabled = false` keeps rows out of SQLite while the other sinks still run.
mod api_support;
mod common;
mod service_support;

use common::{copy_exe, rows_for_exe, run_json, sha256sum, trafficgen, Daemon};
use service_support::{daemon_command, NotifySocket, Service};
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A directory `nobody` can run programs from.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs a trafficgen copy as `nobody`; panics unless it succeeds.
fn as_nobody(exe: &Path, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(exe)
        .args(args)
        .output()
        .expect("runuser (util-linux) is needed");
    assert!(out.status.success(), "{exe:?} {args:?}: {out:?}");
}

/// A copy of trafficgen made `size` bytes long with a hole: it still runs (the kernel maps only
/// its segments), but hashing it reads `size` bytes.
fn sparse_trafficgen(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let exe = copy_exe(&trafficgen(), dir, name);
    let f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
    f.set_len(size).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < timeout, "no {what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_counter(root: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(root.join("run/picosnitch/status.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["identity"][name].as_u64().unwrap_or(0)
}

/// A 4 TiB sparse ELF run by `nobody` is not hashed (`!too-large`, counted) and never holds up
/// the writer: a probe's rows arrive in the next window with their real hash.
#[test]
fn a_huge_sparse_executable_is_too_large_and_writes_go_on() {
    let dir = shared_dir();
    let huge = sparse_trafficgen(dir.path(), "tg-huge", 4 << 40);
    let probe = copy_exe(&trafficgen(), dir.path(), "tg-probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let t = Instant::now();
    as_nobody(&huge, &["udp-connected", "--count", "3", "--size", "100"]);
    as_nobody(&probe, &["udp-connected", "--count", "2", "--size", "50"]);
    let db = daemon.root.path().join("var/lib/picosnitch/picosnitch.db");
    let rows = wait_for("probe rows", SECS(10), || {
        let r = rows_for_exe(&db, &probe);
        (!r.is_empty()).then_some(r)
    });
    let took = t.elapsed();
    assert!(took < SECS(5), "probe rows took {took:?}");
    assert_eq!(rows[0].sha256, sha256sum(&probe));
    let huge_rows = rows_for_exe(&db, &huge);
    assert!(!huge_rows.is_empty());
    assert!(
        huge_rows.iter().all(|r| r.sha256 == "!too-large"),
        "{huge_rows:?}"
    );
    assert_eq!(huge_rows.iter().map(|r| r.send).sum::<i64>(), 600);
    let root = daemon.root.path().to_path_buf();
    wait_for("hash_too_large in the status", SECS(15), || {
        (status_counter(&root, "hash_too_large") >= 1).then_some(())
    });
    let stopped = daemon.stop();
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let lost: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM losses WHERE source = 'hash_too_large'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(lost >= 1, "no hash_too_large loss:\n{}", stopped.log);
}

/// An executable that takes seconds to hash is stored as `!pending` in its window, the probe's
/// rows still arrive in the next window, and the pending rows are completed with the real hash.
#[test]
fn a_slow_hash_is_stored_pending_then_completed() {
    let dir = shared_dir();
    let slow = sparse_trafficgen(dir.path(), "tg-slow", 3 << 30);
    let probe = copy_exe(&trafficgen(), dir.path(), "tg-probe2");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(
        "[database]\nwrite_limit_seconds = 1\n\
         [monitoring]\nhash_max_bytes = 8589934592\nhash_timeout_seconds = 300\n",
    );
    let db = daemon.root.path().join("var/lib/picosnitch/picosnitch.db");
    as_nobody(&slow, &["udp-connected", "--count", "3", "--size", "100"]);
    as_nobody(&probe, &["udp-connected", "--count", "2", "--size", "50"]);
    let pending = wait_for("rows of the slow executable", SECS(10), || {
        let r = rows_for_exe(&db, &slow);
        (!r.is_empty()).then_some(r)
    });
    assert!(
        pending.iter().all(|r| r.sha256.starts_with("!pending:")),
        "{pending:?}"
    );
    let probe_rows = wait_for("probe rows", SECS(5), || {
        let r = rows_for_exe(&db, &probe);
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(probe_rows[0].sha256, sha256sum(&probe));
    let expect = sha256sum(&slow);
    let done = wait_for("the completed hash", SECS(240), || {
        let r = rows_for_exe(&db, &slow);
        r.iter()
            .all(|r| !r.sha256.starts_with("!pending"))
            .then_some(r)
    });
    assert!(done.iter().all(|r| r.sha256 == expect), "{done:?}");
    assert_eq!(done.iter().map(|r| r.send).sum::<i64>(), 600);
    let stopped = daemon.stop();
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let known: i64 = conn
        .query_row(
            "SELECT count(*) FROM known_executables WHERE exe = ?1 AND sha256 = ?2",
            [slow.to_string_lossy().as_ref(), expect.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(known >= 1, "the completed executable is not known");
}

/// Another process holding the database's write lock.
struct Locker(Child);

impl Locker {
    fn lock(db: &Path) -> Locker {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sqlite3 (the sqlite3 package) is needed");
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 1;\n")
            .unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Locker(child)
    }

    fn release(mut self) {
        let _ = self
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"COMMIT;\n.quit\n");
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// UDP datagrams from this process to 100 ports every 200 ms: 100 rows a window.
fn steady_traffic(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        while !stop.load(Ordering::SeqCst) {
            for port in 47000..47100u16 {
                let _ = s.send_to(&[0u8; 16], ("127.0.0.1", port));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Every message the daemon sends to its notification socket, read as they come (a socket
/// nobody reads would block the daemon's sends, which systemd never does).
struct Notices(Arc<std::sync::Mutex<Vec<(Instant, String)>>>);

impl Notices {
    fn read(n: NotifySocket) -> Notices {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || loop {
            if let Some(m) = n.recv(Duration::from_millis(100)) {
                s.lock().unwrap().push((Instant::now(), m));
            }
        });
        Notices(seen)
    }

    /// WATCHDOG=1 messages received between `from` and `to`.
    fn pings(&self, from: Instant, to: Instant) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| *t >= from && *t < to && m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }
}

/// A database locked by another process for longer than the stall limit: the writer's queue
/// stays bounded (a dropped window is a `sink_queue_full` loss, memory stays flat), the watchdog
/// pings stop and the log says why, rows resume once the lock goes; a writer that still cannot
/// write at SIGTERM makes the exit status 1.
#[test]
fn a_stalled_writer_stops_the_watchdog_and_its_queue_stays_bounded() {
    let root = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(root.path());
    // Stall limit: 3 windows + 10 s = 13 s.
    // The API on its unix socket only: /metrics must show the dropped windows while stalled.
    let config =
        "[database]\nwrite_limit_seconds = 1\nqueue_max_bytes = 65536\n[api]\nlisten = \"\"\n\
                  [desktop]\nnotifications = false\n";
    let mut cmd = daemon_command(root.path(), config);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "4000000");
    let mut svc = Service::spawn(cmd);
    notify.until("READY=1", SECS(30));
    let notices = Notices::read(notify);
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    let me = std::env::current_exe().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = steady_traffic(stop.clone());
    wait_for("rows of this test", SECS(10), || {
        (!rows_for_exe(&db, &me).is_empty()).then_some(())
    });
    let t = Instant::now();
    std::thread::sleep(SECS(3));
    assert!(
        notices.pings(t, Instant::now()) >= 2,
        "no pings while healthy"
    );
    let rss_before = rss_kib(svc.pid());

    let lock = Locker::lock(&db);
    let locked_at = Instant::now();
    svc.wait_log("the database writer has not written a window for", SECS(30));
    let stalled_after = locked_at.elapsed();
    assert!(
        stalled_after >= SECS(12),
        "called stalled after {stalled_after:?}"
    );
    // A ping already on its way when the stall was seen may still arrive.
    let quiet_from = Instant::now() + SECS(1);
    std::thread::sleep(SECS(7));
    let silent = notices.pings(quiet_from, Instant::now());
    assert_eq!(silent, 0, "pings went on while the writer was stalled");
    assert!(svc.log().contains("the watchdog is no longer pinged"));
    assert!(svc.log().contains("the database writer's queue is full"));
    // The writer cannot store the loss yet; /metrics counts it already.
    let api = api_support::To::Unix(root.path().join("run/picosnitch/api.sock"));
    let metrics = api_support::get(&api, "/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let queued_loss: u64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("picosnitch_losses_total{source=\"sink_queue_full\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        queued_loss > 0,
        "no sink_queue_full in /metrics while stalled"
    );
    let rss_stalled = rss_kib(svc.pid());
    lock.release();

    svc.wait_log("the database writer is writing again", SECS(30));
    let t = Instant::now();
    std::thread::sleep(SECS(3));
    assert!(
        notices.pings(t, Instant::now()) >= 2,
        "pings did not resume"
    );
    let resumed = Instant::now();
    let seen = rows_for_exe(&db, &me).len();
    wait_for("new rows after the lock", SECS(10), || {
        (rows_for_exe(&db, &me).len() > seen).then_some(())
    });
    assert!(resumed.elapsed() < SECS(5));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let dropped: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM losses WHERE source = 'sink_queue_full'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(dropped >= 100, "sink_queue_full losses: {dropped}");
    drop(conn);
    eprintln!(
        "RSS before the lock {rss_before} KiB, stalled {rss_stalled} KiB; stalled after \
         {stalled_after:?}; {dropped} rows dropped"
    );
    assert!(
        rss_stalled < rss_before + 20 * 1024,
        "memory grew from {rss_before} to {rss_stalled} KiB"
    );

    // Locked again at exit: what the writer could not write makes the status 1.
    let lock = Locker::lock(&db);
    svc.signal(libc::SIGTERM);
    let status = svc.wait(SECS(120));
    lock.release();
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    assert_eq!(status.code(), Some(1), "{}", svc.log());
    assert!(svc.log().contains("rows not written"), "{}", svc.log());
}

/// `[database] enabled = false`: no connection rows in SQLite, while conn.log still gets them.
#[test]
fn a_disabled_database_gets_no_rows_but_conn_log_does() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-nodb");
    let daemon =
        Daemon::start("[database]\nenabled = false\nwrite_limit_seconds = 1\ntext_log = true\n");
    run_json(Command::new(&exe).args(["udp-connected", "--count", "3", "--size", "100"]));
    let log = daemon.root.path().join("var/log/picosnitch/conn.log");
    let name = exe.to_string_lossy().to_string();
    wait_for("conn.log lines", SECS(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains(&name))
    });
    assert!(daemon.log().contains("[database] enabled = false"));
    let stopped = daemon.stop();
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    assert!(rows_for_exe(&stopped.db, &exe).is_empty());
}
