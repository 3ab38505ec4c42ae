//! pipeline.rs: the write path. Reads process events as they arrive, reads DNS answers and drains
//! the kernel totals every second, resolves identities and names, fills the write window and
//! hands closed windows to the sink.
use crate::collector::records::{self, LOSS_STATS, STAT_NAMES};
use crate::collector::Collector;
use crate::dns::{FlowId, Names};
use crate::identity::fanotify::Watcher;
use crate::identity::Identity;
use crate::model::{FlowDelta, ProcEvent};
use crate::service::status::Snapshot;
use crate::service::Heartbeat;
use crate::sink::{now_unix, Msg, Sink};
use crate::window::{WinKey, Window};
use aya::maps::{MapData, RingBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct Pipeline {
    pub collector: Collector,
    pub identity: Identity,
    names: Names,
    drainer: crate::collector::drain::Drainer,
    window: Window,
    sink: Sink,
    last_stats: [u64; STAT_NAMES.len()],
    last_ident: [u64; 6],
    last_dns: crate::dns::Counters,
    last_capacity_warning: Option<Instant>,
    watcher: Option<Arc<Watcher>>,
    every_exe: bool,
    /// systemd notifications and the status file; None in tests that run the pipeline bare.
    heartbeat: Option<Heartbeat>,
    /// Every loss reported since start.
    losses: u64,
    /// How long the writer may go without writing a waiting window before it is called stalled.
    stall_after: Duration,
    /// What is wrong with the writer, once said (said again only when it changes).
    writer_problem: Option<String>,
    /// Where `/metrics` reads the DNS counters and losses; None in tests that run the pipeline bare.
    feed: Option<crate::api::Feed>,
}

/// The writer is stalled when windows wait this many windows plus `STALL_GRACE` without one
/// being written (a write may wait up to the store's 5 s busy timeout).
pub const STALL_WINDOWS: u32 = 3;
pub const STALL_GRACE: Duration = Duration::from_secs(10);

/// How long the writer may go without writing a waiting window, for windows of `write_every`.
pub fn stall_after(write_every: Duration) -> Duration {
    write_every * STALL_WINDOWS + STALL_GRACE
}

const DRAIN_EVERY: Duration = Duration::from_secs(1);

impl Pipeline {
    pub fn new(
        collector: Collector,
        identity: Identity,
        names: Names,
        sink: Sink,
        watcher: Option<Arc<Watcher>>,
    ) -> Self {
        Pipeline {
            collector,
            identity,
            names,
            drainer: Default::default(),
            window: Window::default(),
            sink,
            last_stats: [0; STAT_NAMES.len()],
            last_ident: [0; 6],
            last_dns: Default::default(),
            last_capacity_warning: None,
            watcher,
            every_exe: false,
            heartbeat: None,
            losses: 0,
            stall_after: stall_after(Duration::from_secs(10)),
            writer_problem: None,
            feed: None,
        }
    }

    /// Publishes the DNS counters to `/metrics`.
    pub fn with_feed(mut self, feed: crate::api::Feed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// DNS counters that are not losses: the daemon's and the kernel's refusals together.
    fn dns_events(&self) -> [(&'static str, u64); 4] {
        let c = self.names.counters;
        let kernel = self.last_stats[records::STAT_DNS_UNSOLICITED];
        [
            ("dns_queries", c.queries),
            ("dns_answers", c.answers),
            ("dns_unsolicited", c.unsolicited + kernel),
            ("dns_cache_evicted", c.cache_evicted),
        ]
    }

    /// Tells systemd (and the status file) how the daemon is doing from the main loop.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// The live counters.
    fn snapshot(&self) -> Snapshot {
        let s = &self.sink.stats;
        let c = &self.identity.counters;
        let h = &self.identity.cache.hash_counters;
        let identity = [
            ("exe_unavailable", &c.exe_unavailable),
            ("exe_mismatch", &c.exe_mismatch),
            ("cmdline_unreadable", &c.cmdline_unreadable),
            ("container_unresolved", &c.container_unresolved),
            ("read_stalled", &c.read_stalled),
            ("hash_pending", &h.pending),
            ("hash_too_large", &h.too_large),
            ("hash_timeout", &h.timeout),
            ("hash_modified", &h.modified_before_hash),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
        .collect();
        Snapshot {
            hook_set: self.collector.attached.hook_set.to_string(),
            rows_written: s.rows.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            bytes_received: s.bytes_received.load(Ordering::Relaxed),
            losses: self.losses,
            identity,
            dns: self
                .dns_events()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Snapshot::default()
        }
    }

    /// One turn of the main loop is done: watchdog ping (only while the writer is healthy) and
    /// status. Err when the writer thread is gone.
    fn beat(&mut self) -> std::io::Result<()> {
        let problem = self.sink.problem(self.stall_after);
        if problem != self.writer_problem {
            match &problem {
                Some(why) => tracing::error!("{why}: the watchdog is no longer pinged"),
                None => tracing::info!("the database writer is writing again"),
            }
            self.writer_problem = problem.clone();
        }
        if self.heartbeat.is_some() {
            let snap = self.snapshot();
            if let Some(h) = self.heartbeat.as_mut() {
                h.tick(snap, problem.is_none());
            }
        }
        if self.sink.problem(Duration::MAX).is_some() {
            return Err(std::io::Error::other("the database writer has stopped"));
        }
        Ok(())
    }

    fn read_ring(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if let Some(ev) = records::proc_event(&item) {
                if let ProcEvent::Exit { tgid } = ev {
                    self.drainer.on_exit(tgid);
                }
                self.identity.on_event(&ev);
                if self.every_exe {
                    self.add_exec(&ev);
                }
            }
        }
    }

    /// Learns the names in every DNS answer the kernel copied since the last read.
    fn read_dns(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if let Some(p) = records::dns_packet(&item) {
                self.names.on_packet(&p);
            }
        }
    }

    /// `[monitoring] every_exe`: a row for every exec, traffic or not (ports -1, as picosnitch).
    fn add_exec(&mut self, ev: &ProcEvent) {
        let ProcEvent::Exec {
            tgid,
            uid,
            start_ns,
            exe,
            comm,
            parent,
            grandparent,
            cgroup,
            ..
        } = ev
        else {
            return;
        };
        let key = WinKey {
            exe: self.identity.resolve(*tgid, *start_ns, *exe, comm),
            parent: self.identity.resolve(parent.tgid, 0, parent.exe, ""),
            grandparent: self
                .identity
                .resolve(grandparent.tgid, 0, grandparent.exe, ""),
            uid: *uid,
            family: 0,
            protocol: 0,
            lport: -1,
            rport: -1,
            laddr: String::new(),
            raddr: String::new(),
            domain: String::new(),
            netns: 0,
            container: self.identity.container(*cgroup, *tgid),
        };
        self.window.add(now_unix(), key, 0, 0, 1);
    }

    fn add(&mut self, now: i64, d: FlowDelta) {
        let exe = self.identity.resolve(d.tgid, d.start_ns, d.exe, &d.comm);
        let parent = self.identity.resolve(d.parent.tgid, 0, d.parent.exe, "");
        let grandparent = self
            .identity
            .resolve(d.grandparent.tgid, 0, d.grandparent.exe, "");
        let addr = |a: Option<std::net::IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let flow = FlowId {
            tgid: d.tgid,
            socket: d.socket,
            raddr: d.raddr,
            rport: d.rport,
        };
        let domain = self.names.domain(flow, d.netns).to_string();
        let key = WinKey {
            exe,
            parent,
            grandparent,
            uid: d.uid,
            family: d.family,
            protocol: d.protocol,
            lport: i32::from(d.lport),
            rport: i32::from(d.rport),
            laddr: addr(d.laddr),
            raddr: addr(d.raddr),
            domain,
            netns: d.netns,
            container: self.identity.container(d.cgroup, d.tgid),
        };
        self.window.add(now, key, d.send, d.recv, d.events);
    }

    /// Reads the kernel totals, then the events that preceded them, then attributes the deltas.
    /// The rings are read after the totals: a process's exec record is committed before it can
    /// send a byte, so every flow read here finds its exec (and the DNS answers before it) read.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, dns: Option<&mut RingBuf<MapData>>) {
        let now = now_unix();
        let entries = self.collector.read_totals();
        self.read_ring(ring);
        if let Some(d) = dns {
            self.read_dns(d);
        }
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot read the kernel totals map: {e}");
                return;
            }
        };
        let res = self.drainer.apply(entries);
        self.names.poll_reverse();
        self.names.forget(res.retire.iter().map(|k| FlowId {
            tgid: k.tgid,
            socket: k.sock_ino,
            raddr: records::peer(k),
            rport: k.rport,
        }));
        if !res.retire.is_empty() {
            if let Err(e) = self.collector.retire(&res.retire) {
                tracing::warn!("cannot retire idle totals entries: {e}");
            }
        }
        let cap = self.collector.capacity as usize;
        if res.entries * 10 >= cap * 9
            && self
                .last_capacity_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_capacity_warning = Some(Instant::now());
            tracing::warn!(
                entries = res.entries,
                capacity = cap,
                "the kernel totals map is near capacity; raise [monitoring] conn_map_max_entries"
            );
        }
        for d in res.deltas {
            self.add(now, d);
        }
        self.identity.after_drain();
        self.report_losses(now);
    }

    /// Reports every loss counter that grew since the last drain (log + database).
    fn report_losses(&mut self, now: i64) {
        let stats = self.collector.stats();
        for &i in &LOSS_STATS {
            let grew = stats[i].saturating_sub(self.last_stats[i]);
            if grew > 0 {
                tracing::warn!(
                    source = STAT_NAMES[i],
                    count = grew,
                    "kernel side lost data"
                );
                self.loss(now, STAT_NAMES[i], grew);
            }
        }
        self.last_stats = stats;
        let c = &self.identity.counters;
        // A mismatch alone loses nothing (the process is resolved by inode instead); these do.
        let h = &self.identity.cache.hash_counters;
        let ident = [
            c.exe_unavailable.load(Ordering::Relaxed),
            c.cmdline_unreadable.load(Ordering::Relaxed),
            c.container_unresolved.load(Ordering::Relaxed),
            h.too_large.load(Ordering::Relaxed),
            h.timeout.load(Ordering::Relaxed),
            h.modified_before_hash.load(Ordering::Relaxed),
        ];
        let names = [
            "exe_unavailable",
            "cmdline_unreadable",
            "container_unresolved",
            "hash_too_large",
            "hash_timeout",
            "hash_modified",
        ];
        for i in 0..ident.len() {
            let grew = ident[i].saturating_sub(self.last_ident[i]);
            if grew > 0 {
                tracing::warn!(
                    source = names[i],
                    count = grew,
                    "process identity incomplete"
                );
                self.loss(now, names[i], grew);
            }
        }
        self.last_ident = ident;
        let dns = self.names.counters;
        for ((name, now), (_, before)) in dns.losses().into_iter().zip(self.last_dns.losses()) {
            let grew = now.saturating_sub(before);
            if grew > 0 {
                tracing::warn!(source = name, count = grew, "DNS answers not fully read");
                self.loss(now_unix(), name, grew);
            }
        }
        self.last_dns = dns;
        if let Some(f) = &self.feed {
            f.metrics().set_dns(&self.dns_events());
        }
    }

    fn loss(&mut self, contime: i64, source: &str, count: u64) {
        self.losses = self.losses.saturating_add(count);
        if let Some(f) = &self.feed {
            f.counted_loss(source, count);
        }
        self.sink.send(Msg::Loss {
            contime,
            source: source.to_string(),
            count,
        });
    }

    /// Also records processes that make no traffic (`[monitoring] every_exe`).
    pub fn with_every_exe(mut self, on: bool) -> Self {
        self.every_exe = on;
        self
    }

    /// Hands written-to executables to the sink; after a queue overflow every hash is suspect.
    fn on_fanotify(&mut self, w: &Watcher) {
        match w.read() {
            Ok(c) => {
                if c.overflow {
                    tracing::error!(
                        "fanotify queue overflowed: every cached executable is rehashed"
                    );
                    self.loss(now_unix(), "fanotify_overflow", 1);
                    self.sink.send(Msg::RehashAll);
                }
                for id in c.modified {
                    self.sink.send(Msg::Modified(id));
                }
            }
            Err(e) => tracing::error!("cannot read fanotify events: {e}"),
        }
    }

    /// Hands the closed window to the writer; a full queue drops it as a counted loss.
    fn flush(&mut self) {
        if self.window.is_empty() {
            return;
        }
        let closed = self.window.close();
        let contime = closed.contime;
        if let Err(rows) = self.sink.send_window(closed) {
            tracing::error!(
                rows,
                queued_bytes = self.sink.health.queued_bytes(),
                "the database writer's queue is full: a window of {rows} rows is dropped"
            );
            self.loss(contime, "sink_queue_full", rows as u64);
        }
    }

    /// Runs until `shutdown` resolves, then drains and writes everything before returning.
    pub async fn run(
        mut self,
        write_every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let ring = self
            .collector
            .take_ring()
            .ok_or_else(|| std::io::Error::other("process ring buffer already taken"))?;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the ring buffer.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut dns = match self.collector.take_dns_ring() {
            // SAFETY: as for the process ring buffer above.
            Some(r) => Some(
                unsafe { AsyncFd::register_with_interest(r, Interest::READABLE) }
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            None => None,
        };
        self.stall_after = stall_after(write_every);
        let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
        let mut flush_tick = tokio::time::interval(write_every);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush_tick.tick().await;
        tokio::pin!(shutdown);
        let fan = match self.watcher.clone() {
            // SAFETY: the watcher's fanotify fd stays open for as long as the Arc (held here and
            // by the cache) lives, which outlasts this AsyncFd.
            Some(w) => Some(
                unsafe { AsyncFd::register_with_interest(w, Interest::READABLE) }
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            None => None,
        };
        // Hooks attached, database open, signal handlers installed: ready.
        let snap = self.snapshot();
        if let Some(h) = self.heartbeat.as_mut() {
            h.ready(snap);
        }
        loop {
            tokio::select! {
                guard = async { fan.as_ref().expect("guarded").readable().await }, if fan.is_some() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    let w = guard.get_inner().clone();
                    self.on_fanotify(&w);
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    let rb = guard.get_inner_mut();
                    tracing::trace!("ring readable");
                    self.read_ring(rb);
                }
                // The kernel wakes us only when the DNS ring is half full; answers are otherwise
                // read with every drain (after the totals), so flows find the names looked up
                // before them.
                guard = async { dns.as_mut().expect("guarded").readable_mut().await }, if dns.is_some() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    self.read_dns(guard.get_inner_mut());
                }
                _ = drain_tick.tick() => {
                    self.drain(ring.get_mut(), dns.as_mut().map(|d| d.get_mut()));
                    self.beat()?;
                }
                _ = flush_tick.tick() => {
                    self.drain(ring.get_mut(), dns.as_mut().map(|d| d.get_mut()));
                    self.flush();
                    self.beat()?;
                }
                _ = &mut shutdown => break,
            }
        }
        let snap = self.snapshot();
        if let Some(h) = self.heartbeat.as_mut() {
            h.stopping(snap);
        }
        self.drain(ring.get_mut(), dns.as_mut().map(|d| d.get_mut()));
        self.flush();
        let c = self.names.counters;
        let [_, _, (_, unsolicited), _] = self.dns_events();
        tracing::info!(
            queries = c.queries,
            packets = c.packets,
            answers = c.answers,
            addresses = c.addresses,
            unsolicited,
            cache_evicted = c.cache_evicted,
            cached = self.names.cache_len(),
            "DNS answers read"
        );
        self.sink.shutdown().map_err(std::io::Error::other)
    }
}
