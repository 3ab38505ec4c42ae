//! logfile.rs: append-only text logs (exe.log, error.log) opened as a root daemon must: never
//! through a link, never into a file that is not ours; owner, group and mode from `[data]`;
//! reopened after SIGHUP so that log rotation works.
use crate::config::DataAccess;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped by SIGHUP: every open log reopens its file before its next line.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every [`AppendLog`] to reopen its file (after `logrotate` moved it away).
pub fn request_reopen() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// Opens `path` for appending as a root daemon may: refuses symlinks, non-regular files and files
/// with several hard links (a user could have linked one of theirs there).
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        let m = std::fs::symlink_metadata(dir)?;
        if !m.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.nlink() > 1 {
        return Err(io::Error::other(format!(
            "{} is not a regular file with a single link",
            path.display()
        )));
    }
    Ok(file)
}

/// Gives an open data file the `[data]` mode, then owner and group (mode first: changing it
/// needs no privilege while the daemon still owns the file). Nothing is changed that is right.
pub fn apply_access(file: &File, access: DataAccess) -> io::Result<()> {
    let m = file.metadata()?;
    let fd = file.as_raw_fd();
    if m.mode() & 0o7777 != access.mode {
        // SAFETY: fchmod on a descriptor we own.
        if unsafe { libc::fchmod(fd, access.mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if m.uid() != access.uid || m.gid() != access.gid {
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(fd, access.uid, access.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Like [`apply_access`] for a file given by path; a symlink or a multiply-linked file is refused.
///
/// The file is opened with `O_PATH`: closing a descriptor that can read would drop every POSIX
/// lock this process holds on the file, and SQLite's locks on the database and its -shm file
/// are such locks (a reader closing would then delete the WAL the daemon still writes to).
pub fn apply_access_at(path: &Path, access: DataAccess) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.nlink() > 1 {
        return Err(io::Error::other(format!(
            "{} is not a regular file with a single link",
            path.display()
        )));
    }
    let fd = file.as_raw_fd();
    if m.mode() & 0o7777 != access.mode {
        // fchmod refuses O_PATH descriptors; the descriptor's /proc link names this very file.
        std::fs::set_permissions(
            format!("/proc/self/fd/{fd}"),
            std::fs::Permissions::from_mode(access.mode),
        )?;
    }
    if m.uid() != access.uid || m.gid() != access.gid {
        // SAFETY: an empty, NUL-terminated path with AT_EMPTY_PATH changes the file `fd` names.
        let r = unsafe {
            libc::fchownat(
                fd,
                c"".as_ptr(),
                access.uid,
                access.gid,
                libc::AT_EMPTY_PATH,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A log file that lines are appended to; opened on first use, reopened after an error and
/// after [`request_reopen`].
pub struct AppendLog {
    path: PathBuf,
    access: DataAccess,
    file: Option<File>,
    generation: u64,
}

impl AppendLog {
    pub fn new(path: PathBuf, access: DataAccess) -> Self {
        AppendLog {
            path,
            access,
            file: None,
            generation: generation(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a newline is added).
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        let now = generation();
        if now != self.generation {
            self.generation = now;
            self.file = None;
        }
        if self.file.is_none() {
            let f = open_append(&self.path, self.access.mode)?;
            apply_access(&f, self.access)?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        let r = f.write_all(format!("{line}\n").as_bytes());
        if r.is_err() {
            self.file = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_and_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log/exe.log");
        let mut log = AppendLog::new(p.clone(), DataAccess::default());
        log.append("one").unwrap();
        log.append("two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);

        let target = dir.path().join("victim");
        std::fs::write(&target, "mine").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_append(&link, 0o644).is_err());
        assert!(apply_access_at(&link, DataAccess::default()).is_err());
        let hard = dir.path().join("hard.log");
        std::fs::hard_link(&target, &hard).unwrap();
        assert!(open_append(&hard, 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    }

    #[test]
    fn reopens_after_rotation_with_data_access() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("error.log");
        let access = DataAccess {
            uid: 0,
            gid: 65534,
            mode: 0o640,
        };
        let mut log = AppendLog::new(p.clone(), access);
        log.append("before").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        if crate::collector::kernel::is_root() {
            assert_eq!((m.gid(), m.mode() & 0o7777), (65534, 0o640));
        }
        std::fs::rename(&p, dir.path().join("error.log.1")).unwrap();
        log.append("still the old file").unwrap();
        request_reopen();
        log.append("after").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("error.log.1")).unwrap(),
            "before\nstill the old file\n"
        );
    }
}
