//! log_rules: the `[log]` section of the config file reaches the daemon's row filter: an ignored
//! sha256 leaves no rows, `addresses = false` stores rows without addresses.
mod common;

use common::*;
use std::process::Command;

#[test]
fn the_config_file_log_section_filters_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ignored = copy_exe(&trafficgen(), dir.path(), "tg-ignored");
    // A different binary: the generator with one byte appended still runs the same.
    let kept = dir.path().join("tg-kept");
    let mut bytes = std::fs::read(trafficgen()).unwrap();
    bytes.push(0);
    std::fs::write(&kept, bytes).unwrap();
    std::fs::set_permissions(&kept, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(&format!(
        "[database]\nwrite_limit_seconds = 1\n\
         [log]\naddresses = false\nignore_sha256 = [\"{}\"]\n",
        sha256sum(&ignored).to_uppercase()
    ));
    run_json(Command::new(&ignored).args(["tcp-up", "--bytes", "1111"]));
    let json = run_json(Command::new(&kept).args(["tcp-up", "--bytes", "2222"]));
    let stopped = daemon.stop();
    assert!(
        rows_for_exe(&stopped.db, &ignored).is_empty(),
        "{}",
        stopped.log
    );
    let rows = rows_for_exe(&stopped.db, &kept);
    let client: Vec<&DbRow> = rows
        .iter()
        .filter(|r| r.lport == json["lport"].as_i64().unwrap())
        .collect();
    assert_eq!(sum(&client), (2222, 0), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.laddr.is_empty() && r.raddr.is_empty()),
        "{rows:?}"
    );
}
