//! window.rs: sums traffic by row key over one write window (`write_limit_seconds`).
use crate::identity::exe_cache::{is_pending, ExeCache};
use crate::identity::{Identity, ProcRef};
use crate::model::{ExeIdent, FileId, Row, RowKey};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Grouping key before hashing: process levels are still references to cached executables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WinKey {
    pub exe: Arc<ProcRef>,
    pub parent: Arc<ProcRef>,
    pub grandparent: Arc<ProcRef>,
    pub uid: u32,
    pub family: u16,
    pub protocol: u16,
    pub lport: i32,
    pub rport: i32,
    pub laddr: String,
    pub raddr: String,
    pub domain: String,
    pub netns: u32,
    pub container: Arc<str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub send: u64,
    pub recv: u64,
    pub events: u64,
}

/// The traffic of one window, ready to be hashed and stored.
#[derive(Debug, Default)]
pub struct Closed {
    pub contime: i64,
    pub groups: Vec<(WinKey, Sums)>,
}

#[derive(Default)]
pub struct Window {
    started: Option<i64>,
    sums: HashMap<WinKey, Sums>,
}

impl Window {
    pub fn add(&mut self, now: i64, key: WinKey, send: u64, recv: u64, events: u64) {
        self.started.get_or_insert(now);
        let s = self.sums.entry(key).or_default();
        s.send += send;
        s.recv += recv;
        s.events += events;
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Closes the window; its time is when its first traffic was seen.
    pub fn close(&mut self) -> Closed {
        Closed {
            contime: self.started.take().unwrap_or_default(),
            groups: self.sums.drain().collect(),
        }
    }
}

/// The stored rows of a window, and the executables whose hash was not ready (`!pending`).
#[derive(Debug, Default)]
pub struct Hashed {
    pub rows: Vec<Row>,
    /// The file, the version of its content (change time, 0: current) and what was stored.
    pub pending: Vec<(FileId, i64, Arc<ExeIdent>)>,
}

impl Closed {
    /// Rough bytes this window holds in memory (the sink's queue is bounded by it).
    pub fn estimated_bytes(&self) -> u64 {
        let per_group = std::mem::size_of::<(WinKey, Sums)>() as u64 + 64;
        self.groups
            .iter()
            .map(|(k, _)| per_group + (k.laddr.len() + k.raddr.len() + k.domain.len()) as u64)
            .sum()
    }

    /// Takes every executable level's hash from the cache (never waits for one) and builds the
    /// stored rows; a hash not ready yet is stored as `!pending` and listed.
    pub fn into_rows(self, cache: &ExeCache) -> Hashed {
        let mut idents: HashMap<Arc<ProcRef>, Arc<ExeIdent>> = HashMap::new();
        let mut pending = Vec::new();
        let mut ident = |p: &Arc<ProcRef>| -> Arc<ExeIdent> {
            idents
                .entry(p.clone())
                .or_insert_with(|| {
                    let i = Arc::new(ExeIdent {
                        exe: p.exe.clone(),
                        name: p.name.clone(),
                        cmdline: p.cmdline.clone(),
                        sha256: Identity::sha256_of(cache, p),
                    });
                    if is_pending(&i.sha256) {
                        cache.hash_counters.pending.fetch_add(1, Ordering::Relaxed);
                        pending.push((p.file, p.ctime, i.clone()));
                    }
                    i
                })
                .clone()
        };
        let mut merged: HashMap<RowKey, Sums> = HashMap::new();
        for (k, s) in self.groups {
            let key = RowKey {
                exe: ident(&k.exe),
                parent: ident(&k.parent),
                grandparent: ident(&k.grandparent),
                uid: k.uid,
                family: k.family,
                protocol: k.protocol,
                lport: k.lport,
                rport: k.rport,
                laddr: k.laddr,
                raddr: k.raddr,
                domain: k.domain,
                netns: k.netns,
                container: k.container.to_string(),
            };
            // Two references can name the same executable once hashed: merge them.
            let m = merged.entry(key).or_default();
            m.send += s.send;
            m.recv += s.recv;
            m.events += s.events;
        }
        let rows = merged
            .into_iter()
            .map(|(key, s)| Row {
                contime: self.contime,
                key,
                send: s.send,
                recv: s.recv,
                events: s.events,
            })
            .collect();
        Hashed { rows, pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lport: i32) -> WinKey {
        let p = Arc::new(ProcRef {
            exe: "/bin/x".into(),
            error: Some("test"),
            ..Default::default()
        });
        WinKey {
            exe: p.clone(),
            parent: p.clone(),
            grandparent: p,
            uid: 0,
            family: 2,
            protocol: 6,
            lport,
            rport: 80,
            laddr: String::new(),
            raddr: String::new(),
            domain: String::new(),
            netns: 0,
            container: Arc::from(""),
        }
    }

    #[test]
    fn sums_by_key_and_keeps_first_time() {
        let mut w = Window::default();
        w.add(100, key(1), 10, 1, 1);
        w.add(105, key(1), 5, 0, 1);
        w.add(106, key(2), 1, 1, 2);
        let c = w.close();
        assert_eq!(c.contime, 100);
        assert_eq!(c.groups.len(), 2);
        let s = c.groups.iter().find(|(k, _)| k.lport == 1).unwrap().1;
        assert_eq!(
            s,
            Sums {
                send: 15,
                recv: 1,
                events: 2
            }
        );
        assert!(w.is_empty());
        let rows = c.into_rows(&ExeCache::new(16, u64::MAX)).rows;
        assert_eq!(rows.iter().map(|r| r.send).sum::<u64>(), 16);
    }
}
