//! model.rs: the typed records that flow between stages (collector → identity → window → store).
use std::net::IpAddr;
use std::sync::Arc;

/// A file as the kernel names it: device (userspace `st_dev` encoding) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// Converts the kernel's internal `dev_t` (major << 20 | minor) to the userspace encoding
    /// that `fstat` reports.
    pub fn from_kernel(kdev: u32, ino: u64) -> Self {
        let major = u64::from(kdev >> 20);
        let minor = u64::from(kdev & 0xfffff);
        FileId {
            dev: libc::makedev(major as u32, minor as u32),
            ino,
        }
    }

    pub fn is_none(&self) -> bool {
        self.ino == 0
    }
}

/// A process as the kernel reported it when it first made traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelProc {
    pub tgid: u32,
    pub exe: FileId,
}

/// Bytes one (process, socket, peer) moved since the previous drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDelta {
    pub tgid: u32,
    /// Inode of the socket: with the peer, it tells one flow of a process from another.
    pub socket: u64,
    /// Start time of the process (ns since boot), to tell a reused pid apart.
    pub start_ns: u64,
    pub comm: String,
    pub exe: FileId,
    pub parent: KernelProc,
    pub grandparent: KernelProc,
    pub uid: u32,
    pub family: u16,
    pub protocol: u16,
    pub lport: u16,
    pub rport: u16,
    pub laddr: Option<IpAddr>,
    pub raddr: Option<IpAddr>,
    pub netns: u32,
    /// cgroup v2 id of the process (identity::container turns it into a container name).
    pub cgroup: u64,
    pub send: u64,
    pub recv: u64,
    pub events: u64,
}

/// A UDP datagram or TCP segment from port 53 the kernel copied as it reached a local socket (an
/// answer), or one a local socket sent to port 53 (a query, `query`). Both directions name the
/// ends the same way: the server (`server`, `sport`) and the local socket (`client`, `dport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket<'a> {
    /// Network namespace of the local socket; 0 when the kernel could not tell.
    pub netns: u32,
    /// `libc::IPPROTO_UDP` or `libc::IPPROTO_TCP`.
    pub protocol: u16,
    /// A query that left, not an answer that arrived.
    pub query: bool,
    pub server: IpAddr,
    pub sport: u16,
    pub client: IpAddr,
    pub dport: u16,
    /// TCP: sequence number of the first payload byte.
    pub seq: u32,
    /// Payload bytes of the packet; `data` holds its first `data.len()`.
    pub len: u32,
    pub data: &'a [u8],
}

/// A process lifetime event from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEvent {
    Exec {
        tgid: u32,
        ppid: u32,
        uid: u32,
        start_ns: u64,
        exe: FileId,
        comm: String,
        /// The file name given to execve; a hint, verified against `exe` before use.
        path: String,
        cgroup: u64,
        /// The executable's change time (ns) when it was executed: the version of its content
        /// this run has (0: not known).
        exe_ctime_ns: u64,
        parent: KernelProc,
        grandparent: KernelProc,
    },
    Fork {
        tgid: u32,
        ppid: u32,
        start_ns: u64,
        exe: FileId,
    },
    Exit {
        tgid: u32,
    },
}

/// What is known of one executable level (self, parent or grandparent) of a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExeIdent {
    /// Absolute path in the process's mount namespace; empty when unknown.
    pub exe: String,
    /// Process name (comm of the thread group leader).
    pub name: String,
    pub cmdline: String,
    /// Lowercase hex sha256, or a marker starting with `!` when it could not be computed.
    pub sha256: String,
}

/// The grouping key of a stored row (DESIGN §2); the pid is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub exe: Arc<ExeIdent>,
    pub parent: Arc<ExeIdent>,
    pub grandparent: Arc<ExeIdent>,
    pub uid: u32,
    pub family: u16,
    pub protocol: u16,
    pub lport: i32,
    pub rport: i32,
    pub laddr: String,
    pub raddr: String,
    pub domain: String,
    pub netns: u32,
    /// Container or system unit the process ran in (`podman:ID`, `unit:NAME`, …); empty: host.
    pub container: String,
}

/// One row of the `connections` table: a key and its sums over a write window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub contime: i64,
    pub key: RowKey,
    pub send: u64,
    pub recv: u64,
    pub events: u64,
}
