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

    // Replaced by rename (a new inode): the next run is a new hash for a known executable.
    let mut other = std::fs::read(&gen).unwrap();
    other.extend_from_slice(b"\0renamed");
    let tmp = dir.path().join("tg-integrity.new");
    std::fs::write(&tmp, &other).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let renamed_sha = sha256sum(&exe);
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    let new_hash = format!("{} {exe_s} (new hash)", &renamed_sha[..16]);
    assert!(
        wait_for(&root, &new_hash, Duration::from_secs(5)).is_some(),
        "{}",
        exe_log(&root)
    );
    let stopped = daemon.stop();
    // The rows carry the hash of the binary that ran.
    let rows = rows_for_exe(&stopped.db, &exe);
    assert!(rows.iter().any(|r| r.sha256 == renamed_sha), "{rows:?}");
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
