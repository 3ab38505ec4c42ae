//! config.rs: defaults ← config file ← `PICOSNITCH_*` environment (figment), validated with errors
//! that name the key, the value and what is allowed.
mod api;
mod data;
mod describe;
mod inert;
mod log;
mod virustotal;

pub use api::Api;
pub use data::{Data, DataAccess};
pub use log::{Log, LogFilters};
pub use virustotal::VirusTotal;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Database {
    pub enabled: bool,
    pub retention_days: u32,
    pub write_limit_seconds: u32,
    pub text_log: bool,
    /// Closed windows waiting for the database writer, at most (estimated bytes); a window
    /// past it is dropped and recorded as a `sink_queue_full` loss.
    pub queue_max_bytes: u64,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            enabled: true,
            retention_days: 30,
            write_limit_seconds: 10,
            text_log: false,
            queue_max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Monitoring {
    pub every_exe: bool,
    pub perf_ring_buffer_pages: u32,
    pub conn_map_max_entries: u32,
    /// Unset: automatic (0 when a btrfs filesystem is mounted, all ones otherwise).
    pub st_dev_mask: Option<u64>,
    /// LimitNOFILE= of the generated unit; unset: [`RLIMIT_NOFILE_DEFAULT`].
    pub rlimit_nofile: Option<u64>,
    /// Traffic hook set: "auto" (best the kernel allows), "tp_btf", "fexit" or "kprobe".
    pub hook_set: String,
    /// Executables larger than this are not hashed (stored as `!too-large`).
    pub hash_max_bytes: u64,
    /// A hash not finished after this long is given up (stored as `!timeout`).
    pub hash_timeout_seconds: u32,
}

/// LimitNOFILE= of the generated unit when `[monitoring] rlimit_nofile` is unset.
pub const RLIMIT_NOFILE_DEFAULT: u64 = 65536;
/// The most open files Linux allows a process (`fs.nr_open` at its ceiling).
const RLIMIT_NOFILE_MAX: u64 = 1_073_741_816;

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            every_exe: false,
            perf_ring_buffer_pages: 256,
            conn_map_max_entries: 65536,
            st_dev_mask: None,
            rlimit_nofile: None,
            hook_set: "auto".into(),
            hash_max_bytes: 2 << 30,
            hash_timeout_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Desktop {
    /// Desktop notifications to logged-in users; exe.log and the log always get the decisions.
    pub notifications: bool,
}

impl Default for Desktop {
    fn default() -> Self {
        Desktop {
            notifications: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub database: Database,
    pub monitoring: Monitoring,
    pub desktop: Desktop,
    pub data: Data,
    pub log: Log,
    pub virustotal: VirusTotal,
    pub api: Api,
    pub dns: crate::dns::DnsConfig,
    pub geoip: crate::geoip::GeoipConfig,
}

/// Sections and keys this version understands; anything else is reported as unknown.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "database",
        &[
            "enabled",
            "retention_days",
            "write_limit_seconds",
            "text_log",
            "queue_max_bytes",
            "remote",
        ],
    ),
    (
        "monitoring",
        &[
            "every_exe",
            "perf_ring_buffer_pages",
            "conn_map_max_entries",
            "st_dev_mask",
            "rlimit_nofile",
            "hook_set",
            "hash_max_bytes",
            "hash_timeout_seconds",
        ],
    ),
    ("data", &["owner", "group", "mode"]),
    (
        "log",
        &[
            "addresses",
            "commands",
            "ports",
            "ignore_ports",
            "ignore_domains",
            "ignore_ips",
            "ignore_sha256",
        ],
    ),
    ("desktop", &["user", "notifications", "geoip_lookup"]),
    (
        "virustotal",
        &["api_key", "file_upload", "request_limit_seconds"],
    ),
    ("api", &["listen", "socket"]),
    ("dns", crate::dns::CONFIG_KEYS),
    ("geoip", crate::geoip::CONFIG_KEYS),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {path}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config: {0}")]
    Invalid(String),
}

/// One invalid value: the key (with the index of a list entry), the value, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value} is not allowed: {allowed}")]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub allowed: String,
}

impl Problem {
    pub fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Problem {
            key: key.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        ConfigError::Invalid(p.to_string())
    }
}

pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// The warnings about sections and keys this version does not know (also in `warnings`).
    pub unknown: Vec<String>,
    /// `[data]` with names resolved to ids.
    pub data: DataAccess,
    /// The `[log]` ignore lists, parsed (applied by `filter.rs`).
    pub log_filters: LogFilters,
}

/// Loads the config; a missing file at the default path means defaults, a missing `--config`
/// file is an error.
pub fn load(path: &Path, must_exist: bool) -> Result<Loaded, ConfigError> {
    load_with(path, must_exist, Names::MustExist)
}

/// Loads `path` for `check-config`: like [`load`], but a `[data]` owner or group that does not
/// exist on this machine is a warning (the file may be checked where it is built, not where it
/// runs; the daemon itself refuses to start without them).
pub fn check(path: &Path) -> Result<Loaded, ConfigError> {
    load_with(path, true, Names::MayBeMissing)
}

/// Loads `path` (absent: defaults, unless `must_exist`) for units written for another machine:
/// like [`check`], a `[data]` owner or group missing here is a warning.
pub fn load_for_elsewhere(path: &Path, must_exist: bool) -> Result<Loaded, ConfigError> {
    load_with(path, must_exist, Names::MayBeMissing)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    MustExist,
    MayBeMissing,
}

/// Checks configuration text that is not in a file yet (`origin` names it in errors), as the
/// daemon would load it.
pub fn check_text(origin: &Path, text: &str) -> Result<Loaded, ConfigError> {
    from_text(origin, Some(text), Names::MustExist)
}

fn load_with(path: &Path, must_exist: bool, names: Names) -> Result<Loaded, ConfigError> {
    if !(path.exists() || must_exist) {
        return from_text(path, None, names);
    }
    // Read it ourselves so an unreadable file is an error naming it, not silent defaults.
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_text(path, Some(&text), names)
}

fn from_text(path: &Path, text: Option<&str>, names: Names) -> Result<Loaded, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(text) = text {
        describe::check_syntax(path, text)?;
        fig = fig.merge(Toml::string(text));
    }
    // Only PICOSNITCH_SECTION__KEY variables are config; PICOSNITCH_ROOT, PICOSNITCH_LOG and the
    // test scripts' variables are not.
    fig = fig.merge(
        Env::prefixed("PICOSNITCH_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let unknown = unknown_keys(&fig);
    let mut warnings = unknown.clone();
    let remote_database = fig
        .find_value("database.remote")
        .is_ok_and(|v| v.as_dict().is_some_and(|d| !d.is_empty()));
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(describe::figment_error(e)))?;
    validate(&config)?;
    let data = match names {
        Names::MustExist => config.data.resolve()?,
        Names::MayBeMissing => config.data.resolve_or_warn(&mut warnings)?,
    };
    let log_filters = config.log.filters()?;
    config.virustotal.check()?;
    config.api.check(&mut warnings)?;
    warnings.extend(inert::warnings(
        &fig,
        config.virustotal.enabled(),
        remote_database,
    ));
    Ok(Loaded {
        config,
        warnings,
        unknown,
        data,
        log_filters,
    })
}

fn unknown_keys(fig: &Figment) -> Vec<String> {
    let Ok(dict) = fig.extract::<figment::value::Dict>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (section, value) in &dict {
        match KNOWN.iter().find(|(s, _)| s == section) {
            None => out.push(format!("unknown config section [{section}] is ignored")),
            Some((_, keys)) => {
                if let Some(d) = value.as_dict() {
                    for k in d.keys().filter(|k| !keys.contains(&k.as_str())) {
                        out.push(format!("unknown config key {section}.{k} is ignored"));
                    }
                }
            }
        }
    }
    out
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    let bad = |key: &str, value: &dyn std::fmt::Display, allowed: &str| {
        Err(ConfigError::Invalid(format!(
            "{key} = {value} is not allowed: {allowed}"
        )))
    };
    if c.database.write_limit_seconds == 0 || c.database.write_limit_seconds > 86400 {
        return bad(
            "database.write_limit_seconds",
            &c.database.write_limit_seconds,
            "use 1 to 86400 seconds",
        );
    }
    let pages = c.monitoring.perf_ring_buffer_pages;
    if !(1..=65536).contains(&pages) || !pages.is_power_of_two() {
        return bad(
            "monitoring.perf_ring_buffer_pages",
            &pages,
            "use a power of two from 1 to 65536",
        );
    }
    let entries = c.monitoring.conn_map_max_entries;
    if !(1024..=16_777_216).contains(&entries) {
        return bad(
            "monitoring.conn_map_max_entries",
            &entries,
            "use 1024 to 16777216",
        );
    }
    let q = c.database.queue_max_bytes;
    if !(65536..=(16 << 30)).contains(&q) {
        return bad(
            "database.queue_max_bytes",
            &q,
            "use 65536 (64 KiB) to 17179869184 (16 GiB)",
        );
    }
    let m = &c.monitoring;
    if m.hash_max_bytes < (1 << 20) {
        return bad(
            "monitoring.hash_max_bytes",
            &m.hash_max_bytes,
            "use 1048576 (1 MiB) or more",
        );
    }
    if !(1..=3600).contains(&m.hash_timeout_seconds) {
        return bad(
            "monitoring.hash_timeout_seconds",
            &m.hash_timeout_seconds,
            "use 1 to 3600 seconds",
        );
    }
    if let Some(n) = c.monitoring.rlimit_nofile {
        if !(1024..=RLIMIT_NOFILE_MAX).contains(&n) {
            return bad(
                "monitoring.rlimit_nofile",
                &n,
                "use 1024 to 1073741816 open files, or leave it unset for 65536",
            );
        }
    }
    let sets = ["auto", "tp_btf", "fexit", "kprobe"];
    if !sets.contains(&c.monitoring.hook_set.as_str()) {
        return bad(
            "monitoring.hook_set",
            &format!("{:?}", c.monitoring.hook_set),
            "use \"auto\", \"tp_btf\", \"fexit\" or \"kprobe\"",
        );
    }
    c.dns.validate().map_err(ConfigError::Invalid)?;
    Ok(())
}

impl Monitoring {
    /// The hook set to insist on, if any.
    pub fn only_hook_set(&self) -> Option<String> {
        (self.hook_set != "auto").then(|| self.hook_set.clone())
    }
}

/// Loads `s` as a configuration file, for the tests of every section.
#[cfg(test)]
pub(crate) fn load_str(s: &str) -> Result<Loaded, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, s).unwrap();
    load(&p, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let l = load_str("[database]\nwrite_limit_seconds = 2\n[desktop]\nnotifications = false\n")
            .unwrap();
        assert_eq!(l.config.database.write_limit_seconds, 2);
        assert!(!l.config.desktop.notifications);
        assert!(Config::default().desktop.notifications);
        assert_eq!(l.config.database.retention_days, 30);
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str("[database]\nretention_days = -3\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("database.retention_days"), "{e}");
        let e = load_str("[database]\nwrite_limit_seconds = 0\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("write_limit_seconds = 0"), "{e}");
        let e = load_str("[monitoring]\nhook_set = \"fentry\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("monitoring.hook_set = \"fentry\""), "{e}");
        let e = load_str("[database\n").err().unwrap().to_string();
        assert!(e.starts_with("config:"), "{e}");
    }

    #[test]
    fn new_sections_parse_and_resolve() {
        let l = load_str(
            "[data]\nowner = \"nobody\"\ngroup = \"root\"\nmode = \"0640\"\n\
             [log]\nports = false\nignore_ports = [53]\nignore_domains = [\"example.com\"]\n\
             ignore_ips = [\"10.0.0.0/8\"]\n\
             [virustotal]\nrequest_limit_seconds = 20\n",
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.data.uid, 65534);
        assert_eq!(l.data.mode, 0o640);
        assert!(!l.config.log.ports);
        assert_eq!(l.log_filters.domains, vec!["com.example"]);
        assert!(l.log_filters.ports.contains(&53));
        assert_eq!(l.config.virustotal.request_limit_seconds, 20);
    }

    #[test]
    fn bad_entries_are_named() {
        for (text, want) in [
            (
                "[log]\nignore_ips = [\"10.0.0.0/33\"]\n",
                "log.ignore_ips[0] = \"10.0.0.0/33\"",
            ),
            (
                "[log]\nignore_ports = [1, 65536]\n",
                "log.ignore_ports[1] = 65536",
            ),
            ("[log]\nignore_ports = [\"x\"]\n", "log.ignore_ports"),
            (
                "[log]\naddresses = \"yes\"\n",
                "log.addresses = \"yes\" is not allowed: use true or false",
            ),
            ("[data]\nmode = \"0777\"\n", "data.mode = \"0777\""),
            ("[data]\nmode = 420\n", "data.mode = 420"),
            ("[data]\ngroup = \"no-such-group-here\"\n", "data.group"),
            (
                "[virustotal]\nrequest_limit_seconds = -5\n",
                "virustotal.request_limit_seconds = -5",
            ),
        ] {
            let e = load_str(text).err().unwrap().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                e.contains("is not allowed") || e.contains("log.ignore_ports"),
                "{e}"
            );
        }
    }

    #[test]
    fn figment_errors_say_what_is_allowed() {
        let e = load_str("[database]\nretention_days = -1\n")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "config: database.retention_days = -1 is not allowed: use a whole number from 0 to \
             4294967295"
        );
    }

    #[test]
    fn dns_and_geoip_sections() {
        let c = Config::default();
        assert!(c.dns.enabled && !c.dns.reverse_dns);
        assert!(!c.geoip.databases.is_empty());
        let l = load_str(
            "[dns]\nreverse_dns = true\ncache_entries = 100\n[geoip]\ndatabases = [\"/x.mmdb\"]\n",
        )
        .unwrap();
        assert!(l.config.dns.reverse_dns);
        assert_eq!(l.config.dns.cache_entries, 100);
        assert_eq!(
            l.config.geoip.databases,
            vec![std::path::PathBuf::from("/x.mmdb")]
        );
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let e = load_str("[dns]\ncache_entries = 1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dns.cache_entries = 1"), "{e}");
    }

    #[test]
    fn unknown_keys_warn() {
        let l = load_str("[database]\nfoo = 1\n[bogus]\nx = 1\n").unwrap();
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings.iter().any(|w| w.contains("database.foo")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(load(Path::new("/nonexistent/picosnitch.toml"), true).is_err());
        assert!(load(Path::new("/nonexistent/picosnitch.toml"), false).is_ok());
    }
}
