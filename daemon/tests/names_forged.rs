//! names_forged: DNS answers forged from another network namespace (unsolicited, a wrong
//! transaction id, a wrong question) name nothing and are counted as `dns_unsolicited`; a real
//! lookup made meanwhile is still named.
mod common;
mod names_support;

use common::*;
use names_support::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Sends forged DNS answers (UDP, source port 53) from the attacker's namespace: `count` answers
/// with ids 0.. to `target:a_port` (a socket that never asked), and to `target:b_port` (a socket
/// that asked `asked` with id `txid`) one with the right question and the next id and one with the
/// right id and another question. Every answer says `forged` is `addr`.
const FORGE: &str = r#"
import socket, struct, sys
me, target, a_port, b_port, txid, count, forged, asked, addr = sys.argv[1:]
def qname(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
def answer(i, q):
    hdr = struct.pack(">HHHHHH", i & 0xffff, 0x8180, 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 3600, 4) + socket.inet_aton(addr)
    return hdr + qname(q) + struct.pack(">HH", 1, 1) + rr
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((me, 53))
for i in range(int(count)):
    s.sendto(answer(i, forged), (target, int(a_port)))
s.sendto(answer(int(txid) + 1, asked), (target, int(b_port)))
s.sendto(answer(int(txid), forged), (target, int(b_port)))
"#;

/// The victim side in the host namespace: socket A never asks; socket B asks `asked` (id 4242)
/// of the attacker's address; both stay open until stdin closes.
const VICTIM: &str = r#"
import socket, struct, sys, json
me, server, asked = sys.argv[1:]
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind((me, 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind((me, 0))
q = struct.pack(">HHHHHH", 4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in asked.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
b.sendto(q, (server, 53))
print(json.dumps({"a": a.getsockname()[1], "b": b.getsockname()[1], "txid": 4242}), flush=True)
sys.stdin.read()
"#;

#[test]
fn forged_answers_from_another_namespace_name_nothing() {
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let tg = trafficgen();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    // The attacker: a namespace behind a veth pair, with its own address.
    let ns = Ns::new("f");
    let (host_if, peer_if) = (format!("psfh{pid}"), format!("psfp{pid}"));
    let net = format!("10.153.{}.{}", (pid >> 8) & 255, (pid & 63) * 4);
    let base = net.rsplit_once('.').unwrap().0.to_string();
    let last: u32 = net.rsplit_once('.').unwrap().1.parse().unwrap();
    let (host_ip, evil_ip) = (
        format!("{base}.{}", last + 1),
        format!("{base}.{}", last + 2),
    );
    run(Command::new("ip").args([
        "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &ns.name,
    ]));
    run(Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]));
    run(Command::new("ip").args(["link", "set", &host_if, "up"]));
    run(ns.exec().args([
        "ip",
        "addr",
        "add",
        &format!("{evil_ip}/30"),
        "dev",
        &peer_if,
    ]));
    run(ns.exec().args(["ip", "link", "set", &peer_if, "up"]));
    // Host-namespace addresses the names point at (loopback, so a connection needs no peer).
    let (forged_addr, real_addr) = (
        format!("127.78.{}.{}", (pid >> 8) & 255, pid & 255),
        format!("127.79.{}.{}", (pid >> 8) & 255, pid & 255),
    );
    let forged = format!("forged{pid}.{ZONE}");
    let asked = format!("asked{pid}.{ZONE}");
    let real = format!("real{pid}.{ZONE}");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let before = dns_metric(&daemon, "dns_unsolicited");

    let mut victim = Command::new(&python)
        .args(["-c", VICTIM, &host_ip, &evil_ip, &asked])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let ports: Value = serde_json::from_str(&line).expect("victim ports");
    const FORGED: u64 = 64;
    run(ns
        .exec()
        .arg(&python)
        .args(["-c", FORGE, &evil_ip, &host_ip])
        .args([
            ports["a"].to_string(),
            ports["b"].to_string(),
            ports["txid"].to_string(),
            FORGED.to_string(),
            forged.clone(),
            asked.clone(),
            forged_addr.clone(),
        ]));
    drop(victim.stdin.take());
    victim.wait().unwrap();
    // The answers are read before the next drain; connect after it.
    std::thread::sleep(Duration::from_millis(1500));
    let cli_forged = copy_exe(&tg, dir.path(), "cli-forged");
    let forged_conn = run_json(Command::new(&cli_forged).args([
        "tcp-up",
        "--bytes",
        "100",
        "--addr",
        &forged_addr,
    ]));

    // A real lookup of a server in the same namespace still names its connection.
    let srv = copy_exe(&tg, dir.path(), "dns-real");
    let mut dns = ns
        .exec()
        .arg(&srv)
        .args(["serve-dns", "--addr", &evil_ip, "--count", "1"])
        .args(["--zone", &format!("{real}={real_addr}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    served_port(&mut dns);
    let _dns = Guard(dns);
    let cli_real = copy_exe(&tg, dir.path(), "cli-real");
    let real_conn = run_json(Command::new(&cli_real).args([
        "tcp-up",
        "--bytes",
        "100",
        "--dns",
        &evil_ip,
        "--resolve",
        &real,
    ]));
    std::thread::sleep(Duration::from_millis(2500));
    let refused = dns_metric(&daemon, "dns_unsolicited") - before;
    let stopped = daemon.stop();

    let conn_rows = |exe: &Path, json: &Value| -> Vec<Row> {
        rows(&stopped.db, exe)
            .into_iter()
            .filter(|r| Some(r.lport) == json["lport"].as_i64())
            .collect()
    };
    let forged_rows = conn_rows(&cli_forged, &forged_conn);
    assert!(!forged_rows.is_empty(), "no rows\n{}", stopped.log);
    assert!(
        forged_rows
            .iter()
            .all(|r| r.raddr == forged_addr && r.domain.is_empty()),
        "a forged answer named a connection: {forged_rows:?}"
    );
    let real_rows = conn_rows(&cli_real, &real_conn);
    let want = format!("test.picosnitch.real{pid}");
    assert!(
        !real_rows.is_empty() && real_rows.iter().all(|r| r.domain == want),
        "the real lookup lost its name: {real_rows:?}\n{}",
        stopped.log
    );
    // Every forged answer was refused and counted (others' traffic may add to the count).
    assert!(
        refused >= FORGED + 2,
        "dns_unsolicited grew by {refused}, want at least {}\n{}",
        FORGED + 2,
        stopped.log
    );
    assert!(
        !stopped
            .log
            .contains(&format!("test.picosnitch.forged{pid}")),
        "{}",
        stopped.log
    );
    println!(
        "PASS {FORGED}+2 forged answers refused (dns_unsolicited +{refused}); real lookup named {want}"
    );
}
