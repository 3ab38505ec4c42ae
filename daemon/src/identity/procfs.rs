//! procfs.rs: reading one process's executable, command line, name and start time from /proc.
use crate::model::FileId;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// An executable opened through /proc/PID/exe (resolved in the process's mount namespace).
pub struct OpenedExe {
    pub file: File,
    pub id: FileId,
    pub path: String,
}

/// Opens /proc/PID/exe and reads its path; the fd keeps the inode alive for hashing later.
pub fn open_exe(pid: u32) -> io::Result<OpenedExe> {
    let link = format!("/proc/{pid}/exe");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&link)?;
    let meta = file.metadata()?;
    let target = std::fs::read_link(&link)?;
    let mut path = target.to_string_lossy().into_owned();
    if let Some(p) = path.strip_suffix(" (deleted)") {
        path = p.to_string();
    }
    Ok(OpenedExe {
        file,
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        path,
    })
}

/// Opens an executable by the file name the kernel saw at exec, for a process that exited before
/// /proc/PID/exe could be opened. The caller must compare `id` with the kernel's (dev, ino).
pub fn open_path(path: &str) -> io::Result<OpenedExe> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    use std::os::fd::AsRawFd;
    let canonical = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    Ok(OpenedExe {
        file,
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        path: canonical.to_string_lossy().into_owned(),
    })
}

/// The path /proc/PID/exe names (without a " (deleted)" suffix).
pub fn exe_path(pid: u32) -> io::Result<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let path = target.to_string_lossy();
    Ok(path.strip_suffix(" (deleted)").unwrap_or(&path).to_string())
}

/// The (dev, ino) of a path.
pub fn file_id(path: &str) -> io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The command line with NUL separators turned into spaces; empty for kernel threads.
pub fn cmdline(pid: u32) -> io::Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let trimmed = raw.strip_suffix(b"\0").unwrap_or(&raw);
    let parts: Vec<String> = trimmed
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Ok(parts.join(" "))
}

pub fn comm(pid: u32) -> io::Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/{pid}/comm"))?
        .trim_end_matches('\n')
        .to_string())
}

/// Start time of the process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The name field may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Converts the kernel's start_boottime (ns) to /proc's clock ticks.
pub fn ns_to_ticks(ns: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ns / (1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_survives_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(12345));
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let exe = open_exe(me).unwrap();
        assert_eq!(exe.path, std::env::current_exe().unwrap().to_string_lossy());
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(start_ticks(me).unwrap() > 0);
    }
}
