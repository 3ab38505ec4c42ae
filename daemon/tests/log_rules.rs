//! log_rules: the `[log]` section of the config file reaches the daemon's row filter: an ignored
//! sha256 leaves no rows (also when its hash arrives after its window was stored as `!pending`),
//! `addresses = false` stores rows without addresses.
mod common;

use common::*;
use std::process::Command;

#[test]
fn the_config_file_log_section_filters_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    // 192 MiB of padding: its hash takes long enough that its rows are often stored `!pending`
    // first and dropped when the hash arrives.
    let ignored = dir.path().join("tg-ignored");
    let mut padded = std::fs::read(trafficgen()).unwrap();
    padded.resize(padded.len() + (192 << 20), 0);
    std::fs::write(&ignored, padded).unwrap();
    std::fs::set_permissions(
        &ignored,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
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
