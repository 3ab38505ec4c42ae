//! dns: names for remote addresses, from the DNS answers the kernel copies for every resolver
//! (glibc, musl, static binaries, systemd-resolved's stub, containers, other namespaces): checked
//! against the queries that left, parsed, cached per network namespace, and given to each flow
//! when it is first seen.
pub mod cache;
pub mod name;
pub mod parse;
pub mod pending;
pub mod reverse;
pub mod tcp;

use crate::model::DnsPacket;
use cache::{Cache, ANY_NETNS, REVERSE_NETNS};
use pending::{Pending, QueryKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The `[dns]` config section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DnsConfig {
    /// Capture DNS answers in the kernel and name remote addresses.
    pub enabled: bool,
    /// Addresses remembered at most (all namespaces together).
    pub cache_entries: u32,
    /// Ask the system resolver for the PTR name of addresses no answer named. Off by default:
    /// every such lookup tells the resolver which addresses this machine talks to.
    pub reverse_dns: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            cache_entries: 16_384,
            reverse_dns: false,
        }
    }
}

/// Keys of `[dns]`, for the unknown-key warning.
pub const CONFIG_KEYS: &[&str] = &["enabled", "cache_entries", "reverse_dns"];

impl DnsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=16_777_216).contains(&self.cache_entries) {
            return Err(format!(
                "dns.cache_entries = {} is not allowed: use 16 to 16777216",
                self.cache_entries
            ));
        }
        Ok(())
    }
}

/// What the DNS side did; the daemon reports growth of the loss counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Packets read from the kernel.
    pub packets: u64,
    /// Messages that named at least one address.
    pub answers: u64,
    /// Addresses named.
    pub addresses: u64,
    /// Answers from sockets whose namespace this kernel could not tell.
    pub no_netns: u64,
    /// Messages that could not be decoded (not DNS, or hostile): names lost.
    pub malformed: u64,
    /// Messages with more answer records than could be read (cut short): names lost.
    pub truncated: u64,
    /// TCP streams that lost their message boundaries: names lost.
    pub tcp_lost: u64,
    /// Reverse lookups not made because their queue was full.
    pub reverse_dropped: u64,
    /// Queries read from the kernel.
    pub queries: u64,
    /// Answers refused here: no query waited for them (other id, port, server, namespace or
    /// question, or answered already). The kernel counts the ones it refused itself.
    pub unsolicited: u64,
    /// Names still valid that the full cache dropped for newer ones: names lost.
    pub cache_evicted: u64,
    /// Queries forgotten unanswered because their table was full.
    pub queries_evicted: u64,
}

impl Counters {
    /// (name, value) of the counters that mean names were lost.
    pub fn losses(&self) -> [(&'static str, u64); 6] {
        [
            ("dns_malformed", self.malformed),
            ("dns_truncated", self.truncated),
            ("dns_tcp_lost", self.tcp_lost),
            ("dns_reverse_dropped", self.reverse_dropped),
            ("dns_cache_evicted", self.cache_evicted),
            ("dns_queries_evicted", self.queries_evicted),
        ]
    }
}

/// Seconds between two warnings about unsolicited answers (each one is logged at debug level).
const UNSOLICITED_WARN_SECS: u64 = 60;

/// Where a DNS message was seen: which socket's side, and in which direction.
#[derive(Debug, Clone, Copy)]
struct Origin {
    netns: u32,
    protocol: u16,
    server: IpAddr,
    /// The local socket's port.
    port: u16,
    query: bool,
}

/// One flow of one process: its socket and peer (a socket can have many peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub tgid: u32,
    pub socket: u64,
    pub raddr: Option<IpAddr>,
    pub rport: u16,
}

/// Flows that keep a name, at most (the kernel's totals map bounds them long before).
const MAX_PINNED: usize = 1 << 22;

pub struct Names {
    cache: Cache,
    pending: Pending,
    tcp: tcp::Streams,
    /// The query direction of TCP connections.
    tcp_queries: tcp::Streams,
    /// When unsolicited answers were last warned about, and how many were then.
    warned: Option<(u64, u64)>,
    reverse: Option<reverse::Reverse>,
    /// The name each flow got when first named; it keeps it after the answer expires.
    pinned: HashMap<FlowId, Arc<str>>,
    started: Instant,
    pub counters: Counters,
}

impl Names {
    pub fn new(cfg: &DnsConfig) -> Names {
        let reverse = if cfg.reverse_dns {
            match reverse::Reverse::start() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("reverse DNS is off: cannot start its thread: {e}");
                    None
                }
            }
        } else {
            None
        };
        Names {
            cache: Cache::new(cfg.cache_entries as usize),
            pending: Pending::default(),
            tcp: tcp::Streams::default(),
            tcp_queries: tcp::Streams::default(),
            warned: None,
            reverse,
            pinned: HashMap::new(),
            started: Instant::now(),
            counters: Counters::default(),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Learns the names in one packet the kernel copied. Never fails: what cannot be read is
    /// counted.
    pub fn on_packet(&mut self, p: &DnsPacket<'_>) {
        self.on_packet_at(p, self.now());
    }

    fn on_packet_at(&mut self, p: &DnsPacket<'_>, now: u64) {
        if p.query {
            self.counters.queries += 1;
        } else {
            self.counters.packets += 1;
        }
        let at = Origin {
            netns: p.netns,
            protocol: p.protocol,
            server: p.server,
            port: p.dport,
            query: p.query,
        };
        if p.protocol == libc::IPPROTO_TCP as u16 {
            let key = tcp::StreamKey {
                netns: p.netns,
                server: p.server,
                sport: p.sport,
                client: p.client,
                dport: p.dport,
            };
            let streams = if p.query {
                &mut self.tcp_queries
            } else {
                &mut self.tcp
            };
            let lost = streams.stats.lost;
            let messages = streams.segment(key, p.seq, p.len, p.data, now);
            let lost = streams.stats.lost - lost;
            if !p.query {
                self.counters.tcp_lost += lost;
            }
            for m in messages {
                self.on_message(at, &m.bytes, m.partial, now);
            }
        } else {
            let partial = (p.data.len() as u64) < u64::from(p.len);
            self.on_message(at, p.data, partial, now);
        }
        self.counters.cache_evicted = self.cache.stats.evicted_live;
        self.counters.queries_evicted = self.pending.stats.evicted;
    }

    fn on_message(&mut self, at: Origin, bytes: &[u8], partial: bool, now: u64) {
        let netns = at.netns;
        let parsed = match parse::parse(bytes) {
            Ok(p) => p,
            Err(e) if at.query => {
                // Not a question this side can match an answer to; nothing is lost.
                tracing::debug!(netns, "DNS query not decoded: {e}");
                return;
            }
            Err(e) => {
                // The start of a message was copied: a cut header or question is not hostile.
                self.counters.malformed += u64::from(!partial);
                self.counters.truncated += u64::from(partial);
                tracing::debug!(netns, "DNS message not decoded: {e}");
                return;
            }
        };
        if parsed.response == at.query {
            return; // a query to a local server, or an answer a local server sent
        }
        let key = QueryKey {
            netns,
            protocol: at.protocol,
            server: at.server,
            port: at.port,
            txid: parsed.id,
        };
        let Some(question) = parsed.question else {
            if !at.query {
                self.unsolicited(&key, "no question", now);
            }
            return;
        };
        if at.query {
            self.pending.asked(key, question, now);
            return;
        }
        if !self.pending.answered(&key, &question, now) {
            self.unsolicited(&key, &question.name, now);
            return;
        }
        self.counters.truncated += u64::from(parsed.truncated);
        if parsed.resolved.is_empty() {
            return;
        }
        self.counters.answers += 1;
        self.counters.no_netns += u64::from(netns == ANY_NETNS);
        for r in &parsed.resolved {
            self.counters.addresses += 1;
            self.cache
                .insert(netns, r.addr, &r.name, cache::hold(r.ttl), now);
        }
    }

    /// Counts an answer that answers no query; warns at most once a minute.
    fn unsolicited(&mut self, key: &QueryKey, question: &str, now: u64) {
        self.counters.unsolicited += 1;
        tracing::debug!(
            netns = key.netns,
            server = %key.server,
            port = key.port,
            id = key.txid,
            question,
            "DNS answer refused: no query waited for it"
        );
        let due = self
            .warned
            .is_none_or(|(t, _)| now.saturating_sub(t) >= UNSOLICITED_WARN_SECS);
        if due {
            let before = self.warned.map_or(0, |(_, n)| n);
            tracing::warn!(
                count = self.counters.unsolicited - before,
                server = %key.server,
                "DNS answers refused: they answer no query a local socket sent"
            );
            self.warned = Some((now, self.counters.unsolicited));
        }
    }

    /// The name of a flow's remote address: the one it was first given, else the newest answer
    /// that still holds in its namespace (or in any, from kernels that cannot tell namespaces),
    /// else a reverse lookup's (asked for now, when enabled, for a later drain).
    pub fn domain(&mut self, flow: FlowId, netns: u32) -> Arc<str> {
        let now = self.now();
        self.domain_at(flow, netns, now)
    }

    fn domain_at(&mut self, flow: FlowId, netns: u32, now: u64) -> Arc<str> {
        if let Some(n) = self.pinned.get(&flow) {
            return n.clone();
        }
        let Some(addr) = flow.raddr else {
            return Arc::from("");
        };
        let found = self
            .cache
            .get(netns, addr, now)
            .or_else(|| self.cache.get(ANY_NETNS, addr, now))
            .or_else(|| self.cache.get(REVERSE_NETNS, addr, now));
        match found {
            Some(n) => {
                if self.pinned.len() >= MAX_PINNED {
                    self.pinned.clear();
                }
                self.pinned.insert(flow, n.clone());
                n
            }
            None => {
                if let Some(r) = self.reverse.as_mut() {
                    r.ask(addr, now);
                }
                Arc::from("")
            }
        }
    }

    /// Collects finished reverse lookups (call before naming flows).
    pub fn poll_reverse(&mut self) {
        let now = self.now();
        let Some(r) = self.reverse.as_mut() else {
            return;
        };
        for (addr, name) in r.answers() {
            self.cache
                .insert(REVERSE_NETNS, addr, &name, reverse::RETRY_SECS, now);
        }
        self.counters.reverse_dropped = r.dropped;
    }

    /// Forgets flows whose kernel entries were retired.
    pub fn forget(&mut self, flows: impl IntoIterator<Item = FlowId>) {
        for f in flows {
            self.pinned.remove(&f);
        }
    }

    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod name_property;
#[cfg(test)]
mod tests;
