//! geoip: a small MaxMind-format database built here with MaxMind's own writer (Debian's
//! libmaxmind-db-writer-perl); `picosnitch geoip` must read country, city and autonomous system
//! from it, the daemon must name the database it uses (and start without one), and real traffic
//! to addresses of the database must come out of the API and `picosnitch query` by country.
mod api_support;
mod common;

use api_support::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WRITER: &str = r#"
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my %types = (country => 'map', registered_country => 'map', iso_code => 'utf8_string',
  names => 'map', en => 'utf8_string', de => 'utf8_string', city => 'map',
  autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(ip_version => 6, record_size => 24,
  database_type => 'picosnitch-Test', languages => ['en'],
  description => { en => 'picosnitch test' }, map_key_type_callback => sub { $types{ $_[0] } },
  alias_ipv6_to_ipv4 => 1, remove_reserved_networks => 0);
$tree->insert_network('192.0.2.0/24', {
  country => { iso_code => 'DE', names => { en => 'Germany', de => 'Deutschland' } },
  city => { names => { en => 'Berlin' } },
  autonomous_system_number => 64500, autonomous_system_organization => 'Example AS' });
$tree->insert_network('2001:db8::/32',
  { registered_country => { iso_code => 'FR', names => { en => 'France' } } });
open my $fh, '>:raw', $ARGV[0] or die "$ARGV[0]: $!";
$tree->write_tree($fh);
close $fh or die;
"#;

fn build_db(path: &Path) {
    let out = Command::new("perl")
        .args(["-e", WRITER])
        .arg(path)
        .output()
        .expect("perl");
    assert!(
        out.status.success(),
        "building the test database needs libmaxmind-db-writer-perl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lookup(db: &Path, addrs: &[&str]) -> Vec<Value> {
    json_lines(
        Command::new(BIN)
            .args(["geoip", "--database"])
            .arg(db)
            .args(addrs),
    )
}

#[test]
fn lookups_read_country_city_and_as() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.mmdb");
    build_db(&db);
    let got = lookup(
        &db,
        &[
            "192.0.2.7",
            "::ffff:192.0.2.9",
            "2001:db8::1",
            "198.51.100.1",
        ],
    );
    for v in &got[..2] {
        assert_eq!(v["country"], "DE", "{v}");
        assert_eq!(v["country_name"], "Germany", "{v}");
        assert_eq!(v["city"], "Berlin", "{v}");
        assert_eq!(v["asn"], 64500, "{v}");
        assert_eq!(v["as_org"], "Example AS", "{v}");
    }
    // Only a registered country: it stands in for the location's.
    assert_eq!(got[2]["country"], "FR", "{}", got[2]);
    assert!(got[2]["city"].is_null() && got[2]["asn"].is_null());
    // Not in the database.
    assert_eq!(got[3]["addr"], "198.51.100.1");
    assert!(got[3]["country"].is_null());
    // No database at all: the command says so and fails, naming the path.
    let out = Command::new(BIN)
        .args(["geoip", "--database", "/nonexistent/none.mmdb", "192.0.2.7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/none.mmdb"));
}

#[test]
fn daemon_names_its_database_and_runs_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.mmdb");
    build_db(&db);
    let d = Daemon::start(&format!("[geoip]\ndatabases = [\"{}\"]\n", db.display()));
    let stopped = d.stop();
    assert!(
        stopped.log.contains("GeoIP database in use") && stopped.log.contains("picosnitch-Test"),
        "{}",
        stopped.log
    );
    // Started before the database exists: no GeoIP, until SIGHUP reopens the configured path.
    let late = dir.path().join("late.mmdb");
    let d = Daemon::start(&format!("[geoip]\ndatabases = [\"{}\"]\n", late.display()));
    assert!(d.log().contains("no GeoIP database found"), "{}", d.log());
    let to = To::Tcp(d.api_addr().expect("API address in the log"));
    assert_eq!(
        ok(&to, "/api/v1/status")["geoip_databases"],
        serde_json::json!([])
    );
    let refused = get(&to, "/api/v1/aggregate?by=country");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("GeoIP"), "{}", refused.body);
    build_db(&late);
    // SAFETY: plain kill(2) on the test's own child.
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    let status = poll(&to, "/api/v1/status", |v| {
        v["geoip_databases"][0]["type"] == "picosnitch-Test"
    });
    assert_eq!(
        status["geoip_databases"][0]["path"],
        late.to_string_lossy().as_ref()
    );
    assert_eq!(get(&to, "/api/v1/aggregate?by=country").status, 200);
    d.stop();
}

/// A network namespace whose loopback carries documentation addresses of the test database.
struct GeoNetns(String);

const NS_ADDRS: &[&str] = &["192.0.2.7/32", "2001:db8::1/128", "198.51.100.1/32"];

impl GeoNetns {
    fn new() -> GeoNetns {
        let name = format!("psgeo{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let ns = GeoNetns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        for a in NS_ADDRS {
            let mut args = vec!["-n", &ns.0, "addr", "add", a, "dev", "lo"];
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&args);
        }
        ns
    }
}

impl Drop for GeoNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const BYTES: i64 = 200_000;

/// Polls `target` until `done` accepts the answer (30 s at most).
fn poll(to: &To, target: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = ok(to, target);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{target}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn answers_group_and_annotate_by_country() {
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("test.mmdb");
    build_db(&mmdb);
    let ns = GeoNetns::new();
    let gen = trafficgen();
    // One generator per address: Germany, France (registered country only), not in the database.
    let cases = [
        ("tg-de", "192.0.2.7"),
        ("tg-fr", "2001:db8::1"),
        ("tg-none", "198.51.100.1"),
    ];
    let exes: Vec<_> = cases
        .iter()
        .map(|(n, _)| copy_exe(&gen, dir.path(), n))
        .collect();
    let d = Daemon::start(&format!(
        "[database]\nwrite_limit_seconds = 1\n[geoip]\ndatabases = [\"{}\"]\n",
        mmdb.display()
    ));
    let to = To::Tcp(d.api_addr().expect("API address in the log"));
    let feed = follow(
        to.clone(),
        true,
        exes[0].to_string_lossy().into_owned(),
        (BYTES, BYTES),
    );
    for ((_, addr), exe) in cases.iter().zip(&exes) {
        let out = run_json(
            Command::new("ip")
                .args(["netns", "exec", &ns.0])
                .arg(exe)
                .args(["tcp-up", "--addr", addr, "--bytes", &BYTES.to_string()]),
        );
        assert_eq!(out["sent"].as_i64(), Some(BYTES), "{out}");
    }
    // The live feed's rows say where their remote address is, too.
    let followed = feed.join().unwrap();
    assert_eq!(followed.sums, (BYTES, BYTES));
    for r in &followed.rows {
        assert_eq!(r["geo"]["country"], "DE", "{r}");
    }
    let exe_q = |i: usize| enc(&exes[i].to_string_lossy());
    // Client and forked server are the same executable: BYTES sent and BYTES received.
    let full = |v: &Value| {
        v["rows"].as_array().is_some_and(|r| {
            r.len() == 1 && r[0]["send"].as_i64() == Some(BYTES) && r[0]["recv"] == BYTES
        })
    };
    let de = poll(
        &to,
        &format!("/api/v1/aggregate?by=country&exe={}", exe_q(0)),
        full,
    );
    assert_eq!(de["rows"][0]["country"], "DE", "{de}");
    assert_eq!(de["rows"][0]["country_name"], "Germany", "{de}");
    let fr = poll(
        &to,
        &format!("/api/v1/aggregate?by=country,asn&exe={}", exe_q(1)),
        full,
    );
    assert_eq!(fr["rows"][0]["country"], "FR", "{fr}");
    assert!(fr["rows"][0]["asn"].is_null(), "{fr}");
    let none = poll(
        &to,
        &format!("/api/v1/aggregate?by=country&exe={}", exe_q(2)),
        full,
    );
    assert_eq!(none["rows"][0]["country"], "", "{none}");
    // Rows by remote address carry what the database knows of it.
    let by_addr = ok(&to, &format!("/api/v1/aggregate?by=raddr&exe={}", exe_q(0)));
    let row = &by_addr["rows"][0];
    assert_eq!(row["raddr"], "192.0.2.7", "{by_addr}");
    assert_eq!(row["geo"]["city"], "Berlin", "{by_addr}");
    assert_eq!(row["geo"]["asn"], 64500, "{by_addr}");
    let by_as = ok(&to, &format!("/api/v1/aggregate?by=asn&exe={}", exe_q(0)));
    assert_eq!(by_as["rows"][0]["asn"], 64500, "{by_as}");
    assert_eq!(by_as["rows"][0]["as_org"], "Example AS", "{by_as}");
    // Sums regroup exactly: the three executables together by country.
    let all = ok(&to, "/api/v1/aggregate?by=exe,country&limit=10000");
    for (i, want) in ["DE", "FR", ""].iter().enumerate() {
        let exe = exes[i].to_string_lossy();
        let rows: Vec<&Value> = all["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["exe"] == *exe)
            .collect();
        assert_eq!(rows.len(), 1, "{exe}: {all}");
        assert_eq!(rows[0]["country"], *want, "{exe}: {all}");
    }
    let distinct = ok(&to, "/api/v1/distinct?dim=country");
    let values = distinct["values"].as_array().unwrap();
    assert!(
        values.contains(&"DE".into()) && values.contains(&"FR".into()),
        "{distinct}"
    );
    let drill = ok(&to, &format!("/api/v1/exe?exe={}", exe_q(0)));
    assert_eq!(drill["countries"]["rows"][0]["country"], "DE", "{drill}");
    assert_eq!(drill["peers"]["rows"][0]["geo"]["country"], "DE", "{drill}");
    let status = ok(&to, "/api/v1/status");
    assert_eq!(
        status["geoip_databases"][0]["type"], "picosnitch-Test",
        "{status}"
    );
    // Not a filter, and not a dimension of its own: clean refusals.
    let r = get(&to, "/api/v1/aggregate?country=DE");
    assert_eq!(r.status, 400, "{}", r.body);
    let stopped = d.stop();

    // The CLI: the same groups from the configuration's databases, as CSV and as a table.
    let config = stopped.root.path().join("config.toml");
    let query = |extra: &[&str]| {
        Command::new(BIN)
            .args(["query", "--from", "1d", "--db"])
            .arg(&stopped.db)
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };
    let where_de = format!("exe={}", exes[0].display());
    let out = query(&["--by", "country", "--where", &where_de, "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("country,country_name,send,recv,events"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("DE,Germany,{BYTES},{BYTES},")),
        "{csv}"
    );
    let out = query(&["--by", "raddr", "--where", &where_de]);
    let table = String::from_utf8(out.stdout).unwrap();
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["raddr", "country", "city", "asn", "as_org", "send", "recv", "events"]
    );
    assert!(
        table.contains("192.0.2.7") && table.contains("Berlin"),
        "{table}"
    );
    // export: every row of the German peer says where it is, as CSV and JSON lines.
    let export_where = |format: &str, filter: &str| {
        let out = Command::new(BIN)
            .args(["export", "--from", "1d", format, "--where", filter, "--db"])
            .arg(&stopped.db)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let export = |format: &str| export_where(format, &where_de);
    let csv = export("--csv");
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let head = r.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    assert_eq!(head.len(), 31, "{head:?}");
    let records: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert!(!records.is_empty(), "{csv}");
    for rec in &records {
        assert_eq!(rec.len(), 31);
        assert_eq!(&rec[col("raddr")], "192.0.2.7", "{rec:?}");
        assert_eq!(&rec[col("country")], "DE", "{rec:?}");
        assert_eq!(&rec[col("city")], "Berlin", "{rec:?}");
        assert_eq!(&rec[col("asn")], "64500", "{rec:?}");
    }
    let lines: Vec<Value> = export("--json")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len());
    assert!(
        lines.iter().all(|l| l["geo"]["as_org"] == "Example AS"),
        "{lines:?}"
    );
    // An address the database does not know: empty cells, the columns stay aligned.
    let unknown = export_where("--csv", &format!("exe={}", exes[2].display()));
    let mut r = csv::Reader::from_reader(unknown.as_bytes());
    let rec = r.records().next().expect("a row").unwrap();
    assert_eq!(rec.len(), 31, "{rec:?}");
    assert_eq!(
        (&rec[col("raddr")], &rec[col("country")]),
        ("198.51.100.1", "")
    );
    // Without a GeoIP database, grouping by country is refused, naming why.
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[geoip]\ndatabases = []\n").unwrap();
    let out = Command::new(BIN)
        .args(["query", "--by", "country", "--db"])
        .arg(&stopped.db)
        .arg("--config")
        .arg(&off)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GeoIP database") && err.contains("country"),
        "{err}"
    );
}
