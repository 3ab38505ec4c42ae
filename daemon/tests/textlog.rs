//! textlog: `[database] text_log = true` writes every stored row to conn.log as picosnitch 2's
//! 25-field CSV, and the lines add up to the database.
mod common;

use common::*;
use std::process::Command;

#[test]
fn conn_log_lines_match_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-textlog");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\ntext_log = true\n");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "321"]));
    run_json(Command::new(&exe).args(["udp-connected", "--count", "3", "--size", "100"]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stopped = daemon.stop();
    let log = stopped.root.path().join("var/log/picosnitch/conn.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let exe_s = exe.to_string_lossy();
    let (mut send, mut recv, mut lines) = (0i64, 0i64, 0);
    for rec in rd.records() {
        let rec = rec.unwrap();
        assert_eq!(rec.len(), 25, "{rec:?}");
        if &rec[4] == exe_s.as_ref() {
            send += rec[1].parse::<i64>().unwrap();
            recv += rec[2].parse::<i64>().unwrap();
            lines += 1;
            assert_eq!(&rec[5], "tg-textlog");
            assert_eq!(rec[7].len(), 64, "sha256: {rec:?}");
        }
    }
    let rows = rows_for_exe(&stopped.db, &exe);
    assert_eq!(lines, rows.len(), "{text}");
    assert_eq!((send, recv), sum(&rows.iter().collect::<Vec<_>>()));
    assert_eq!((send, recv), (321 + 600, 321 + 600), "{text}");
}
