//! filter.rs: the `[log]` rules applied to connection rows before they are stored or written to
//! conn.log (notifications still see every row): ignore lists and the address/command/port switches.
use crate::model::{ExeIdent, Row, RowKey};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Parsed `[log]` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub addresses: bool,
    pub commands: bool,
    pub ports: bool,
    pub ignore_ports: Vec<u16>,
    /// Reverse notation (`com.example`), lowercase, without a trailing dot.
    pub ignore_domains: Vec<String>,
    pub ignore_ips: Vec<IpNet>,
    /// Lowercase hex.
    pub ignore_sha256: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            addresses: true,
            commands: true,
            ports: true,
            ignore_ports: vec![],
            ignore_domains: vec![],
            ignore_ips: vec![],
            ignore_sha256: vec![],
        }
    }
}

pub struct Filter {
    rules: Rules,
    ports: HashSet<u16>,
    sha256: HashSet<String>,
}

impl Filter {
    pub fn new(rules: Rules) -> Filter {
        Filter {
            ports: rules.ignore_ports.iter().copied().collect(),
            sha256: rules.ignore_sha256.iter().cloned().collect(),
            rules,
        }
    }

    /// Whether nothing would be dropped or blanked (rows pass through untouched).
    pub fn is_noop(&self) -> bool {
        self.rules == Rules::default()
    }

    /// Whether rows of an executable with this hash are dropped (`ignore_sha256`): also asked
    /// when a hash stored as `!pending` arrives.
    pub fn ignores_sha256(&self, sha256: &str) -> bool {
        self.sha256.contains(sha256)
    }

    /// Whether a row is dropped by an ignore list.
    pub fn ignores(&self, k: &RowKey) -> bool {
        let port = |p: i32| u16::try_from(p).is_ok_and(|p| self.ports.contains(&p));
        if port(k.lport) || port(k.rport) {
            return true;
        }
        if !k.domain.is_empty()
            && self
                .rules
                .ignore_domains
                .iter()
                .any(|d| under_domain(&k.domain, d))
        {
            return true;
        }
        if self.ignores_sha256(&k.exe.sha256) {
            return true;
        }
        // Remote address first, then local.
        [&k.raddr, &k.laddr].iter().any(|a| {
            a.parse::<IpAddr>()
                .is_ok_and(|ip| self.rules.ignore_ips.iter().any(|n| n.contains(&ip)))
        })
    }

    /// The rows to store: ignored ones dropped, switched-off fields blanked, rows that became
    /// equal merged.
    pub fn apply(&self, rows: Vec<Row>) -> Vec<Row> {
        if self.is_noop() {
            return rows;
        }
        let mut merged: HashMap<RowKey, Row> = HashMap::new();
        let mut order = Vec::new();
        for mut row in rows {
            if self.ignores(&row.key) {
                continue;
            }
            self.blank(&mut row.key);
            match merged.get_mut(&row.key) {
                Some(m) => {
                    m.send += row.send;
                    m.recv += row.recv;
                    m.events += row.events;
                }
                None => {
                    order.push(row.key.clone());
                    merged.insert(row.key.clone(), row);
                }
            }
        }
        order
            .into_iter()
            .filter_map(|k| merged.remove(&k))
            .collect()
    }

    fn blank(&self, k: &mut RowKey) {
        if !self.rules.addresses {
            k.laddr.clear();
            k.raddr.clear();
        }
        if !self.rules.ports {
            // Kept apart from -1, which marks rows of processes without traffic.
            if k.lport >= 0 {
                k.lport = 0;
            }
            if k.rport >= 0 {
                k.rport = 0;
            }
        }
        if !self.rules.commands {
            for level in [&mut k.exe, &mut k.parent, &mut k.grandparent] {
                if !level.cmdline.is_empty() {
                    *level = Arc::new(ExeIdent {
                        cmdline: String::new(),
                        ..(**level).clone()
                    });
                }
            }
        }
    }
}

/// Whether `domain` is `base` or below it, on label boundaries (both in reverse notation):
/// `com.google.www` is under `com.google`, `com.googleapis` is not.
pub fn under_domain(domain: &str, base: &str) -> bool {
    domain == base
        || (domain.len() > base.len()
            && domain.starts_with(base)
            && domain.as_bytes()[base.len()] == b'.')
}

/// A domain as written by people (`www.Example.com.`) in reverse notation (`com.example.www`),
/// through `dns::name`; text that is not a name is kept as one label, escaped.
pub fn reverse_notation(d: &str) -> String {
    crate::dns::name::reverse_text(d).unwrap_or_else(|_| crate::dns::name::reverse_labels([d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        exe: &str,
        sha: &str,
        lport: i32,
        rport: i32,
        laddr: &str,
        raddr: &str,
        dom: &str,
    ) -> Row {
        let e = Arc::new(ExeIdent {
            exe: exe.into(),
            name: "n".into(),
            cmdline: format!("{exe} --secret"),
            sha256: sha.into(),
        });
        Row {
            contime: 1,
            send: 10,
            recv: 20,
            events: 1,
            key: RowKey {
                exe: e.clone(),
                parent: e,
                grandparent: Arc::new(ExeIdent::default()),
                uid: 0,
                family: if raddr.contains(':') { 10 } else { 2 },
                protocol: 6,
                lport,
                rport,
                laddr: laddr.into(),
                raddr: raddr.into(),
                domain: dom.into(),
                netns: 1,
                container: String::new(),
            },
        }
    }

    fn rules() -> Rules {
        Rules {
            ignore_ports: vec![53, 5353],
            ignore_domains: vec![
                reverse_notation("google.com"),
                reverse_notation("Example.ORG."),
            ],
            ignore_ips: ["10.0.0.0/8", "fd00::/8", "2001:db8::1/128"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
            ignore_sha256: vec!["ff".repeat(32)],
            ..Rules::default()
        }
    }

    #[test]
    fn ignore_table() {
        let f = Filter::new(rules());
        let sha = "aa".repeat(32);
        let ff = "ff".repeat(32);
        // (row, ignored?)
        let cases = [
            (
                row("/a", &sha, 40000, 443, "192.168.1.2", "1.1.1.1", ""),
                false,
            ),
            (
                row("/a", &sha, 40000, 53, "192.168.1.2", "1.1.1.1", ""),
                true,
            ),
            (
                row("/a", &sha, 5353, 40000, "192.168.1.2", "1.1.1.1", ""),
                true,
            ),
            (row("/a", &sha, -1, -1, "", "", ""), false),
            (row("/a", &sha, 1, 2, "", "", "com.google"), true),
            (row("/a", &sha, 1, 2, "", "", "com.google.www"), true),
            (row("/a", &sha, 1, 2, "", "", "com.googleapis"), false),
            (row("/a", &sha, 1, 2, "", "", "com.googleapis.www"), false),
            (row("/a", &sha, 1, 2, "", "", "com"), false),
            (row("/a", &sha, 1, 2, "", "", "org.example.mail"), true),
            (row("/a", &sha, 1, 2, "192.168.1.2", "10.1.2.3", ""), true),
            (row("/a", &sha, 1, 2, "10.1.2.3", "8.8.8.8", ""), true),
            (row("/a", &sha, 1, 2, "11.0.0.1", "9.9.9.9", ""), false),
            (row("/a", &sha, 1, 2, "::1", "fd12::5", ""), true),
            (row("/a", &sha, 1, 2, "::1", "2001:db8::1", ""), true),
            (row("/a", &sha, 1, 2, "::1", "2001:db8::2", ""), false),
            (row("/a", &ff, 1, 2, "", "", ""), true),
        ];
        for (r, want) in cases {
            assert_eq!(f.ignores(&r.key), want, "{:?}", r.key);
        }
    }

    #[test]
    fn switches_blank_and_merge() {
        let f = Filter::new(Rules {
            addresses: false,
            commands: false,
            ports: false,
            ..Rules::default()
        });
        let sha = "aa".repeat(32);
        let rows = vec![
            row("/a", &sha, 40000, 443, "192.168.1.2", "1.1.1.1", ""),
            row("/a", &sha, 40001, 443, "192.168.1.2", "1.0.0.1", ""),
            row("/a", &sha, -1, -1, "", "", ""),
        ];
        let out = f.apply(rows);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].send, out[0].recv, out[0].events), (20, 40, 2));
        let k = &out[0].key;
        assert_eq!(
            (k.lport, k.rport, k.laddr.as_str(), k.raddr.as_str()),
            (0, 0, "", "")
        );
        assert_eq!(k.exe.cmdline, "");
        assert_eq!(out[1].key.lport, -1);
        assert!(Filter::new(Rules::default()).is_noop());
    }
}
