//! service::status: the daemon's live counters. The main loop hands a [`Snapshot`] to systemd
//! (STATUS=) and to `/run/picosnitch/status.json`; `picosnitch status` reads that file, the
//! pidfile lock and the database.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    pub version: String,
    /// Unix seconds.
    pub started: i64,
    pub updated: i64,
    pub hook_set: String,
    /// Rows written to the database since the daemon started, and their bytes.
    pub rows_written: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Losses reported since the daemon started (every source).
    pub losses: u64,
    /// Identity counters: executables unavailable or mismatched, unreadable command lines, …
    pub identity: BTreeMap<String, u64>,
    /// DNS counters: queries, answers taken, answers refused (`dns_unsolicited`), …
    #[serde(default)]
    pub dns: BTreeMap<String, u64>,
}

/// 1234567 → "1.2 MB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

impl Snapshot {
    /// The STATUS= line systemctl shows.
    pub fn line(&self) -> String {
        format!(
            "hook set {}; {} rows written ({} sent, {} received); {} losses",
            self.hook_set,
            self.rows_written,
            human_bytes(self.bytes_sent),
            human_bytes(self.bytes_received),
            self.losses
        )
    }

    /// Writes the status file atomically (a temporary file renamed over it), mode 0644.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        super::replace_file(path, &bytes, false)
    }

    pub fn read(path: &Path) -> Option<Snapshot> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_file() {
        let s = Snapshot {
            hook_set: "tp_btf".into(),
            rows_written: 12,
            bytes_sent: 1_234_567,
            bytes_received: 999,
            losses: 2,
            ..Default::default()
        };
        assert_eq!(
            s.line(),
            "hook set tp_btf; 12 rows written (1.2 MB sent, 999 B received); 2 losses"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        s.write(&p).unwrap();
        s.write(&p).unwrap();
        assert_eq!(Snapshot::read(&p), Some(s));
    }
}
