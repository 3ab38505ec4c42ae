//! records.rs: `#[repr(C)]` mirrors of daemon-ebpf/records.h and their conversion to model types.
use crate::model::{DnsPacket, FileId, FlowDelta, KernelProc, ProcEvent};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub sock_ino: u64,
    pub tgid: u32,
    pub family: u16,
    pub rport: u16,
    pub raddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowVal {
    pub send_bytes: u64,
    pub recv_bytes: u64,
    pub send_events: u64,
    pub recv_events: u64,
    pub start_ns: u64,
    pub exe_ino: u64,
    pub pexe_ino: u64,
    pub gpexe_ino: u64,
    pub exe_dev: u32,
    pub pexe_dev: u32,
    pub gpexe_dev: u32,
    pub uid: u32,
    pub ppid: u32,
    pub gppid: u32,
    pub netns: u32,
    pub protocol: u16,
    pub lport: u16,
    pub laddr: [u8; 16],
    pub comm: [u8; 16],
    pub tcp_consumed: u64,
    pub cgroup_id: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawProcEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub start_ns: u64,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub pad: u32,
    pub comm: [u8; 16],
    pub path: [u8; 256],
    pub pexe_ino: u64,
    pub gpexe_ino: u64,
    pub pexe_dev: u32,
    pub gppid: u32,
    pub gpexe_dev: u32,
    pub pad2: u32,
    pub cgroup_id: u64,
    pub exe_ctime_ns: u64,
}

/// Bytes of a DNS message the kernel copies (DNS_CAPTURE in records.h).
pub const DNS_CAPTURE: usize = 1232;
/// `kind` of a DNS record that is a query a local socket sent (DNS_QUERY in records.h).
const DNS_QUERY: u16 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawDnsEvent {
    pub netns: u32,
    pub len: u32,
    pub seq: u32,
    pub family: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub captured: u16,
    pub kind: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub data: [u8; DNS_CAPTURE],
}

/// Size of the header of a DNS record before its data.
const DNS_HEADER: usize = std::mem::size_of::<RawDnsEvent>() - DNS_CAPTURE;

impl Default for RawProcEvent {
    fn default() -> Self {
        // SAFETY: all-zero is a valid value of this plain-data struct.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: plain old data, no padding holes the kernel leaves uninitialised (all fields written).
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowVal {}

/// Indices of the per-CPU counters (enum stat_index in records.h).
pub const STAT_NAMES: [&str; 15] = [
    "proc_ringbuf_full",
    "totals_map_full",
    "pending_map_full",
    "peer_unreadable",
    "send_calls",
    "recv_calls",
    "proc_events",
    // Not a kernel counter: program runs the kernel skipped (collector::Collector::stats).
    "recursion_misses",
    "dns_ringbuf_full",
    "dns_unreadable",
    "dns_packets",
    // Answers to no query that left: refused, not lost (dns::Counters adds the daemon's own).
    "dns_unsolicited",
    "dns_queries",
    // Runs the kernel skipped that a twin counted (collector::rescue): not lost.
    "rescued_runs",
    // Not a kernel counter: returns our kretprobes missed (collector::kretprobe::missed).
    "kretprobe_missed",
];
/// The slot of `kretprobe_missed`, filled from tracefs rather than the stats map.
pub const STAT_KRETPROBE_MISSED: usize = 14;
/// The slot of `rescued_runs`.
pub const STAT_RESCUED: usize = 13;
/// The slot of `dns_unsolicited`: answers the kernel refused (not a loss).
pub const STAT_DNS_UNSOLICITED: usize = 11;
/// The slot of `recursion_misses`, filled from the programs' info rather than the stats map.
pub const STAT_RECURSION_MISSES: usize = 7;
/// Counters that mean data was lost (the others count activity).
pub const LOSS_STATS: [usize; 8] = [0, 1, 2, 3, 7, 8, 9, 14];

pub fn comm_str(c: &[u8]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// An address of the socket's family. All zeros is the wildcard for a local address, and "not
/// known" (`None`) for a peer, e.g. of a `recv()` on an unconnected socket.
fn addr_of(family: u16, raw: &[u8; 16], peer: bool) -> Option<IpAddr> {
    if peer && raw.iter().all(|&b| b == 0) {
        return None;
    }
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => {
            let a = Ipv6Addr::from(*raw);
            // A dual-stack socket talking to an IPv4 peer: show the IPv4 address.
            Some(a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)))
        }
        _ => None,
    }
}

/// The remote address of a totals entry, as its deltas carry it.
pub fn peer(k: &FlowKey) -> Option<IpAddr> {
    addr_of(k.family, &k.raddr, true)
}

/// Builds the delta of one totals entry from its counters and the previous reading.
pub fn flow_delta(k: &FlowKey, v: &FlowVal, send: u64, recv: u64, events: u64) -> FlowDelta {
    FlowDelta {
        tgid: k.tgid,
        socket: k.sock_ino,
        start_ns: v.start_ns,
        comm: comm_str(&v.comm),
        exe: FileId::from_kernel(v.exe_dev, v.exe_ino),
        parent: KernelProc {
            tgid: v.ppid,
            exe: FileId::from_kernel(v.pexe_dev, v.pexe_ino),
        },
        grandparent: KernelProc {
            tgid: v.gppid,
            exe: FileId::from_kernel(v.gpexe_dev, v.gpexe_ino),
        },
        uid: v.uid,
        family: k.family,
        protocol: v.protocol,
        lport: v.lport,
        rport: k.rport,
        laddr: addr_of(k.family, &v.laddr, false),
        raddr: addr_of(k.family, &k.raddr, true),
        netns: v.netns,
        cgroup: v.cgroup_id,
        send,
        recv,
        events,
    }
}

/// Reads one record of the DNS ring buffer; `None` for a record of the wrong size or family.
pub fn dns_packet(bytes: &[u8]) -> Option<DnsPacket<'_>> {
    if bytes.len() < std::mem::size_of::<RawDnsEvent>() {
        return None;
    }
    let u16_at = |o: usize| u16::from_ne_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let family = u16_at(12);
    let addr = |o: usize| {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&bytes[o..o + 16]);
        addr_of(family, &raw, false)
    };
    let captured = usize::from(u16_at(20)).min(DNS_CAPTURE);
    let query = u16_at(22) == DNS_QUERY;
    // The server is the destination of a query and the source of an answer.
    let (src, dst) = (addr(24)?, addr(40)?);
    let (sport, dport) = (u16_at(16), u16_at(18));
    Some(DnsPacket {
        netns: u32_at(0),
        len: u32_at(4),
        seq: u32_at(8),
        protocol: u16_at(14),
        query,
        server: if query { dst } else { src },
        sport: if query { dport } else { sport },
        client: if query { src } else { dst },
        dport: if query { sport } else { dport },
        data: &bytes[DNS_HEADER..DNS_HEADER + captured],
    })
}

/// Parses one ring-buffer record; `None` for a record of unknown kind or size.
pub fn proc_event(bytes: &[u8]) -> Option<ProcEvent> {
    if bytes.len() < std::mem::size_of::<RawProcEvent>() {
        return None;
    }
    // SAFETY: length checked; RawProcEvent is plain data; read_unaligned handles alignment.
    let e: RawProcEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let exe = FileId::from_kernel(e.exe_dev, e.exe_ino);
    Some(match e.kind {
        1 => ProcEvent::Exec {
            tgid: e.tgid,
            ppid: e.ppid,
            uid: e.uid,
            start_ns: e.start_ns,
            exe,
            comm: comm_str(&e.comm),
            path: comm_str(&e.path),
            cgroup: e.cgroup_id,
            exe_ctime_ns: e.exe_ctime_ns,
            parent: KernelProc {
                tgid: e.ppid,
                exe: FileId::from_kernel(e.pexe_dev, e.pexe_ino),
            },
            grandparent: KernelProc {
                tgid: e.gppid,
                exe: FileId::from_kernel(e.gpexe_dev, e.gpexe_ino),
            },
        },
        2 => ProcEvent::Fork {
            tgid: e.tgid,
            ppid: e.ppid,
            start_ns: e.start_ns,
            exe,
        },
        3 => ProcEvent::Exit { tgid: e.tgid },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_records_h() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 32);
        assert_eq!(std::mem::size_of::<FlowVal>(), 144);
        assert_eq!(std::mem::size_of::<RawProcEvent>(), 360);
        assert_eq!(std::mem::size_of::<RawDnsEvent>(), 56 + DNS_CAPTURE);
        assert_eq!(DNS_HEADER, 56);
    }

    #[test]
    fn dns_record_is_read_by_offset() {
        let mut raw = RawDnsEvent {
            netns: 4026531840,
            len: 40,
            seq: 9,
            family: AF_INET,
            protocol: 17,
            sport: 53,
            dport: 40000,
            captured: 3,
            kind: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            data: [0; DNS_CAPTURE],
        };
        raw.saddr[..4].copy_from_slice(&[127, 0, 0, 153]);
        raw.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.data[..3].copy_from_slice(b"abc");
        // SAFETY: plain data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawDnsEvent).cast::<u8>(),
                std::mem::size_of::<RawDnsEvent>(),
            )
        };
        let p = dns_packet(bytes).unwrap();
        assert_eq!(p.netns, 4026531840);
        assert_eq!(
            (p.len, p.seq, p.protocol, p.sport, p.dport),
            (40, 9, 17, 53, 40000)
        );
        assert_eq!(p.server, "127.0.0.153".parse::<IpAddr>().unwrap());
        assert_eq!(p.client, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.data, b"abc");
        assert!(!p.query);
        assert!(dns_packet(&bytes[..100]).is_none());
        // A query names the same ends: the server is its destination.
        raw.kind = DNS_QUERY;
        (raw.sport, raw.dport) = (40000, 53);
        (raw.saddr, raw.daddr) = (raw.daddr, raw.saddr);
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawDnsEvent).cast::<u8>(),
                std::mem::size_of::<RawDnsEvent>(),
            )
        };
        let q = dns_packet(bytes).unwrap();
        assert!(q.query);
        assert_eq!((q.sport, q.dport), (53, 40000));
        assert_eq!(q.server, "127.0.0.153".parse::<IpAddr>().unwrap());
        assert_eq!(q.client, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_v6_is_shown_as_v4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            addr_of(AF_INET6, &raw, true),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(addr_of(17, &raw, true), None);
        assert_eq!(addr_of(AF_INET, &[0; 16], true), None);
        assert_eq!(
            addr_of(AF_INET, &[0; 16], false),
            Some("0.0.0.0".parse().unwrap())
        );
    }

    #[test]
    fn kernel_dev_converts_to_userspace_encoding() {
        // 259:3 (nvme partition) in kernel encoding.
        let f = FileId::from_kernel((259 << 20) | 3, 7);
        assert_eq!(f.dev, libc::makedev(259, 3));
    }
}
