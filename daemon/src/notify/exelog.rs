//! exelog.rs: appends decision lines to exe.log without ever following a link or writing into a
//! file that is not ours (O_NOFOLLOW, regular file, a single hard link).
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct ExeLog {
    path: PathBuf,
    file: Option<File>,
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

use std::os::unix::fs::DirBuilderExt;

impl ExeLog {
    pub fn new(path: PathBuf) -> Self {
        ExeLog { path, file: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line; the file is opened on first use and reopened after an error.
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(open_append(&self.path, 0o644)?);
        }
        let f = self.file.as_mut().expect("opened above");
        let r = writeln!(f, "{line}");
        if r.is_err() {
            self.file = None;
        }
        r
    }
}

/// Local time as picosnitch writes it: `YYYY-mm-dd HH:MM:SS`.
pub fn local_time(unix: i64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; an all-zero tm is a valid initial value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return unix.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_and_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log/exe.log");
        let mut log = ExeLog::new(p.clone());
        log.append("one").unwrap();
        log.append("two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");

        let target = dir.path().join("victim");
        std::fs::write(&target, "mine").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_append(&link, 0o644).is_err());
        let hard = dir.path().join("hard.log");
        std::fs::hard_link(&target, &hard).unwrap();
        assert!(open_append(&hard, 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    }

    #[test]
    fn time_format() {
        let s = local_time(0);
        assert_eq!(s.len(), 19, "{s}");
        assert_eq!(&s[4..5], "-");
    }
}
