//! tests.rs: the API's queries against a database written by the store's own writer.
use super::dims::find;
use super::exe::{drill, Selector};
use super::feed::test_row;
use super::params::{Extra, Filter, Params, Range};
use super::query::{losses, Aggregate, Distinct, Order};
use crate::model::{ExeIdent, Row};
use crate::store::Store;
use rusqlite::Connection;
use std::sync::Arc;

fn row(exe: &str, raddr: &str, contime: i64, send: u64, recv: u64) -> Row {
    let mut r = test_row(exe, send, recv);
    r.contime = contime;
    r.key.raddr = raddr.into();
    r.key.exe = Arc::new(ExeIdent {
        exe: exe.into(),
        name: exe.rsplit('/').next().unwrap_or_default().into(),
        cmdline: format!("{exe} --flag"),
        sha256: format!("{:0>64}", exe.len()),
    });
    r
}

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let mut s = Store::open(&path).unwrap();
    s.write_batch(&[
        row("/usr/bin/curl", "1.1.1.1", 1000, 10, 100),
        row("/usr/bin/curl", "8.8.8.8", 1000, 20, 200),
        row("/usr/bin/curl", "1.1.1.1", 5000, 40, 400),
        row("/bin/ssh", "9.9.9.9", 1500, 1, 2),
        row("/bin/x' OR '1'='1", "9.9.9.9", 1500, 7, 7),
    ])
    .unwrap();
    s.observe(
        "",
        0,
        &ExeIdent {
            exe: "/usr/bin/curl".into(),
            name: "curl".into(),
            cmdline: String::new(),
            sha256: "h1".into(),
        },
        900,
    )
    .unwrap();
    s.record_loss(1200, "ringbuf_full", 3).unwrap();
    s.record_loss(1300, "ringbuf_full", 4).unwrap();
    s.record_loss(1300, "exe_unavailable", 1).unwrap();
    drop(s);
    let conn = Connection::open(&path).unwrap();
    (dir, conn)
}

fn agg(by: &[&str], filters: &[(&str, &str)], range: Range, order: Order) -> Aggregate {
    Aggregate {
        by: by.iter().map(|n| find(n).unwrap()).collect(),
        range,
        filters: filters
            .iter()
            .map(|(d, v)| Filter::new(find(d).unwrap(), v).unwrap())
            .collect(),
        order,
        limit: 100,
    }
}

const ALL: Range = Range {
    from: 0,
    to: 10_000,
};

#[test]
fn aggregates_sum_exactly() {
    let (_d, c) = db();
    let out = agg(&["exe"], &[], ALL, Order::Bytes)
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["exe"], "/usr/bin/curl");
    assert_eq!(
        (rows[0]["send"].as_i64(), rows[0]["recv"].as_i64()),
        (Some(70), Some(700))
    );
    assert_eq!(rows[0]["rows"], 3);
    assert_eq!(out["truncated"], false);
    // A filter and a range.
    let out = agg(
        &["raddr"],
        &[("exe", "/usr/bin/curl")],
        Range { from: 0, to: 2000 },
        Order::Key,
    )
    .run(&c, None, &mut crate::api::budget::Budget::answer())
    .unwrap();
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["raddr"], "1.1.1.1");
    assert_eq!(rows[0]["send"], 10);
    // Hours, integers stay integers.
    let out = agg(&["hour", "uid"], &[], ALL, Order::Key)
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    assert_eq!(out["rows"][0]["hour"], 0);
    assert_eq!(out["rows"][1]["hour"], 3600);
    assert_eq!(out["rows"][1]["send"], 40);
    // Totals of nothing are zeros.
    let out = agg(&[], &[], Range { from: 0, to: 1 }, Order::Bytes)
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    assert_eq!(out["rows"][0]["send"], 0);
    // A limit cuts and says so.
    let mut q = agg(&["raddr"], &[], ALL, Order::Bytes);
    q.limit = 1;
    let out = q
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 1);
    assert_eq!(out["truncated"], true);
}

#[test]
fn injection_strings_are_values() {
    let (_d, c) = db();
    let out = agg(
        &["exe"],
        &[("exe", "/usr/bin/curl' OR '1'='1")],
        ALL,
        Order::Bytes,
    )
    .run(&c, None, &mut crate::api::budget::Budget::answer())
    .unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 0);
    // The path that looks like an injection is found as itself, and only it.
    let out = agg(&["exe"], &[("exe", "/bin/x' OR '1'='1")], ALL, Order::Bytes)
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 1);
    assert_eq!(out["rows"][0]["send"], 7);
    let q = Params::parse(
        Some("by=exe;DROP%20TABLE%20connections"),
        &["by"],
        Extra::Filters,
    )
    .unwrap();
    assert!(q.dims("by").is_err());
    let n: i64 = c
        .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5);
}

#[test]
fn distinct_values() {
    let (_d, c) = db();
    let q = Distinct {
        dim: find("raddr").unwrap(),
        range: ALL,
        filters: vec![Filter::new(find("exe").unwrap(), "/usr/bin/curl").unwrap()],
        limit: 10,
    };
    let out = q
        .run(&c, None, &mut crate::api::budget::Budget::answer())
        .unwrap();
    assert_eq!(out["values"], serde_json::json!(["1.1.1.1", "8.8.8.8"]));
    let q = Distinct {
        dim: find("lport").unwrap(),
        range: ALL,
        filters: vec![],
        limit: 10,
    };
    assert_eq!(
        q.run(&c, None, &mut crate::api::budget::Budget::answer())
            .unwrap()["values"],
        serde_json::json!([1])
    );
}

#[test]
fn drill_down_of_one_executable() {
    let (_d, c) = db();
    let sel = Selector::Exe("/usr/bin/curl".into());
    let out = drill(&c, &sel, ALL, 10, None).unwrap().unwrap();
    assert_eq!(out["exe"], "/usr/bin/curl");
    // The rows' parent is the same path under another name (see test_row).
    assert_eq!(out["names"], serde_json::json!(["curl", "x\"y"]));
    assert_eq!(out["first_seen"], 900);
    assert_eq!(out["known"][0]["sha256"], "h1");
    assert_eq!(out["totals"]["send"], 70);
    assert_eq!(out["totals"]["recv"], 700);
    assert_eq!(out["peers"]["rows"][0]["raddr"], "1.1.1.1");
    assert_eq!(out["peers"]["rows"][0]["send"], 50);
    assert_eq!(out["parents"]["rows"][0]["pexe"], "/usr/bin/curl");
    let by_hash = Selector::Sha256(format!("{:0>64}", "/bin/ssh".len()));
    let out = drill(&c, &by_hash, ALL, 10, None).unwrap().unwrap();
    assert_eq!(out["paths"], serde_json::json!(["/bin/ssh"]));
    assert_eq!(out["totals"]["recv"], 2);
    assert!(drill(&c, &Selector::Exe("/nope".into()), ALL, 10, None)
        .unwrap()
        .is_none());
}

#[test]
fn losses_by_source() {
    let (_d, c) = db();
    let out = losses(&c, ALL, 2).unwrap();
    assert_eq!(out["sources"][0]["source"], "ringbuf_full");
    assert_eq!(out["sources"][0]["count"], 7);
    assert_eq!(out["sources"][0]["reports"], 2);
    assert_eq!(out["recent"].as_array().unwrap().len(), 2);
    assert_eq!(out["recent"][0]["contime"], 1300);
    let none = losses(&c, Range { from: 0, to: 1000 }, 2).unwrap();
    assert_eq!(none["sources"], serde_json::json!([]));
}
