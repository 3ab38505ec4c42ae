//! logging::errorlog: a tracing layer that appends every warning and error, with its fields, to
//! error.log (picosnitch's place for them), through [`AppendLog`] (no links, `[data]` access,
//! reopened after SIGHUP).
use crate::logfile::AppendLog;
use crate::notify::exelog::local_time;
use std::fmt::Write as _;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Why error.log could not be written, kept for the daemon to report once it runs (reporting
/// it from inside the layer would log from within logging).
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The last failure to write error.log, if any, cleared by reading it.
pub fn take_failure() -> Option<String> {
    FAILURE.lock().ok()?.take()
}

pub struct Layer {
    log: Mutex<AppendLog>,
}

impl Layer {
    pub fn new(log: AppendLog) -> Self {
        Layer {
            log: Mutex::new(log),
        }
    }
}

/// `2026-11-23 15:07:06 WARN message key=value …`, one line.
pub fn line(level: &Level, now: i64, event: &Event<'_>) -> String {
    let mut v = Fields::default();
    event.record(&mut v);
    let mut out = format!("{} {level} {}", local_time(now), v.message);
    out.push_str(&v.rest);
    out.replace('\n', " ")
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let text = line(&level, crate::sink::now_unix(), event);
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        if let Err(e) = log.append(&text) {
            if let Ok(mut f) = FAILURE.lock() {
                *f = Some(format!("cannot write {}: {e}", log.path().display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataAccess;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_only_with_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("error.log");
        let layer = Layer::new(AppendLog::new(p.clone(), DataAccess::default()));
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("not this");
            tracing::warn!(source = "ring_full", count = 3, "kernel side lost data");
            tracing::error!("two\nlines");
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" WARN kernel side lost data source=\"ring_full\" count=3"),
            "{text}"
        );
        assert!(lines[1].ends_with(" ERROR two lines"), "{text}");
    }
}
