//! verbs: `start` (daemonized, pidfile), `status`, `stop`, `restart`, a start that fails in the
//! daemon, error.log with the `[data]` owner/group/mode, and SIGHUP reopening the log files.
mod common;
mod service_support;

use common::{copy_exe, run_json, trafficgen};
use service_support::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn write_config(root: &Path, text: &str) {
    let dir = root.join("etc/picosnitch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn pid_from(out: &str) -> i32 {
    out.split("pid ")
        .nth(1)
        .and_then(|s| {
            s.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no pid in {out:?}"))
}

/// Runs, and is not a zombie waiting for whoever inherited it to reap it.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        state.is_some_and(|st| st != "Z" && st != "X")
    })
}

/// Stops a daemon left behind by a failed test.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = verb(self.0, &["stop"]);
    }
}

#[test]
fn start_status_stop_restart_without_systemd() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let _guard = StopOnDrop(r);
    // An unknown key: a warning, which goes to error.log too.
    write_config(
        r,
        "[database]\nwrite_limit_seconds = 1\nretension_days = 3\n\
         [data]\ngroup = \"nogroup\"\nmode = \"0640\"\n",
    );
    let (code, out, err) = verb(r, &["status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("daemon:    not running"), "{out}");

    let (code, out, err) = verb(r, &["start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("picosnitch started (pid "), "{out}");
    let pid = pid_from(&out);
    assert!(alive(pid));
    // It left the terminal: its own session, no parent waiting for it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id: {stat}");
    let pidfile = std::fs::read_to_string(r.join("run/picosnitch/picosnitch.pid")).unwrap();
    assert_eq!(pidfile.trim(), pid.to_string());

    let (code, out, _) = verb(r, &["start"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("already running (pid {pid})")),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-verbs");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "3000000"]));
    wait_for("rows in status", SECS(15), || {
        let (_, out, _) = verb(r, &["status"]);
        !out.contains("written:   0 rows") && out.contains("written:   ")
    });
    let (code, out, err) = verb(r, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        format!("daemon:    running (pid {pid})"),
        "hook set:  tp_btf".to_string(),
        "MB sent".to_string(),
        "identity:  cmdline_unreadable ".to_string(),
        "losses by source (recorded):".to_string(),
        "error.log: ".to_string(),
    ] {
        assert!(out.contains(&want), "no {want:?} in\n{out}");
    }

    // error.log and exe.log carry the [data] group and mode, and so does the database.
    let error_log = r.join("var/log/picosnitch/error.log");
    let exe_log = r.join("var/log/picosnitch/exe.log");
    wait_for("the new program in exe.log", SECS(10), || {
        std::fs::read_to_string(&exe_log).is_ok_and(|t| t.contains("tg-verbs"))
    });
    for f in [
        error_log.clone(),
        exe_log.clone(),
        r.join("var/lib/picosnitch/picosnitch.db"),
        r.join("var/lib/picosnitch/picosnitch.db-wal"),
    ] {
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, 65534, 0o640),
            "{}",
            f.display()
        );
    }
    // Warnings go to error.log with their fields: the config's, and every decision.
    let text = std::fs::read_to_string(&error_log).unwrap();
    assert!(
        text.contains(" WARN unknown config key database.retension_days is ignored"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" WARN New program on the network: tg-verbs")
                && l.contains(&format!(" exe={} ", exe.display()))),
        "{text}"
    );

    let (code, out, err) = verb(r, &["restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("picosnitch stopped (pid {pid})")),
        "{out}"
    );
    assert!(!alive(pid));
    let pid2 = pid_from(out.lines().last().unwrap());
    assert_ne!(pid, pid2);

    let (code, out, err) = verb(r, &["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("stopped (pid {pid2})")), "{out}");
    assert!(!alive(pid2));
    let (code, out, _) = verb(r, &["status"]);
    assert_eq!(code, 3);
    assert!(
        out.contains("not running") && !out.contains("hook set:  "),
        "{out}"
    );
    let (code, out, _) = verb(r, &["stop"]);
    assert_eq!(code, 0);
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn a_start_that_fails_in_the_daemon_says_why() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let _guard = StopOnDrop(r);
    // Valid config, but this kernel has no kprobes: the daemon exits before it is ready.
    write_config(r, "[monitoring]\nhook_set = \"kprobe\"\n");
    let (code, out, err) = verb(r, &["start"]);
    assert_eq!(code, 69, "{out}{err}");
    assert!(
        err.contains("exited (exit status: 69) before it was ready"),
        "{err}"
    );
    assert!(
        err.contains("error.log says:") && err.contains("kprobe"),
        "{err}"
    );
    // A config error is caught before anything starts.
    write_config(r, "[monitoring]\nhook_set = \"fentry\"\n");
    let (code, _, err) = verb(r, &["start"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("monitoring.hook_set = \"fentry\""), "{err}");
}

#[test]
fn sighup_reopens_the_logs_after_rotation() {
    let root = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(root.path());
    let mut cmd = daemon_command(root.path(), "[database]\nwrite_limit_seconds = 1\n");
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let mut svc = Service::spawn(cmd);
    notify.until("READY=1", SECS(30));
    let logs = root.path().join("var/log/picosnitch");
    let dir = tempfile::tempdir().unwrap();
    let first = copy_exe(&trafficgen(), dir.path(), "tg-before-hup");
    run_json(Command::new(&first).args(["tcp-up", "--bytes", "100"]));
    wait_for("first decision", SECS(10), || {
        std::fs::read_to_string(logs.join("exe.log")).is_ok_and(|t| t.contains("tg-before-hup"))
    });
    for name in ["exe.log", "error.log"] {
        std::fs::rename(logs.join(name), logs.join(format!("{name}.1"))).unwrap();
    }
    svc.signal(libc::SIGHUP);
    svc.wait_log("SIGHUP: log files are reopened", SECS(5));
    let second = copy_exe(&trafficgen(), dir.path(), "tg-after-hup");
    run_json(Command::new(&second).args(["tcp-up", "--bytes", "100"]));
    wait_for("second decision in new files", SECS(10), || {
        ["exe.log", "error.log"].iter().all(|n| {
            std::fs::read_to_string(logs.join(n)).is_ok_and(|t| t.contains("tg-after-hup"))
        })
    });
    for name in ["exe.log", "error.log"] {
        let old = std::fs::read_to_string(logs.join(format!("{name}.1"))).unwrap();
        assert!(
            old.contains("tg-before-hup") && !old.contains("tg-after-hup"),
            "{old}"
        );
        let new = std::fs::read_to_string(logs.join(name)).unwrap();
        assert!(!new.contains("tg-before-hup"), "{new}");
    }
    assert!(alive(svc.pid()), "SIGHUP must not stop the daemon");
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
}
