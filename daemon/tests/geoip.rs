//! geoip: a small MaxMind-format database built here with MaxMind's own writer (Debian's
//! libmaxmind-db-writer-perl); `picosnitch geoip` must read country, city and autonomous system
//! from it, and the daemon must name the database it uses (and start without one).
mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

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
    let d = Daemon::start("[geoip]\ndatabases = [\"/nonexistent/none.mmdb\"]\n");
    let stopped = d.stop();
    assert!(
        stopped.log.contains("no GeoIP database found"),
        "{}",
        stopped.log
    );
}
