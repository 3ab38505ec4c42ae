//! names: domains for every resolver. In a test network namespace dnsmasq serves a local zone
//! (with a CNAME chain) on 127.0.0.153 and a second dnsmasq is a caching stub on 127.0.0.53, as
//! systemd-resolved is. glibc (Python), musl, dig over UDP and TCP, busybox nslookup, a statically
//! linked hand-made resolver over UDP and TCP, and one in a podman container look names up; the
//! connection that follows each lookup must be stored with the name asked for, in reverse
//! notation. Another namespace that looked nothing up gets no names for the same addresses.
//! With `[dns] reverse_dns`, an address no answer named gets its PTR name from the system resolver.
mod common;
mod names_support;

use common::*;
use names_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

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
