//! systemd: the daemon as systemd sees it: READY=1 only once the hooks are attached and the
//! database exists, STATUS= with live counters, WATCHDOG=1, STOPPING=1 then a full flush; API
//! sockets passed by systemd-socket-activate; the generated units pass `systemd-analyze verify`
//! and score well in `systemd-analyze security`.
mod common;
mod service_support;

use common::{copy_exe, rows_for_exe, run_json, sum, trafficgen, DbRow};
use service_support::*;
use std::process::Command;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn ready_status_watchdog_stopping_then_everything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    let notify = NotifySocket::bind(root.path());
    // A window far longer than the test: only the flush after STOPPING=1 can write the rows.
    let mut cmd = daemon_command(root.path(), "[database]\nwrite_limit_seconds = 3600\n");
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "3000000");
    let mut svc = Service::spawn(cmd);

    let first = notify
        .recv(SECS(30))
        .unwrap_or_else(|| panic!("no notification:\n{}", svc.log()));
    // The first message is the readiness, sent once everything it promises is true.
    let fds = fd_targets(svc.pid());
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(
        first.contains("STATUS=hook set tp_btf; 0 rows written"),
        "{first:?}"
    );
    assert!(db.exists(), "READY=1 before the database exists");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'connections'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "READY=1 before the schema exists");
    let links = fds.iter().filter(|(_, t)| t.contains("bpf_link")).count();
    assert!(links >= 2, "READY=1 before the hooks are attached: {fds:?}");

    // The watchdog is pinged from the main loop, about once a second.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < SECS(4) {
        if let Some(m) = notify.recv(Duration::from_millis(500)) {
            pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(pings >= 2, "{pings} watchdog pings in 4 s");

    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-notify");
    let json = run_json(Command::new(&exe).args(["tcp-duplex", "--bytes", "424242"]));
    svc.signal(libc::SIGTERM);
    let msgs = notify.until("STOPPING=1", SECS(10));
    let last = msgs.last().unwrap();
    assert!(
        last.contains("STATUS=stopping: writing the open window"),
        "{last:?}"
    );
    let status = svc.wait(SECS(30));
    assert!(status.success(), "{status}\n{}", svc.log());
    let rows = rows_for_exe(&db, &exe);
    let client: Vec<&DbRow> = rows
        .iter()
        .filter(|r| r.lport == json["lport"].as_i64().unwrap())
        .collect();
    assert_eq!(sum(&client), (424242, 424242), "{}", svc.log());
}

#[test]
fn status_counts_rows_as_they_are_written() {
    let root = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(root.path());
    let mut cmd = daemon_command(root.path(), "[database]\nwrite_limit_seconds = 1\n");
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let mut svc = Service::spawn(cmd);
    notify.until("READY=1", SECS(30));
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-status");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "2000000"]));
    // Without a watchdog only changes are sent: a STATUS= with rows and megabytes comes.
    let t = Instant::now();
    let mut status = String::new();
    while t.elapsed() < SECS(15) && !status.contains("MB sent") {
        if let Some(m) = notify.recv(Duration::from_millis(500)) {
            assert!(
                !m.contains("WATCHDOG=1"),
                "no watchdog was asked for: {m:?}"
            );
            if let Some(s) = m.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                status = s.to_string();
            }
        }
    }
    assert!(status.starts_with("hook set tp_btf; "), "{status:?}");
    let rows: u64 = status
        .split("; ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rows >= 1 && status.contains("MB sent"), "{status:?}");
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success());
}

#[test]
fn socket_activation_hands_over_the_api_listeners() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let sock = root.path().join("activated/api.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let cfg = root.path().join("config.toml");
    std::fs::write(&cfg, "[database]\nwrite_limit_seconds = 1\n").unwrap();
    let notify = NotifySocket::bind(root.path());
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--listen={}", sock.display()))
        .arg("--fdname=api:api")
        .arg(format!(
            "--setenv=PICOSNITCH_ROOT={}",
            root.path().display()
        ))
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
        .args([BIN, "start-no-daemon", "--config"])
        .arg(&cfg);
    let mut svc = Service::spawn(cmd);
    // systemd-socket-activate binds, then starts the daemon at the first connection.
    let bound_by_activator = {
        let t = Instant::now();
        loop {
            if let Some(ino) = tcp_listener_inode(port) {
                break ino;
            }
            assert!(t.elapsed() < SECS(10), "{}", svc.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let _first = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    notify.until("READY=1", SECS(30));
    svc.wait_log("API sockets activated by systemd: 2", SECS(5));
    let log = svc.log();
    assert!(
        log.contains(&format!("tcp 127.0.0.1:{port}")) && log.contains("api.sock"),
        "{log}"
    );
    assert!(!log.contains("bound by the daemon"), "{log}");
    // The activator's port is not [api] listen: served all the same, and said.
    assert!(
        log.contains("do not follow [api]: tcp 127.0.0.1:5100 ([api] listen) is not among them"),
        "{log}"
    );
    // The daemon holds the activator's very socket: the listening inode is among its fds, and
    // it did not bind one of its own.
    let fds = fd_targets(svc.pid());
    let want = format!("socket:[{bound_by_activator}]");
    assert!(fds.iter().any(|(_, t)| *t == want), "{want} not in {fds:?}");
    assert!(
        !root.path().join("run/picosnitch/api.sock").exists(),
        "the daemon bound its own unix socket"
    );
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("second tcp connect");
    std::os::unix::net::UnixStream::connect(&sock).expect("unix connect");
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
}

#[test]
fn without_activation_the_daemon_binds_its_unix_socket() {
    let root = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(root.path());
    let mut cmd = daemon_command(root.path(), "[data]\ngroup = \"nogroup\"\n");
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let mut svc = Service::spawn(cmd);
    notify.until("READY=1", SECS(30));
    svc.wait_log("API sockets bound by the daemon", SECS(5));
    let sock = root.path().join("run/picosnitch/api.sock");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((m.mode() & 0o777, m.gid()), (0o660, 65534));
    std::os::unix::net::UnixStream::connect(&sock).expect("unix connect");
    svc.signal(libc::SIGTERM);
    assert!(svc.wait(SECS(30)).success(), "{}", svc.log());
    assert!(!sock.exists(), "the socket file is removed at exit");
}

/// The exposure score `systemd-analyze security --offline=yes` gives `unit`.
fn exposure(dir: &std::path::Path, unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", unit])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score: {text}{}", String::from_utf8_lossy(&out.stderr)));
    let score = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"));
    println!("{unit} in {}: {line}", dir.display());
    score
}

#[test]
fn generated_units_verify_and_are_hardened() {
    const UNIX: &str = "/run/picosnitch/api.sock";
    for (name, config, max, listens) in [
        ("default", "", 3.0, &["127.0.0.1:5100", UNIX][..]),
        (
            "no desktop",
            "[desktop]\nnotifications = false\n",
            3.0,
            &["127.0.0.1:5100", UNIX],
        ),
        (
            "virustotal and a data group",
            "[virustotal]\napi_key = \"0123456789abcdef0123456789abcdef\"\n\
             [data]\ngroup = \"adm\"\nmode = \"0640\"\n",
            4.0,
            &["127.0.0.1:5100", UNIX],
        ),
        (
            "IPv6 listen",
            "[api]\nlisten = \"[::1]:5187\"\n",
            3.0,
            &["[::1]:5187", UNIX],
        ),
        (
            "TCP only",
            "[api]\nlisten = \"127.0.0.2:6100\"\nsocket = false\n",
            3.0,
            &["127.0.0.2:6100"],
        ),
        ("unix only", "[api]\nlisten = \"\"\n", 3.0, &[UNIX]),
        (
            "no API sockets",
            "[api]\nlisten = \"\"\nsocket = false\n",
            3.0,
            &[],
        ),
    ] {
        let root = tempfile::tempdir().unwrap();
        let cfg_dir = root.path().join("etc/picosnitch");
        std::fs::create_dir_all(&cfg_dir).unwrap();
        std::fs::write(cfg_dir.join("config.toml"), config).unwrap();
        let (code, out, err) = verb(root.path(), &["systemd"]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let units = root.path().join("etc/systemd/system");
        let service = std::fs::read_to_string(units.join("picosnitch.service")).unwrap();
        let socket = std::fs::read_to_string(units.join("picosnitch.socket")).unwrap_or_default();
        assert!(
            service.contains(&format!("ExecStart={BIN} start-no-daemon\n")),
            "{service}"
        );
        assert!(service.contains("Type=notify\n") && service.contains("WatchdogSec="));
        assert!(service.contains("RestartPreventExitStatus=69 73 75 77 78\n"));
        assert!(
            service.contains("\nLimitNOFILE=65536\nMemoryMax=1G\nTasksMax=256\n"),
            "{name}: {service}"
        );
        for cap in [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH",
        ] {
            assert!(service.contains(&format!(" {cap}")), "{name}: {cap}");
        }
        let written: Vec<&str> = socket
            .lines()
            .filter_map(|l| l.strip_prefix("ListenStream="))
            .collect();
        assert_eq!(written, listens, "{name}: {socket}");
        let mut verify = vec!["verify", "picosnitch.service"];
        if listens.is_empty() {
            assert!(!units.join("picosnitch.socket").exists(), "{name}");
            assert!(!service.contains("picosnitch.socket"), "{name}: {service}");
        } else {
            assert!(socket.contains("SocketMode=0660\n"), "{name}: {socket}");
            assert!(service.contains("Requires=picosnitch.socket\n"), "{name}");
            verify.push("picosnitch.socket");
        }
        let out = Command::new("systemd-analyze")
            .args(&verify)
            .current_dir(&units)
            .output()
            .unwrap();
        let verify = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && verify.trim().is_empty(),
            "{name}: {verify}"
        );
        let score = exposure(&units, "picosnitch.service");
        assert!(score <= max, "{name}: exposure {score} > {max}");
    }
}

/// A binary whose path has a space, `%`, `$`, a quote and a backslash: ExecStart= quotes it so
/// that systemd runs that very file, and the unit still verifies.
#[test]
fn exec_start_quotes_an_awkward_path() {
    let root = tempfile::tempdir().unwrap();
    // systemd 252 refuses quotes, backslashes, `$` and `%` in an executable's name whatever the
    // quoting; a space is what quoting must carry.
    let dir = root.path().join("my tools");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("picosnitch");
    std::fs::hard_link(BIN, &exe)
        .or_else(|_| std::fs::copy(BIN, &exe).map(|_| ()))
        .unwrap();
    let cfg_dir = root.path().join("etc/picosnitch");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("config.toml"), "").unwrap();
    let out = Command::new(&exe)
        .arg("systemd")
        .env("PICOSNITCH_ROOT", root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let units = root.path().join("etc/systemd/system");
    let service = std::fs::read_to_string(units.join("picosnitch.service")).unwrap();
    let quoted = format!(
        "ExecStart=\"{}/my tools/picosnitch\" start-no-daemon\n",
        root.path().display()
    );
    assert!(service.contains(&quoted), "no {quoted:?} in\n{service}");
    let out = Command::new("systemd-analyze")
        .args(["verify", "picosnitch.service", "picosnitch.socket"])
        .current_dir(&units)
        .output()
        .expect("systemd-analyze must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// Every system call group `systemd-analyze syscall-filter` knows, as group → entries.
fn syscall_groups() -> std::collections::HashMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
        .unwrap();
    let mut groups = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(g) = line.strip_prefix('@') {
            current = Some(format!("@{}", g.trim()));
            continue;
        }
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        if let Some(g) = &current {
            groups
                .entry(g.clone())
                .or_insert_with(Vec::new)
                .push(entry.to_string());
        }
    }
    groups
}

fn expand(
    name: &str,
    groups: &std::collections::HashMap<String, Vec<String>>,
    out: &mut std::collections::BTreeSet<String>,
) {
    match groups.get(name) {
        Some(entries) if name.starts_with('@') => {
            for e in entries {
                expand(e, groups, out);
            }
        }
        _ => {
            out.insert(name.to_string());
        }
    }
}

/// The system calls the generated unit's SystemCallFilter= lines allow.
fn allowed_syscalls(unit: &str) -> std::collections::BTreeSet<String> {
    let groups = syscall_groups();
    let mut allowed = std::collections::BTreeSet::new();
    // The allow-list always contains @default.
    expand("@default", &groups, &mut allowed);
    for line in unit.lines() {
        let Some(v) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        if let Some(denied) = v.strip_prefix('~') {
            let mut deny = std::collections::BTreeSet::new();
            for name in denied.split_whitespace() {
                expand(name, &groups, &mut deny);
            }
            allowed.retain(|s| !deny.contains(s));
        } else {
            for name in v.split_whitespace() {
                expand(name, &groups, &mut allowed);
            }
        }
    }
    allowed
}

#[test]
fn the_daemon_only_makes_the_system_calls_its_unit_allows() {
    let root = tempfile::tempdir().unwrap();
    let (code, out, err) = verb(root.path(), &["systemd"]);
    assert_eq!(code, 0, "{out}{err}");
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/picosnitch.service")).unwrap();
    let allowed = allowed_syscalls(&unit);
    assert!(allowed.contains("bpf") && allowed.contains("read") && !allowed.contains("mount"));
    assert!(unit.contains("RestrictAddressFamilies=AF_UNIX\n"));

    // The daemon as the unit runs it: activated sockets, notify socket, watchdog; under strace.
    let port = free_port();
    let sock = root.path().join("api.sock");
    let cfg = root.path().join("config.toml");
    std::fs::write(&cfg, "[database]\nwrite_limit_seconds = 1\n").unwrap();
    let notify = NotifySocket::bind(root.path());
    let trace = root.path().join("strace.out");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--listen={}", sock.display()))
        .arg(format!(
            "--setenv=PICOSNITCH_ROOT={}",
            root.path().display()
        ))
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
        .arg("--setenv=WATCHDOG_USEC=5000000")
        // Nice=-10 as in the unit; strace -D runs aside, so the daemon keeps the pid
        // LISTEN_PID names.
        .args(["nice", "-n", "-10", "strace", "-D", "-f", "-qq", "-o"])
        .arg(&trace)
        .args([BIN, "start-no-daemon", "--config"])
        .arg(&cfg);
    let mut svc = Service::spawn(cmd);
    wait_for("the activator listens", SECS(10), || {
        tcp_listener_inode(port).is_some()
    });
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    notify.until("READY=1", SECS(60));
    svc.wait_log("API sockets activated by systemd: 2", SECS(5));
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-seccomp");
    run_json(Command::new(&exe).args(["udp-unconnected", "--count", "20"]));
    notify.until("WATCHDOG=1", SECS(10));
    std::thread::sleep(SECS(2));
    svc.signal(libc::SIGTERM);
    notify.until("STOPPING=1", SECS(20));
    assert!(svc.wait(SECS(60)).success(), "{}", svc.log());

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    let mut families = std::collections::BTreeSet::new();
    for line in text.lines() {
        // "PID name(args…" — resumed calls, signals and exits are not new calls.
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        if rest.starts_with('<') || rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name == "execve" && args.contains("systemd-socket-activate") {
            continue;
        }
        used.insert(name.to_string());
        if name == "socket" {
            families.insert(args.split([',', ')']).next().unwrap_or("").to_string());
        }
    }
    assert!(used.contains("bpf"), "{used:?}");
    let denied: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        denied.is_empty(),
        "system calls the unit would refuse: {denied:?}\n(used: {used:?})"
    );
    assert!(
        families.iter().all(|f| f == "AF_UNIX"),
        "sockets of families the unit refuses: {families:?}"
    );
}
