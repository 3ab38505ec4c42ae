//! names_support: what the names tests share: test network namespaces with a stub resolver,
//! dnsmasq servers for a local zone, the rows' names as stored, and the daemon's DNS counters.
#![allow(dead_code)]

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "picosnitch.test";
pub const SERVER: &str = "127.0.0.153";
pub const STUB: &str = "127.0.0.53";
pub const V6: &str = "fd00:53::20";

/// A network namespace with loopback up; `resolv.conf` names the stub (ip netns exec mounts it).
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!("psn{tag}{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        let etc = Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {STUB}\n")).unwrap();
        Ns { name }
    }

    pub fn inode(&self) -> i64 {
        std::fs::metadata(Path::new("/run/netns").join(&self.name))
            .unwrap()
            .ino() as i64
    }

    pub fn exec(&self) -> Command {
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

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child killed when dropped (servers that run for the whole test).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `prog` run in `ns`, or in this test's namespace.
pub fn in_ns(ns: Option<&Ns>, prog: &str) -> Command {
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
pub fn dnsmasq(
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
pub fn zone_args() -> Vec<String> {
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
pub fn sink(ns: &Ns, exe: &Path, addr: &str) -> (Guard, u16) {
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
pub fn first_address(out: &str) -> String {
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
pub struct Row {
    pub lport: i64,
    pub rport: i64,
    pub raddr: String,
    pub domain: String,
    pub netns: i64,
    pub container: String,
}

pub fn rows(db: &Path, exe: &Path) -> Vec<Row> {
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

/// The daemon's DNS counter `event` from its `/metrics` (published after the first drain).
pub fn dns_metric(daemon: &Daemon, event: &str) -> u64 {
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
