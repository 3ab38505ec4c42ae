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
/// /proc/PID/exe could be opened. The name is the user's to change, so it is opened with
/// `O_PATH|O_NOFOLLOW` (no final symlink followed, nothing opened that could block: a FIFO, a
/// device), must be a regular file that `expected` accepts by (dev, ino), and only then is
/// reopened read-only through `/proc/self/fd/N` (`O_NONBLOCK|O_NOCTTY`).
pub fn open_path(path: &str, expected: impl Fn(FileId) -> bool) -> io::Result<OpenedExe> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = handle.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if !expected(id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not the file the kernel executed",
        ));
    }
    use std::os::fd::AsRawFd;
    let through = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&through)?;
    let reopened = file.metadata()?;
    if (reopened.dev(), reopened.ino()) != (id.dev, id.ino) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the file changed while it was opened",
        ));
    }
    let canonical = std::fs::read_link(&through)?;
    Ok(OpenedExe {
        file,
        id,
        path: canonical.to_string_lossy().into_owned(),
    })
}

/// The file a live process runs and the path it runs it by, as its own mount namespace names it
/// (a binary bind-mounted into a container keeps the container's name). The file is read through
/// the /proc/PID/exe link itself (nothing is looked up by name), before and after the link is
/// read: the path belongs to that file unless both differ.
pub fn live_exe(pid: u32) -> io::Result<(FileId, String)> {
    let link = format!("/proc/{pid}/exe");
    let id = |m: std::fs::Metadata| FileId {
        dev: m.dev(),
        ino: m.ino(),
    };
    let before = id(std::fs::metadata(&link)?);
    let target = std::fs::read_link(&link)?;
    let after = id(std::fs::metadata(&link)?);
    if before != after {
        return Err(io::Error::other(
            "the process executed another file meanwhile",
        ));
    }
    let path = target.to_string_lossy();
    Ok((
        after,
        path.strip_suffix(" (deleted)").unwrap_or(&path).to_string(),
    ))
}

/// The (dev, ino) of a path (a stat: links are followed, nothing is opened).
pub fn file_id(path: &str) -> io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Bytes of a command line kept; a longer one is cut there and ends with [`cmdline_marker`].
pub const CMDLINE_KEEP: usize = 4096;
/// Bytes of /proc/PID/cmdline read at most (more than the kernel lets argv and envp hold), to
/// hash the whole and count its length; nothing beyond `CMDLINE_KEEP` is kept.
pub const CMDLINE_READ_MAX: u64 = 8 << 20;

/// What ends a cut command line: ` …[+N bytes sha256:XXXXXXXX]`, N the bytes of
/// /proc/PID/cmdline not kept and XXXXXXXX the first 8 hex digits of the sha256 of all of it, so
/// long command lines that differ after the cut stay distinct.
pub fn cmdline_marker(rest: u64, sha256_hex: &str) -> String {
    format!(" …[+{rest} bytes sha256:{}]", &sha256_hex[..8])
}

/// The command line with NUL separators turned into spaces; empty for kernel threads. At most
/// `CMDLINE_KEEP` bytes are kept (see [`cmdline_marker`]); at most `CMDLINE_READ_MAX` are read.
pub fn cmdline(pid: u32) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let file = File::open(format!("/proc/{pid}/cmdline"))?;
    let mut reader = file.take(CMDLINE_READ_MAX);
    let mut head = Vec::with_capacity(256);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        let room = (CMDLINE_KEEP + 1).saturating_sub(head.len()).min(n);
        head.extend_from_slice(&buf[..room]);
        total += n as u64;
    }
    let keep = CMDLINE_KEEP as u64;
    // Whole: within the cap, or the cap then only the trailing NUL.
    if total <= keep || (total == keep + 1 && head.ends_with(b"\0")) {
        return Ok(join_args(&head));
    }
    let kept = cut_at_char(&head[..CMDLINE_KEEP]);
    let mut out = join_args(kept);
    out.push_str(&cmdline_marker(
        total - kept.len() as u64,
        &hex::encode(hasher.finalize()),
    ));
    Ok(out)
}

/// NUL-separated arguments as one line: separators become spaces, a trailing NUL is dropped.
fn join_args(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(b"\0").unwrap_or(raw);
    let parts: Vec<std::borrow::Cow<str>> = trimmed
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .collect();
    parts.join(" ")
}

/// `b` without an incomplete UTF-8 sequence at its end (the cut may fall inside a character).
fn cut_at_char(b: &[u8]) -> &[u8] {
    for back in 1..=b.len().min(4) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { &b[..b.len() - back] } else { b };
    }
    b
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

    /// A 2 MB argv: 4 KiB kept, then the marker with the rest's length and the whole's hash.
    #[test]
    fn long_command_lines_are_cut_with_length_and_hash() {
        use sha2::{Digest, Sha256};
        use std::os::unix::process::CommandExt;
        // 32 arguments of 64 KiB (one may not pass 128 KiB), under a stack limit that lets
        // argv hold them.
        let args: Vec<String> = (0..32)
            .map(|i| format!("{i:02}").repeat(32 << 10))
            .collect();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 10", "x"]).args(&args);
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 << 20,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_STACK, &lim);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let big = args.join("\0");
        let pid = child.id();
        // Until sh has exec'd, the cmdline is the test's (forked) one.
        let mut got = String::new();
        for _ in 0..200 {
            got = cmdline(pid).unwrap();
            if got.starts_with("sh -c") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let raw = format!("sh\0-c\0sleep 10\0x\0{big}\0");
        let kept = &raw[..CMDLINE_KEEP];
        let want = format!(
            "{}{}",
            kept.replace('\0', " "),
            cmdline_marker(
                (raw.len() - CMDLINE_KEEP) as u64,
                &hex::encode(Sha256::digest(raw.as_bytes()))
            )
        );
        assert_eq!(got, want);
        let marker = format!(" …[+{} bytes sha256:", raw.len() - 4096);
        assert!(got.contains(&marker), "{}", &got[4000..]);
        assert!(got.len() < CMDLINE_KEEP + 64, "{}", got.len());
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        assert_eq!(cut_at_char("aé".as_bytes()), "aé".as_bytes());
        assert_eq!(cut_at_char(&"aé".as_bytes()[..2]), b"a");
        assert_eq!(cut_at_char(&"a€".as_bytes()[..3]), b"a");
        assert_eq!(cut_at_char(&"a😀".as_bytes()[..4]), b"a");
        assert_eq!(cut_at_char("a😀".as_bytes()), "a😀".as_bytes());
        assert_eq!(join_args(b"a\0b c\0"), "a b c");
    }

    /// Exec file names of exited processes: a FIFO or a symlink is refused at once, and so is
    /// a regular file that is not the kernel's; the kernel's file opens read-only.
    #[test]
    fn open_path_refuses_what_would_block_or_mislead() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let file = dir.path().join("file");
        std::fs::write(&file, b"bin").unwrap();
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        let to_fifo = dir.path().join("to-fifo");
        symlink(&fifo, &to_fifo).unwrap();
        let any = |_: FileId| true;
        let err = |p: &std::path::Path, f: &dyn Fn(FileId) -> bool| {
            open_path(p.to_str().unwrap(), f).err().unwrap().to_string()
        };
        assert_eq!(err(&fifo, &any), "not a regular file");
        assert_eq!(err(&to_fifo, &any), "not a regular file");
        assert_eq!(err(&link, &any), "not a regular file");
        assert_eq!(err(&file, &|_| false), "not the file the kernel executed");
        let o = open_path(file.to_str().unwrap(), any).unwrap();
        assert_eq!(o.path, file.to_str().unwrap());
        assert_eq!(o.id, file_id(file.to_str().unwrap()).unwrap());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &o.file, &mut s).unwrap();
        assert_eq!(s, "bin");
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
