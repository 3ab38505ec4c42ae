//! service::manager: what systemd hears from the daemon through `NOTIFY_SOCKET` (sd_notify):
//! READY=1 once the hooks are attached and the database is open, STATUS= with live counters,
//! WATCHDOG=1 from the main loop, STOPPING=1 before the final flush. Without `NOTIFY_SOCKET`
//! (not started by systemd) every call does nothing.
use sd_notify::NotifyState;
use std::time::Duration;

/// Set by `picosnitch start` for the daemon it starts: its `NOTIFY_SOCKET` only waits for
/// READY=1 and goes away after it.
pub const READY_ONLY_ENV: &str = "PICOSNITCH_NOTIFY_READY_ONLY";

pub struct Manager {
    enabled: bool,
    ready_only: bool,
    watchdog: Option<Duration>,
    last_status: String,
    failed: bool,
}

impl Manager {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if enabled {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        if let Some(w) = watchdog.filter(|w| *w < Duration::from_secs(2)) {
            tracing::warn!(
                "WatchdogSec={}ms is shorter than two turns of the main loop (1 s each): use 2 s \
                 or more",
                w.as_millis()
            );
        }
        Manager {
            enabled,
            ready_only: std::env::var_os(READY_ONLY_ENV).is_some(),
            watchdog,
            last_status: String::new(),
            failed: false,
        }
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&mut self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        match sd_notify::notify(states) {
            Ok(()) => self.failed = false,
            // Said once per failure streak, not once a second.
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
            }
            Err(_) => {}
        }
    }

    /// The hooks are attached and the database is open.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        if self.ready_only {
            self.enabled = false;
            self.watchdog = None;
        }
    }

    /// One turn of the main loop: the watchdog ping (unless `ping` is false), and the status
    /// when it changed.
    pub fn tick(&mut self, status: &str, ping: bool) {
        let changed = status != self.last_status;
        let mut states = Vec::with_capacity(2);
        if ping && self.watchdog.is_some() {
            states.push(NotifyState::Watchdog);
        }
        if changed {
            states.push(NotifyState::Status(status));
        }
        if !states.is_empty() {
            self.send(&states);
        }
        if changed {
            self.last_status = status.to_string();
        }
    }

    /// A stop was asked for; what is still open gets written next.
    pub fn stopping(&mut self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}
