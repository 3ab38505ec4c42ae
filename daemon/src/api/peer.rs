//! peer.rs: who may use the API's unix socket: root and members of `[data] group`, judged by the
//! credentials the kernel recorded when the caller connected (`SO_PEERCRED` for its user and
//! group, `SO_PEERGROUPS` for its supplementary groups), before any byte of the request is read.
//!
//! Both come from the socket, not from /proc/PID (whose PID may be reused) nor from the group
//! database (`getgrouplist` asks NSS, which may block, and describes the user rather than the
//! process): they are the groups the kernel itself checked against the socket file's mode.
use std::io;
use std::os::fd::AsRawFd;
use tokio::net::UnixStream;

/// `SO_PEERGROUPS` (Linux 4.13), the asm-generic value, which these architectures use.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "x86",
    target_arch = "arm"
))]
const SO_PEERGROUPS: libc::c_int = 59;

/// Most supplementary groups the kernel allows a process (NGROUPS_MAX).
const MAX_GROUPS: usize = 65_536;

/// The kernel's record of the process that connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Caller {
    /// Root, or a member of `group` (as its group or a supplementary group).
    pub fn may_use(&self, group: u32) -> bool {
        self.uid == 0 || self.gid == group || self.groups.contains(&group)
    }
}

/// The caller at the other end of `s`.
pub fn caller(s: &UnixStream) -> io::Result<Caller> {
    let cred = s.peer_cred()?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: peer_groups(s)?,
    })
}

/// The supplementary groups of the peer, as they were when it connected.
fn peer_groups(s: &UnixStream) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `groups`, which we own, and sets
        // `len` to the bytes written (or needed, with ERANGE).
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > MAX_GROUPS {
            return Err(e);
        }
        groups.resize(n, 0);
    }
}

/// The message of a refusal.
pub fn refusal(c: &Caller, group: u32) -> String {
    format!(
        "uid {} (gid {}) may not use the API socket: only root and members of the [data] group \
         (gid {group}) may",
        c.uid, c.gid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_own_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = caller(&a).unwrap();
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((c.uid, c.gid), (uid, gid));
        let nobody = Caller {
            uid: 65534,
            gid: 65534,
            groups: vec![100, 7],
        };
        assert!(!nobody.may_use(5));
        assert!(nobody.may_use(7));
        assert!(nobody.may_use(65534));
        assert!(Caller { uid: 0, ..nobody }.may_use(5));
        assert_eq!(
            refusal(&nobody_(), 5),
            "uid 65534 (gid 65534) may not use the API socket: only root and members of the \
             [data] group (gid 5) may"
        );
    }

    fn nobody_() -> Caller {
        Caller {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        }
    }
}
