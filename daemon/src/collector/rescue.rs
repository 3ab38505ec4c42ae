//! rescue.rs: the twin programs that count the runs the kernel skipped (daemon-ebpf/rescue.h),
//! which program each one doubles, and the order they go on a hook.
use super::hooks::Attach;

/// The embedded object with the twins (task storage: kernel >= 5.11), tried before the plain one.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/picosnitch-rescue.bpf.o"));

/// A twin every object with twins has.
pub const ANY_TWIN: &str = "rs_exec";

/// Prefix of every twin's and third's name: their own skips are not losses (see `net_misses`).
pub const PREFIX: &str = "rs_";

/// (counting program, its twin).
const TWINS: [(&str, &str); 13] = [
    ("tp_sock_send_length", "rs_send_length"),
    ("tp_sock_recv_length", "rs_recv_length"),
    ("tp_skb_copy_datagram_iovec", "rs_copy_datagram"),
    ("tp_tcp_rcv_space_adjust", "rs_rcv_space"),
    ("fentry_skb_consume_udp", "rs_consume_udp"),
    ("fexit_inet_sendmsg", "rs_inet_sendmsg"),
    ("fexit_inet6_sendmsg", "rs_inet6_sendmsg"),
    ("fexit_inet_recvmsg", "rs_inet_recvmsg"),
    ("fexit_inet6_recvmsg", "rs_inet6_recvmsg"),
    ("fexit_inet_sendpage", "rs_inet_sendpage"),
    ("raw_sched_process_exec", "rs_exec"),
    ("raw_sched_process_fork", "rs_fork"),
    ("raw_sched_process_exit", "rs_exit"),
];

/// (counting program, its third): the process events, whose long programs are skipped the most.
const THIRDS: [(&str, &str); 3] = [
    ("raw_sched_process_exec", "rs_exec3"),
    ("raw_sched_process_fork", "rs_fork3"),
    ("raw_sched_process_exit", "rs_exit3"),
];

/// The attachments of `a` in the order they must run on the hook, the counting program, its twin,
/// then its third: tracepoint probes run in the order attached, trampolines the newest first.
pub fn in_order(a: Attach, with_twins: bool) -> Vec<Attach> {
    let of = |table: &[(&str, &'static str)]| {
        table
            .iter()
            .find(|(p, _)| *p == a.program())
            .filter(|_| with_twins)
            .map(|(_, t)| a.with_program(t))
    };
    let mut run: Vec<Attach> = std::iter::once(a)
        .chain(of(&TWINS))
        .chain(of(&THIRDS))
        .collect();
    if matches!(a, Attach::FEntry(..) | Attach::FExit(..)) {
        run.reverse();
    }
    run
}

/// Runs lost to the kernel's skips: the skips of the counting programs less the runs their twins
/// counted. A twin's own skip is not a loss (its counting program ran, or the skip of that one is
/// counted already).
pub fn net_misses(per_program: impl Iterator<Item = (String, u64)>, rescued: u64) -> u64 {
    let skipped: u64 = per_program
        .filter(|(name, _)| !name.starts_with(PREFIX))
        .map(|(_, n)| n)
        .sum();
    skipped.saturating_sub(rescued)
}

/// Skipped runs no twin counted, taken as lost when a second read a moment later agrees: between
/// a skip and its twin's count the difference is up for an instant, and a loss reported then
/// would be taken back (and reported again). Never goes down.
#[derive(Debug, Default)]
pub struct Confirmed {
    lost: u64,
}

/// How long a twin has to count the run the kernel just skipped.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);

impl Confirmed {
    /// Takes `net_misses` from `read` (again after `SETTLE` when it grew) and returns the runs
    /// known lost.
    pub fn update(&mut self, mut read: impl FnMut() -> u64) -> u64 {
        let first = read();
        if first > self.lost {
            std::thread::sleep(SETTLE);
            self.lost = self.lost.max(first.min(read()));
        }
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_follow_tracepoints_and_precede_trampolines() {
        let tp = Attach::BtfTp("tp_sock_send_length", "sock_send_length");
        let names: Vec<_> = in_order(tp, true).iter().map(|a| a.program()).collect();
        assert_eq!(names, ["tp_sock_send_length", "rs_send_length"]);
        let fx = Attach::FExit("fexit_inet_sendmsg", "inet_sendmsg");
        let names: Vec<_> = in_order(fx, true).iter().map(|a| a.program()).collect();
        assert_eq!(names, ["rs_inet_sendmsg", "fexit_inet_sendmsg"]);
        assert_eq!(in_order(fx, false).len(), 1);
        let exec = Attach::RawTp("raw_sched_process_exec", "sched_process_exec");
        let names: Vec<_> = in_order(exec, true).iter().map(|a| a.program()).collect();
        assert_eq!(names, ["raw_sched_process_exec", "rs_exec", "rs_exec3"]);
        let kp = Attach::KProbe("kp_inet_sendmsg", "inet_sendmsg");
        assert_eq!(in_order(kp, true).len(), 1);
    }

    #[test]
    fn every_counting_program_of_a_trampoline_or_tracepoint_has_a_twin() {
        use super::super::hooks::{COMMON, TRAFFIC};
        for set in TRAFFIC.iter().chain(std::iter::once(&COMMON)) {
            for a in set.attach.iter().chain(set.optional) {
                let wanted = matches!(
                    a,
                    Attach::BtfTp(..) | Attach::RawTp(..) | Attach::FEntry(..) | Attach::FExit(..)
                );
                assert_eq!(in_order(*a, true).len() >= 2, wanted, "{}", a.program());
            }
        }
    }

    #[test]
    fn twins_skips_are_not_losses() {
        let progs = [
            ("tp_sock_send_length".to_string(), 5),
            ("rs_send_length".to_string(), 2),
            ("raw_sched_process_exec".to_string(), 1),
        ];
        assert_eq!(net_misses(progs.clone().into_iter(), 4), 2);
        assert_eq!(net_misses(progs.into_iter(), 9), 0);
    }

    #[test]
    fn a_loss_counts_once_a_second_read_agrees_and_never_goes_back() {
        let mut c = Confirmed::default();
        let mut reads = [2, 0, 1, 1, 3, 3, 2].into_iter();
        // 2 then 0: a skip whose twin had not run yet at the first read.
        assert_eq!(c.update(|| reads.next().unwrap()), 0);
        assert_eq!(c.update(|| reads.next().unwrap()), 1);
        assert_eq!(c.update(|| reads.next().unwrap()), 3);
        // Lower than what is lost already: one read, no change.
        assert_eq!(c.update(|| reads.next().unwrap()), 3);
        assert!(reads.next().is_none());
    }
}
