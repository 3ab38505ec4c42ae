//! feed.rs: what the database writer publishes for the query side after each commit: the live
//! event feed (a broadcast of the rows and loss reports just written, as JSON) and the counters
//! behind /metrics. Publishing never blocks the writer; a slow reader misses windows and is told.
use super::metrics::Metrics;
use crate::geoip::{Geo, Lookup, Shared};
use crate::model::Row;
#[cfg(test)]
use crate::model::{ExeIdent, RowKey};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Written windows a subscriber may fall behind by before it misses some.
const BACKLOG: usize = 256;

/// One published item: its kind (`row` or `loss`) and its JSON object (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    pub json: String,
}

/// Everything one commit published, in order.
pub type Batch = Arc<Vec<Event>>;

/// The writer's side and the API's side share one `Feed` (cheap to clone).
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Batch>,
    metrics: Metrics,
    /// GeoIP databases: published rows then say what they know of the remote address.
    geo: Option<Arc<Shared>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new(None)
    }
}

/// A written row as the feed shows it: the aggregate dimension names, the parent's and
/// grandparent's names and hashes, and the sums (serialised without copying a field).
#[derive(serde::Serialize)]
struct RowEvent<'a> {
    kind: &'static str,
    contime: i64,
    exe: &'a str,
    name: &'a str,
    sha256: &'a str,
    cmdline: &'a str,
    pexe: &'a str,
    pname: &'a str,
    psha256: &'a str,
    gpexe: &'a str,
    gpname: &'a str,
    gpsha256: &'a str,
    uid: u32,
    family: u16,
    protocol: u16,
    lport: i32,
    rport: i32,
    laddr: &'a str,
    raddr: &'a str,
    domain: &'a str,
    netns: u32,
    container: &'a str,
    send: u64,
    recv: u64,
    events: u64,
    /// With GeoIP databases: what they know of `raddr` (`null`: nothing); without: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    geo: Option<Option<Geo>>,
}

/// A row as JSON, with what `geo` knows of its remote address.
pub fn row_json(r: &Row, geo: Option<&Lookup>) -> String {
    let k = &r.key;
    let ev = RowEvent {
        kind: "row",
        contime: r.contime,
        exe: &k.exe.exe,
        name: &k.exe.name,
        sha256: &k.exe.sha256,
        cmdline: &k.exe.cmdline,
        pexe: &k.parent.exe,
        pname: &k.parent.name,
        psha256: &k.parent.sha256,
        gpexe: &k.grandparent.exe,
        gpname: &k.grandparent.name,
        gpsha256: &k.grandparent.sha256,
        uid: k.uid,
        family: k.family,
        protocol: k.protocol,
        lport: k.lport,
        rport: k.rport,
        laddr: &k.laddr,
        raddr: &k.raddr,
        domain: &k.domain,
        netns: k.netns,
        container: &k.container,
        send: r.send,
        recv: r.recv,
        events: r.events,
        geo: geo.map(|l| k.raddr.parse().ok().and_then(|a| l.lookup(a))),
    };
    // Serialising plain strings and integers cannot fail.
    serde_json::to_string(&ev).unwrap_or_default()
}

impl Feed {
    pub fn new(geo: Option<Arc<Shared>>) -> Feed {
        Feed {
            inner: Arc::new(Inner {
                tx: broadcast::channel(BACKLOG).0,
                metrics: Metrics::default(),
                geo,
            }),
        }
    }

    /// A window's rows were committed after `took` in the database transaction.
    pub fn committed(&self, rows: &[Row], took: Duration) {
        self.inner.metrics.committed(rows, took);
        if self.inner.tx.receiver_count() > 0 {
            let lookup = self.inner.geo.as_ref().and_then(|g| g.get());
            let batch: Vec<Event> = rows
                .iter()
                .map(|r| Event {
                    kind: "row",
                    json: row_json(r, lookup.as_deref()),
                })
                .collect();
            // An error only means every subscriber left meanwhile.
            let _ = self.inner.tx.send(Arc::new(batch));
        }
    }

    /// A loss was counted (`/metrics` shows it at once, before the writer stores it: a stalled
    /// writer is when it matters most).
    pub fn counted_loss(&self, source: &str, count: u64) {
        self.inner.metrics.loss(source, count);
    }

    /// A loss report was committed: subscribers of the feed get it.
    pub fn loss(&self, contime: i64, source: &str, count: u64) {
        if self.inner.tx.receiver_count() > 0 {
            let json =
                json!({ "kind": "loss", "contime": contime, "source": source, "count": count });
            let _ = self.inner.tx.send(Arc::new(vec![Event {
                kind: "loss",
                json: json.to_string(),
            }]));
        }
    }

    /// Writing a window failed (it is kept and retried).
    /// What a checkpoint of the write-ahead log found (for /metrics).
    pub fn wal(&self, report: crate::store::WalReport) {
        self.inner.metrics.wal(report.bytes, report.blocked);
    }

    pub fn write_failed(&self) {
        self.inner.metrics.write_failed();
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.inner.tx.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// A row for tests.
#[cfg(test)]
pub fn test_row(exe: &str, send: u64, recv: u64) -> Row {
    let ident = Arc::new(ExeIdent {
        exe: exe.into(),
        name: "x\"y".into(),
        cmdline: "x --a".into(),
        sha256: "ab".into(),
    });
    Row {
        contime: 100,
        key: RowKey {
            exe: ident.clone(),
            parent: ident.clone(),
            grandparent: Arc::new(ExeIdent::default()),
            uid: 0,
            family: 2,
            protocol: 6,
            lport: 1,
            rport: 2,
            laddr: "127.0.0.1".into(),
            raddr: "127.0.0.1".into(),
            domain: String::new(),
            netns: 4,
            container: String::new(),
        },
        send,
        recv,
        events: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_each_commit_once() {
        let feed = Feed::default();
        feed.committed(&[test_row("/a", 1, 2)], Duration::from_millis(1));
        let mut rx = feed.subscribe();
        feed.committed(
            &[test_row("/b", 3, 4), test_row("/c", 5, 6)],
            Duration::from_millis(1),
        );
        feed.counted_loss("ringbuf_full", 2);
        feed.loss(7, "ringbuf_full", 2);
        let b = rx.try_recv().unwrap();
        assert_eq!(b.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&b[0].json).unwrap();
        assert_eq!(v["exe"], "/b");
        assert_eq!(v["name"], "x\"y");
        assert_eq!(v["pexe"], "/b");
        assert_eq!(v["gpexe"], "");
        assert_eq!((v["send"].as_u64(), v["recv"].as_u64()), (Some(3), Some(4)));
        let l = rx.try_recv().unwrap();
        assert_eq!(l[0].kind, "loss");
        assert!(rx.try_recv().is_err());
        let m = feed.metrics().snapshot();
        assert_eq!(m.rows, 3);
        assert_eq!(m.windows, 2);
        // Counted once, when counted; the committed report only feeds subscribers.
        assert_eq!(m.losses.get("ringbuf_full"), Some(&2));
    }
}
