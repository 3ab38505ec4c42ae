//! migrate: picosnitch 1 and 2 databases and a picosnitch 1 config.json are imported by
//! `picosnitch migrate`: every row, resumably, and a picosnitch 2 database at this version's own
//! path is moved aside instead of being opened in place.
mod common;

use common::BIN;
use rusqlite::Connection;
use std::path::Path;
use std::process::{Command, Output};

fn migrate(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("migrate")
        .args(args)
        .env("PICOSNITCH_ROOT", root)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A picosnitch 1 `snitch.db` with `n` rows: one table of text, local times.
fn v1_db(path: &Path, n: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE connections (contime text, send integer, recv integer, exe text, name text,
         cmdline text, sha256 text, pexe text, pname text, pcmdline text, psha256 text,
         uid integer, lport integer, rport integer, laddr text, raddr text, domain text);
         PRAGMA user_version = 3;",
    )
    .unwrap();
    c.execute_batch("BEGIN").unwrap();
    for i in 0..n {
        c.execute(
            "INSERT INTO connections VALUES ('2022-03-01 10:00:00', ?1, ?2, '/usr/bin/curl',
             'curl', 'curl https://www.example.com', 'aa', '/usr/bin/bash', 'bash', 'bash', 'bb',
             1000, 40000, 443, '10.0.0.2', '93.184.216.34', 'www.example.com')",
            [i, 2 * i],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

/// A picosnitch 2 `picosnitch.db` with `n` rows.
fn v2_db(path: &Path, n: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE executables (id INTEGER PRIMARY KEY, exe TEXT, name TEXT, cmdline TEXT,
           sha256 TEXT, UNIQUE (exe, name, cmdline, sha256));
         INSERT INTO executables VALUES (0, '', '', '', ''), (1, '/usr/bin/wget', 'wget',
           'wget x', 'cc'), (2, '/usr/bin/zsh', 'zsh', 'zsh', 'dd');
         CREATE TABLE domains (id INTEGER PRIMARY KEY, domain TEXT UNIQUE);
         INSERT INTO domains VALUES (0, ''), (1, 'org.example');
         CREATE TABLE addresses (id INTEGER PRIMARY KEY, addr TEXT UNIQUE);
         INSERT INTO addresses VALUES (0, ''), (1, '::1'), (2, '2001:db8::1');
         CREATE TABLE connections (contime INTEGER, send INTEGER, recv INTEGER, events INTEGER,
           exe_id INTEGER, pexe_id INTEGER, gpexe_id INTEGER, uid INTEGER, family INTEGER,
           protocol INTEGER, lport INTEGER, rport INTEGER, laddr_id INTEGER, raddr_id INTEGER,
           domain_id INTEGER, netns INTEGER);
         CREATE INDEX c_t ON connections (contime);
         PRAGMA user_version = 4;",
    )
    .unwrap();
    for i in 0..n {
        c.execute(
            "INSERT INTO connections VALUES (1700000000 + ?1, ?1, 7, 2, 1, 2, 0, 1000, 10, 6,
             50000, 80, 1, 2, 1, 4026531840)",
            [i],
        )
        .unwrap();
    }
}

fn totals(db: &Path, exe: &str) -> (i64, i64, i64) {
    let c = Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*), COALESCE(sum(send), 0), COALESCE(sum(recv), 0) FROM connections c
         JOIN executables e ON e.id = c.exe_id WHERE e.exe = ?1",
        [exe],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

#[test]
fn picosnitch_1_and_2_histories_are_imported_once() {
    let root = tempfile::tempdir().unwrap();
    let v1 = root.path().join("snitch.db");
    let v2 = root.path().join("old-picosnitch.db");
    let n1 = 12_345; // more than one batch
    v1_db(&v1, n1);
    v2_db(&v2, 300);
    let o = migrate(root.path(), &[v1.to_str().unwrap(), v2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    let sum1: i64 = (0..n1).sum();
    assert_eq!(totals(&db, "/usr/bin/curl"), (n1, sum1, 2 * sum1));
    assert_eq!(totals(&db, "/usr/bin/wget"), (300, (0..300).sum(), 7 * 300));

    let c = Connection::open(&db).unwrap();
    // picosnitch 1: names reversed, local time converted, family from the address, parent kept.
    let (domain, family, pexe, contime): (String, i64, String, i64) = c
        .query_row(
            "SELECT d.domain, c.family, p.exe, c.contime FROM connections c
             JOIN executables e ON e.id = c.exe_id JOIN executables p ON p.id = c.pexe_id
             JOIN domains d ON d.id = c.domain_id WHERE e.exe = '/usr/bin/curl' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (domain.as_str(), family, pexe.as_str()),
        ("com.example.www", 2, "/usr/bin/bash")
    );
    assert!(
        (1_646_000_000..1_646_200_000).contains(&contime),
        "{contime}"
    );
    // picosnitch 2: lookups resolved to values.
    let (raddr, domain, events): (String, String, i64) = c
        .query_row(
            "SELECT a.addr, d.domain, c.events FROM connections c
             JOIN executables e ON e.id = c.exe_id JOIN addresses a ON a.id = c.raddr_id
             JOIN domains d ON d.id = c.domain_id WHERE e.exe = '/usr/bin/wget' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (raddr.as_str(), domain.as_str(), events),
        ("2001:db8::1", "org.example", 2)
    );
    drop(c);

    // Again: nothing new is written.
    let o = migrate(root.path(), &[v1.to_str().unwrap(), v2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 rows imported"), "{}", stderr(&o));
    assert_eq!(totals(&db, "/usr/bin/curl").0, n1);
    assert_eq!(totals(&db, "/usr/bin/wget").0, 300);
}

#[test]
fn a_picosnitch_2_database_in_place_is_moved_aside_and_imported() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    v2_db(&db, 50);
    // The daemon refuses to open it in place, naming the way out.
    let o = Command::new(BIN)
        .args(["start-no-daemon"])
        .env("PICOSNITCH_ROOT", root.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("picosnitch migrate"), "{}", stderr(&o));
    let o = migrate(root.path(), &[db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(db.with_extension("db.picosnitch2").exists());
    assert_eq!(totals(&db, "/usr/bin/wget").0, 50);
}

#[test]
fn a_picosnitch_1_config_becomes_config_toml() {
    let root = tempfile::tempdir().unwrap();
    let json = root.path().join("config.json");
    std::fs::write(
        &json,
        r#"{"DB retention (days)": 90, "DB sql log": true, "DB sql server": {},
            "DB text log": false, "DB write limit (seconds)": 5, "Dash scroll zoom": true,
            "Dash theme": "", "Desktop notifications": false,
            "Every exe (not just conns)": true, "GeoIP lookup": true, "Log addresses": true,
            "Log commands": false, "Log ignore": [443, "53",
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
              "10.0.0.0/8", "fd00::/8", "example.com"],
            "Log ports": true, "Perf ring buffer (pages)": 64, "Set RLIMIT_NOFILE": null,
            "Set st_dev mask": null, "VT API key": "", "VT file upload": false,
            "VT request limit (seconds)": 15}"#,
    )
    .unwrap();
    let o = migrate(root.path(), &[json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = root.path().join("etc/picosnitch/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(t["database"]["retention_days"].as_integer(), Some(90));
    assert_eq!(t["database"]["write_limit_seconds"].as_integer(), Some(5));
    assert_eq!(t["desktop"]["notifications"].as_bool(), Some(false));
    assert_eq!(t["monitoring"]["every_exe"].as_bool(), Some(true));
    assert_eq!(
        t["monitoring"]["perf_ring_buffer_pages"].as_integer(),
        Some(64)
    );
    assert_eq!(t["log"]["commands"].as_bool(), Some(false));
    let list = |k: &str| t["log"][k].as_array().unwrap().len();
    assert_eq!(
        (
            list("ignore_ports"),
            list("ignore_sha256"),
            list("ignore_ips"),
            list("ignore_domains")
        ),
        (2, 1, 2, 1)
    );
    assert!(
        text.contains("not imported (no equivalent): \"Dash theme\""),
        "{text}"
    );
    // An existing config is never overwritten.
    let o = migrate(root.path(), &[json.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("never overwritten"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
}

#[test]
fn files_that_are_not_picosnitch_data_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let other = root.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 7;")
        .unwrap();
    let o = migrate(root.path(), &[other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a picosnitch 1 or 2 database (user_version 7"),
        "{}",
        stderr(&o)
    );
    let bad = root.path().join("bad.json");
    std::fs::write(&bad, "{\"DB retention (days)\": \"many\"}").unwrap();
    let o = migrate(root.path(), &[bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("retention_days"), "{}", stderr(&o));
    assert!(!root.path().join("etc/picosnitch/config.toml").exists());
}
