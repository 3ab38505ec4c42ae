//! query: `picosnitch query` prints what real traffic stored, summed by the dimensions asked for,
//! as a table, JSON or CSV, and refuses bad dimensions, filters and times by name.
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn query(db: &Path, args: &[&str]) -> Output {
    on_db(db, "query", args)
}

#[test]
fn query_prints_stored_traffic_by_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-query");
    let exe_s = exe.to_string_lossy().into_owned();
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "777"]));
    let stopped = daemon.stop();
    let filter = format!("exe={exe_s}");

    let json: serde_json::Value = serde_json::from_str(&success_stdout(&query(
        &stopped.db,
        &[
            "--by", "exe,name", "--where", &filter, "--from", "1h", "--format", "json",
        ],
    )))
    .unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["exe"], exe_s.as_str());
    assert_eq!(rows[0]["name"], "tg-query");
    assert_eq!(
        (rows[0]["send"].as_i64(), rows[0]["recv"].as_i64()),
        (Some(777), Some(777))
    );

    let csv = success_stdout(&query(
        &stopped.db,
        &["--by", "exe", "--where", &filter, "--csv"],
    ));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("exe,send,recv,events"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{exe_s},777,777,")),
        "{csv}"
    );

    let table = success_stdout(&query(
        &stopped.db,
        &["--by", "exe,rport", "--where", &filter],
    ));
    assert!(table.lines().next().unwrap().starts_with("exe"), "{table}");
    assert!(table.contains(&exe_s), "{table}");

    // An injection attempt is a value like any other: no rows, nothing else happens.
    let evil = "exe=x' OR '1'='1'; DROP TABLE connections; --";
    let json: serde_json::Value = serde_json::from_str(&success_stdout(&query(
        &stopped.db,
        &["--where", evil, "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 0, "{json}");
    assert!(!rows_for_exe(&stopped.db, &exe).is_empty());

    for (args, says) in [
        (vec!["--by", "exe,colour"], "\"colour\" is not a dimension"),
        (
            vec!["--where", "colour=red"],
            "unknown parameter \"colour\"",
        ),
        (vec!["--from", "2y"], "unit \"y\""),
        (vec!["--from", "900d"], "at most 400 days"),
        (vec!["--limit", "100000"], "limit"),
    ] {
        let o = query(&stopped.db, &args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
