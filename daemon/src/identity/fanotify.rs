//! fanotify.rs: watches cached executables for writes (FAN_MODIFY, FAN_CLOSE_WRITE) and reports
//! which files changed, or that the queue overflowed and every cached hash is suspect.
use crate::model::FileId;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

const FAN_CLASS_NOTIF: u32 = 0;
const FAN_CLOEXEC: u32 = 1;
const FAN_NONBLOCK: u32 = 2;
const FAN_MARK_ADD: u32 = 1;
const FAN_MARK_REMOVE: u32 = 2;
const FAN_MODIFY: u64 = 0x2;
const FAN_CLOSE_WRITE: u64 = 0x8;
const FAN_Q_OVERFLOW: u64 = 0x4000;
const FAN_NOFD: i32 = -1;

#[repr(C)]
struct Metadata {
    event_len: u32,
    vers: u8,
    reserved: u8,
    metadata_len: u16,
    mask: u64,
    fd: i32,
    pid: i32,
}

/// What one read of the fanotify queue found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub modified: Vec<FileId>,
    pub overflow: bool,
}

pub struct Watcher {
    fd: OwnedFd,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        let flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32;
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a new descriptor we own.
        Ok(Watcher {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Marks the file behind `file` (an open executable) for writes.
    pub fn watch(&self, file: &impl AsRawFd) -> io::Result<()> {
        self.mark(file, FAN_MARK_ADD)
    }

    /// Removes the mark of the file behind `file` (it left the fd cache).
    pub fn unwatch(&self, file: &impl AsRawFd) -> io::Result<()> {
        self.mark(file, FAN_MARK_REMOVE)
    }

    fn mark(&self, file: &impl AsRawFd, how: u32) -> io::Result<()> {
        // SAFETY: a NULL path makes fanotify mark the object `file` refers to.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                how,
                FAN_MODIFY | FAN_CLOSE_WRITE,
                file.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads every queued event without blocking.
    pub fn read(&self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            parse(&buf[..n as usize], &mut changes);
        }
        changes.modified.sort();
        changes.modified.dedup();
        Ok(changes)
    }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn parse(mut buf: &[u8], changes: &mut Changes) {
    let size = std::mem::size_of::<Metadata>();
    while buf.len() >= size {
        // SAFETY: at least one metadata record is left; read_unaligned copes with alignment.
        let m: Metadata = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        let len = (m.event_len as usize).clamp(size, buf.len());
        if m.mask & FAN_Q_OVERFLOW != 0 {
            changes.overflow = true;
        }
        if m.fd != FAN_NOFD && m.fd >= 0 {
            // SAFETY: the kernel opened this descriptor for us; we close it here.
            let file = unsafe { std::fs::File::from_raw_fd(m.fd) };
            if let Ok(meta) = file.metadata() {
                changes.modified.push(FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                });
            }
        }
        buf = &buf[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reports_writes_to_a_watched_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, b"one").unwrap();
        let w = Watcher::new().unwrap();
        let f = std::fs::File::open(&p).unwrap();
        w.watch(&f).unwrap();
        assert_eq!(w.read().unwrap(), Changes::default());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        let meta = f.metadata().unwrap();
        let c = w.read().unwrap();
        assert_eq!(
            c.modified,
            vec![FileId {
                dev: meta.dev(),
                ino: meta.ino()
            }]
        );
        assert!(!c.overflow);
    }
}
