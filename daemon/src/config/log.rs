//! config::log: `[log]`, what rows record (addresses, commands, ports) and what they leave out
//! (ignore lists), parsed and checked entry by entry; `filter.rs` applies them to stored rows.
use super::Problem;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Log {
    pub addresses: bool,
    pub commands: bool,
    pub ports: bool,
    /// Ports (0 to 65535) whose traffic is not recorded.
    pub ignore_ports: Vec<i64>,
    /// Domain names, each also covering its subdomains.
    pub ignore_domains: Vec<String>,
    /// IPv4/IPv6 addresses or CIDR networks.
    pub ignore_ips: Vec<String>,
    /// sha256 of executables (64 hexadecimal digits).
    pub ignore_sha256: Vec<String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            addresses: true,
            commands: true,
            ports: true,
            ignore_ports: Vec::new(),
            ignore_domains: Vec::new(),
            ignore_ips: Vec::new(),
            ignore_sha256: Vec::new(),
        }
    }
}

/// The `[log]` ignore lists, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilters {
    pub ports: BTreeSet<u16>,
    /// Lowercase and reversed like the `domains` table (`www.example.com` → `com.example.www`):
    /// a rule matches a domain that equals it or starts with it followed by a `.`.
    pub domains: Vec<String>,
    /// Networks with their host bits cleared; a plain address is a /32 or /128.
    pub ips: Vec<IpNet>,
    /// Lowercase hexadecimal.
    pub sha256: BTreeSet<String>,
}

impl Log {
    /// Parses every ignore list; the first bad entry is an error naming it by index.
    pub fn filters(&self) -> Result<LogFilters, Problem> {
        let mut f = LogFilters::default();
        for (i, &p) in self.ignore_ports.iter().enumerate() {
            let port = u16::try_from(p).map_err(|_| {
                Problem::new(
                    format!("log.ignore_ports[{i}]"),
                    p.to_string(),
                    "use port numbers from 0 to 65535",
                )
            })?;
            f.ports.insert(port);
        }
        for (i, d) in self.ignore_domains.iter().enumerate() {
            let reversed = reverse_domain(d).ok_or_else(|| {
                Problem::new(
                    format!("log.ignore_domains[{i}]"),
                    format!("{d:?}"),
                    "use a domain name such as \"example.com\" (it also covers every subdomain; \
                     no wildcards; write a space, a dot inside a label or any byte that is not \
                     printable ASCII as \\DDD, e.g. \"a\\\\032b.example\")",
                )
            })?;
            f.domains.push(reversed);
        }
        for (i, s) in self.ignore_ips.iter().enumerate() {
            let net = parse_net(s).ok_or_else(|| {
                Problem::new(
                    format!("log.ignore_ips[{i}]"),
                    format!("{s:?}"),
                    "use an IPv4 or IPv6 address or network in CIDR notation, such as \
                     \"192.168.0.0/16\", \"10.1.2.3\" or \"fd00::/8\"",
                )
            })?;
            f.ips.push(net);
        }
        for (i, h) in self.ignore_sha256.iter().enumerate() {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Problem::new(
                    format!("log.ignore_sha256[{i}]"),
                    format!("{h:?}"),
                    "use a sha256 of 64 hexadecimal digits (as `sha256sum` prints it)",
                ));
            }
            f.sha256.insert(h.to_ascii_lowercase());
        }
        Ok(f)
    }
}

/// `www.Example.com.` → `com.example.www` (the one reverse notation of `dns::name`, so rules match
/// the names the DNS path escaped), or None when it is not a domain name: empty labels, a `*`
/// (wildcards do not exist: a rule covers its subdomains), or bytes that are not printable ASCII
/// (written `\DDD` instead).
pub fn reverse_domain(d: &str) -> Option<String> {
    if d.contains('*') || !d.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    crate::dns::name::reverse_text(d).ok()
}

fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Log {
        Log::default()
    }

    #[test]
    fn good_lists_parse() {
        let l = Log {
            ignore_ports: vec![0, 53, 65535],
            ignore_domains: vec!["www.Example.COM.".into(), "localhost".into()],
            ignore_ips: vec!["10.1.2.3/8".into(), "::1".into(), "192.168.1.7".into()],
            ignore_sha256: vec!["AB".repeat(32)],
            ..log()
        };
        let f = l.filters().unwrap();
        assert_eq!(f.ports.into_iter().collect::<Vec<_>>(), vec![0, 53, 65535]);
        assert_eq!(f.domains, vec!["com.example.www", "localhost"]);
        let ips: Vec<String> = f.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, vec!["10.0.0.0/8", "::1/128", "192.168.1.7/32"]);
        assert_eq!(f.sha256.into_iter().next().unwrap(), "ab".repeat(32));
    }

    #[test]
    fn each_bad_entry_is_named() {
        let cases: Vec<(Log, &str)> = vec![
            (
                Log {
                    ignore_ports: vec![80, 70000],
                    ..log()
                },
                "log.ignore_ports[1] = 70000",
            ),
            (
                Log {
                    ignore_ports: vec![-1],
                    ..log()
                },
                "log.ignore_ports[0] = -1",
            ),
            (
                Log {
                    ignore_domains: vec!["*.example.com".into()],
                    ..log()
                },
                "log.ignore_domains[0] = \"*.example.com\"",
            ),
            (
                Log {
                    ignore_domains: vec!["ok.org".into(), "bad..org".into()],
                    ..log()
                },
                "log.ignore_domains[1]",
            ),
            (
                Log {
                    ignore_ips: vec!["10.0.0.0/33".into()],
                    ..log()
                },
                "log.ignore_ips[0] = \"10.0.0.0/33\"",
            ),
            (
                Log {
                    ignore_ips: vec!["fd00::/129".into()],
                    ..log()
                },
                "log.ignore_ips[0]",
            ),
            (
                Log {
                    ignore_sha256: vec!["abc".into()],
                    ..log()
                },
                "log.ignore_sha256[0] = \"abc\"",
            ),
        ];
        for (l, want) in cases {
            let e = l.filters().unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} does not start with {want}");
            assert!(e.contains("is not allowed: use"), "{e}");
        }
    }

    #[test]
    fn domain_labels() {
        assert_eq!(reverse_domain("a-b.c_d.io").as_deref(), Some("io.c_d.a-b"));
        // Any label a DNS answer can carry can be ignored, escaped as the DNS path writes it.
        assert_eq!(reverse_domain("-a.io").as_deref(), Some("io.-a"));
        assert_eq!(
            reverse_domain("A\\032b.x\\.y.io").as_deref(),
            Some("io.x\\046y.a\\032b")
        );
        assert_eq!(reverse_domain("a b.io"), None);
        assert_eq!(reverse_domain("caf\u{e9}.io"), None);
        assert_eq!(reverse_domain("a\\300.io"), None);
        assert_eq!(reverse_domain(&format!("{}.io", "a".repeat(64))), None);
        assert_eq!(reverse_domain(""), None);
        assert_eq!(reverse_domain("."), None);
    }
}
