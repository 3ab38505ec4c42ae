//! service::pidfile: `/run/picosnitch/picosnitch.pid`, holding the daemon's pid under an
//! open-file-description lock for as long as it runs. Whether a daemon runs is the lock, not the
//! file's existence, so a stale file after a crash is harmless and checking never takes the lock.
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("picosnitch is already running (pid {pid}, pidfile {path})")]
    Running { pid: u32, path: PathBuf },
    #[error("cannot use pidfile {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The daemon's locked pidfile; the lock goes with the process.
#[derive(Debug)]
pub struct PidFile {
    _file: File,
}

fn open(path: &Path, write: bool) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.nlink() > 1 {
        return Err(io::Error::other("not a regular file with a single link"));
    }
    Ok(file)
}

fn flock(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value (whole file from offset 0).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl PidFile {
    /// Creates and locks the pidfile and writes this process's pid into it; fails when another
    /// process holds it.
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io)?;
        }
        let mut file = open(path, true).map_err(io)?;
        let l = flock(libc::F_WRLCK as libc::c_short);
        // SAFETY: fcntl with a pointer to a flock we own, on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &l) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                return Err(PidFileError::Running {
                    pid: read_pid(&mut file).unwrap_or(0),
                    path: path.to_path_buf(),
                });
            }
            return Err(io(e));
        }
        // Readable by everyone whatever the umask: `picosnitch status` as any user.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(PidFile { _file: file })
    }
}

/// The pid of the daemon holding `path`, or None when no process holds it.
pub fn running(path: &Path) -> Option<u32> {
    let mut file = open(path, false).ok()?;
    let mut l = flock(libc::F_WRLCK as libc::c_short);
    // SAFETY: fcntl with a pointer to a flock we own, on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) } != 0 {
        return None;
    }
    if l.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    Some(read_pid(&mut file).unwrap_or(0))
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
        assert_eq!(running(&p), Some(std::process::id()));
        match PidFile::acquire(&p) {
            Err(PidFileError::Running { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert_eq!(running(&p), None, "a stale file is not a running daemon");
        let _again = PidFile::acquire(&p).unwrap();
    }
}
