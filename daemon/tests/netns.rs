//! netns: traffic between two network namespaces joined by a veth pair (not loopback): exact bytes,
//! addresses, ports and the namespace of each side.
mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

struct Netns {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id();
        let n = Netns {
            a: format!("psa{id}"),
            b: format!("psb{id}"),
        };
        let (a, b) = (n.a.as_str(), n.b.as_str());
        let (va, vb) = (format!("va{id}"), format!("vb{id}"));
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ]);
        for (ns, dev, v4, v6) in [
            (a, &va, "10.231.0.1/24", "fd00:231::1/64"),
            (b, &vb, "10.231.0.2/24", "fd00:231::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn inode(name: &str) -> i64 {
        std::fs::metadata(Path::new("/run/netns").join(name))
            .unwrap()
            .ino() as i64
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Starts a server in namespace `ns`; returns it and the port it printed.
fn serve(ns: &str, exe: &Path, args: &[&str]) -> (std::process::Child, u16) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = served_port(&mut child);
    (child, port)
}

struct Pair {
    name: &'static str,
    server: &'static [&'static str],
    client: &'static [&'static str],
    server_addr: &'static str,
    client_addr: &'static str,
    protocol: i64,
}

/// An unconnected UDP socket is bound to the wildcard: its source address is chosen per datagram.
fn local_matches(p: &Pair, laddr: &str) -> bool {
    laddr == p.client_addr || (p.protocol == 17 && (laddr == "0.0.0.0" || laddr == "::"))
}

const PAIRS: &[Pair] = &[
    Pair {
        name: "tcp-up",
        server: &["serve-tcp", "--mode", "sink"],
        client: &["tcp-up"],
        server_addr: "10.231.0.2",
        client_addr: "10.231.0.1",
        protocol: 6,
    },
    Pair {
        name: "tcp-down",
        server: &["serve-tcp", "--mode", "source", "--bytes", "3000000"],
        client: &["tcp-down", "--bytes", "3000000"],
        server_addr: "10.231.0.2",
        client_addr: "10.231.0.1",
        protocol: 6,
    },
    Pair {
        name: "tcp-up-v6",
        server: &["serve-tcp", "--mode", "sink"],
        client: &["tcp-up"],
        server_addr: "fd00:231::2",
        client_addr: "fd00:231::1",
        protocol: 6,
    },
    Pair {
        name: "udp-unconnected",
        server: &["serve-udp", "--mode", "echo", "--count", "100"],
        client: &["udp-unconnected", "--count", "100"],
        server_addr: "10.231.0.2",
        client_addr: "10.231.0.1",
        protocol: 17,
    },
    Pair {
        name: "udp-mmsg-v6",
        server: &["serve-udp", "--mode", "echo", "--count", "64"],
        client: &["udp-mmsg", "--count", "64"],
        server_addr: "fd00:231::2",
        client_addr: "fd00:231::1",
        protocol: 17,
    },
];

#[test]
fn traffic_between_namespaces_is_counted_on_both_sides() {
    let gen = trafficgen();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let exes: Vec<_> = PAIRS
        .iter()
        .map(|p| {
            (
                copy_exe(&gen, dir.path(), &format!("srv-{}", p.name)),
                copy_exe(&gen, dir.path(), &format!("cli-{}", p.name)),
            )
        })
        .collect();
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 2\n");
    let mut results = Vec::new();
    for (p, (srv_exe, cli_exe)) in PAIRS.iter().zip(&exes) {
        let mut sargs = p.server.to_vec();
        sargs.extend(["--addr", p.server_addr]);
        let (mut server, port) = serve(&ns.b, srv_exe, &sargs);
        let port_s = port.to_string();
        let mut cargs = vec!["netns", "exec", ns.a.as_str()];
        cargs.push(cli_exe.to_str().unwrap());
        cargs.extend(p.client);
        cargs.extend(["--no-server", "--addr", p.server_addr, "--port", &port_s]);
        let json = run_json(Command::new("ip").args(&cargs));
        assert!(server.wait().unwrap().success(), "{} server failed", p.name);
        results.push((json, port));
    }
    let stopped = daemon.stop();
    let (ns_a, ns_b) = (Netns::inode(&ns.a), Netns::inode(&ns.b));
    let mut failures = Vec::new();
    for ((p, (srv_exe, cli_exe)), (json, port)) in PAIRS.iter().zip(&exes).zip(&results) {
        let client = rows_for_exe(&stopped.db, cli_exe);
        let server = rows_for_exe(&stopped.db, srv_exe);
        let (cs, cr) = sum(&client.iter().collect::<Vec<_>>());
        let (ss, sr) = sum(&server.iter().collect::<Vec<_>>());
        let ok_bytes = (cs, cr)
            == (
                json["sent"].as_i64().unwrap(),
                json["received"].as_i64().unwrap(),
            )
            && (ss, sr) == (cr, cs);
        let ok_client = !client.is_empty()
            && client.iter().all(|r| {
                r.raddr == p.server_addr
                    && local_matches(p, &r.laddr)
                    && r.rport == i64::from(*port)
                    && r.netns == ns_a
                    && r.protocol == p.protocol
            });
        let ok_server = !server.is_empty()
            && server.iter().all(|r| {
                r.raddr == p.client_addr
                    && r.laddr == p.server_addr
                    && r.lport == i64::from(*port)
                    && r.netns == ns_b
                    && r.protocol == p.protocol
            });
        let line = format!(
            "{:<16} client {cs}/{cr} server {ss}/{sr} (generator {}/{})",
            p.name, json["sent"], json["received"]
        );
        if ok_bytes && ok_client && ok_server {
            println!("PASS {line}");
        } else {
            println!("FAIL {line}\n  client rows {client:?}\n  server rows {server:?}");
            failures.push(p.name);
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}\n{}", stopped.log);
}
