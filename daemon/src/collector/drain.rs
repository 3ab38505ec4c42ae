//! drain.rs: turns the kernel's running per-socket totals into deltas and retires idle entries.
//!
//! Entries are read, not deleted, on every drain: deleting an entry a program is about to add to
//! would lose those bytes. An entry is deleted only once its process has exited and a later drain
//! saw it unchanged, or after it has been idle for `IDLE_DRAINS` drains.
use super::records::{flow_delta, FlowKey, FlowVal};
use crate::model::FlowDelta;
use std::collections::{HashMap, HashSet};

/// Drains an entry may stay unchanged before it is retired (its socket is most likely closed).
pub const IDLE_DRAINS: u32 = 60;

#[derive(Clone, Copy, Default)]
struct Seen {
    send: u64,
    recv: u64,
    events: u64,
    idle: u32,
}

#[derive(Default)]
pub struct Drainer {
    seen: HashMap<FlowKey, Seen>,
    /// Thread groups whose exit was reported before the current drain.
    exited: HashSet<u32>,
    /// Exits reported since the current drain started.
    exiting: HashSet<u32>,
}

pub struct DrainResult {
    pub deltas: Vec<FlowDelta>,
    pub retire: Vec<FlowKey>,
    pub entries: usize,
}

impl Drainer {
    pub fn on_exit(&mut self, tgid: u32) {
        self.exiting.insert(tgid);
    }

    /// Computes deltas from a full read of the totals map.
    pub fn apply(&mut self, entries: Vec<(FlowKey, FlowVal)>) -> DrainResult {
        let mut deltas = Vec::new();
        let mut retire = Vec::new();
        let mut present = HashSet::with_capacity(entries.len());
        let n = entries.len();
        for (k, v) in entries {
            present.insert(k);
            let now = Seen {
                send: v.send_bytes,
                recv: v.recv_bytes,
                events: v.send_events + v.recv_events,
                idle: 0,
            };
            let prev = self.seen.get(&k).copied().unwrap_or_default();
            // A total below the previous reading means the entry was re-created: count it whole.
            let (ds, dr, de) = if now.send < prev.send || now.recv < prev.recv {
                (now.send, now.recv, now.events)
            } else {
                (
                    now.send - prev.send,
                    now.recv - prev.recv,
                    now.events.saturating_sub(prev.events),
                )
            };
            let changed = ds != 0 || dr != 0 || de != 0;
            if changed {
                deltas.push(flow_delta(&k, &v, ds, dr, de));
                self.seen.insert(k, now);
            } else {
                let idle = prev.idle + 1;
                self.seen.insert(k, Seen { idle, ..prev });
                if self.exited.contains(&k.tgid) || idle >= IDLE_DRAINS {
                    retire.push(k);
                }
            }
        }
        self.seen.retain(|k, _| present.contains(k));
        for k in &retire {
            self.seen.remove(k);
        }
        // Exits seen during this drain become eligible for retirement at the next one.
        let live: HashSet<u32> = self.seen.keys().map(|k| k.tgid).collect();
        self.exited.retain(|t| live.contains(t));
        self.exited.extend(self.exiting.drain());
        DrainResult {
            deltas,
            retire,
            entries: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tgid: u32, send: u64, recv: u64) -> (FlowKey, FlowVal) {
        let k = FlowKey {
            sock_ino: 1,
            tgid,
            family: 2,
            ..Default::default()
        };
        let v = FlowVal {
            send_bytes: send,
            recv_bytes: recv,
            send_events: 1,
            ..Default::default()
        };
        (k, v)
    }

    #[test]
    fn deltas_then_retire_after_exit() {
        let mut d = Drainer::default();
        let r = d.apply(vec![entry(7, 100, 0)]);
        assert_eq!(r.deltas.len(), 1);
        assert_eq!(r.deltas[0].send, 100);
        let r = d.apply(vec![entry(7, 150, 20)]);
        assert_eq!((r.deltas[0].send, r.deltas[0].recv), (50, 20));
        d.on_exit(7);
        // Exit reported during this drain: the entry is not yet retired.
        let r = d.apply(vec![entry(7, 150, 20)]);
        assert!(r.deltas.is_empty() && r.retire.is_empty());
        let r = d.apply(vec![entry(7, 150, 20)]);
        assert_eq!(r.retire.len(), 1);
    }

    #[test]
    fn recreated_entry_counts_whole() {
        let mut d = Drainer::default();
        d.apply(vec![entry(1, 500, 0)]);
        let r = d.apply(vec![entry(1, 30, 0)]);
        assert_eq!(r.deltas[0].send, 30);
    }

    #[test]
    fn idle_entries_retire() {
        let mut d = Drainer::default();
        d.apply(vec![entry(1, 5, 0)]);
        let mut retired = 0;
        for _ in 0..IDLE_DRAINS {
            retired += d.apply(vec![entry(1, 5, 0)]).retire.len();
        }
        assert_eq!(retired, 1);
    }
}
