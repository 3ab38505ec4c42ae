//! service::signals: SIGTERM and SIGINT stop the daemon (after the final drain and write),
//! SIGHUP reopens the log files (for log rotation) and runs the daemon's other reloads (GeoIP
//! databases). The handlers are installed before readiness
//! is announced, so no signal is missed and SIGHUP never kills the daemon.
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at SIGTERM or SIGINT; SIGHUPs before that reopen the log files and call
    /// `on_hup`.
    pub async fn stopped(mut self, on_hup: impl Fn()) {
        let name = loop {
            tokio::select! {
                _ = self.term.recv() => break "SIGTERM",
                _ = self.int.recv() => break "SIGINT",
                _ = self.hup.recv() => {
                    crate::logfile::request_reopen();
                    tracing::info!("SIGHUP: log files are reopened");
                    on_hup();
                }
            }
        };
        tracing::info!("{name}: writing the open window");
    }
}
