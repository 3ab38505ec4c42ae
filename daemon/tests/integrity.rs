//! integrity: decisions about executables reach exe.log: a new program, a new hash after a binary
//! is replaced by rename, and a cached binary modified in place (fanotify) within one second.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn exe_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/log/picosnitch/exe.log")).unwrap_or_default()
}

fn wait_for(root: &Path, needle: &str, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if exe_log(root).contains(needle) {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn new_programs_and_changed_binaries_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let gen = trafficgen();
    let exe = copy_exe(&gen, dir.path(), "tg-integrity");
    let exe_s = exe.to_string_lossy().into_owned();
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let root = daemon.root.path().to_path_buf();

    // A new program: reported once, however often it connects.
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    let line = format!("tg-integrity {exe_s} (new name, exe)");
    assert!(
        wait_for(&root, &line, Duration::from_secs(5)).is_some(),
        "{}",
        exe_log(&root)
    );
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    std::thread::sleep(Duration::from_millis(1500));
    let log = exe_log(&root);
    assert_eq!(
        log.lines().filter(|l| l.ends_with(&line)).count(),
        1,
        "{log}"
    );

    // Modified in place (same inode) while the daemon holds it open: reported within a second.
    let mut bytes = std::fs::read(&exe).unwrap();
    bytes.extend_from_slice(b"\0appended");
    std::fs::write(&exe, &bytes).unwrap();
    let new_sha = sha256sum(&exe);
    let modified = format!("{} {exe_s} (modified on disk)", &new_sha[..16]);
    let took = wait_for(&root, &modified, Duration::from_secs(3));
    assert!(
        took.is_some_and(|d| d <= Duration::from_secs(1)),
        "took {took:?}\n{}",
        exe_log(&root)
    );

    // Replaced by rename (a new inode) while a process of the old binary still runs and
    // connects (writing in place is refused while it runs: ETXTBSY). The running process keeps
    // the old hash; the next run is a new hash for a known executable.
    let mut running = Command::new(&exe)
        .args(["drip", "--count", "4", "--interval-ms", "300"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut other = std::fs::read(&gen).unwrap();
    other.extend_from_slice(b"\0renamed");
    let tmp = dir.path().join("tg-integrity.new");
    std::fs::write(&tmp, &other).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let renamed_sha = sha256sum(&exe);
    let started = Instant::now();
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    let new_hash = format!("{} {exe_s} (new hash)", &renamed_sha[..16]);
    assert!(
        wait_for(&root, &new_hash, Duration::from_secs(5)).is_some(),
        "{}",
        exe_log(&root)
    );
    // Reported with the window the traffic was written in (1 s here), not later.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "new hash after {took:?}"
    );
    assert!(running.wait().unwrap().success());
    let stopped = daemon.stop();
    // The rows carry the hash of the binary that ran: old and new side by side.
    let rows = rows_for_exe(&stopped.db, &exe);
    assert!(rows.iter().any(|r| r.sha256 == renamed_sha), "{rows:?}");
    assert!(rows.iter().any(|r| r.sha256 == new_sha), "{rows:?}");
}

#[test]
fn hard_links_keep_their_names_and_a_deleted_binary_keeps_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let gen = trafficgen();
    let a = copy_exe(&gen, dir.path(), "tg-link-a");
    let b = dir.path().join("tg-link-b");
    std::fs::hard_link(&a, &b).unwrap();
    let gone = copy_exe(&gen, dir.path(), "tg-deleted");
    let sha = sha256sum(&a);
    let gone_sha = sha256sum(&gone);
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    run_json(Command::new(&a).args(["tcp-up", "--bytes", "111"]));
    run_json(Command::new(&b).args(["tcp-up", "--bytes", "222"]));
    // Deleted while it runs: still hashed from the open file, still named by its path.
    let mut slow = Command::new(&gone)
        .args(["drip", "--count", "4", "--interval-ms", "300"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&gone).unwrap();
    assert!(slow.wait().unwrap().success());
    let stopped = daemon.stop();
    for (exe, bytes) in [(&a, 111), (&b, 222)] {
        let rows = rows_for_exe(&stopped.db, exe);
        // Client and server are both this link: what one sent, the other received.
        assert_eq!(
            sum(&rows.iter().collect::<Vec<_>>()),
            (bytes, bytes),
            "{exe:?}: {rows:?}"
        );
        assert!(rows.iter().all(|r| r.sha256 == sha), "{rows:?}");
    }
    let rows = rows_for_exe(&stopped.db, &gone);
    assert!(
        !rows.is_empty(),
        "rows of the deleted binary keep its path:\n{}",
        stopped.log
    );
    assert!(rows.iter().all(|r| r.sha256 == gone_sha), "{rows:?}");
}

#[test]
fn a_renamed_process_keeps_its_program_name_and_raises_no_new_notice() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-rename");
    let exe_s = exe.to_string_lossy().into_owned();
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let root = daemon.root.path().to_path_buf();
    // The same program under a name it gave itself, once per run: thread-name floods come
    // from exactly this.
    for name in ["not-tg", "Socket Thread", "DNS Res~ver #3"] {
        run_json(Command::new(&exe).args(["tcp-up", "--bytes", "50", "--rename", name]));
    }
    let line = format!("tg-rename {exe_s} (new name, exe)");
    assert!(wait_for(&root, &line, Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = daemon.stop();
    let log = exe_log(stopped.root.path());
    // One notice for the program itself (another names it as the server's parent); none for
    // the names it gave itself.
    let mine: Vec<&str> = log.lines().filter(|l| l.ends_with(&line)).collect();
    assert_eq!(mine.len(), 1, "{log}");
    for name in ["not-tg", "Socket Thread", "DNS Res"] {
        assert!(!log.contains(name), "{log}");
    }
    let rows = rows_for_exe(&stopped.db, &exe);
    assert_eq!(
        sum(&rows.iter().collect::<Vec<_>>()),
        (150, 150),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.name == "tg-rename"), "{rows:?}");
}

/// Sets a fanotify sysctl for groups created until it is dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

#[test]
fn fanotify_overflow_rehashes_every_cached_executable() {
    let dir = tempfile::tempdir().unwrap();
    let gen = trafficgen();
    let exes: Vec<_> = (0..12)
        .map(|i| copy_exe(&gen, dir.path(), &format!("tg-ovf-{i}")))
        .collect();
    // A queue of 4 events for the daemon's fanotify group only.
    let small = Sysctl::set("/proc/sys/fs/fanotify/max_queued_events", "4");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    drop(small);
    let root = daemon.root.path().to_path_buf();
    for exe in &exes {
        run_json(Command::new(exe).args(["tcp-up", "--bytes", "10"]));
    }
    for exe in &exes {
        let line = format!(" {} (new name, exe)", exe.display());
        assert!(
            wait_for(&root, &line, Duration::from_secs(5)).is_some(),
            "{}",
            exe_log(&root)
        );
    }
    // Twelve binaries written while the daemon cannot read: the queue overflows.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGSTOP) };
    let mut shas = Vec::new();
    for exe in &exes {
        let mut bytes = std::fs::read(exe).unwrap();
        bytes.extend_from_slice(b"\0overflow");
        std::fs::write(exe, &bytes).unwrap();
        shas.push(sha256sum(exe));
    }
    // SAFETY: as above.
    unsafe { libc::kill(daemon.pid(), libc::SIGCONT) };
    for (exe, sha) in exes.iter().zip(&shas) {
        let line = format!("{} {} (modified on disk)", &sha[..16], exe.display());
        assert!(
            wait_for(&root, &line, Duration::from_secs(3)).is_some(),
            "{line}\n{}",
            exe_log(&root)
        );
    }
    let stopped = daemon.stop();
    assert!(
        stopped.log.contains("fanotify queue overflowed"),
        "{}",
        stopped.log
    );
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let lost: i64 = conn
        .query_row(
            "SELECT count(*) FROM losses WHERE source = 'fanotify_overflow'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(lost >= 1);
}

/// A program whose file name holds a newline, an escape sequence and a carriage return cannot
/// forge or hide an exe.log line: its name and path are written escaped, on one line.
#[test]
fn names_with_control_characters_are_escaped_in_exe_log() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "tg\n2026-01-01 00:00:00 forged forged-exe (new name, exe)\x1b[2K\rX";
    let exe = copy_exe(&trafficgen(), dir.path(), evil);
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let root = daemon.root.path().to_path_buf();
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    let escaped = "tg\\n2026-01-01 00:00:00 forged forged-exe (new name, exe)\\x1b[2K\\rX";
    let found = wait_for(&root, escaped, Duration::from_secs(10));
    let stopped = daemon.stop();
    let log = exe_log(&root);
    assert!(found.is_some(), "exe.log:\n{log}\ndaemon:\n{}", stopped.log);
    assert!(
        log.lines()
            .all(|l| !l.starts_with("2026-01-01") && !l.contains('\x1b') && !l.contains('\r')),
        "{log:?}"
    );
    let line = log.lines().find(|l| l.contains(escaped)).unwrap();
    assert!(line.ends_with("(new name, exe)"), "{line:?}");
}
