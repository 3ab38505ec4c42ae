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

/// Runs `args` as the unprivileged user nobody (`runuser -u nobody`): (status, stdout+stderr).
fn as_nobody(args: &[&str]) -> (i32, String) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(args)
        .output()
        .expect("runuser must be installed");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A state root others may traverse (as /run and /var are), so that nobody reaches its files.
fn shared_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    root
}

/// nobody holding a shared lock (POSIX and flock) on the published pid file, until killed.
struct NobodyLocks(std::process::Child);

impl NobodyLocks {
    fn hold(pidfile: &Path) -> NobodyLocks {
        use std::io::BufRead;
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1])\n\
                      fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)\n\
                      g = open(sys.argv[1])\n\
                      fcntl.flock(g, fcntl.LOCK_SH | fcntl.LOCK_NB)\n\
                      print('holding', flush=True)\n\
                      time.sleep(120)\n";
        let mut child = Command::new("runuser")
            .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", script])
            .arg(pidfile)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("runuser and /usr/bin/python3 must be installed");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "holding", "nobody could not lock the pid file");
        NobodyLocks(child)
    }
}

impl Drop for NobodyLocks {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that is not picosnitch, to be named in the pid file.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_user_can_block_the_pidfile_or_aim_stop_at_another_process() {
    let root = shared_root();
    let r = root.path();
    let _guard = StopOnDrop(r);
    write_config(r, "[api]\nlisten = \"\"\n");
    let run = r.join("run/picosnitch");
    let pidfile = run.join("picosnitch.pid");
    let lock = run.join("picosnitch.lock");

    // Under a low soft limit on open files: the daemon raises it to the hard one.
    let out = Command::new("prlimit")
        .args(["--nofile=512:8192", "--", BIN, "start"])
        .env("PICOSNITCH_ROOT", r)
        .output()
        .expect("prlimit must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let pid = pid_from(&text);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["8192", "8192"],
        "{nofile}"
    );
    let m = std::fs::metadata(&lock).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    let m = std::fs::metadata(&pidfile).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o644));

    // What nobody can do: read the pid, lock the pid file. What not: open the lock, replace or
    // rewrite the pid file.
    let (code, out) = as_nobody(&["cat", pidfile.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, pid.to_string().as_str()));
    let locks = NobodyLocks::hold(&pidfile);
    for attack in [
        format!("cat {}", lock.display()),
        format!("echo 1 > {}", pidfile.display()),
        format!(
            "echo 1 > {}/x && mv {}/x {}",
            run.display(),
            run.display(),
            pidfile.display()
        ),
        format!("ln -s /proc/self/stat {}/picosnitch.x", run.display()),
    ] {
        let (code, out) = as_nobody(&["sh", "-c", &attack]);
        assert_ne!(code, 0, "nobody could: {attack}\n{out}");
        assert!(out.contains("Permission denied"), "{attack}: {out}");
    }
    // status as nobody names the real daemon.
    let nobody_status = || {
        as_nobody(&[
            "env",
            &format!("PICOSNITCH_ROOT={}", r.display()),
            BIN,
            "status",
        ])
    };
    let (code, out) = nobody_status();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("daemon:    running (pid {pid})")),
        "{out}"
    );

    // With nobody's locks on the pid file, stop and start still work: no exit 75.
    let (code, out, err) = verb(r, &["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("stopped (pid {pid})")), "{out}");
    assert!(!pidfile.exists(), "the published pid goes with the daemon");
    let (code, out, err) = verb(r, &["start"]);
    assert_eq!(code, 0, "{out}{err}");
    let pid = pid_from(&out);
    assert!(alive(pid));

    // A second daemon is refused by the lock before it loads any program.
    let cfg = r.join("etc/picosnitch/config.toml");
    let t = std::time::Instant::now();
    let second = Command::new(BIN)
        .args(["start-no-daemon", "--config"])
        .arg(&cfg)
        .env("PICOSNITCH_ROOT", r)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!(
            "picosnitch is already running (lock {} is held, pid {pid})",
            lock.display()
        )),
        "{err}"
    );
    assert!(!err.contains("hook"), "it loaded programs first: {err}");
    assert!(t.elapsed() < SECS(2), "{:?}", t.elapsed());
    drop(locks);

    // A pid file naming another process: stop does not signal it, status does not report it.
    let sleeper = Sleeper(Command::new("sleep").arg("120").spawn().unwrap());
    let foreign = sleeper.0.id() as i32;
    std::fs::write(&pidfile, format!("{foreign}\n")).unwrap();
    let (code, out, err) = verb(r, &["stop"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "{} names pid {foreign}, which is not picosnitch (it runs /usr/bin/sleep): not signalled",
            pidfile.display()
        )),
        "{err}"
    );
    assert!(alive(foreign) && alive(pid), "{err}");
    let (code, out) = nobody_status();
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("pid {foreign}, which is not picosnitch")),
        "{out}"
    );
    // Put right, the daemon stops; the same stale file then names no running daemon.
    std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
    let (code, out, err) = verb(r, &["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!alive(pid));
    std::fs::write(&pidfile, format!("{foreign}\n")).unwrap();
    let (code, out, err) = verb(r, &["stop"]);
    assert_eq!(
        (code, out.trim()),
        (0, "picosnitch is not running"),
        "{err}"
    );
    let (code, out, _) = verb(r, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("daemon:    not running"), "{out}");
    assert!(alive(foreign), "the foreign process was signalled");
}
