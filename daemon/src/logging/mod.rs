//! logging: where the daemon's own log goes. journald with structured fields (`EXE=`, `SHA256=`,
//! …) when systemd connected stderr to the journal, formatted lines on stderr otherwise; warnings
//! and errors are also appended to error.log.
pub mod errorlog;

use crate::logfile::AppendLog;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where the log went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Journald,
    Stderr,
}

/// The log level filter: `PICOSNITCH_LOG` (tracing's env-filter syntax), `info` by default.
fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("PICOSNITCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// True when stderr is the journal stream systemd set up for this service: `JOURNAL_STREAM`
/// holds the device and inode of that stream (a service whose stderr goes elsewhere, or a
/// child whose stderr was redirected, must not write to the journal behind its caller's back).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    meta.dev() == dev && meta.ino() == ino
}

/// Installs the global subscriber; `error_log` also receives every warning and error.
pub fn init(error_log: Option<AppendLog>) -> Target {
    let journald = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    // Field names as they are (uppercased): EXE=, SHA256=, UID=, …
                    .with_field_prefix(None)
                    .with_syslog_identifier("picosnitch".into()),
            ),
            Err(e) => {
                eprintln!("picosnitch: cannot reach journald, logging to stderr: {e}");
                None
            }
        }
    } else {
        None
    };
    let target = if journald.is_some() {
        Target::Journald
    } else {
        Target::Stderr
    };
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(journald)
        .with(fmt)
        .with(error_log.map(errorlog::Layer::new))
        .try_init();
    target
}
