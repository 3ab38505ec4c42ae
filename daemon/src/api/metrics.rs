//! metrics.rs: counters kept since the daemon started (bytes per executable, losses by source,
//! rows and windows written, window write latency) and their Prometheus text rendering.
use super::status::Info;
use crate::model::Row;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Executables counted apart; the traffic of any further ones goes to [`OTHER_EXE`].
const MAX_EXES: usize = 10_000;
pub const OTHER_EXE: &str = "(other)";
/// Upper bounds (seconds) of the window write latency histogram buckets.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Executable path → (sent, received) bytes.
    pub exes: HashMap<String, (u64, u64)>,
    pub losses: BTreeMap<String, u64>,
    pub rows: u64,
    pub windows: u64,
    pub write_failures: u64,
    /// Count of window writes per bucket (not cumulative), the last one for "+Inf".
    pub latency_buckets: [u64; BUCKETS.len() + 1],
    pub latency_sum: f64,
    /// Size of the database's write-ahead log at the last checkpoint, in bytes.
    pub wal_bytes: u64,
    /// Checkpoints that could not shrink the write-ahead log (a reader held a transaction).
    pub wal_blocked: u64,
    /// DNS events that are not losses (queries seen, answers refused, …), by event.
    pub dns: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Metrics {
    state: Mutex<Snapshot>,
}

impl Metrics {
    pub fn committed(&self, rows: &[Row], took: Duration) {
        let Ok(mut s) = self.state.lock() else { return };
        for r in rows {
            let full = s.exes.len() >= MAX_EXES;
            let key = if full && !s.exes.contains_key(&r.key.exe.exe) {
                OTHER_EXE
            } else {
                r.key.exe.exe.as_str()
            };
            if let Some(e) = s.exes.get_mut(key) {
                e.0 = e.0.saturating_add(r.send);
                e.1 = e.1.saturating_add(r.recv);
            } else {
                s.exes.insert(key.to_owned(), (r.send, r.recv));
            }
        }
        s.rows += rows.len() as u64;
        s.windows += 1;
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        s.latency_buckets[i] += 1;
        s.latency_sum += secs;
    }

    pub fn loss(&self, source: &str, count: u64) {
        if let Ok(mut s) = self.state.lock() {
            let n = s.losses.entry(source.to_owned()).or_default();
            *n = n.saturating_add(count);
        }
    }

    /// The DNS side's running totals (the main loop sets them after every drain).
    pub fn set_dns(&self, counters: &[(&str, u64)]) {
        if let Ok(mut s) = self.state.lock() {
            for (k, v) in counters {
                s.dns.insert((*k).to_owned(), *v);
            }
        }
    }

    pub fn write_failed(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.write_failures += 1;
        }
    }

    /// What the last checkpoint of the write-ahead log found.
    pub fn wal(&self, bytes: u64, blocked: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.wal_bytes = bytes;
            s.wal_blocked += u64::from(blocked);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A label value with `\`, `"` and newlines escaped (Prometheus text format 0.0.4).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition of `s`.
pub fn render(s: &Snapshot, info: &Info, subscribers: usize, now: i64) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "picosnitch_build_info",
        "gauge",
        "Version of the running daemon.",
    );
    let _ = writeln!(
        o,
        "picosnitch_build_info{{version=\"{}\"}} 1",
        label(&info.version)
    );
    head(
        &mut o,
        "picosnitch_hook_set_info",
        "gauge",
        "Traffic hook set attached to the kernel, and the kernel release.",
    );
    let _ = writeln!(
        o,
        "picosnitch_hook_set_info{{hook_set=\"{}\",kernel=\"{}\"}} 1",
        label(&info.hook_set),
        label(&info.kernel)
    );
    head(
        &mut o,
        "picosnitch_optional_hooks_skipped",
        "gauge",
        "Optional hooks of the attached set that this kernel does not offer.",
    );
    let _ = writeln!(
        o,
        "picosnitch_optional_hooks_skipped {}",
        info.skipped.len()
    );
    head(
        &mut o,
        "picosnitch_start_time_seconds",
        "gauge",
        "When the daemon started (unix time).",
    );
    let _ = writeln!(o, "picosnitch_start_time_seconds {}", info.started);
    head(
        &mut o,
        "picosnitch_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    let _ = writeln!(
        o,
        "picosnitch_uptime_seconds {}",
        (now - info.started).max(0)
    );

    let mut exes: Vec<(&String, &(u64, u64))> = s.exes.iter().collect();
    exes.sort();
    for (name, dir, help) in [
        (
            "picosnitch_exe_send_bytes_total",
            0,
            "Bytes sent by executable path, written since the daemon started.",
        ),
        (
            "picosnitch_exe_recv_bytes_total",
            1,
            "Bytes received by executable path, written since the daemon started.",
        ),
    ] {
        head(&mut o, name, "counter", help);
        for (exe, (send, recv)) in &exes {
            let v = if dir == 0 { send } else { recv };
            let _ = writeln!(o, "{name}{{exe=\"{}\"}} {v}", label(exe));
        }
    }
    head(
        &mut o,
        "picosnitch_losses_total",
        "counter",
        "Events or bytes that could not be counted, by source, since the daemon started.",
    );
    for (source, n) in &s.losses {
        let _ = writeln!(
            o,
            "picosnitch_losses_total{{source=\"{}\"}} {n}",
            label(source)
        );
    }
    for (name, v, help) in [
        (
            "picosnitch_rows_written_total",
            s.rows,
            "Connection rows written to the database.",
        ),
        (
            "picosnitch_windows_written_total",
            s.windows,
            "Write windows committed to the database.",
        ),
        (
            "picosnitch_write_failures_total",
            s.write_failures,
            "Failed window writes (each is kept and retried).",
        ),
        (
            "picosnitch_wal_checkpoints_blocked_total",
            s.wal_blocked,
            "Checkpoints that could not shrink the write-ahead log (a reader held a transaction).",
        ),
    ] {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    head(
        &mut o,
        "picosnitch_wal_bytes",
        "gauge",
        "Size of the database's write-ahead log at the last checkpoint.",
    );
    let _ = writeln!(o, "picosnitch_wal_bytes {}", s.wal_bytes);
    head(
        &mut o,
        "picosnitch_dns_events_total",
        "counter",
        "DNS queries seen and answers taken or refused (unsolicited: no query waited for them).",
    );
    for (event, n) in &s.dns {
        let _ = writeln!(
            o,
            "picosnitch_dns_events_total{{event=\"{}\"}} {n}",
            label(event)
        );
    }
    let h = "picosnitch_window_write_seconds";
    head(
        &mut o,
        h,
        "histogram",
        "Time to write one window in one database transaction.",
    );
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += s.latency_buckets[i];
        let _ = writeln!(o, "{h}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    cumulative += s.latency_buckets[BUCKETS.len()];
    let _ = writeln!(o, "{h}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(o, "{h}_sum {}", s.latency_sum);
    let _ = writeln!(o, "{h}_count {cumulative}");
    head(
        &mut o,
        "picosnitch_event_subscribers",
        "gauge",
        "Clients following the live event feed.",
    );
    let _ = writeln!(o, "picosnitch_event_subscribers {subscribers}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("/a\"b\\c\nd"), "/a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.committed(&[], Duration::from_micros(500));
        m.committed(&[], Duration::from_millis(30));
        m.committed(&[], Duration::from_secs(20));
        let s = m.snapshot();
        let text = render(&s, &Info::default(), 0, 0);
        assert!(
            text.contains("picosnitch_window_write_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("picosnitch_window_write_seconds_bucket{le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("picosnitch_window_write_seconds_bucket{le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("picosnitch_window_write_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("picosnitch_window_write_seconds_count 3\n"),
            "{text}"
        );
    }

    #[test]
    fn executables_beyond_the_cap_are_summed_as_other() {
        let m = Metrics::default();
        {
            let mut s = m.state.lock().unwrap();
            for i in 0..MAX_EXES {
                s.exes.insert(format!("/e{i}"), (0, 0));
            }
        }
        let mut r = crate::api::feed::test_row("/new", 5, 6);
        m.committed(std::slice::from_ref(&r), Duration::ZERO);
        r.key.exe = std::sync::Arc::new(crate::model::ExeIdent {
            exe: "/e1".into(),
            ..Default::default()
        });
        m.committed(std::slice::from_ref(&r), Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(s.exes.get(OTHER_EXE), Some(&(5, 6)));
        assert_eq!(s.exes.get("/e1"), Some(&(5, 6)));
        assert!(!s.exes.contains_key("/new"));
    }
}
