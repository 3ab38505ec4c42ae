//! names: domains for every resolver. In a test network namespace dnsmasq serves a local zone
//! (with a CNAME chain) on 127.0.0.153 and a second dnsmasq is a caching stub on 127.0.0.53, as
//! systemd-resolved is. glibc (Python), musl, dig over UDP and TCP, busybox nslookup, a statically
//! linked hand-made resolver over UDP and TCP, and one in a podman container look names up; the
//! connection that follows each lookup must be stored with the name asked for, in reverse
//! notation. Another namespace that looked nothing up gets no names for the same addresses.
//! With `[dns] reverse_dns`, an address no answer named gets its PTR name from the system resolver.
mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ZONE: &str = "picosnitch.test";
const SERVER: &str = "127.0.0.153";
const STUB: &str = "127.0.0.53";
const V6: &str = "fd00:53::20";

/// A network namespace with loopback up; `resolv.conf` names the stub (ip netns exec mounts it).
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("psn{tag}{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        let etc = Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {STUB}\n")).unwrap();
        Ns { name }
    }

    fn inode(&self) -> i64 {
        std::fs::metadata(Path::new("/run/netns").join(&self.name))
            .unwrap()
            .ino() as i64
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        c
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child killed when dropped (servers that run for the whole test).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `prog` run in `ns`, or in this test's namespace.
fn in_ns(ns: Option<&Ns>, prog: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = ns.exec();
            c.arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

/// dnsmasq in `ns` listening on `listen` with `args`; returns once `dig PROBE` there prints
/// `expect`.
fn dnsmasq(
    ns: Option<&Ns>,
    dir: &Path,
    listen: &str,
    args: &[String],
    probe: &[&str],
    expect: &str,
) -> Guard {
    let child = in_ns(ns, "dnsmasq")
        .args(["--keep-in-foreground", "--conf-file=/dev/null"])
        .args(["--no-hosts", "--no-resolv", "--bind-interfaces"])
        .args(["--user=root", "--group=root", "--log-facility=-"])
        .arg(format!(
            "--pid-file={}",
            dir.join(format!("{listen}.pid")).display()
        ))
        .arg(format!("--listen-address={listen}"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (scripts/install-deps installs dnsmasq-base)");
    let guard = Guard(child);
    let t = Instant::now();
    loop {
        let out = in_ns(ns, "dig")
            .args(["+short", "+time=1", "+tries=1", &format!("@{listen}")])
            .args(probe)
            .output()
            .expect("dig (bind9-dnsutils)");
        if String::from_utf8_lossy(&out.stdout).contains(expect) {
            return guard;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dnsmasq on {listen} did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The zone: one name per resolver, and www → mid → edge.
fn zone_args() -> Vec<String> {
    let hosts = [
        ("glibc", "127.0.0.11"),
        ("dig", "127.0.0.12"),
        ("digtcp", "127.0.0.13"),
        ("busybox", "127.0.0.14"),
        ("static", "127.0.0.15"),
        ("statictcp", "127.0.0.16"),
        ("musl", "127.0.0.18"),
        ("podman", "127.0.0.19"),
        ("edge", "127.0.0.17"),
        ("v6", V6),
    ];
    let mut a = vec![format!("--local=/{ZONE}/")];
    for (h, addr) in hosts {
        a.push(format!("--host-record={h}.{ZONE},{addr}"));
    }
    a.push(format!("--cname=www.{ZONE},mid.{ZONE}"));
    a.push(format!("--cname=mid.{ZONE},edge.{ZONE}"));
    a
}

/// A TCP sink server (trafficgen serve-tcp) in `ns` on `addr`; returns it and its port.
fn sink(ns: &Ns, exe: &Path, addr: &str) -> (Guard, u16) {
    let mut child = ns
        .exec()
        .arg(exe)
        .args(["serve-tcp", "--mode", "sink", "--addr", addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = served_port(&mut child);
    (Guard(child), port)
}

/// The first address in the answer part of `nslookup`/`dig +short` output.
fn first_address(out: &str) -> String {
    let after_name = out.split_once("Name:").map_or(out, |(_, rest)| rest);
    after_name
        .split_whitespace()
        .map(|w| w.trim_start_matches("Address:"))
        .find(|w| w.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_else(|| panic!("no address in {out:?}"))
        .to_string()
}

/// A stored row: what the checks read.
#[derive(Debug)]
struct Row {
    lport: i64,
    rport: i64,
    raddr: String,
    domain: String,
    netns: i64,
    container: String,
}

fn rows(db: &Path, exe: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT c.lport, c.rport, ra.addr, d.domain, c.netns, ct.container
             FROM connections c JOIN executables e ON e.id = c.exe_id
             JOIN addresses ra ON ra.id = c.raddr_id JOIN domains d ON d.id = c.domain_id
             JOIN containers ct ON ct.id = c.container_id WHERE e.exe = ?1",
        )
        .unwrap();
    st.query_map([exe.to_string_lossy()], |r| {
        Ok(Row {
            lport: r.get(0)?,
            rport: r.get(1)?,
            raddr: r.get(2)?,
            domain: r.get(3)?,
            netns: r.get(4)?,
            container: r.get(5)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// One lookup and the connection that followed it.
struct Case {
    resolver: &'static str,
    exe: PathBuf,
    json: Value,
    /// Expected domain; "" for none.
    domain: String,
    netns: i64,
    container: Option<String>,
}

/// A podman image holding the static trafficgen at /bin/tg.
fn podman_image(dir: &Path) -> String {
    let root = dir.join("image");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let tg = root.join("bin/tg");
    std::fs::copy(trafficgen(), &tg).unwrap();
    let tar = dir.join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let tag = format!("localhost/picosnitch-test-names:{}", std::process::id());
    run(Command::new("podman")
        .args(["import", "-q"])
        .arg(&tar)
        .arg(&tag));
    tag
}

#[test]
fn connections_carry_the_name_every_resolver_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let tg = trafficgen();
    let exe = |name: &str| copy_exe(&tg, dir.path(), name);
    let gai = dir.path().join("musl-gai-connect");
    run(Command::new("musl-gcc")
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&gai)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/names_support/gai_connect.c")));
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let name = |h: &str| format!("{h}.{ZONE}");
    let image = podman_image(dir.path());
    let ns = Ns::new("a");
    let other = Ns::new("b");
    run(ns
        .exec()
        .args(["ip", "addr", "add", &format!("{V6}/128"), "dev", "lo"]));
    let glibc = name("glibc");
    let probe = [glibc.as_str()];
    let _server = dnsmasq(
        Some(&ns),
        dir.path(),
        SERVER,
        &zone_args(),
        &probe,
        "127.0.0.11",
    );
    let stub = [format!("--server={SERVER}")];
    let _stub = dnsmasq(Some(&ns), dir.path(), STUB, &stub, &probe, "127.0.0.11");
    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    let rev = |h: &str| format!("test.picosnitch.{h}");
    let mut cases = Vec::new();
    let mut case = |resolver, exe: PathBuf, json, domain: String, netns, container| {
        cases.push(Case {
            resolver,
            exe,
            json,
            domain,
            netns,
            container,
        })
    };
    let a = ns.inode();

    // glibc through the stub: Python resolves and connects itself.
    let (_sink, port) = sink(&ns, &exe("srv-glibc"), "127.0.0.11");
    let script = "import socket,sys,json\n\
        n,p=sys.argv[1],int(sys.argv[2])\n\
        ad=socket.getaddrinfo(n,p,socket.AF_INET,socket.SOCK_STREAM)[0][4]\n\
        s=socket.create_connection(ad);s.sendall(b'x'*100);l=s.getsockname()[1];s.close()\n\
        print(json.dumps({'lport':l,'rport':p}))";
    let out = run(ns
        .exec()
        .arg(&python)
        .args(["-c", script, &name("glibc")])
        .arg(port.to_string()));
    case(
        "glibc (python3, via stub)",
        python.clone(),
        serde_json::from_str(&out).unwrap(),
        rev("glibc"),
        a,
        None,
    );

    // musl's getaddrinfo through the stub.
    let (_sink2, port) = sink(&ns, &exe("srv-musl"), "127.0.0.18");
    let out = run(ns
        .exec()
        .arg(&gai)
        .arg(name("musl"))
        .arg(port.to_string())
        .arg("100"));
    case(
        "musl (static, via stub)",
        gai.clone(),
        serde_json::from_str(&out).unwrap(),
        rev("musl"),
        a,
        None,
    );

    // Tools that only resolve: the program that connects afterwards gets the name.
    let lookups: [(&str, &str, Vec<String>); 3] = [
        (
            "dig",
            "dig",
            vec!["+short".into(), format!("@{SERVER}"), name("dig")],
        ),
        (
            "dig +tcp",
            "digtcp",
            vec![
                "+short".into(),
                "+tcp".into(),
                format!("@{SERVER}"),
                name("digtcp"),
            ],
        ),
        (
            "busybox nslookup (static, via stub)",
            "busybox",
            vec![name("busybox")],
        ),
    ];
    for (resolver, host, args) in lookups {
        let tool = if host == "busybox" {
            vec!["busybox", "nslookup"]
        } else {
            vec!["dig"]
        };
        let out = run(ns.exec().args(&tool).args(&args));
        let addr = first_address(&out);
        let cli = exe(&format!("cli-{host}"));
        let json = run_json(
            ns.exec()
                .arg(&cli)
                .args(["tcp-up", "--bytes", "100", "--addr", &addr]),
        );
        case(resolver, cli, json, rev(host), a, None);
    }

    // The static binary's own resolver, over UDP and TCP, a CNAME chain and an AAAA answer.
    let own: [(&str, &str, &[&str], &str); 4] = [
        ("static (udp)", "static", &[], "static"),
        ("static (tcp)", "statictcp", &["--dns-tcp"], "statictcp"),
        ("static, CNAME chain", "www", &[], "www"),
        ("static, AAAA", "v6", &["--qtype", "AAAA"], "v6"),
    ];
    for (resolver, host, extra, expect) in own {
        let cli = exe(&format!("cli-own-{host}"));
        let mut cmd = ns.exec();
        cmd.arg(&cli).args([
            "tcp-up",
            "--bytes",
            "100",
            "--dns",
            SERVER,
            "--resolve",
            &name(host),
        ]);
        let json = run_json(cmd.args(extra));
        case(resolver, cli, json, rev(expect), a, None);
    }

    // A resolver in a podman container that shares the test namespace.
    let cidfile = dir.path().join("cid");
    let json = run_json(
        Command::new("podman")
            .args(["run", "--runtime", "runc", "--pull=never", "--rm"])
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ])
            .arg(format!("--network=ns:/run/netns/{}", ns.name))
            .arg("--cidfile")
            .arg(&cidfile)
            .arg(&image)
            .args(["/bin/tg", "tcp-up", "--bytes", "100", "--dns", SERVER])
            .args(["--resolve", &name("podman")]),
    );
    let cid = std::fs::read_to_string(&cidfile)
        .unwrap()
        .trim()
        .to_string();
    case(
        "static in podman",
        PathBuf::from("/bin/tg"),
        json,
        rev("podman"),
        a,
        Some(format!("podman:{cid}")),
    );

    // Another namespace looked nothing up: the same address has no name there.
    let cli = exe("cli-other-ns");
    let json =
        run_json(
            other
                .exec()
                .arg(&cli)
                .args(["tcp-up", "--bytes", "100", "--addr", "127.0.0.12"]),
        );
    case(
        "no lookup, other namespace",
        cli,
        json,
        String::new(),
        other.inode(),
        None,
    );

    let stopped = daemon.stop();
    let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
    let mut failures = Vec::new();
    for c in &cases {
        let (lport, rport) = (c.json["lport"].as_i64(), c.json["rport"].as_i64());
        let mine: Vec<Row> = rows(&stopped.db, &c.exe)
            .into_iter()
            .filter(|r| Some(r.lport) == lport && Some(r.rport) == rport)
            .filter(|r| c.container.as_ref().is_none_or(|ct| *ct == r.container))
            .collect();
        let ok = !mine.is_empty()
            && mine
                .iter()
                .all(|r| r.domain == c.domain && r.netns == c.netns);
        let got: Vec<String> = mine
            .iter()
            .map(|r| format!("{} {:?}", r.raddr, r.domain))
            .collect();
        if ok {
            println!("PASS {:<36} -> {:?}", c.resolver, c.domain);
        } else {
            println!(
                "FAIL {:<36} want {:?}, rows {got:?} ({:?})",
                c.resolver, c.domain, c.json
            );
            failures.push(c.resolver);
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}\n{}", stopped.log);
    assert!(
        stopped.log.contains("DNS answers are captured"),
        "{}",
        stopped.log
    );
}

#[test]
fn reverse_dns_names_addresses_no_answer_named() {
    // The daemon's resolver (its own /etc/resolv.conf, in a private mount namespace) is a dnsmasq
    // here that knows only the PTR record of 10.53.0.7 and forwards nothing.
    const RESOLVER: &str = "127.0.0.154";
    const TARGET: &str = "10.53.0.7";
    let dir = tempfile::tempdir().unwrap();
    let records = [format!("--host-record=ptr.{ZONE},{TARGET}")];
    let _dns = dnsmasq(
        None,
        dir.path(),
        RESOLVER,
        &records,
        &["-x", TARGET],
        "ptr.",
    );
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {RESOLVER}\n")).unwrap();
    let ns = Ns::new("r");
    run(ns
        .exec()
        .args(["ip", "addr", "add", &format!("{TARGET}/32"), "dev", "lo"]));
    let tg = trafficgen();
    let mut stored = Vec::new();
    for reverse in [true, false] {
        let wrap = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
            resolv.to_str().unwrap(),
        ];
        let cfg = format!("[database]\nwrite_limit_seconds = 1\n[dns]\nreverse_dns = {reverse}\n");
        let daemon = Daemon::start_wrapped(&cfg, &wrap);
        // A connection that lasts a few drains, made without any lookup.
        let cli = copy_exe(&tg, dir.path(), &format!("drip-{reverse}"));
        let json = run_json(ns.exec().arg(&cli).args(["drip", "--addr", TARGET]).args([
            "--bytes",
            "10",
            "--count",
            "5",
            "--interval-ms",
            "700",
        ]));
        let stopped = daemon.stop();
        let mine: Vec<Row> = rows(&stopped.db, &cli)
            .into_iter()
            .filter(|r| Some(r.lport) == json["lport"].as_i64() && r.raddr == TARGET)
            .collect();
        stored.push((reverse, mine, stopped.log));
    }
    for (reverse, mine, log) in &stored {
        let named: Vec<&Row> = mine.iter().filter(|r| !r.domain.is_empty()).collect();
        assert!(!mine.is_empty(), "no rows (reverse_dns = {reverse})\n{log}");
        assert!(
            named.iter().all(|r| r.domain == "test.picosnitch.ptr"),
            "{mine:?}"
        );
        if *reverse {
            assert!(!named.is_empty(), "never named: {mine:?}\n{log}");
            println!(
                "PASS reverse_dns = true: {} of {} rows named",
                named.len(),
                mine.len()
            );
        } else {
            assert!(named.is_empty(), "named without reverse DNS: {mine:?}");
            println!("PASS reverse_dns = false: no name");
        }
    }
}

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

/// The daemon's DNS counter `event` from its `/metrics` (published after the first drain).
fn dns_metric(daemon: &Daemon, event: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = daemon.api_addr().expect("API address in the log");
    let key = format!("picosnitch_dns_events_total{{event=\"{event}\"}} ");
    let t = Instant::now();
    loop {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        if let Some(v) = body
            .lines()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
        {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no {key} in /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

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
