//! hooks.rs: the hook sets of DESIGN §3 and attaching the best one this kernel allows.
//!
//! Sets are tried in order; a set that fails half-way is unloaded entirely before the next is
//! tried, so no program of a refused set stays in the kernel.
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, FEntry, FExit,
    KProbe, RawTracePoint, TracePoint,
};
use aya::{Btf, Ebpf};

/// How one program of the object is attached.
#[derive(Debug, Clone, Copy)]
pub enum Attach {
    BtfTp(&'static str, &'static str),
    Tp(&'static str, &'static str, &'static str),
    RawTp(&'static str, &'static str),
    FEntry(&'static str, &'static str),
    FExit(&'static str, &'static str),
    KProbe(&'static str, &'static str),
    /// A return probe with room for every call in flight (`kretprobe`).
    KRetProbe(&'static str, &'static str),
    /// A cgroup/sock_addr program attached to the root of the cgroup v2 hierarchy.
    CgroupSockAddr(&'static str),
    /// A cgroup_skb/ingress program attached to the root of the cgroup v2 hierarchy.
    CgroupSkbIngress(&'static str),
    /// A cgroup_skb/egress program attached to the root of the cgroup v2 hierarchy.
    CgroupSkbEgress(&'static str),
}

impl Attach {
    /// The same attachment for another program of the object (a twin, see `rescue`).
    pub fn with_program(self, name: &'static str) -> Attach {
        match self {
            Attach::BtfTp(_, t) => Attach::BtfTp(name, t),
            Attach::Tp(_, c, t) => Attach::Tp(name, c, t),
            Attach::RawTp(_, t) => Attach::RawTp(name, t),
            Attach::FEntry(_, f) => Attach::FEntry(name, f),
            Attach::FExit(_, f) => Attach::FExit(name, f),
            Attach::KProbe(_, f) => Attach::KProbe(name, f),
            Attach::KRetProbe(_, f) => Attach::KRetProbe(name, f),
            Attach::CgroupSockAddr(_) => Attach::CgroupSockAddr(name),
            Attach::CgroupSkbIngress(_) => Attach::CgroupSkbIngress(name),
            Attach::CgroupSkbEgress(_) => Attach::CgroupSkbEgress(name),
        }
    }

    pub fn program(&self) -> &'static str {
        match *self {
            Attach::BtfTp(p, _)
            | Attach::Tp(p, _, _)
            | Attach::RawTp(p, _)
            | Attach::FEntry(p, _)
            | Attach::FExit(p, _)
            | Attach::KProbe(p, _)
            | Attach::KRetProbe(p, _)
            | Attach::CgroupSockAddr(p)
            | Attach::CgroupSkbIngress(p)
            | Attach::CgroupSkbEgress(p) => p,
        }
    }
}

pub struct HookSet {
    pub name: &'static str,
    pub what: &'static str,
    pub attach: &'static [Attach],
    /// Attached when the kernel has them (e.g. functions removed in newer kernels).
    pub optional: &'static [Attach],
}

/// Traffic hook sets, best first.
pub const TRAFFIC: [HookSet; 3] = [
    HookSet {
        name: "tp_btf",
        what: "sock_send_length/sock_recv_length tracepoints (kernel >= 6.3), every socket family",
        attach: &[
            Attach::BtfTp("tp_sock_send_length", "sock_send_length"),
            Attach::BtfTp("tp_sock_recv_length", "sock_recv_length"),
            Attach::BtfTp("tp_skb_copy_datagram_iovec", "skb_copy_datagram_iovec"),
            Attach::BtfTp("tp_tcp_rcv_space_adjust", "tcp_rcv_space_adjust"),
        ],
        // Without the cgroup hooks, the peers of datagrams on unconnected UDP sockets are found
        // only for sendto()/sendmsg(); without skb_consume_udp (no trampolines), the source of a
        // datagram read without asking for it (recv()) is not known.
        optional: &[
            Attach::FEntry("fentry_skb_consume_udp", "skb_consume_udp"),
            Attach::CgroupSockAddr("cg_sendmsg4"),
            Attach::CgroupSockAddr("cg_sendmsg6"),
            Attach::CgroupSockAddr("cg_recvmsg4"),
            Attach::CgroupSockAddr("cg_recvmsg6"),
        ],
    },
    HookSet {
        name: "fexit",
        what: "fexit on inet_sendmsg/inet6_sendmsg/inet_recvmsg/inet6_recvmsg",
        attach: &[
            Attach::FExit("fexit_inet_sendmsg", "inet_sendmsg"),
            Attach::FExit("fexit_inet6_sendmsg", "inet6_sendmsg"),
            Attach::FExit("fexit_inet_recvmsg", "inet_recvmsg"),
            Attach::FExit("fexit_inet6_recvmsg", "inet6_recvmsg"),
            Attach::Tp("sys_enter_splice", "syscalls", "sys_enter_splice"),
            Attach::Tp("sys_exit_splice", "syscalls", "sys_exit_splice"),
        ],
        optional: &[
            Attach::FExit("fexit_inet_sendpage", "inet_sendpage"),
            Attach::FEntry("fentry_skb_consume_udp", "skb_consume_udp"),
        ],
    },
    HookSet {
        name: "kprobe",
        what: "kprobe/kretprobe on inet_sendmsg/inet6_sendmsg/inet_recvmsg/inet6_recvmsg",
        attach: &[
            Attach::KProbe("kp_inet_sendmsg", "inet_sendmsg"),
            Attach::KRetProbe("kr_inet_sendmsg", "inet_sendmsg"),
            Attach::KProbe("kp_inet6_sendmsg", "inet6_sendmsg"),
            Attach::KRetProbe("kr_inet6_sendmsg", "inet6_sendmsg"),
            Attach::KProbe("kp_inet_recvmsg", "inet_recvmsg"),
            Attach::KRetProbe("kr_inet_recvmsg", "inet_recvmsg"),
            Attach::KProbe("kp_inet6_recvmsg", "inet6_recvmsg"),
            Attach::KRetProbe("kr_inet6_recvmsg", "inet6_recvmsg"),
            Attach::Tp("sys_enter_splice", "syscalls", "sys_enter_splice"),
            Attach::Tp("sys_exit_splice", "syscalls", "sys_exit_splice"),
        ],
        optional: &[
            Attach::KProbe("kp_inet_sendpage", "inet_sendpage"),
            Attach::KRetProbe("kr_inet_sendpage", "inet_sendpage"),
            Attach::KProbe("kp_skb_consume_udp", "skb_consume_udp"),
        ],
    },
];

/// DNS capture, best first: queries that leave (egress) and the answers to them (ingress). The
/// variants differ in how the local socket's network namespace is found (see
/// daemon-ebpf/dns.h). At most one is attached; none is not fatal.
pub const DNS: [HookSet; 3] = [
    HookSet {
        name: "dns",
        what: "cgroup_skb/egress+ingress: queries and their answers, with the namespace of every socket",
        attach: &[
            Attach::CgroupSkbEgress("cg_dns_egress"),
            Attach::CgroupSkbIngress("cg_dns_ingress"),
        ],
        optional: &[],
    },
    HookSet {
        name: "dns_btf",
        what: "cgroup_skb/egress+ingress: queries and answers; the namespace of IPv4 UDP sockets is not known",
        attach: &[
            Attach::CgroupSkbEgress("cg_dns_egress_btf"),
            Attach::CgroupSkbIngress("cg_dns_ingress_btf"),
        ],
        optional: &[],
    },
    HookSet {
        name: "dns_nons",
        what: "cgroup_skb/egress+ingress: queries and answers without namespaces (names shared by all)",
        attach: &[
            Attach::CgroupSkbEgress("cg_dns_egress_nons"),
            Attach::CgroupSkbIngress("cg_dns_ingress_nons"),
        ],
        optional: &[],
    },
];

/// Hooks every traffic set needs: process lifetimes and splice() receive.
pub const COMMON: HookSet = HookSet {
    name: "common",
    what: "sched_process_exec/fork/exit raw tracepoints",
    attach: &[
        Attach::RawTp("raw_sched_process_exec", "sched_process_exec"),
        Attach::RawTp("raw_sched_process_fork", "sched_process_fork"),
        Attach::RawTp("raw_sched_process_exit", "sched_process_exit"),
    ],
    optional: &[],
};

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, a: Attach) -> Result<(), String> {
    let prog = ebpf
        .program_mut(a.program())
        .ok_or_else(|| format!("program {} missing from the object", a.program()))?;
    let r: Result<(), aya::programs::ProgramError> = (|| {
        match a {
            Attach::BtfTp(_, tp) => {
                let p: &mut BtfTracePoint = prog.try_into()?;
                p.load(tp, btf)?;
                p.attach()?;
            }
            Attach::Tp(_, cat, name) => {
                let p: &mut TracePoint = prog.try_into()?;
                p.load()?;
                p.attach(cat, name)?;
            }
            Attach::RawTp(_, name) => {
                let p: &mut RawTracePoint = prog.try_into()?;
                p.load()?;
                p.attach(name)?;
            }
            Attach::FEntry(_, func) => {
                let p: &mut FEntry = prog.try_into()?;
                p.load(func, btf)?;
                p.attach()?;
            }
            Attach::FExit(_, func) => {
                let p: &mut FExit = prog.try_into()?;
                p.load(func, btf)?;
                p.attach()?;
            }
            Attach::KProbe(_, func) => {
                let p: &mut KProbe = prog.try_into()?;
                p.load()?;
                p.attach(func, 0)?;
            }
            Attach::KRetProbe(name, func) => {
                let p: &mut KProbe = prog.try_into()?;
                p.load()?;
                if let Err(why) = super::kretprobe::attach(name, p, func) {
                    // perf's own return probe follows 10 calls in flight; returns past them
                    // are skipped without a count.
                    tracing::warn!(
                        "{why}; using perf's return probe, which misses returns of more than 10 calls in flight without counting them"
                    );
                    p.attach(func, 0)?;
                }
            }
            Attach::CgroupSockAddr(_) => {
                let cgroup = cgroup2_root()?;
                let p: &mut CgroupSockAddr = prog.try_into()?;
                p.load()?;
                p.attach(&cgroup, CgroupAttachMode::Single)?;
            }
            Attach::CgroupSkbIngress(_) | Attach::CgroupSkbEgress(_) => {
                let cgroup = cgroup2_root()?;
                let p: &mut CgroupSkb = prog.try_into()?;
                p.load()?;
                let how = match a {
                    Attach::CgroupSkbEgress(_) => CgroupSkbAttachType::Egress,
                    _ => CgroupSkbAttachType::Ingress,
                };
                // Through a BPF link (kernel >= 5.7) the kernel adds the program to the ones
                // already there (systemd's IP accounting and firewalls keep working); "Single"
                // is the only mode a cgroup link accepts.
                p.attach(&cgroup, how, CgroupAttachMode::Single)?;
            }
        }
        Ok(())
    })();
    r.map_err(|e| {
        tracing::debug!(program = a.program(), "attach failed: {e:?}");
        format!("{}: {}", a.program(), error_chain(&e))
    })
}

/// The root of the cgroup v2 hierarchy, where cgroup programs see every socket.
fn cgroup2_root() -> Result<std::fs::File, aya::programs::ProgramError> {
    let root = super::kernel::cgroup2_mount().ok_or_else(|| {
        aya::programs::ProgramError::from(std::io::Error::other("cgroup v2 is not mounted"))
    })?;
    std::fs::File::open(&root).map_err(aya::programs::ProgramError::from)
}

fn unload_one(ebpf: &mut Ebpf, a: Attach) {
    let Some(prog) = ebpf.program_mut(a.program()) else {
        return;
    };
    // Unloading detaches every link the program holds; errors mean it was never loaded.
    let _ = match a {
        Attach::BtfTp(..) => <&mut BtfTracePoint>::try_from(prog).map(|p| p.unload()),
        Attach::Tp(..) => <&mut TracePoint>::try_from(prog).map(|p| p.unload()),
        Attach::RawTp(..) => <&mut RawTracePoint>::try_from(prog).map(|p| p.unload()),
        Attach::FEntry(..) => <&mut FEntry>::try_from(prog).map(|p| p.unload()),
        Attach::FExit(..) => <&mut FExit>::try_from(prog).map(|p| p.unload()),
        Attach::KProbe(..) => <&mut KProbe>::try_from(prog).map(|p| p.unload()),
        Attach::KRetProbe(name, _) => {
            super::kretprobe::detach(name);
            <&mut KProbe>::try_from(prog).map(|p| p.unload())
        }
        Attach::CgroupSockAddr(..) => <&mut CgroupSockAddr>::try_from(prog).map(|p| p.unload()),
        Attach::CgroupSkbIngress(..) | Attach::CgroupSkbEgress(..) => {
            <&mut CgroupSkb>::try_from(prog).map(|p| p.unload())
        }
    };
}

/// Attaches one hook's program and, when the object has twins, its twin in the order they must
/// run (`rescue::in_order`); all or nothing.
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, a: Attach) -> Result<(), String> {
    let with_twins = ebpf.program(super::rescue::ANY_TWIN).is_some();
    let parts = super::rescue::in_order(a, with_twins);
    for (i, p) in parts.iter().enumerate() {
        if let Err(e) = attach_one(ebpf, btf, *p) {
            for done in &parts[..=i] {
                unload_one(ebpf, *done);
            }
            // Named by the hook's own program, whichever of the pair the kernel refused.
            return Err(if p.program() == a.program() {
                e
            } else {
                format!("{}: {e}", a.program())
            });
        }
    }
    Ok(())
}

fn unload_hook(ebpf: &mut Ebpf, a: Attach) {
    for p in super::rescue::in_order(a, true) {
        unload_one(ebpf, p);
    }
}

/// Attaches every program of a set, or none: on failure the set is unloaded and the reason kept.
/// Returns the optional programs this kernel could not take, with the reason.
pub fn attach_set(ebpf: &mut Ebpf, btf: &Btf, set: &HookSet) -> Result<Vec<String>, String> {
    for (i, a) in set.attach.iter().enumerate() {
        if let Err(e) = attach_hook(ebpf, btf, *a) {
            for done in &set.attach[..=i] {
                unload_hook(ebpf, *done);
            }
            return Err(e);
        }
    }
    let mut skipped = Vec::new();
    for a in set.optional {
        if let Err(e) = attach_hook(ebpf, btf, *a) {
            unload_hook(ebpf, *a);
            skipped.push(e);
        }
    }
    Ok(skipped)
}

pub fn unload_set(ebpf: &mut Ebpf, set: &HookSet) {
    for a in set.attach.iter().chain(set.optional) {
        unload_hook(ebpf, *a);
    }
}

/// The traffic hook sets to try: all of them best first, or only the one a config names.
pub fn candidates(only: Option<&str>) -> Vec<&'static HookSet> {
    TRAFFIC
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect()
}

/// Renders an error with its sources, e.g. "the BPF_PROG_LOAD syscall failed: Permission denied".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    // Verifier logs are long: keep the first line and the verifier's reason, its last line
    // before the statistics.
    let first = s.lines().next().unwrap_or_default().to_string();
    if !s.contains("Verifier output:") {
        return first;
    }
    let stats = [
        "verification time",
        "processed ",
        "stack depth",
        "max_states_per_insn",
    ];
    let reason = s
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !stats.iter().any(|p| l.starts_with(p)))
        .last();
    match reason {
        Some(r) => format!("{first} ... {r}"),
        None => first,
    }
}

/// Runs the kernel skipped, per loaded program of `ebpf` (`recursion_misses` of `bpf_prog_info`,
/// kernel >= 5.12; 0 before). A tracing program preempted while it runs (every kernel with
/// `preempt=full`, and every 7.x kernel, where only full/lazy preemption exist) makes the kernel
/// skip the same program for other tasks on that CPU; `rescue` counts those runs again.
pub fn recursion_misses(ebpf: &Ebpf) -> Vec<(String, u64)> {
    use std::os::fd::{AsFd, AsRawFd};
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// Offset of `recursion_misses` in the UAPI `struct bpf_prog_info`, in u64 words.
    const RECURSION_MISSES: usize = 208 / 8;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut out = Vec::new();
    for (name, prog) in ebpf.programs() {
        let Ok(fd) = prog.fd() else { continue };
        let mut info = [0u64; 29];
        let mut attr = InfoAttr {
            bpf_fd: fd.as_fd().as_raw_fd() as u32,
            info_len: std::mem::size_of_val(&info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        // SAFETY: attr is a valid bpf_attr prefix; info is writable for info_len bytes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &mut attr as *mut InfoAttr,
                std::mem::size_of::<InfoAttr>(),
            )
        };
        if r == 0 {
            out.push((name.to_string(), info[RECURSION_MISSES]));
        }
    }
    out
}
