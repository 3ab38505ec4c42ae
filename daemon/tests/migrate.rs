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

/// A picosnitch 1 `snitch.db` whose `connections` is a view that never ends.
fn recursive_view_v1(path: &Path) {
    Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE VIEW connections AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL
               SELECT n + 1 FROM r) SELECT '2022-03-01 10:00:00' AS contime, n AS send, n AS recv,
               'x' AS exe, 'x' AS name, 'x' AS cmdline, 'x' AS sha256, 'x' AS pexe, 'x' AS pname,
               'x' AS pcmdline, 'x' AS psha256, 0 AS uid, 1 AS lport, 2 AS rport, '' AS laddr,
               '' AS raddr, '' AS domain FROM r;
             PRAGMA user_version = 3;",
        )
        .unwrap();
}

#[test]
fn views_are_refused_at_once_instead_of_read_for_ever() {
    let root = tempfile::tempdir().unwrap();
    let v1 = root.path().join("snitch.db");
    recursive_view_v1(&v1);
    let v2 = root.path().join("view-picosnitch.db");
    v2_db(&v2, 3);
    Connection::open(&v2)
        .unwrap()
        .execute_batch(
            "DROP TABLE addresses; CREATE VIEW addresses AS WITH RECURSIVE r(n) AS (SELECT 0
               UNION ALL SELECT n + 1 FROM r) SELECT n AS id, '::1' AS addr FROM r;",
        )
        .unwrap();
    for (db, name) in [(&v1, "connections"), (&v2, "addresses")] {
        let t = std::time::Instant::now();
        let o = migrate(root.path(), &[db.to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let want = format!(
            "picosnitch migrate: {}: {name} is a view, not a table; refusing to read it \
             (picosnitch 1 and 2 wrote plain tables only)",
            db.display()
        );
        assert_eq!(stderr(&o).trim_end(), want);
    }
}

#[test]
fn bad_rows_are_skipped_counted_and_named_and_null_stays_unknown() {
    let root = tempfile::tempdir().unwrap();
    let v2 = root.path().join("hostile-picosnitch.db");
    v2_db(&v2, 5); // rowids 1..=5: good rows
    Connection::open(&v2)
        .unwrap()
        .execute_batch(
            "INSERT INTO executables VALUES (3, '/usr/bin/blob', 'blob', x'00ff', 'ee'),
               (4, '/usr/bin/null', 'null', 'null', 'ff');
             INSERT INTO addresses VALUES (3, CAST(x'c3ff' AS TEXT));
             INSERT INTO connections (rowid, contime, send, recv, events, exe_id, pexe_id, uid,
               lport, rport, laddr_id, raddr_id, domain_id)
             VALUES (6, 1700000100, 1, 1, 1, 3, 0, 1000, 1, 2, 0, 0, 0),
               (7, 1700000100, 1, 1, 1, 1, 0, 1000, 1, 2, 0, 3, 0),
               (8, 1700000100, 'many', 1, 1, 1, 0, 1000, 1, 2, 0, 0, 0),
               (9, NULL, 1, 1, 1, 1, 0, 1000, 1, 2, 0, 0, 0),
               (10, 1700000200, NULL, 5, NULL, 4, 0, NULL, NULL, NULL, 0, 0, 0);",
        )
        .unwrap();
    let v1 = root.path().join("snitch.db");
    v1_db(&v1, 2);
    Connection::open(&v1)
        .unwrap()
        .execute_batch(
            "INSERT INTO connections (rowid, contime, send, recv, exe, uid)
             VALUES (3, 'yesterday', 1, 1, '/usr/bin/v1bad', 0),
               (4, '2022-03-01 11:00:00', 9, 9, '/usr/bin/v1null', NULL);",
        )
        .unwrap();
    let o = migrate(root.path(), &[v2.to_str().unwrap(), v1.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let (p2, p1) = (v2.display(), v1.display());
    for line in [
        format!("{p2}: row 6 skipped: column e_cmdline holds a blob where text belongs"),
        format!("{p2}: row 7 skipped: column raddr is not valid UTF-8"),
        format!("{p2}: row 8 skipped: column send holds text where a whole number belongs"),
        format!("{p2}: row 9 skipped: column contime is NULL: the row has no time"),
        format!("{p2}: 6 rows imported into "),
        " (picosnitch 2), 4 rows skipped".to_string(),
        format!("{p1}: row 3 skipped: column contime is not 'YYYY-MM-DD HH:MM:SS': \"yesterday\""),
        " (picosnitch 1), 1 rows skipped".to_string(),
    ] {
        assert!(err.contains(&line), "no {line:?} in\n{err}");
    }
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    let c = Connection::open(&db).unwrap();
    let unknown = |exe: &str| -> (i64, i64, i64, i64, i64) {
        c.query_row(
            "SELECT c.uid, c.lport, c.send, c.recv, c.events FROM connections c
             JOIN executables e ON e.id = c.exe_id WHERE e.exe = ?1",
            [exe],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
    };
    // NULL uid is (uid_t) -1, never root; NULL port -1; NULL bytes 0; NULL events 1.
    assert_eq!(unknown("/usr/bin/null"), (4_294_967_295, -1, 0, 5, 1));
    assert_eq!(unknown("/usr/bin/v1null").0, 4_294_967_295);
    // A resumed import does not meet the bad rows again.
    let o = migrate(root.path(), &[v2.to_str().unwrap(), v1.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("skipped:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 rows imported"), "{}", stderr(&o));
}

/// Peak resident memory of `picosnitch migrate ARGS` in kB, from `/usr/bin/time -v`.
fn migrate_peak_kb(root: &Path, args: &[&str]) -> u64 {
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(BIN)
        .arg("migrate")
        .args(args)
        .env("PICOSNITCH_ROOT", root)
        .output()
        .expect("/usr/bin/time must be installed for this test");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    err.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in\n{err}"))
}

#[test]
fn two_megabyte_command_lines_stream_in_bounded_memory() {
    const MB2: i64 = 2 << 20;
    let root = tempfile::tempdir().unwrap();
    // picosnitch 1: 100 rows, each with its own 2 MB command line (and its parent's).
    let v1 = root.path().join("snitch.db");
    v1_db(&v1, 0);
    Connection::open(&v1)
        .unwrap()
        .execute(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100)
             INSERT INTO connections SELECT '2022-03-01 10:00:00', n, n, '/usr/bin/big1', 'big1',
               printf('%d', n) || hex(zeroblob(?1 / 2)), 'aa', '/usr/bin/bash', 'bash',
               printf('%d', n) || hex(zeroblob(?1 / 2)), 'bb', 1000, 1, 2, '', '', '' FROM r",
            [MB2],
        )
        .unwrap();
    // picosnitch 2: 1,000 rows naming two executables with 2 MB command lines.
    let v2 = root.path().join("big-picosnitch.db");
    v2_db(&v2, 0);
    let c = Connection::open(&v2).unwrap();
    c.execute(
        "UPDATE executables SET cmdline = cmdline || hex(zeroblob(?1 / 2)) WHERE id > 0",
        [MB2],
    )
    .unwrap();
    c.execute_batch(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000)
         INSERT INTO connections SELECT 1700000000 + n, n, 7, 2, 1, 2, 0, 1000, 10, 6, 50000, 80,
           1, 2, 1, 4026531840 FROM r;",
    )
    .unwrap();
    drop(c);
    let peak1 = migrate_peak_kb(root.path(), &[v1.to_str().unwrap()]);
    let peak2 = migrate_peak_kb(root.path(), &[v2.to_str().unwrap()]);
    println!("peak RSS: picosnitch 1 source {peak1} kB, picosnitch 2 source {peak2} kB");
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    assert_eq!(totals(&db, "/usr/bin/big1").0, 100);
    assert_eq!(totals(&db, "/usr/bin/wget").0, 1000);
    for peak in [peak1, peak2] {
        assert!(peak < 250_000, "peak RSS {peak} kB");
    }
}

#[test]
fn a_statement_that_runs_too_long_is_stopped() {
    let root = tempfile::tempdir().unwrap();
    let v1 = root.path().join("slow-snitch.db");
    let c = Connection::open(&v1).unwrap();
    // Every row's command line costs tens of milliseconds to compute.
    c.execute_batch(
        "CREATE TABLE connections (contime text, send integer, recv integer, exe text, name text,
         cmdline text AS (length(hex(zeroblob(8000000 + length(name) + send))) || name), sha256 text, pexe text,
         pname text, pcmdline text, psha256 text, uid integer, lport integer, rport integer,
         laddr text, raddr text, domain text);
         PRAGMA user_version = 3;
         WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 20000)
         INSERT INTO connections (contime, send, recv, exe, name) SELECT '2022-03-01 10:00:00',
           1, 1, '/usr/bin/slow', 'slow' FROM r;",
    )
    .unwrap();
    drop(c);
    let t = std::time::Instant::now();
    let o = migrate(root.path(), &[v1.to_str().unwrap()]);
    let took = t.elapsed();
    assert!(!o.status.success(), "took {took:?}: {}", stderr(&o));
    assert!(took < std::time::Duration::from_secs(45), "{took:?}");
    let want = format!(
        "picosnitch migrate: {}: reading a connection row took longer than 30 s and was stopped \
         (a damaged or hostile database?)",
        v1.display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}
