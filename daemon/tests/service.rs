//! service: the daemon's behaviour as a program: readiness, SIGTERM, users, lost identities,
//! `doctor`, and clear refusals (no privileges, bad config) that leave recorded data alone.
mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn tg_copy(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    copy_exe(&trafficgen(), dir, name)
}

#[test]
fn sigterm_writes_the_open_window() {
    let dir = tempfile::tempdir().unwrap();
    let exe = tg_copy(dir.path(), "tg-sigterm");
    // A window far longer than the test: only the SIGTERM flush can write the rows.
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 3600\n");
    let json = run_json(Command::new(&exe).args(["tcp-duplex", "--bytes", "777777"]));
    let stopped = daemon.stop();
    let rows = rows_for_exe(&stopped.db, &exe);
    let client: Vec<&DbRow> = rows
        .iter()
        .filter(|r| r.lport == json["lport"].as_i64().unwrap())
        .collect();
    assert_eq!(sum(&client), (777777, 777777), "{}", stopped.log);
}

#[test]
fn another_users_traffic_carries_their_uid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = tg_copy(dir.path(), "tg-nobody");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let json = run_json(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args(["tcp-up", "--bytes", "4321"]),
    );
    let stopped = daemon.stop();
    let rows = rows_for_exe(&stopped.db, &exe);
    let client: Vec<&DbRow> = rows
        .iter()
        .filter(|r| r.lport == json["lport"].as_i64().unwrap())
        .collect();
    assert_eq!(sum(&client), (4321, 0));
    assert!(client.iter().all(|r| r.uid == 65534), "{client:?}");
    // setpriv executes the generator in place: its parent is this test.
    let me = std::env::current_exe().unwrap();
    assert!(
        client.iter().all(|r| r.pexe == me.to_string_lossy()),
        "{client:?}"
    );
}

#[test]
fn a_process_whose_executable_is_gone_is_marked_not_misattributed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = tg_copy(dir.path(), "tg-vanished");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    // Freeze the daemon so the process runs, exits and its binary is deleted before it is seen.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGSTOP) };
    let json = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "5555"]));
    std::fs::remove_file(&exe).unwrap();
    unsafe { libc::kill(daemon.pid(), libc::SIGCONT) };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stopped = daemon.stop();
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let lport = json["lport"].as_i64().unwrap();
    let (exe_path, sha, send): (String, String, i64) = conn
        .query_row(
            "SELECT e.exe, e.sha256, c.send FROM connections c JOIN executables e ON e.id = c.exe_id
             WHERE c.lport = ?1 AND e.name = 'tg-vanished'",
            [lport],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or_else(|e| panic!("no row for the vanished process: {e}\n{}", stopped.log));
    assert_eq!(
        (exe_path.as_str(), sha.as_str(), send),
        ("", "!unavailable", 5555)
    );
    let lost: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM losses WHERE source = 'exe_unavailable'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(lost >= 1, "the failure is counted");
}

#[test]
fn doctor_names_the_hook_set_it_would_attach() {
    let out = Command::new(BIN).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("BTF:               yes"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("tp_btf") && l.contains("would attach")),
        "{text}"
    );
    assert!(
        text.contains("picosnitch can run here with hook set tp_btf"),
        "{text}"
    );
}

#[test]
fn without_privileges_it_refuses_in_one_sentence() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args([BIN, "start-no-daemon"])
        .env("PICOSNITCH_ROOT", root.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_bad_config_is_refused_and_recorded_data_is_untouched() {
    // First a real run that records something.
    let exe_dir = tempfile::tempdir().unwrap();
    let exe = tg_copy(exe_dir.path(), "tg-config");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "1000"]));
    let stopped = daemon.stop();
    let before = std::fs::read(&stopped.db).unwrap();
    let cases = [
        (
            "[database]\nwrite_limit_seconds = 0\n",
            "database.write_limit_seconds = 0",
        ),
        (
            "[database]\nretention_days = -1\n",
            "database.retention_days",
        ),
        (
            "[database]\nretention_days = \"thirty\"\n",
            "database.retention_days",
        ),
        ("[monitoring]\nperf_ring_buffer_pages = 3\n", "power of two"),
        ("[database\n", "config:"),
    ];
    for (text, expect) in cases {
        let cfg = stopped.root.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(BIN)
            .args(["start-no-daemon", "--config"])
            .arg(&cfg)
            .env("PICOSNITCH_ROOT", stopped.root.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {err}");
        assert!(err.contains(expect), "{text}: {err}");
    }
    let out = Command::new(BIN)
        .args([
            "start-no-daemon",
            "--config",
            "/nonexistent/picosnitch.toml",
        ])
        .env("PICOSNITCH_ROOT", stopped.root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/picosnitch.toml"));
    assert_eq!(
        std::fs::read(&stopped.db).unwrap(),
        before,
        "the database was not touched"
    );
}

#[test]
fn every_exe_records_processes_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let exe = tg_copy(dir.path(), "tg-silent");
    let daemon =
        Daemon::start("[database]\nwrite_limit_seconds = 1\n[monitoring]\nevery_exe = true\n");
    let out = Command::new(&exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    let stopped = daemon.stop();
    let rows = rows_for_exe(&stopped.db, &exe);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (r.lport, r.rport, r.send, r.recv, r.events),
        (-1, -1, 0, 0, 1),
        "{r:?}"
    );
    assert_eq!(r.sha256, sha256sum(&exe));
    assert_eq!(r.pexe, std::env::current_exe().unwrap().to_string_lossy());
}
