//! export: `picosnitch export` prints every row real traffic stored, resolved, in time order, as
//! CSV or JSON lines whose sums agree with `picosnitch query`; filters narrow it and bad
//! arguments are refused by name.
mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::Command;

const COLUMNS: [&str; 26] = [
    "contime",
    "exe",
    "name",
    "cmdline",
    "sha256",
    "pexe",
    "pname",
    "pcmdline",
    "psha256",
    "gpexe",
    "gpname",
    "gpcmdline",
    "gpsha256",
    "uid",
    "family",
    "protocol",
    "lport",
    "rport",
    "laddr",
    "raddr",
    "domain",
    "netns",
    "container",
    "send",
    "recv",
    "events",
];

/// A row as its column name → text, the same for CSV records and JSON objects.
type Cells = BTreeMap<String, String>;

fn csv_rows(text: &str) -> Vec<Cells> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, COLUMNS, "CSV header");
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), COLUMNS.len());
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn json_rows(text: &str) -> Vec<Cells> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"));
            let o = v.as_object().unwrap();
            assert_eq!(o.len(), COLUMNS.len(), "{l}");
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        other => panic!("{k} = {other} in {l}"),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .collect()
}

fn int(c: &Cells, k: &str) -> i64 {
    c[k].parse().unwrap_or_else(|_| panic!("{k} = {:?}", c[k]))
}

/// send and recv summed per executable.
fn sums(rows: &[Cells]) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for r in rows {
        let e = out.entry(r["exe"].clone()).or_insert((0, 0));
        e.0 += int(r, "send");
        e.1 += int(r, "recv");
    }
    out
}

#[test]
fn export_prints_every_stored_row_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = copy_exe(&trafficgen(), dir.path(), "tg-export-tcp");
    let udp = copy_exe(&trafficgen(), dir.path(), "tg-export-udp");
    let (tcp_s, udp_s) = (
        tcp.to_string_lossy().into_owned(),
        udp.to_string_lossy().into_owned(),
    );
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let t = run_json(Command::new(&tcp).args(["tcp-duplex", "--bytes", "54321"]));
    run_json(Command::new(&udp).args(["udp-connected", "--count", "7", "--size", "300"]));
    let stopped = daemon.stop();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (from, to) = ((now - 3600).to_string(), (now + 1).to_string());
    let range = ["--from", from.as_str(), "--to", to.as_str()];

    let csv = csv_rows(&success_stdout(&on_db(&stopped.db, "export", &range)));
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM connections WHERE contime >= ?1 AND contime < ?2",
            [now as i64 - 3600, now as i64 + 1],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        csv.len() as i64,
        stored,
        "one line per stored row: {csv:#?}"
    );
    let times: Vec<i64> = csv.iter().map(|r| int(r, "contime")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Sums per executable are what `query` sums over the same range.
    let q: serde_json::Value = serde_json::from_str(&success_stdout(&on_db(
        &stopped.db,
        "query",
        &[
            &range[..],
            &["--by", "exe", "--limit", "10000", "--format", "json"],
        ]
        .concat(),
    )))
    .unwrap();
    let queried: BTreeMap<String, (i64, i64)> = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let e = r["exe"].as_str().unwrap().to_string();
            (
                e,
                (r["send"].as_i64().unwrap(), r["recv"].as_i64().unwrap()),
            )
        })
        .collect();
    assert_eq!(q["truncated"], false);
    let exported = sums(&csv);
    assert_eq!(exported, queried);
    assert!(exported.contains_key(&tcp_s) && exported.contains_key(&udp_s));

    // The columns are resolved: the TCP client's row names its executable, hash and peer.
    let client: Vec<&Cells> = csv
        .iter()
        .filter(|r| r["exe"] == tcp_s && int(r, "lport") == t["lport"].as_i64().unwrap())
        .collect();
    assert!(!client.is_empty(), "{csv:?}");
    let c = client[0];
    assert_eq!(c["name"], "tg-export-tcp");
    assert_eq!(c["sha256"], sha256sum(&tcp));
    assert_eq!(
        (c["raddr"].as_str(), c["laddr"].as_str()),
        ("127.0.0.1", "127.0.0.1")
    );
    assert_eq!(int(c, "rport"), t["rport"].as_i64().unwrap());
    assert_eq!((int(c, "protocol"), int(c, "family")), (6, 2));
    assert!(!c["pexe"].is_empty() && !c["pname"].is_empty(), "{c:?}");
    let client_sum = client
        .iter()
        .fold((0, 0), |(s, r), x| (s + int(x, "send"), r + int(x, "recv")));
    assert_eq!(client_sum, (54321, 54321));

    // JSON lines: the same rows, value for value.
    let json = json_rows(&success_stdout(&on_db(
        &stopped.db,
        "export",
        &[&range[..], &["--json"]].concat(),
    )));
    assert_eq!(json, csv);

    // A filter narrows to its rows, and to all of them.
    let only = format!("exe={udp_s}");
    let filtered = csv_rows(&success_stdout(&on_db(
        &stopped.db,
        "export",
        &[&range[..], &["--where", &only]].concat(),
    )));
    let want: Vec<&Cells> = csv.iter().filter(|r| r["exe"] == udp_s).collect();
    assert!(!filtered.is_empty() && filtered.len() < csv.len());
    assert_eq!(filtered.iter().collect::<Vec<_>>(), want);
    // Client and its forked server (the same executable): 7 datagrams of 300 bytes, echoed.
    assert_eq!(sums(&filtered)[&udp_s], (4200, 4200));
    let two = csv_rows(&success_stdout(&on_db(
        &stopped.db,
        "export",
        &[&range[..], &["--where", &only, "--where", "protocol=6"]].concat(),
    )));
    assert!(two.is_empty(), "{two:?}");
    // Nothing in an empty range: the header only.
    let empty = success_stdout(&on_db(
        &stopped.db,
        "export",
        &["--from", "100", "--to", "200"],
    ));
    assert_eq!(empty, format!("{}\n", COLUMNS.join(",")));

    for (args, says) in [
        (
            vec!["--from", "soon"],
            "--from: \"soon\" is not unix seconds",
        ),
        (vec!["--to", "3y"], "unit \"y\""),
        (
            vec!["--where", "colour=red"],
            "unknown parameter \"colour\"",
        ),
        (vec!["--where", "hour=1"], "unknown parameter \"hour\""),
        (
            vec!["--where", "uid=root"],
            "uid = \"root\" is not an integer",
        ),
        (
            vec!["--where", "exe"],
            "--where \"exe\": expected DIM=VALUE",
        ),
        (vec!["--from", "900d"], "at most 400 days"),
        (vec!["--format", "xml"], "invalid value 'xml'"),
        (vec!["--json", "--format", "csv"], "cannot be used with"),
    ] {
        let o = on_db(&stopped.db, "export", &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = on_db(&dir.path().join("none.db"), "export", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open database"));
}
