//! dns: names for remote addresses, from the DNS answers the kernel copies for every resolver
//! (glibc, musl, static binaries, systemd-resolved's stub, containers, other namespaces): parsed,
//! cached per network namespace, and given to each flow when it is first seen.
pub mod cache;
pub mod parse;
pub mod reverse;
pub mod tcp;

use crate::model::DnsPacket;
use cache::{Cache, ANY_NETNS, REVERSE_NETNS};
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
}

impl Counters {
    /// (name, value) of the counters that mean names were lost.
    pub fn losses(&self) -> [(&'static str, u64); 4] {
        [
            ("dns_malformed", self.malformed),
            ("dns_truncated", self.truncated),
            ("dns_tcp_lost", self.tcp_lost),
            ("dns_reverse_dropped", self.reverse_dropped),
        ]
    }
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
    tcp: tcp::Streams,
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
            tcp: tcp::Streams::default(),
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
        self.counters.packets += 1;
        if p.protocol == libc::IPPROTO_TCP as u16 {
            let key = tcp::StreamKey {
                netns: p.netns,
                server: p.server,
                sport: p.sport,
                client: p.client,
                dport: p.dport,
            };
            let lost = self.tcp.stats.lost;
            for m in self.tcp.segment(key, p.seq, p.len, p.data, now) {
                self.on_message(p.netns, &m.bytes, m.partial, now);
            }
            self.counters.tcp_lost += self.tcp.stats.lost - lost;
        } else {
            let partial = (p.data.len() as u64) < u64::from(p.len);
            self.on_message(p.netns, p.data, partial, now);
        }
    }

    fn on_message(&mut self, netns: u32, bytes: &[u8], partial: bool, now: u64) {
        let parsed = match parse::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                // The start of a message was copied: a cut header or question is not hostile.
                self.counters.malformed += u64::from(!partial);
                self.counters.truncated += u64::from(partial);
                tracing::debug!(netns, "DNS message not decoded: {e}");
                return;
            }
        };
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
mod tests;
