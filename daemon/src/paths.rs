//! paths.rs: every file the daemon reads or writes, under `$PICOSNITCH_ROOT` when it is set.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub db: PathBuf,
    pub exe_log: PathBuf,
    pub conn_log: PathBuf,
    /// Warnings and errors, also appended here (the log itself goes to journald or stderr).
    pub error_log: PathBuf,
    /// `/run/picosnitch`: the pidfile, the status file and the API's unix socket.
    pub run_dir: PathBuf,
    pub pidfile: PathBuf,
    /// Live counters of the running daemon, for `picosnitch status`.
    pub status: PathBuf,
    /// The API's unix socket when the daemon binds it itself (not socket-activated).
    pub api_socket: PathBuf,
    /// Where `picosnitch systemd` writes the units.
    pub unit_dir: PathBuf,
}

impl Paths {
    /// Paths under `root` ("/" for the system's own files).
    pub fn under(root: &Path) -> Self {
        let p = |rel: &str| root.join(rel);
        Paths {
            config: p("etc/picosnitch/config.toml"),
            db: p("var/lib/picosnitch/picosnitch.db"),
            exe_log: p("var/log/picosnitch/exe.log"),
            conn_log: p("var/log/picosnitch/conn.log"),
            error_log: p("var/log/picosnitch/error.log"),
            run_dir: p("run/picosnitch"),
            pidfile: p("run/picosnitch/picosnitch.pid"),
            status: p("run/picosnitch/status.json"),
            api_socket: p("run/picosnitch/api.sock"),
            unit_dir: p("etc/systemd/system"),
        }
    }

    pub fn from_env() -> Self {
        Self::under(&root_from_env().unwrap_or_else(|| PathBuf::from("/")))
    }
}

/// `$PICOSNITCH_ROOT` when set: this instance must not touch (or ask systemd about) the
/// system's own picosnitch.
pub fn root_from_env() -> Option<PathBuf> {
    std::env::var_os("PICOSNITCH_ROOT")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_prefixes_everything() {
        let p = Paths::under(Path::new("/tmp/x"));
        assert_eq!(p.db, Path::new("/tmp/x/var/lib/picosnitch/picosnitch.db"));
        assert_eq!(p.config, Path::new("/tmp/x/etc/picosnitch/config.toml"));
        assert_eq!(p.api_socket, Path::new("/tmp/x/run/picosnitch/api.sock"));
        assert_eq!(
            p.error_log,
            Path::new("/tmp/x/var/log/picosnitch/error.log")
        );
        assert_eq!(
            Paths::under(Path::new("/")).db,
            Path::new("/var/lib/picosnitch/picosnitch.db")
        );
    }
}
