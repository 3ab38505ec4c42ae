//! dns/pending.rs: the queries local sockets sent, waiting for their answer. An answer names
//! addresses only when it answers one of them — same network namespace, protocol, server, local
//! port, transaction id and question — and only once; anything else is refused and counted
//! (`dns_unsolicited`), so a host that never was asked cannot rename destinations.
use lru::LruCache;
use std::net::IpAddr;
use std::num::NonZeroUsize;

/// Queries waiting at most (the kernel's `dns_queries` map holds as many); the least recently
/// used goes first.
pub const MAX_PENDING: usize = 16_384;
/// Seconds a query waits for its answer (resolvers give up long before).
pub const PENDING_SECS: u64 = 30;
/// Questions waiting under one key (a resolver asking A and AAAA with one id, retries).
pub const MAX_QUESTIONS: usize = 8;

/// Where a query went and where its answer must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub netns: u32,
    pub protocol: u16,
    pub server: IpAddr,
    /// The local socket's port.
    pub port: u16,
    pub txid: u16,
}

/// The question of a message: its name (lower case, reverse notation), type and class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone)]
struct Asked {
    question: Question,
    at: u64,
}

/// What the table did, for the log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingStats {
    /// Queries recorded.
    pub asked: u64,
    /// Queries forgotten before their answer because the table was full.
    pub evicted: u64,
}

pub struct Pending {
    map: LruCache<QueryKey, Vec<Asked>>,
    pub stats: PendingStats,
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new(MAX_PENDING)
    }
}

impl Pending {
    pub fn new(capacity: usize) -> Self {
        Pending {
            map: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            stats: PendingStats::default(),
        }
    }

    /// Records a query that left at `now` (seconds).
    pub fn asked(&mut self, key: QueryKey, question: Question, now: u64) {
        self.stats.asked += 1;
        let entry = Asked { question, at: now };
        if let Some(list) = self.map.get_mut(&key) {
            list.retain(|a| {
                now.saturating_sub(a.at) <= PENDING_SECS && a.question != entry.question
            });
            if list.len() >= MAX_QUESTIONS {
                list.remove(0);
            }
            list.push(entry);
            return;
        }
        if let Some((old, _)) = self.map.push(key, vec![entry]) {
            if old != key {
                self.stats.evicted += 1;
            }
        }
    }

    /// Whether an answer to `question` under `key` was waited for at `now`; the query it answers
    /// is forgotten (one answer per query).
    pub fn answered(&mut self, key: &QueryKey, question: &Question, now: u64) -> bool {
        let Some(list) = self.map.get_mut(key) else {
            return false;
        };
        let found = list
            .iter()
            .position(|a| a.question == *question && now.saturating_sub(a.at) <= PENDING_SECS);
        if let Some(i) = found {
            list.swap_remove(i);
        }
        if list.is_empty() {
            self.map.pop(key);
        }
        found.is_some()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(txid: u16) -> QueryKey {
        QueryKey {
            netns: 1,
            protocol: 17,
            server: "192.0.2.53".parse().unwrap(),
            port: 40000,
            txid,
        }
    }

    fn q(name: &str) -> Question {
        Question {
            name: name.into(),
            qtype: 1,
            qclass: 1,
        }
    }

    #[test]
    fn an_answer_matches_its_query_once() {
        let mut p = Pending::default();
        p.asked(key(7), q("com.example"), 0);
        assert!(!p.answered(&key(8), &q("com.example"), 1), "other id");
        assert!(
            !p.answered(&key(7), &q("com.example.evil"), 1),
            "other question"
        );
        let other_port = QueryKey {
            port: 40001,
            ..key(7)
        };
        assert!(!p.answered(&other_port, &q("com.example"), 1), "other port");
        let other_ns = QueryKey { netns: 2, ..key(7) };
        assert!(
            !p.answered(&other_ns, &q("com.example"), 1),
            "other namespace"
        );
        assert!(p.answered(&key(7), &q("com.example"), 1));
        assert!(!p.answered(&key(7), &q("com.example"), 1), "only once");
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn late_answers_and_full_tables() {
        let mut p = Pending::default();
        p.asked(key(1), q("a"), 0);
        assert!(!p.answered(&key(1), &q("a"), PENDING_SECS + 1));
        // Two questions under one id (A and AAAA) wait side by side.
        p.asked(key(2), q("a"), 0);
        p.asked(
            key(2),
            Question {
                qtype: 28,
                ..q("a")
            },
            0,
        );
        assert!(p.answered(
            &key(2),
            &Question {
                qtype: 28,
                ..q("a")
            },
            1
        ));
        assert!(p.answered(&key(2), &q("a"), 1));
        let mut small = Pending::new(4);
        for id in 0..10 {
            small.asked(key(id), q("a"), 0);
        }
        assert_eq!(small.len(), 4);
        assert_eq!(small.stats.evicted, 6);
        for id in 0..MAX_QUESTIONS as u16 * 2 {
            small.asked(key(100), q(&id.to_string()), 0);
        }
        assert!(small.answered(&key(100), &q(&(MAX_QUESTIONS * 2 - 1).to_string()), 0));
        assert!(!small.answered(&key(100), &q("0"), 0));
    }
}
