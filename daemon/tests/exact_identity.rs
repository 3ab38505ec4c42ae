//! exact_identity: each run is stored with the path it ran by and the hash of what it ran, even
//! when one file is reached by several names or its content changes between runs.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// The generator with `suffix` appended (its own sha256), executable, at `path`.
fn variant(path: &Path, suffix: &[u8]) -> String {
    let mut bytes = std::fs::read(trafficgen()).unwrap();
    bytes.extend_from_slice(suffix);
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    sha256sum(path)
}

/// One file bind-mounted at three names, each in its own mount namespace (as containers see a
/// shared binary): every run is stored by the name it ran by, with the file's hash. On the host
/// the three names are empty placeholder files, so only the process's own view names the run.
#[test]
fn a_file_reached_by_several_names_keeps_each_runs_name() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-tg");
    let sha = variant(&real, b"bind-mounted");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let mut names = Vec::new();
    for n in [48, 49, 50] {
        let name = dir.path().join(format!("bg.{n}"));
        std::fs::write(&name, b"").unwrap();
        // The run lives for ~1 s so the daemon sees it alive, as it would a container's service.
        let script = format!(
            "mount --bind '{}' '{}' && exec '{}' drip --count 4 --bytes 10 --interval-ms 250",
            real.display(),
            name.display(),
            name.display()
        );
        let json = run_json(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(&script),
        );
        assert_eq!(json["sent"], 40, "{json}");
        names.push((name, json["lport"].as_i64().unwrap()));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stopped = daemon.stop();
    for (name, lport) in &names {
        let rows = rows_for_exe(&stopped.db, name);
        let client: Vec<&DbRow> = rows.iter().filter(|r| r.lport == *lport).collect();
        assert_eq!(
            sum(&client),
            (40, 40),
            "{} stored as another name: {rows:?}\n{}",
            name.display(),
            stopped.log
        );
        assert!(rows.iter().all(|r| r.sha256 == sha), "{rows:?}");
    }
}

/// Rewrites `path` in place (same inode, new change time) with `content`.
fn rewrite_in_place(path: &Path, content: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(content).unwrap();
    f.set_len(content.len() as u64).unwrap();
}

fn ino(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// The client rows of one run (by its local port) of the executable at `exe`.
fn run_rows(db: &Path, exe: &Path, json: &serde_json::Value) -> Vec<DbRow> {
    let lport = json["lport"].as_i64().unwrap();
    rows_for_exe(db, exe)
        .into_iter()
        .filter(|r| r.lport == lport)
        .collect()
}

/// Run, exit, edit the file in place, run again, all inside one 10 s window: each run's rows
/// carry the hash of the content it executed, and the change is reported.
#[test]
fn a_file_edited_between_two_runs_gives_each_run_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tg");
    let first = variant(&exe, b"first");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 10\n");
    let before = ino(&exe);
    let one = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "1111"]));
    // Time for the daemon to hash what ran (had it not, the run would be `!modified`).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut edited = std::fs::read(trafficgen()).unwrap();
    edited.extend_from_slice(b"second, longer");
    rewrite_in_place(&exe, &edited);
    assert_eq!(ino(&exe), before, "edited in place");
    let second = sha256sum(&exe);
    assert_ne!(first, second);
    let two = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "2222"]));
    let stopped = daemon.stop();
    let (r1, r2) = (
        run_rows(&stopped.db, &exe, &one),
        run_rows(&stopped.db, &exe, &two),
    );
    let sums = |rows: &[DbRow]| sum(&rows.iter().collect::<Vec<_>>());
    assert_eq!(sums(&r1), (1111, 0), "{r1:?}\n{}", stopped.log);
    assert_eq!(sums(&r2), (2222, 0), "{r2:?}");
    assert!(r1.iter().all(|r| r.sha256 == first), "first run: {r1:?}");
    assert!(r2.iter().all(|r| r.sha256 == second), "second run: {r2:?}");
    assert!(
        stopped.log.contains("modified on disk"),
        "the change is reported:\n{}",
        stopped.log
    );
}

/// A tampered binary is run, then the original is put back in place before the window closes:
/// the tampered run is never stored with the original's hash (its own, or `!modified` when its
/// content was gone before it could be hashed), and the original's later run has the original's.
#[test]
fn a_tampered_run_never_carries_the_restored_files_hash() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tg");
    let original = variant(&exe, b"original");
    let original_bytes = std::fs::read(&exe).unwrap();
    // Padded so hashing it takes long enough that the restore usually lands first.
    let mut tampered = std::fs::read(trafficgen()).unwrap();
    tampered.resize(tampered.len() + (256 << 20), 0x5a);
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 10\n");
    let warm = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    rewrite_in_place(&exe, &tampered);
    let tampered_sha = sha256sum(&exe);
    let bad = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "3333"]));
    rewrite_in_place(&exe, &original_bytes);
    assert_eq!(sha256sum(&exe), original);
    let good = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "4444"]));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stopped = daemon.stop();
    let bad_rows = run_rows(&stopped.db, &exe, &bad);
    assert_eq!(
        sum(&bad_rows.iter().collect::<Vec<_>>()),
        (3333, 0),
        "{bad_rows:?}\n{}",
        stopped.log
    );
    for r in &bad_rows {
        assert!(
            r.sha256 == tampered_sha || r.sha256 == "!modified",
            "the tampered run is stored as {}, not its own hash or !modified",
            r.sha256
        );
    }
    eprintln!("tampered run stored as {}", bad_rows[0].sha256);
    if bad_rows[0].sha256 == "!modified" {
        assert!(
            stopped.log.contains("that run is stored as !modified"),
            "{}",
            stopped.log
        );
    }
    for json in [&warm, &good] {
        let rows = run_rows(&stopped.db, &exe, json);
        assert!(!rows.is_empty(), "{json}");
        assert!(rows.iter().all(|r| r.sha256 == original), "{rows:?}");
    }
}
