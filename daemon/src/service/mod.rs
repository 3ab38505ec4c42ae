//! service: the daemon as a system service: the verbs that manage it (start, stop, restart,
//! status, systemd, check-config), what systemd hears (readiness, status, watchdog), the API's
//! activated sockets, signals and the pidfile.
pub mod control;
pub mod limits;
pub mod listen;
pub mod manager;
pub mod pidfile;
pub mod procexe;
pub mod report;
pub mod signals;
pub mod status;
pub mod units;

pub use listen::{listeners, Fallback};

use manager::Manager;
use status::Snapshot;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Replaces `path` with `bytes` atomically (a new temporary file, mode 0644, renamed over it),
/// never following a link; `durable` also syncs the data before the rename.
pub fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    // The mode given to open is narrowed by the umask.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the API's listeners were already taken by this process")]
    ListenersTaken,
    #[error("invalid socket activation (LISTEN_FDS/LISTEN_FDNAMES): {0}")]
    ListenFds(std::io::Error),
    #[error("activated socket fd {fd} ({name}) cannot serve the API: {why}")]
    BadActivatedSocket { fd: i32, name: String, why: String },
}

/// How often the status file is rewritten (systemd gets every change at once).
const STATUS_FILE_EVERY: Duration = Duration::from_secs(5);

/// The main loop's link to the outside: systemd's notifications and the status file.
pub struct Heartbeat {
    manager: Manager,
    status_file: PathBuf,
    started: i64,
    last_file: Option<Instant>,
}

impl Heartbeat {
    pub fn new(manager: Manager, status_file: PathBuf) -> Self {
        Heartbeat {
            manager,
            status_file,
            started: crate::sink::now_unix(),
            last_file: None,
        }
    }

    fn stamp(&self, snap: &mut Snapshot) {
        snap.pid = std::process::id();
        snap.version = env!("CARGO_PKG_VERSION").to_string();
        snap.started = self.started;
        snap.updated = crate::sink::now_unix();
    }

    fn write_file(&mut self, snap: &Snapshot, force: bool) {
        if !force
            && self
                .last_file
                .is_some_and(|t| t.elapsed() < STATUS_FILE_EVERY)
        {
            return;
        }
        self.last_file = Some(Instant::now());
        if let Err(e) = snap.write(&self.status_file) {
            tracing::debug!("cannot write {}: {e}", self.status_file.display());
        }
    }

    /// Hooks attached, database open: READY=1.
    pub fn ready(&mut self, mut snap: Snapshot) {
        self.stamp(&mut snap);
        self.manager.ready(&snap.line());
        self.write_file(&snap, true);
    }

    /// One turn of the main loop: WATCHDOG=1 (when `healthy`: a stalled or dead writer lets the
    /// watchdog fire), STATUS= when it changed, the status file.
    pub fn tick(&mut self, mut snap: Snapshot, healthy: bool) {
        self.stamp(&mut snap);
        self.manager.tick(&snap.line(), healthy);
        self.write_file(&snap, false);
    }

    /// STOPPING=1: what is open is written next.
    pub fn stopping(&mut self, mut snap: Snapshot) {
        self.stamp(&mut snap);
        self.manager.stopping(&format!(
            "stopping: writing the open window; {}",
            snap.line()
        ));
        self.write_file(&snap, true);
    }
}
