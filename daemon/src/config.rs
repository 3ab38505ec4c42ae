//! config.rs: defaults ← config file ← `PICOSNITCH_*` environment (figment), validated with errors
//! that name the key, the value and what is allowed.
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
}

impl Default for Database {
    fn default() -> Self {
        Database {
            enabled: true,
            retention_days: 30,
            write_limit_seconds: 10,
            text_log: false,
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
    pub rlimit_nofile: Option<u64>,
    /// Traffic hook set: "auto" (best the kernel allows), "tp_btf", "fexit" or "kprobe".
    pub hook_set: String,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            every_exe: false,
            perf_ring_buffer_pages: 256,
            conn_map_max_entries: 65536,
            st_dev_mask: None,
            rlimit_nofile: None,
            hook_set: "auto".into(),
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
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Loads the config; a missing file at the default path means defaults, a missing `--config`
/// file is an error.
pub fn load(path: &Path, must_exist: bool) -> Result<Loaded, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if path.exists() || must_exist {
        // Read it ourselves so an unreadable file is an error naming it, not silent defaults.
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        fig = fig.merge(Toml::string(&text));
    }
    fig = fig.merge(Env::prefixed("PICOSNITCH_").ignore(&["ROOT"]).split("__"));
    let warnings = unknown_keys(&fig);
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(describe(e)))?;
    validate(&config)?;
    Ok(Loaded { config, warnings })
}

fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("{key}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
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
    let sets = ["auto", "tp_btf", "fexit", "kprobe"];
    if !sets.contains(&c.monitoring.hook_set.as_str()) {
        return bad(
            "monitoring.hook_set",
            &format!("{:?}", c.monitoring.hook_set),
            "use \"auto\", \"tp_btf\", \"fexit\" or \"kprobe\"",
        );
    }
    Ok(())
}

impl Monitoring {
    /// The hook set to insist on, if any.
    pub fn only_hook_set(&self) -> Option<String> {
        (self.hook_set != "auto").then(|| self.hook_set.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, s).unwrap();
        load(&p, true)
    }

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
    fn unknown_keys_warn() {
        let l = load_str("[database]\nfoo = 1\n[bogus]\nx = 1\n").unwrap();
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(load(Path::new("/nonexistent/picosnitch.toml"), true).is_err());
        assert!(load(Path::new("/nonexistent/picosnitch.toml"), false).is_ok());
    }
}
