//! service::pidfile: one daemon per state directory. The daemon holds an open-file-description
//! lock on `picosnitch.lock` (mode 0600: only root can open it, so no user can take or block
//! it) for as long as it runs, and publishes its pid in `picosnitch.pid` (mode 0644, replaced
//! atomically, never locked). Readers trust a published pid only while the lock is held (when
//! they can see it) and the process is picosnitch ([`super::procexe`]).
use super::procexe;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest published pid file read (a pid and a newline).
const PID_FILE_MAX: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("picosnitch is already running (lock {path} is held{})", pid_note(*pid))]
    Running { pid: Option<u32>, path: PathBuf },
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("refusing {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(", pid {p}")).unwrap_or_default()
}

/// A published pid that is not to be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} names pid {pid}, which is not picosnitch ({why})")]
pub struct Untrusted {
    pub pid: u32,
    pub path: PathBuf,
    pub why: String,
}

/// The lock file next to the published pid file.
pub fn lock_path(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("lock")
}

/// The daemon's lock; the published pid file is removed when it is dropped.
#[derive(Debug)]
pub struct PidFile {
    _lock: File,
    published: PathBuf,
}

fn flock(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value (whole file from offset 0).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// The run directory: created 0755 when missing; refused unless it is a directory owned by us
/// that no one else may write.
fn check_dir(dir: &Path) -> Result<(), PidFileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| PidFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let m = std::fs::symlink_metadata(dir).map_err(|source| PidFileError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let why = if !m.is_dir() {
        Some("not a directory".to_string())
    } else if m.uid() != me {
        Some(format!("owned by uid {}, not {me}", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "mode {:04o}: others may write it",
            m.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(PidFileError::Unsafe {
            path: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

/// Opens (creating) the lock file: never through a link, never a FIFO, only a file of ours with
/// a single link, mode 0600 whatever it had.
fn open_lock(path: &Path) -> Result<File, PidFileError> {
    let io = |source| PidFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let m = file.metadata().map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.nlink() > 1 || m.uid() != me {
        return Err(PidFileError::Unsafe {
            path: path.to_path_buf(),
            why: "not a regular file of ours with a single link".into(),
        });
    }
    if m.mode() & 0o7777 != 0o600 {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io)?;
    }
    Ok(file)
}

impl PidFile {
    /// Takes the lock next to `pidfile` and publishes this process's pid in `pidfile`; fails
    /// when another daemon holds the lock.
    pub fn acquire(pidfile: &Path) -> Result<PidFile, PidFileError> {
        if let Some(dir) = pidfile.parent() {
            check_dir(dir)?;
        }
        let lock_path = lock_path(pidfile);
        let lock = open_lock(&lock_path)?;
        let l = flock(libc::F_WRLCK as libc::c_short);
        // SAFETY: fcntl with a pointer to a flock we own, on a descriptor we own.
        if unsafe { libc::fcntl(lock.as_raw_fd(), libc::F_OFD_SETLK, &l) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                return Err(PidFileError::Running {
                    pid: published(pidfile),
                    path: lock_path,
                });
            }
            return Err(PidFileError::Io {
                path: lock_path,
                source: e,
            });
        }
        let text = format!("{}\n", std::process::id());
        super::replace_file(pidfile, text.as_bytes(), false).map_err(|source| {
            PidFileError::Io {
                path: pidfile.to_path_buf(),
                source,
            }
        })?;
        Ok(PidFile {
            _lock: lock,
            published: pidfile.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if published(&self.published) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.published);
        }
    }
}

/// The pid written in `pidfile`: a regular file owned by root (or by us), read without
/// following a link or blocking, at most [`PID_FILE_MAX`] bytes.
pub fn published(pidfile: &Path) -> Option<u32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(pidfile)
        .ok()?;
    let m = file.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || (m.uid() != 0 && m.uid() != me) {
        return None;
    }
    let mut s = String::new();
    file.take(PID_FILE_MAX).read_to_string(&mut s).ok()?;
    s.trim().parse().ok().filter(|&p| p > 1)
}

/// Whether a daemon holds the lock: Some(true/false), or None when this user cannot open the
/// lock file to see (only root can).
fn locked(pidfile: &Path) -> Option<bool> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(lock_path(pidfile));
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Some(false);
    }
    let mut l = flock(libc::F_WRLCK as libc::c_short);
    // SAFETY: fcntl with a pointer to a flock we own, on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) } != 0 {
        return None;
    }
    Some(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// The pid of the running daemon of `pidfile`: Ok(None) when none runs (the lock is free, or no
/// pid is published), Err when the published pid is not picosnitch (a stale file whose pid was
/// reused, or a file naming another process): such a pid must not be signalled.
pub fn daemon(pidfile: &Path) -> Result<Option<u32>, Untrusted> {
    if locked(pidfile) == Some(false) {
        return Ok(None);
    }
    let Some(pid) = published(pidfile) else {
        return Ok(None);
    };
    match procexe::is_picosnitch(pid) {
        Ok(()) => Ok(Some(pid)),
        Err(why) => Err(Untrusted {
            pid,
            path: pidfile.to_path_buf(),
            why,
        }),
    }
}

/// The running daemon's pid, or None (none runs, or the published pid is not picosnitch).
pub fn running(pidfile: &Path) -> Option<u32> {
    daemon(pidfile).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run/picosnitch.pid");
        assert_eq!(running(&p), None);
        let held = PidFile::acquire(&p).unwrap();
        let m = std::fs::metadata(lock_path(&p)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(published(&p), Some(std::process::id()));
        assert_eq!(daemon(&p), Ok(Some(std::process::id())));
        match PidFile::acquire(&p) {
            Err(PidFileError::Running { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(!p.exists(), "the published pid goes with the daemon");
        assert_eq!(daemon(&p), Ok(None), "a free lock is no running daemon");
        let _again = PidFile::acquire(&p).unwrap();
    }

    #[test]
    fn a_run_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let e = PidFile::acquire(&run.join("picosnitch.pid")).unwrap_err();
        assert!(e.to_string().contains("others may write it"), "{e}");
    }
}
