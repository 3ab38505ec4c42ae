//! hostile_identity: what an unprivileged user can do to how processes are identified — a FIFO or
//! a symlink renamed over the path of a program that just exited, a 2 MB command line, a cgroup
//! posing as a docker container in the user's own subtree — never stalls the daemon, grows its
//! memory or names the user's processes as the system's.
mod common;

use common::*;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// Runs `cmd` as nobody (uid and gid 65534, no supplementary groups) through `setpriv`.
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    c
}

/// A directory nobody owns, with nobody's copy of the traffic generator named `name` in it.
fn users_program(dir: &Path, name: &str) -> PathBuf {
    let exe = copy_exe(&trafficgen(), dir, name);
    chown(&exe, Some(NOBODY), Some(NOBODY)).unwrap();
    exe
}

fn users_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    dir
}

/// Runs a shell command line as nobody; it must succeed (a missing tool fails the test).
fn nobody_sh(script: &str, args: &[&Path]) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each thread of `pid` with the kernel function it waits in (to tell a stall from a slow window).
fn threads_waiting_in(pid: i32) -> String {
    let mut out = String::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
        out.push_str(&format!("{}={} ", comm.trim(), wchan.trim()));
    }
    out
}

fn status_updated(root: &Path) -> i64 {
    let text = std::fs::read_to_string(root.join("run/picosnitch/status.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["updated"].as_i64().expect("updated in status.json")
}

/// Item 2: the path of a program that exited before the daemon saw it is replaced by the user
/// with a FIFO, or with a symlink to one. The daemon must neither block opening it nor follow
/// the link: the programs are stored with the unavailable marker (and counted), and a probe
/// program's rows arrive in the next window while the status heartbeat keeps moving.
#[test]
fn a_fifo_or_symlink_over_an_exited_programs_path_does_not_stall_the_daemon() {
    let dir = users_dir();
    let fifo_exe = users_program(dir.path(), "tg-fifo");
    let link_exe = users_program(dir.path(), "tg-link");
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = copy_exe(&trafficgen(), probe_dir.path(), "tg-probe");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    // Freeze the daemon so both programs run and exit, and their paths are replaced, before it
    // reads their exec events.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGSTOP) };
    let fifo_json = run_json(as_nobody(&fifo_exe).args(["tcp-up", "--bytes", "4444"]));
    let link_json = run_json(as_nobody(&link_exe).args(["tcp-up", "--bytes", "5555"]));
    nobody_sh(r#"mkfifo "$1.new" && mv -fT "$1.new" "$1""#, &[&fifo_exe]);
    nobody_sh(
        r#"mkfifo "$1.fifo" && ln -s "$1.fifo" "$1.new" && mv -fT "$1.new" "$1""#,
        &[&link_exe],
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo_exe)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link_exe)
        .unwrap()
        .file_type()
        .is_symlink());
    unsafe { libc::kill(daemon.pid(), libc::SIGCONT) };
    let before = Instant::now();
    // The status file is written at most every 5 s: wait for it to exist, then see it move on.
    while !daemon
        .root
        .path()
        .join("run/picosnitch/status.json")
        .exists()
    {
        assert!(before.elapsed() < Duration::from_secs(10), "no status file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = status_updated(daemon.root.path());
    let probe_json = run_json(Command::new(&probe).args(["tcp-up", "--bytes", "3210"]));
    // The window holding the probe's rows reaches the writer: its new-program notice is logged.
    let notice = format!(
        "New program on the network: tg-probe decision=NewExe exe={}",
        probe.display()
    );
    let t = Instant::now();
    while !daemon.log().contains(&notice) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the probe's window never reached the writer; daemon threads wait in: {}\n{}",
            threads_waiting_in(daemon.pid()),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the probe's window was written {:?} after it ran",
        t.elapsed()
    );
    let t = Instant::now();
    while status_updated(daemon.root.path()) == first {
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "the heartbeat stopped:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = daemon.stop();
    let rows = rows_for_exe(&stopped.db, &probe);
    let lport = probe_json["lport"].as_i64().unwrap();
    let mine: Vec<&DbRow> = rows.iter().filter(|r| r.lport == lport).collect();
    assert_eq!(sum(&mine), (3210, 0));
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    for (name, json, bytes) in [("tg-fifo", &fifo_json, 4444), ("tg-link", &link_json, 5555)] {
        let lport = json["lport"].as_i64().unwrap();
        let stored: (String, String, i64, i64) = conn
            .query_row(
                "SELECT e.exe, e.sha256, c.send, c.uid FROM connections c
                 JOIN executables e ON e.id = c.exe_id WHERE c.lport = ?1 AND e.name = ?2",
                rusqlite::params![lport, name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap_or_else(|e| panic!("no row for {name}: {e}\n{}", stopped.log));
        assert_eq!(stored, (String::new(), "!unavailable".into(), bytes, 65534));
    }
    let lost: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM losses WHERE source = 'exe_unavailable'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(lost >= 2, "both are counted: {lost}");
}

/// VmHWM (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// Item 4: twenty processes of nobody's, each with its own 2 MB argv, make traffic (an echoed
/// drip of 5 × 100 bytes). Each stored
/// command line is 4 KiB and the marker with the rest's length and hash; the bytes are exact; the
/// daemon's peak memory grows by less than 24 MiB (the argvs alone are 40 MiB).
#[test]
fn two_megabyte_command_lines_are_capped_and_memory_stays_bounded() {
    const RUNS: usize = 20;
    let dir = users_dir();
    let exe = users_program(dir.path(), "tg-longargv");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    std::thread::sleep(Duration::from_secs(2));
    let hwm_before = vm_hwm_kib(daemon.pid());
    let mut ports = Vec::new();
    for run in 0..RUNS {
        // 17 values of 120 KiB (one argument may not pass 128 KiB): 2 MB, distinct per run.
        let mut cmd = as_nobody(&exe);
        // Half a second of traffic: the process lives long enough for its command line to be read.
        cmd.args([
            "drip",
            "--bytes",
            "100",
            "--count",
            "5",
            "--interval-ms",
            "100",
        ]);
        for i in 0..17 {
            cmd.arg("--zone")
                .arg(format!("{run:02}{i:02}").repeat(30 << 10));
        }
        // SAFETY: setrlimit is async-signal-safe; a larger stack lets argv hold 2 MB.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 << 20,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_STACK, &lim);
                Ok(())
            });
        }
        let t = Instant::now();
        ports.push(run_json(&mut cmd)["lport"].as_i64().unwrap());
        eprintln!("run {run}: {:?}", t.elapsed());
    }
    std::thread::sleep(Duration::from_secs(3));
    let hwm_after = vm_hwm_kib(daemon.pid());
    let t = Instant::now();
    let stopped = daemon.stop();
    eprintln!("stopped in {:?}", t.elapsed());
    let grew_kib = hwm_after.saturating_sub(hwm_before);
    eprintln!("daemon VmHWM {hwm_before} KiB -> {hwm_after} KiB (+{grew_kib} KiB)");
    let rows = rows_for_exe(&stopped.db, &exe);
    let mut seen = std::collections::HashSet::new();
    for lport in &ports {
        let mine: Vec<&DbRow> = rows.iter().filter(|r| r.lport == *lport).collect();
        assert_eq!(sum(&mine), (500, 500), "port {lport}:\n{}", stopped.log);
        for r in &mine {
            let (kept, marker) = r.cmdline.split_once(" …[+").unwrap_or_else(|| {
                panic!(
                    "not cut: {} bytes {:?}",
                    r.cmdline.len(),
                    &r.cmdline[..r.cmdline.len().min(200)]
                )
            });
            assert!(kept.len() <= 4096, "{}", kept.len());
            assert!(kept.starts_with(&format!(
                "{} drip --bytes 100 --count 5 --interval-ms 100 --zone",
                exe.display()
            )));
            let (n, hash) = marker
                .split_once(" bytes sha256:")
                .expect("length and hash");
            assert!(n.parse::<u64>().unwrap() > 2_000_000, "{n}");
            assert_eq!(hash.len(), 9, "8 hex digits and ]: {hash}");
            assert!(hash.ends_with(']'));
            seen.insert(hash.to_string());
        }
    }
    assert_eq!(seen.len(), RUNS, "each long command line stays distinct");
    assert!(
        grew_kib < 24 * 1024,
        "the daemon's peak memory grew by {grew_kib} KiB"
    );
}

/// The cgroup v2 mount point (hybrid hosts mount it below /sys/fs/cgroup/unified).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// Removes the cgroups it lists, deepest first.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Item 10: in a subtree delegated to nobody (`user@65534.service`), nobody creates
/// `docker-<64 hex>.scope` and runs a program in it. Its rows are named as nobody's
/// (`user:65534:docker:<id>`), never as the system's container `docker:<id>`.
#[test]
fn a_users_cgroup_cannot_pose_as_a_docker_container() {
    let id = format!(
        "{:016x}",
        0xfeed_0000_0000_0000u64 | std::process::id() as u64
    )
    .repeat(4);
    let top = cgroup2_root().join(format!("picosnitch-test-{}", std::process::id()));
    let slice = top.join("user.slice/user-65534.slice");
    let delegated = slice.join("user@65534.service");
    let scope = delegated.join(format!("docker-{id}.scope"));
    let mut made = Cgroups(Vec::new());
    for d in [&top, &top.join("user.slice"), &slice, &delegated] {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        made.0.push(d.clone());
    }
    // Delegation as systemd does it: the user owns the directory and its files.
    chown(&delegated, Some(NOBODY), Some(NOBODY)).unwrap();
    for f in ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
        chown(delegated.join(f), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    nobody_sh(r#"mkdir "$1""#, &[&scope]);
    made.0.push(scope.clone());
    let dir = users_dir();
    let exe = users_program(dir.path(), "tg-fakedocker");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    // nobody's shell waits for a line, is moved into the scope, then runs the program.
    let mut sh = as_nobody(Path::new("/bin/sh"))
        .args(["-c", r#"read go; exec "$1" tcp-up --bytes 6666"#, "sh"])
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let shell = sh.id().to_string();
    std::fs::write(scope.join("cgroup.procs"), &shell).unwrap();
    use std::io::Write;
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = sh.wait_with_output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("JSON from the program");
    let stopped = daemon.stop();
    let lport = json["lport"].as_i64().unwrap();
    let rows = rows_for_exe(&stopped.db, &exe);
    let mine: Vec<&DbRow> = rows.iter().filter(|r| r.lport == lport).collect();
    assert_eq!(sum(&mine), (6666, 0), "{}", stopped.log);
    for r in &mine {
        assert_eq!(r.container, format!("user:65534:docker:{id}"));
        assert_eq!(r.uid, 65534);
    }
}
