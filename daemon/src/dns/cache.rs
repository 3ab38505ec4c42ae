//! dns/cache.rs: address → name per network namespace, bounded (the least recently used entry
//! goes first) and TTL-aware (an entry holds for its TTL, at least `MIN_HOLD`, plus `GRACE`).
use lru::LruCache;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// Seconds an answer holds at least, whatever its TTL (0 is common for load-balanced names; the
/// program connects right after the lookup).
pub const MIN_HOLD: u64 = 60;
/// Seconds an answer holds after its TTL ran out: programs keep using an address a little longer
/// than the record lived (connection pools, retries, their own caches).
pub const GRACE: u64 = 600;
/// Longest hold, whatever the TTL says (a week-long TTL on a shared address would outlive its use).
pub const MAX_HOLD: u64 = 86_400;

/// Namespace of answers whose namespace the kernel could not tell; any namespace may use them.
pub const ANY_NETNS: u32 = 0;
/// Namespace of names found by reverse lookups made by the daemon (from its own namespace).
pub const REVERSE_NETNS: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    netns: u32,
    addr: IpAddr,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    expires: u64,
}

/// Counters of what the cache did, for the log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub inserted: u64,
    pub evicted: u64,
    /// Evicted while their answer still held: names lost for later connections.
    pub evicted_live: u64,
    pub expired: u64,
}

pub struct Cache {
    map: LruCache<Key, Entry>,
    pub stats: CacheStats,
}

/// How long an answer with `ttl` holds, in seconds.
pub fn hold(ttl: u32) -> u64 {
    u64::from(ttl).clamp(MIN_HOLD, MAX_HOLD) + GRACE
}

/// IPv4-mapped IPv6 addresses are stored and looked up as IPv4, as the rows show them.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            stats: CacheStats::default(),
        }
    }

    /// Records that `addr` is `name` in `netns` from time `now` (seconds) for `hold_secs`. A newer
    /// answer replaces an older one for the same address.
    pub fn insert(&mut self, netns: u32, addr: IpAddr, name: &str, hold_secs: u64, now: u64) {
        let key = Key {
            netns,
            addr: canonical(addr),
        };
        let expires = now.saturating_add(hold_secs);
        if let Some(e) = self.map.get_mut(&key) {
            if &*e.name != name {
                e.name = Arc::from(name);
            }
            e.expires = expires;
            return;
        }
        self.stats.inserted += 1;
        let entry = Entry {
            name: Arc::from(name),
            expires,
        };
        if let Some((old, e)) = self.map.push(key, entry) {
            if old != key {
                self.stats.evicted += 1;
                self.stats.evicted_live += u64::from(e.expires > now);
            }
        }
    }

    /// The name of `addr` in `netns` at time `now`, if an answer still holds.
    pub fn get(&mut self, netns: u32, addr: IpAddr, now: u64) -> Option<Arc<str>> {
        let key = Key {
            netns,
            addr: canonical(addr),
        };
        let e = self.map.get(&key)?;
        if e.expires > now {
            return Some(e.name.clone());
        }
        self.map.pop(&key);
        self.stats.expired += 1;
        None
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.map.cap().get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ttl_expiry_with_floor_and_grace() {
        let mut c = Cache::new(8);
        c.insert(1, ip("192.0.2.1"), "com.example", hold(300), 1000);
        assert_eq!(
            c.get(1, ip("192.0.2.1"), 1000 + 300 + GRACE - 1).as_deref(),
            Some("com.example")
        );
        assert_eq!(c.get(1, ip("192.0.2.1"), 1000 + 300 + GRACE), None);
        assert_eq!(c.stats.expired, 1);
        assert_eq!(c.len(), 0);
        // TTL 0 still holds for the floor.
        c.insert(1, ip("192.0.2.2"), "com.example.lb", hold(0), 0);
        assert!(c.get(1, ip("192.0.2.2"), MIN_HOLD + GRACE - 1).is_some());
        assert!(c.get(1, ip("192.0.2.2"), MIN_HOLD + GRACE).is_none());
        // A huge TTL is capped.
        assert_eq!(hold(u32::MAX), MAX_HOLD + GRACE);
    }

    #[test]
    fn namespaces_are_apart_and_newer_answers_win() {
        let mut c = Cache::new(8);
        c.insert(1, ip("192.0.2.1"), "a", 100, 0);
        c.insert(2, ip("192.0.2.1"), "b", 100, 0);
        assert_eq!(c.get(1, ip("192.0.2.1"), 1).as_deref(), Some("a"));
        assert_eq!(c.get(2, ip("192.0.2.1"), 1).as_deref(), Some("b"));
        assert_eq!(c.get(3, ip("192.0.2.1"), 1), None);
        c.insert(1, ip("192.0.2.1"), "c", 100, 50);
        assert_eq!(c.get(1, ip("192.0.2.1"), 120).as_deref(), Some("c"));
        assert_eq!(c.stats.inserted, 2);
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mut c = Cache::new(8);
        c.insert(1, ip("::ffff:192.0.2.9"), "x", 100, 0);
        assert_eq!(c.get(1, ip("192.0.2.9"), 1).as_deref(), Some("x"));
    }

    #[test]
    fn bounded_least_recently_used_goes_first() {
        let mut c = Cache::new(3);
        for i in 1..=3 {
            c.insert(1, ip(&format!("192.0.2.{i}")), "n", 100, 0);
        }
        // Touch .1 so .2 is the least recently used.
        assert!(c.get(1, ip("192.0.2.1"), 1).is_some());
        c.insert(1, ip("192.0.2.4"), "n", 100, 1);
        assert_eq!(c.len(), 3);
        assert_eq!(c.capacity(), 3);
        assert!(c.get(1, ip("192.0.2.2"), 1).is_none());
        assert!(c.get(1, ip("192.0.2.1"), 1).is_some());
        assert_eq!(c.stats.evicted, 1);
        assert_eq!(c.stats.evicted_live, 1);
        // An expired entry pushed out is not a lost name.
        let mut d = Cache::new(1);
        d.insert(1, ip("192.0.2.1"), "n", 10, 0);
        d.insert(1, ip("192.0.2.2"), "n", 10, 20);
        assert_eq!((d.stats.evicted, d.stats.evicted_live), (1, 0));
        for i in 0..10_000u32 {
            c.insert(i, ip("192.0.2.5"), "m", 100, 2);
        }
        assert_eq!(c.len(), 3);
    }
}
