//! api_hardening: the API against hostile local users and web pages, on a real daemon: cross-site
//! requests refused, the unix socket refused to a user outside `[data] group` by the kernel's
//! record of the caller, 2,000 idle connections that neither exhaust file descriptors nor stop
//! fresh requests, a header never finished closed at the deadline, an answer over the byte
//! budget refused with bounded memory, and a foreign Host refused on a wildcard listener.
mod api_support;
mod common;

use api_support::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = "[database]\nwrite_limit_seconds = 1\n[desktop]\nnotifications = false\n";
/// The daemon's cap on connections per listener and its header deadline (api/listen.rs,
/// api/serve.rs).
const MAX_CONNECTIONS: usize = 256;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One request with extra header lines; the status and the body.
fn request(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"].as_str().unwrap_or_default().to_string()
}

fn fds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A `/proc/PID/status` figure in KiB (VmRSS, VmHWM).
fn status_kib(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {key} in status"))
}

#[test]
fn cross_site_requests_are_refused_and_same_origin_served() {
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.api_addr().expect("API address in the log");
    let host = format!("127.0.0.1:{}", addr.port());
    let own = format!("http://{host}");
    for (headers, why) in [
        (
            vec![("Host", host.as_str()), ("Origin", "http://evil.example")],
            "cross-origin request refused (Origin: http://evil.example): the API answers only \
             requests from its own origin",
        ),
        (
            vec![("Host", host.as_str()), ("Sec-Fetch-Site", "cross-site")],
            "cross-site request refused (Sec-Fetch-Site: cross-site): the API answers only its \
             own pages and clients that are not browsers",
        ),
        (
            vec![("Host", host.as_str()), ("Sec-Fetch-Site", "same-site")],
            "cross-site request refused (Sec-Fetch-Site: same-site)",
        ),
        (
            vec![("Host", host.as_str()), ("Origin", "http://localhost:8080")],
            "cross-origin request refused (Origin: http://localhost:8080)",
        ),
    ] {
        let (status, body) = request(addr, "/api/v1/aggregate?by=exe", &headers);
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(error_of(&body).starts_with(why), "{body}");
    }
    for headers in [
        vec![("Host", host.as_str()), ("Origin", own.as_str())],
        vec![
            ("Host", host.as_str()),
            ("Origin", own.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![("Host", host.as_str()), ("Sec-Fetch-Site", "none")],
        vec![("Host", host.as_str())],
    ] {
        let (status, body) = request(addr, "/api/v1/aggregate?by=exe", &headers);
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    // The unix socket refuses cross-site requests too.
    let unix = To::Unix(daemon.api_socket());
    let mut s = unix.connect();
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    daemon.stop();
}

/// `curl` on the unix socket as `nobody` with `runuser`'s extra options; status and body.
fn curl_as_nobody(sock: &std::path::Path, extra: &[&str]) -> (u16, String) {
    let out = Command::new("runuser")
        .args(["-u", "nobody"])
        .args(extra)
        .args([
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--unix-socket")
        .arg(sock)
        .arg("http://localhost/api/v1/status")
        .output()
        .expect("runuser and curl are needed for this test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl as nobody failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, body.to_string())
}

#[test]
fn the_unix_socket_serves_root_and_the_data_group_only() {
    // [data] group is root (gid 0), the default.
    let daemon = Daemon::start(CONFIG);
    let sock = daemon.api_socket();
    // Make the socket reachable by anyone, so that only the credential check can refuse.
    let mut dir = sock.parent().unwrap().to_path_buf();
    loop {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if dir == daemon.root.path() {
            break;
        }
        dir = dir.parent().unwrap().to_path_buf();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();

    let (status, body) = curl_as_nobody(&sock, &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error_of(&body),
        "uid 65534 (gid 65534) may not use the API socket: only root and members of the [data] \
         group (gid 0) may"
    );
    // A member of the group, as its primary group or as a supplementary one, is served.
    let (status, body) = curl_as_nobody(&sock, &["-g", "root"]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl_as_nobody(&sock, &["-G", "root"]);
    assert_eq!(status, 200, "{body}");
    // Root is served.
    assert_eq!(ok(&To::Unix(sock), "/api/v1/status")["hook_set"], "tp_btf");
    daemon.stop();
}

fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = want.max(lim.rlim_cur);
        lim.rlim_max = lim.rlim_max.max(lim.rlim_cur);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "raising RLIMIT_NOFILE to {want}"
        );
    }
}

#[test]
fn two_thousand_idle_connections_neither_exhaust_fds_nor_stop_requests() {
    raise_nofile(8192);
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.api_addr().expect("API address in the log");
    let before = fds_of(daemon.pid());
    let t = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
    }
    let opened = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let during = fds_of(daemon.pid());
    let t = Instant::now();
    let v = ok(&To::Tcp(addr), "/api/v1/status");
    let answered = t.elapsed();
    eprintln!(
        "2000 idle connections opened in {opened:?}; daemon fds {before} before, {during} with \
         them; a fresh request answered in {answered:?}"
    );
    assert_eq!(v["hook_set"], "tp_btf");
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    assert!(
        during <= before + MAX_CONNECTIONS + 16,
        "{during} fds with 2000 idle connections ({before} before)"
    );
    // Most idle connections were closed by the daemon to make room.
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 2000 - MAX_CONNECTIONS, "{closed} closed");
    drop(idle);
    daemon.stop();
}

#[test]
fn a_header_never_finished_and_an_idle_keep_alive_are_closed_at_the_deadline() {
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.api_addr().expect("API address in the log");
    // Slowloris: a header that never ends, one more byte every 100 ms.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let t = Instant::now();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let closed_after = loop {
        let mut b = [0u8; 256];
        match slow.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break t.elapsed(),
        }
        if t.elapsed() > HEADER_TIMEOUT + Duration::from_secs(10) {
            panic!(
                "a header never finished is still open after {:?}",
                t.elapsed()
            );
        }
        let _ = slow.write_all(b"X");
    };
    // An idle keep-alive connection, after one answer.
    let mut keep = TcpStream::connect(addr).unwrap();
    keep.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let t = Instant::now();
    let mut all = Vec::new();
    keep.read_to_end(&mut all).unwrap();
    let idle_closed = t.elapsed();
    eprintln!("slowloris closed after {closed_after:?}, idle keep-alive after {idle_closed:?}");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    for d in [closed_after, idle_closed] {
        assert!(
            d >= HEADER_TIMEOUT - Duration::from_secs(1)
                && d < HEADER_TIMEOUT + Duration::from_secs(5),
            "{d:?}"
        );
    }
    daemon.stop();
}

#[test]
fn an_answer_over_the_byte_budget_is_refused_with_bounded_memory() {
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.api_addr().expect("API address in the log");
    let db = daemon.root.path().join("var/lib/picosnitch/picosnitch.db");
    // 160 executables, each with a 512 KiB command line: 80 MiB of answer.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    conn.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 160)
         INSERT INTO executables (exe, name, cmdline, sha256)
           SELECT '/budget/exe', 'budget', printf('%d', i) || printf('%.*c', 524288, 'x'), ''
           FROM n;
         INSERT INTO connections (contime, send, recv, events, exe_id, pexe_id, gpexe_id, uid,
           family, protocol, lport, rport, laddr_id, raddr_id, domain_id, netns)
           SELECT {now} - 60, 1, 1, 1, id, 0, 0, 0, 2, 6, 1, 1, 0, 0, 0, 0
           FROM executables WHERE exe = '/budget/exe';
         COMMIT;"
    ))
    .unwrap();
    drop(conn);
    let pid = daemon.pid();
    // Reset the daemon's peak RSS, so that VmHWM says what the queries took.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let rss = status_kib(pid, "VmRSS");
    let to = To::Tcp(addr);
    let r = get(
        &to,
        "/api/v1/aggregate?by=cmdline&exe=%2Fbudget%2Fexe&limit=1000",
    );
    assert_eq!(
        r.status,
        400,
        "{}\n{}",
        &r.body[..r.body.len().min(300)],
        daemon.log()
    );
    assert_eq!(
        error_of(&r.body),
        "the answer would be larger than 32 MiB; narrow the query (a shorter range, fewer \
         dimensions, filters or a lower limit)"
    );
    let d = get(&to, "/api/v1/exe?exe=%2Fbudget%2Fexe&limit=1000");
    assert_eq!(d.status, 400, "{}", &d.body[..d.body.len().min(300)]);
    assert!(error_of(&d.body).starts_with("the answer would be larger than 32 MiB"));
    let peak = status_kib(pid, "VmHWM");
    eprintln!("daemon RSS {rss} KiB before, peak {peak} KiB over two refused 80 MiB answers");
    assert!(
        // Two refused 80 MiB answers measured +188 MiB of peak RSS on the machine this was
        // written on.
        peak < rss + 256 * 1024,
        "peak RSS {peak} KiB, {rss} KiB before"
    );
    // A narrower query within the budget is answered.
    let v = ok(
        &to,
        "/api/v1/aggregate?by=cmdline&exe=%2Fbudget%2Fexe&limit=10",
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 10);
    assert_eq!(v["truncated"], true);
    daemon.stop();
}

#[test]
fn a_wildcard_listener_refuses_a_foreign_host() {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Daemon::start(&format!("{CONFIG}[api]\nlisten = \"0.0.0.0:{port}\"\n"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let hostname = hostname.trim();
    let (status, body) = request(addr, "/api/v1/status", &[("Host", "evil.example:5100")]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        error_of(&body),
        format!(
            "Host \"evil.example:5100\" is refused: this listener answers only requests for \
             {hostname}, localhost, 127.0.0.1 or [::1]"
        )
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("{hostname}:{port}"),
    ] {
        let (status, body) = request(addr, "/api/v1/status", &[("Host", &host)]);
        assert_eq!(status, 200, "{host}: {body}");
    }
    // On another address of this machine, its literal is accepted and a foreign name is not.
    let other = local_non_loopback().expect("a non-loopback IPv4 address on this machine");
    let there: SocketAddr = format!("{other}:{port}").parse().unwrap();
    let (status, body) = request(
        there,
        "/api/v1/status",
        &[("Host", &format!("{other}:{port}"))],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(there, "/api/v1/status", &[("Host", "rebound.example")]);
    assert_eq!(status, 403, "{body}");
    assert!(
        error_of(&body).contains(&format!("{other}, localhost")),
        "{body}"
    );
    daemon.stop();
}

/// An IPv4 address of this machine that is not loopback: the source the kernel would use
/// towards a documentation address (a UDP connect sends no packet).
fn local_non_loopback() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
