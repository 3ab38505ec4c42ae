//! api: the read-only API of a real daemon, over TCP and the unix socket, against a database
//! filled by real traffic: exact totals for this test's own executable on every endpoint, the
//! live feed, /metrics through a Prometheus parser, and clean refusals of bad requests.
mod api_support;
mod common;

use api_support::*;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = "[database]\nwrite_limit_seconds = 1\n[desktop]\nnotifications = false\n";
const BYTES: i64 = 123_457;

/// A copy of the generator with a hash of its own (bytes appended after the ELF image), so that
/// selecting by sha256 finds only this test's processes even while other tests run copies.
fn unique_copy(dir: &Path, name: &str) -> PathBuf {
    let exe = copy_exe(&trafficgen(), dir, name);
    let nonce = format!(
        "{:?}{}{name}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&exe).unwrap();
    f.write_all(nonce.as_bytes()).unwrap();
    exe
}

/// Runs the generator: a TCP client and its forked server exchange `BYTES` each way.
fn traffic(exe: &Path) -> Value {
    run_json(Command::new(exe).args(["tcp-duplex", "--bytes", &BYTES.to_string()]))
}

/// Waits until the API reports `want` (send, recv) for `exe`.
fn wait_for_totals(to: &To, exe: &str, want: (i64, i64)) -> Value {
    let target = format!("/api/v1/aggregate?by=exe&exe={}", enc(exe));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = ok(to, &target);
        let rows = v["rows"].as_array().unwrap();
        let got = rows
            .first()
            .map(|r| (r["send"].as_i64().unwrap(), r["recv"].as_i64().unwrap()));
        if got == Some(want) || Instant::now() > deadline {
            assert_eq!(got, Some(want), "{v}");
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_endpoint_answers_from_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let exe = unique_copy(dir.path(), "tg-api");
    let exe_s = exe.to_string_lossy().into_owned();
    let sha = sha256sum(&exe);
    let daemon = Daemon::start(CONFIG);
    let tcp = To::Tcp(daemon.api_addr().expect("API address in the log"));
    let unix = To::Unix(daemon.api_socket());
    // Client and forked server (same executable) each send and receive BYTES.
    let want = (2 * BYTES, 2 * BYTES);
    let sse = follow(tcp.clone(), false, exe_s.clone(), want);
    let jsonl = follow(unix.clone(), true, exe_s.clone(), want);

    let json = traffic(&exe);
    let lport = json["lport"].as_i64().unwrap();
    let rport = json["rport"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let agg = wait_for_totals(&tcp, &exe_s, want);
    assert_eq!(agg["by"], serde_json::json!(["exe"]));
    assert!(agg["from"].as_u64().unwrap() < now && agg["to"].as_u64().unwrap() > now);

    // The same answer from the database directly.
    let stored = rows_for_exe(
        &daemon.root.path().join("var/lib/picosnitch/picosnitch.db"),
        &exe,
    );
    assert_eq!(sum(&stored.iter().collect::<Vec<_>>()), want);

    // The client's socket alone, by filters, over both listeners.
    let client = format!(
        "/api/v1/aggregate?by=lport,rport,raddr,protocol,family,uid&exe={}&lport={lport}&rport={rport}",
        enc(&exe_s)
    );
    for to in [&tcp, &unix] {
        let v = ok(to, &client);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{v}");
        let r = &rows[0];
        assert_eq!(
            (r["send"].as_i64(), r["recv"].as_i64()),
            (Some(BYTES), Some(BYTES)),
            "{v}"
        );
        assert_eq!(r["raddr"], "127.0.0.1");
        assert_eq!(
            (
                r["protocol"].as_i64(),
                r["family"].as_i64(),
                r["uid"].as_i64()
            ),
            (Some(6), Some(2), Some(0))
        );
    }
    // Every dimension groups, each ordering sorts.
    let by = "exe,name,sha256,cmdline,pexe,gpexe,uid,family,protocol,lport,rport,laddr,raddr,domain,netns,container,hour,day";
    for order in ["bytes", "send", "recv", "events", "key"] {
        let v = ok(
            &tcp,
            &format!(
                "/api/v1/aggregate?by={by}&exe={}&order={order}&limit=50",
                enc(&exe_s)
            ),
        );
        let rows = v["rows"].as_array().unwrap();
        let total: i64 = rows.iter().map(|r| r["send"].as_i64().unwrap()).sum();
        assert_eq!(total, want.0, "{v}");
        assert!(
            rows.iter()
                .all(|r| r["sha256"] == sha.as_str() && r["name"] == "tg-api"),
            "{v}"
        );
    }

    // Distinct values.
    let v = ok(
        &unix,
        &format!("/api/v1/distinct?dim=sha256&exe={}", enc(&exe_s)),
    );
    assert_eq!(v["values"], serde_json::json!([sha]));
    let v = ok(&tcp, &format!("/api/v1/distinct?dim=exe&sha256={sha}"));
    assert_eq!(v["values"], serde_json::json!([exe_s]));
    let v = ok(
        &tcp,
        &format!(
            "/api/v1/distinct?dim=rport&exe={}&lport={lport}",
            enc(&exe_s)
        ),
    );
    assert_eq!(v["values"], serde_json::json!([rport]));

    // Drill-down by path and by hash.
    let me = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for target in [
        format!("/api/v1/exe?exe={}", enc(&exe_s)),
        format!("/api/v1/exe?sha256={sha}"),
    ] {
        let v = ok(&tcp, &target);
        assert_eq!(v["totals"]["send"].as_i64(), Some(want.0), "{v}");
        assert_eq!(v["totals"]["recv"].as_i64(), Some(want.1), "{v}");
        assert_eq!(v["paths"], serde_json::json!([exe_s]));
        assert_eq!(v["hashes"], serde_json::json!([sha]));
        assert!(
            v["names"].as_array().unwrap().contains(&"tg-api".into()),
            "{v}"
        );
        assert!(v["first_seen"].as_u64().unwrap() <= v["last_seen"].as_u64().unwrap());
        assert!(v["known"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["level"] == 0 && k["sha256"] == sha.as_str()));
        assert_eq!(v["peers"]["rows"][0]["raddr"], "127.0.0.1");
        let parents = v["parents"]["rows"].as_array().unwrap();
        // The client's parent is this test; the forked server's is the client.
        assert!(parents.iter().any(|p| p["pexe"] == me.as_str()), "{v}");
        assert_eq!(v["users"]["rows"][0]["uid"], 0);
    }
    let r = get(&tcp, "/api/v1/exe?exe=/nonexistent/never-seen");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("never recorded"));

    let v = ok(&unix, "/api/v1/losses");
    assert!(v["sources"].is_array() && v["recent"].is_array(), "{v}");
    let v = ok(&tcp, "/api/v1/status");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["hook_set"], "tp_btf");
    assert!(v["counters"]["rows_written"].as_u64().unwrap() >= 2, "{v}");
    assert!(
        v["database"]["schema_version"].as_u64().unwrap() >= 3,
        "{v}"
    );

    // The live feeds saw exactly the rows of this executable.
    assert_eq!(sse.join().unwrap().sums, want, "SSE feed");
    assert_eq!(jsonl.join().unwrap().sums, want, "JSON-lines feed");

    // /metrics: every line is valid text format, and this executable's counters are exact.
    let r = get(&unix, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{r:?}"
    );
    for line in r.body.lines() {
        assert!(
            !matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Ignored
            ),
            "not Prometheus text format: {line:?}"
        );
    }
    let scrape =
        prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = |metric: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {metric} {label:?} in\n{}", r.body))
            .value
            .clone()
    };
    use prometheus_parse::Value as P;
    assert_eq!(
        sample("picosnitch_exe_send_bytes_total", Some(("exe", &exe_s))),
        P::Counter(want.0 as f64)
    );
    assert_eq!(
        sample("picosnitch_exe_recv_bytes_total", Some(("exe", &exe_s))),
        P::Counter(want.1 as f64)
    );
    assert_eq!(
        sample("picosnitch_hook_set_info", Some(("hook_set", "tp_btf"))),
        P::Gauge(1.0)
    );
    match sample("picosnitch_window_write_seconds", None) {
        P::Histogram(b) => {
            assert_eq!(b.len(), 14);
            assert!(b.last().unwrap().count >= 1.0);
        }
        other => panic!("histogram expected, got {other:?}"),
    }
    assert!(matches!(sample("picosnitch_rows_written_total", None), P::Counter(n) if n >= 2.0));
    assert!(matches!(
        sample("picosnitch_event_subscribers", None),
        P::Gauge(_)
    ));

    let stopped = daemon.stop();
    assert!(
        !stopped.root.path().join("run/picosnitch/api.sock").exists(),
        "socket removed at exit"
    );
}

/// Strings that would change a query if they were pasted into SQL.
const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "1; DROP TABLE connections; --",
    "1 OR 1=1",
    "exe) UNION SELECT sql FROM sqlite_schema --",
    "\"; DELETE FROM executables; --",
    "0x10",
    "1e3",
    "\u{0}",
];

fn schema(db: &Path) -> (String, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let sql: String = c
        .query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_schema",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let uv: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    (sql, uv)
}

fn refused(to: &To, target: &str, status: u16, naming: &str) {
    let r = get(to, target);
    assert_eq!(r.status, status, "{target}: {}", r.body);
    let err = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(naming),
        "{target}: error {err:?} does not name {naming:?}"
    );
}

#[test]
fn bad_requests_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let exe = unique_copy(dir.path(), "tg-api-bad");
    let exe_s = exe.to_string_lossy().into_owned();
    let daemon = Daemon::start(CONFIG);
    let addr = daemon.api_addr().unwrap();
    let tcp = To::Tcp(addr);
    let unix = To::Unix(daemon.api_socket());
    let db = daemon.root.path().join("var/lib/picosnitch/picosnitch.db");
    traffic(&exe);
    let want = (2 * BYTES, 2 * BYTES);
    wait_for_totals(&tcp, &exe_s, want);
    let before = schema(&db);

    let e = enc(&exe_s);
    for inj in INJECTIONS {
        let i = enc(inj);
        // Parameters that are numbers, dimensions or choices: 400 naming the parameter.
        for (target, naming) in [
            (format!("/api/v1/aggregate?by={i}"), "parameter by"),
            (format!("/api/v1/aggregate?by=exe,{i}"), "parameter by"),
            (format!("/api/v1/aggregate?from={i}"), "parameter from"),
            (format!("/api/v1/aggregate?to={i}"), "parameter to"),
            (format!("/api/v1/aggregate?limit={i}"), "parameter limit"),
            (format!("/api/v1/aggregate?order={i}"), "parameter order"),
            (
                format!("/api/v1/aggregate?exe={e}&uid={i}"),
                "parameter uid",
            ),
            (format!("/api/v1/aggregate?lport={i}"), "parameter lport"),
            (format!("/api/v1/distinct?dim={i}"), "parameter dim"),
            (
                format!("/api/v1/distinct?dim=exe&from={i}"),
                "parameter from",
            ),
            (
                format!("/api/v1/distinct?dim=exe&netns={i}"),
                "parameter netns",
            ),
            (format!("/api/v1/exe?exe={e}&limit={i}"), "parameter limit"),
            (format!("/api/v1/exe?sha256=x&to={i}"), "parameter to"),
            (format!("/api/v1/losses?from={i}"), "parameter from"),
            (format!("/api/v1/losses?limit={i}"), "parameter limit"),
            (format!("/api/v1/events?format={i}"), "parameter format"),
            (format!("/api/v1/status?{i}=1"), "unknown parameter"),
            (format!("/metrics?x={i}"), "unknown parameter \"x\""),
            (format!("/api/v1/aggregate?{i}=1"), "unknown parameter"),
        ] {
            refused(&tcp, &target, 400, naming);
        }
        // Text values are data: they match nothing (never everything) and are no error.
        for target in [
            format!("/api/v1/aggregate?by=exe&exe={i}"),
            format!("/api/v1/aggregate?by=exe&exe={e}{i}"),
            format!("/api/v1/aggregate?by=exe&sha256={i}"),
            format!("/api/v1/aggregate?by=exe&raddr={i}"),
            format!("/api/v1/aggregate?by=exe&exe={e}&domain={i}"),
            format!("/api/v1/distinct?dim=exe&cmdline={i}"),
        ] {
            let v = ok(&unix, &target);
            let rows = v
                .get("rows")
                .or(v.get("values"))
                .unwrap()
                .as_array()
                .unwrap();
            assert!(rows.is_empty(), "{target}: {v}");
        }
        for target in [
            format!("/api/v1/exe?exe={i}"),
            format!("/api/v1/exe?sha256={i}"),
        ] {
            refused(&tcp, &target, 404, "never recorded");
        }
    }

    // Huge ranges, limits and numbers, bad dimensions, missing or doubled parameters.
    for (target, naming) in [
        ("/api/v1/aggregate?from=0".to_string(), "at most 400 days"),
        (
            "/api/v1/aggregate?from=0&to=34560001".into(),
            "span 401 days",
        ),
        (
            "/api/v1/losses?from=1&to=99999999999".into(),
            "at most 400 days",
        ),
        ("/api/v1/distinct?dim=exe&from=0".into(), "at most 400 days"),
        ("/api/v1/exe?sha256=x&from=0".into(), "at most 400 days"),
        (
            "/api/v1/aggregate?to=99999999999999999999".into(),
            "parameter to",
        ),
        ("/api/v1/aggregate?from=-1".into(), "parameter from"),
        ("/api/v1/aggregate?from=20&to=10".into(), "not before"),
        (
            "/api/v1/aggregate?limit=10001".into(),
            "parameter limit = \"10001\"",
        ),
        ("/api/v1/aggregate?limit=0".into(), "parameter limit"),
        (
            "/api/v1/aggregate?by=pid".into(),
            "\"pid\" is not a dimension",
        ),
        ("/api/v1/aggregate?by=exe,exe".into(), "names exe twice"),
        ("/api/v1/aggregate?by=".into(), "parameter by"),
        (
            "/api/v1/aggregate?hour=1".into(),
            "unknown parameter \"hour\"",
        ),
        ("/api/v1/aggregate?by=exe&by=uid".into(), "more than once"),
        ("/api/v1/distinct".into(), "parameter dim is required"),
        ("/api/v1/distinct?dim=exe,uid".into(), "one dimension"),
        ("/api/v1/exe".into(), "exactly one of the parameters exe"),
        (format!("/api/v1/exe?exe={e}&sha256=x"), "exactly one"),
        (
            format!("/api/v1/aggregate?exe={}", "x".repeat(5000)),
            "longer than",
        ),
    ] {
        refused(&tcp, &target, 400, naming);
    }
    refused(&tcp, "/api/v1/nothing", 404, "no such endpoint");
    assert_eq!(
        raw(&tcp, "POST", "/api/v1/status", Some("localhost")).status,
        405
    );

    // DNS rebinding: on the loopback TCP listener only loopback Host names are answered.
    let port = addr.port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("10.1.2.3:{port}"),
        format!("[::2]:{port}"),
    ] {
        let r = raw(&tcp, "GET", "/api/v1/status", Some(&host));
        assert_eq!(r.status, 403, "Host {host}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("is refused"));
        assert_eq!(raw(&tcp, "GET", "/metrics", Some(&host)).status, 403);
    }
    assert_eq!(
        raw(&tcp, "GET", "/api/v1/status", None).status,
        403,
        "no Host"
    );
    for host in [
        format!("localhost:{port}"),
        "127.0.0.1".into(),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            raw(&tcp, "GET", "/api/v1/status", Some(&host)).status,
            200,
            "{host}"
        );
    }
    // The unix socket is not reachable by a browser: no Host check there.
    assert_eq!(
        raw(&unix, "GET", "/api/v1/status", Some("evil.example")).status,
        200
    );

    // Nothing changed: same schema, same totals, and the daemon still answers.
    assert_eq!(schema(&db), before);
    wait_for_totals(&unix, &exe_s, want);
    let stopped = daemon.stop();
    assert!(!stopped.log.contains("panicked"), "{}", stopped.log);
}

#[test]
fn a_taken_api_port_is_a_warning_and_the_unix_socket_still_serves() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let daemon = Daemon::start(&format!(
        "[database]\nwrite_limit_seconds = 1\n[api]\nlisten = \"{addr}\"\n"
    ));
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "cannot listen on {addr}, the API is not served there"
        )),
        "{log}"
    );
    assert_eq!(daemon.api_addr(), None, "{log}");
    let unix = To::Unix(daemon.api_socket());
    assert_eq!(ok(&unix, "/api/v1/status")["hook_set"], "tp_btf");
    let stopped = daemon.stop();
    assert!(!stopped.log.contains("panicked"), "{}", stopped.log);

    // A bad address is a config error naming the key, before anything starts.
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("c.toml");
    std::fs::write(&cfg, "[api]\nlisten = \"localhost:http\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["start-no-daemon", "--config"])
        .arg(&cfg)
        .env("PICOSNITCH_ROOT", root.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("api.listen = \"localhost:http\" is not allowed"),
        "{err}"
    );
}
