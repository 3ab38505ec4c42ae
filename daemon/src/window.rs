//! window.rs: sums traffic by row key over one write window (`write_limit_seconds`).
use crate::identity::exe_cache::ExeCache;
use crate::identity::{Identity, ProcRef};
use crate::model::{ExeIdent, Row, RowKey};
use std::collections::HashMap;
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

impl Closed {
    /// Hashes every executable level and builds the stored rows (blocking: reads binaries).
    pub fn into_rows(self, cache: &ExeCache) -> Vec<Row> {
        let mut idents: HashMap<Arc<ProcRef>, Arc<ExeIdent>> = HashMap::new();
        let mut ident = |p: &Arc<ProcRef>| -> Arc<ExeIdent> {
            idents
                .entry(p.clone())
                .or_insert_with(|| {
                    Arc::new(ExeIdent {
                        exe: p.exe.clone(),
                        name: p.name.clone(),
                        cmdline: p.cmdline.clone(),
                        sha256: Identity::sha256_of(cache, p),
                    })
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
        merged
            .into_iter()
            .map(|(key, s)| Row {
                contime: self.contime,
                key,
                send: s.send,
                recv: s.recv,
                events: s.events,
            })
            .collect()
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
        let rows = c.into_rows(&ExeCache::new(16, u64::MAX));
        assert_eq!(rows.iter().map(|r| r.send).sum::<u64>(), 16);
    }
}
