//! config_errors: every kind of bad configuration stops the daemon with one sentence naming the
//! key, the value and what is allowed, and exit status 78, before anything recorded is touched;
//! `check-config` says the same without starting anything; unknown keys are only warnings.
mod common;
mod service_support;

use common::{copy_exe, run_json, trafficgen, Daemon};
use service_support::{verb, BIN};
use std::path::Path;
use std::process::Command;

/// (config text, what the error must contain)
const BAD: &[(&str, &str)] = &[
    (
        "[database]\nretention_days = \"thirty\"\n",
        "database.retention_days = \"thirty\" is not allowed: use a whole number",
    ),
    (
        "[database]\nretention_days = -1\n",
        "database.retention_days = -1 is not allowed: use a whole number from 0 to",
    ),
    (
        "[database]\nwrite_limit_seconds = 0\n",
        "database.write_limit_seconds = 0 is not allowed: use 1 to 86400 seconds",
    ),
    (
        "[monitoring]\nevery_exe = \"yes\"\n",
        "monitoring.every_exe = \"yes\" is not allowed: use true or false",
    ),
    (
        "[monitoring]\nperf_ring_buffer_pages = 3\n",
        "monitoring.perf_ring_buffer_pages = 3 is not allowed: use a power of two",
    ),
    (
        "[monitoring]\nrlimit_nofile = 0\n",
        "monitoring.rlimit_nofile = 0 is not allowed: use 1024 to 1073741816 open files, or leave \
         it unset for 65536",
    ),
    (
        "[log]\nignore_ips = [\"10.0.0.0/8\", \"192.168.1.0/33\"]\n",
        "log.ignore_ips[1] = \"192.168.1.0/33\" is not allowed: use an IPv4 or IPv6 address",
    ),
    (
        "[log]\nignore_ports = [53, 99999]\n",
        "log.ignore_ports[1] = 99999 is not allowed: use port numbers from 0 to 65535",
    ),
    (
        "[log]\nignore_domains = [\"*.example.com\"]\n",
        "log.ignore_domains[0] = \"*.example.com\" is not allowed",
    ),
    (
        "[log]\nignore_sha256 = [\"123\"]\n",
        "log.ignore_sha256[0] = \"123\" is not allowed: use a sha256 of 64 hexadecimal digits",
    ),
    (
        "[log]\nignore_ports = 53\n",
        "log.ignore_ports = 53 is not allowed: use a list",
    ),
    (
        "[data]\nmode = \"0666\"\n",
        "data.mode = \"0666\" is not allowed",
    ),
    (
        "[virustotal]\nrequest_limit_seconds = -15\n",
        "virustotal.request_limit_seconds = -15 is not allowed",
    ),
    (
        "[database\nretention_days = 3\n",
        "TOML syntax error at line 1, column 10",
    ),
    ("retention_days = 3 3\n", "TOML syntax error at line 1"),
];

/// Runs `start-no-daemon` on `cfg` under `root`: (exit status, stderr).
fn start_with(root: &Path, cfg: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["start-no-daemon", "--config"])
        .arg(cfg)
        .env("PICOSNITCH_ROOT", root)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What must not change: the bytes of the database and of its WAL (as sha256), and the row
/// count, read without creating or changing any file (`immutable=1`).
fn fingerprint(db: &Path) -> (String, Option<String>, i64) {
    let hash = |p: &Path| p.exists().then(|| common::sha256sum(p));
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    let bytes = hash(db).expect("database exists");
    let wal = hash(Path::new(&wal));
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", db.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let rows = conn
        .query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap();
    (bytes, wal, rows)
}

#[test]
fn bad_configs_exit_78_naming_the_key_and_leave_the_database_alone() {
    let exe_dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), exe_dir.path(), "tg-badcfg");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "1000"]));
    let stopped = daemon.stop();
    let root = stopped.root.path();
    let before = fingerprint(&stopped.db);
    assert!(before.2 > 0, "the first run recorded rows");
    let cfg = root.join("bad.toml");
    for (text, want) in BAD {
        std::fs::write(&cfg, text).unwrap();
        let (code, err) = start_with(root, &cfg, &[]);
        assert_eq!(code, Some(78), "{text}: {err}");
        assert!(err.contains(want), "{text}:\n{err}\nwants {want}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
        // check-config says the same, without the daemon.
        let (code, out, cerr) = verb(root, &["check-config", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{text}: {out}{cerr}");
        assert!(cerr.contains(want), "check-config {text}: {cerr}");
    }

    // A user missing on this machine stops the daemon; check-config only warns (the file may be
    // checked where it is built, before the user exists).
    std::fs::write(&cfg, "[data]\nowner = \"no-such-user-anywhere\"\n").unwrap();
    let (code, err) = start_with(root, &cfg, &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("data.owner = \"no-such-user-anywhere\" is not allowed"),
        "{err}"
    );
    let (code, out, cerr) = verb(root, &["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{cerr}");
    assert!(
        cerr.contains("warning: data.owner = \"no-such-user-anywhere\""),
        "{cerr}"
    );

    // A bad value from the environment names its variable.
    std::fs::write(&cfg, "").unwrap();
    let (code, err) = start_with(root, &cfg, &[("PICOSNITCH_DATABASE__RETENTION_DAYS", "-3")]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("database.retention_days = -3 is not allowed")
            && err.contains("PICOSNITCH_DATABASE__RETENTION_DAYS"),
        "{err}"
    );

    // A file that cannot be read: root without its file-permission override, a 0000 file.
    std::fs::write(&cfg, "[database]\nretention_days = 3\n").unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let out = Command::new("setpriv")
        .args(["--inh-caps=-dac_override,-dac_read_search"])
        .args(["--bounding-set=-dac_override,-dac_read_search"])
        .args([BIN, "start-no-daemon", "--config"])
        .arg(&cfg)
        .env("PICOSNITCH_ROOT", root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("cannot read config file {}", cfg.display()))
            && err.contains("Permission denied"),
        "{err}"
    );
    // A directory, and a file that is not there.
    for path in [root.to_path_buf(), root.join("missing.toml")] {
        let (code, err) = start_with(root, &path, &[]);
        assert_eq!(code, Some(78), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    assert_eq!(fingerprint(&stopped.db), before, "the database was touched");
}

#[test]
fn check_config_accepts_good_files_and_warns_about_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[database]\nretention_days = 7\nwrite_limit_seconds = 5\n\
         [data]\nowner = \"root\"\ngroup = \"adm\"\nmode = \"0640\"\n\
         [log]\nports = false\nignore_ports = [53, 5353]\nignore_domains = [\"example.com\"]\n\
         ignore_ips = [\"10.0.0.0/8\", \"fd00::/8\", \"192.168.1.1\"]\n\
         ignore_sha256 = [\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"]\n\
         [desktop]\nnotifications = false\n\
         [virustotal]\napi_key = \"\"\nrequest_limit_seconds = 15\n",
    )
    .unwrap();
    let (code, out, err) = verb(dir.path(), &["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("{}: valid", good.display()));
    assert!(err.is_empty(), "{err}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "[database]\nretention_days = 7\nretension_days = 8\n[dashboard]\ntheme = \"dark\"\n",
    )
    .unwrap();
    let (code, out, err) = verb(dir.path(), &["check-config", unknown.to_str().unwrap()]);
    assert_eq!(code, 0, "unknown keys are warnings: {out}{err}");
    assert!(
        err.contains("unknown config key database.retension_days is ignored"),
        "{err}"
    );
    assert!(
        err.contains("unknown config section [dashboard] is ignored"),
        "{err}"
    );
    // --strict (a generated file): the same keys are errors; a good file still passes, and a
    // [data] group missing here (it exists where the file runs) is still only a warning.
    let (code, _, err) = verb(
        dir.path(),
        &["check-config", "--strict", unknown.to_str().unwrap()],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("database.retension_days"), "{err}");
    let (code, _, err) = verb(
        dir.path(),
        &["check-config", "--strict", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, "[data]\ngroup = \"no-such-group-here\"\n").unwrap();
    let (code, _, err) = verb(
        dir.path(),
        &["check-config", "--strict", elsewhere.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not on this machine"), "{err}");

    // The daemon's own environment variables are not config keys.
    let out = Command::new(BIN)
        .args(["check-config", good.to_str().unwrap()])
        .env("PICOSNITCH_LOG", "debug")
        .env("PICOSNITCH_VM_KERNELS", "6.1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys this version accepts but does not act on: check-config, the daemon and `systemd` each
/// name them, and none of them opens the service's network.
#[test]
fn keys_that_do_nothing_say_so_and_open_no_network() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc/picosnitch");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        "[desktop]\nuser = \"alice\"\ngeoip_lookup = true\n\
         [virustotal]\napi_key = \"0123456789abcdef0123456789abcdef\"\n\
         [database.remote]\nurl = \"postgres://db.example/ps\"\n",
    )
    .unwrap();
    let want = [
        "picosnitch: warning: desktop.user has no effect: desktop notifications go to every \
         logged-in user's session (desktop.notifications = false turns them off)",
        "picosnitch: warning: desktop.geoip_lookup has no effect: countries are looked up in the \
         databases that geoip.databases names",
        "picosnitch: warning: virustotal.api_key has no effect: VirusTotal lookups do not exist \
         in this version (nothing is sent, and the service unit keeps the network closed)",
        "picosnitch: warning: [database.remote] has no effect: remote databases do not exist in \
         this version (nothing is sent, and the service unit keeps the network closed)",
    ];
    let (code, out, err) = verb(root.path(), &["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err.lines().collect::<Vec<_>>(), want, "{err}");

    let (code, out, err) = verb(root.path(), &["systemd"]);
    assert_eq!(code, 0, "{out}{err}");
    for w in want {
        assert!(err.contains(w), "systemd does not say {w:?}:\n{err}");
    }
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/picosnitch.service")).unwrap();
    assert!(
        unit.contains("\nPrivateNetwork=yes\nIPAddressDeny=any\nRestrictAddressFamilies=AF_UNIX\n"),
        "{unit}"
    );
    assert!(!unit.contains("PrivateNetwork=no"), "{unit}");
}
