//! doctor.rs: reports what this kernel offers and which hook set the daemon would attach, and why
//! the others are refused.
use crate::collector::{hooks, kernel, Collector, Options};
use std::fmt::Write;

pub fn report(opts: &Options) -> (String, bool) {
    let mut out = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(out, "kernel:            {}", kernel::release());
    let _ = writeln!(
        out,
        "BTF:               {} ({})",
        yes(kernel::has_btf()),
        kernel::BTF_PATH
    );
    let _ = writeln!(out, "privileges:        {}", yes(kernel::has_bpf_caps()));
    let _ = writeln!(
        out,
        "cgroup v2:         {}",
        kernel::cgroup2_mount().unwrap_or_else(|| "not mounted".into())
    );
    let memlock = match kernel::raise_memlock() {
        None => "unlimited".to_string(),
        Some(v) => format!(
            "{} KiB (cannot be raised; kernels >= 5.11 do not need it)",
            v / 1024
        ),
    };
    let _ = writeln!(out, "RLIMIT_MEMLOCK:    {memlock}");
    let tracefs = kernel::ensure_tracefs();
    let _ = writeln!(
        out,
        "tracefs:           {}",
        tracefs
            .as_ref()
            .map(|_| "mounted".to_string())
            .unwrap_or_else(|e| e.clone())
    );
    for (cat, name) in [
        ("sock", "sock_send_length"),
        ("sock", "sock_recv_length"),
        ("sched", "sched_process_exec"),
        ("syscalls", "sys_exit_recvmsg"),
        ("syscalls", "sys_exit_splice"),
    ] {
        let _ = writeln!(
            out,
            "tracepoint {:<28} {}",
            format!("{cat}/{name}:"),
            yes(kernel::tracepoint_exists(cat, name))
        );
    }
    let _ = writeln!(out, "hook sets (tried in order):");
    let probes = match Collector::probe_all(opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "  cannot probe: {e}");
            return (out, false);
        }
    };
    let common_ok = probes.iter().any(|(n, r)| *n == "common" && r.is_ok());
    let is_dns = |name: &str| hooks::DNS.iter().any(|s| s.name == name);
    let (dns, probes): (Vec<_>, Vec<_>) = probes.into_iter().partition(|(n, _)| is_dns(n));
    let mut chosen = None;
    for (name, r) in &probes {
        let what = std::iter::once(&hooks::COMMON)
            .chain(hooks::TRAFFIC.iter())
            .find(|s| s.name == *name)
            .map(|s| s.what)
            .unwrap_or_default();
        match r {
            Ok(()) => {
                let mark = if *name != "common" && chosen.is_none() {
                    chosen = Some(*name);
                    "  <- would attach"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {name:<7} ok       {what}{mark}");
            }
            Err(e) => {
                let _ = writeln!(out, "  {name:<7} refused  {e}");
            }
        }
    }
    let _ = writeln!(out, "DNS capture (tried in order):");
    let mut dns_chosen = false;
    for (name, r) in &dns {
        let what = hooks::DNS
            .iter()
            .find(|s| s.name == *name)
            .map(|s| s.what)
            .unwrap_or_default();
        match r {
            Ok(()) => {
                let mark = if dns_chosen { "" } else { "  <- would attach" };
                dns_chosen = true;
                let _ = writeln!(out, "  {name:<8} ok       {what}{mark}");
            }
            Err(e) => {
                let _ = writeln!(out, "  {name:<8} refused  {e}");
            }
        }
    }
    if !dns_chosen {
        let _ = writeln!(out, "  no DNS capture: rows get no domain names");
    }
    let ok = common_ok && chosen.is_some();
    let _ = writeln!(
        out,
        "verdict:           {}",
        match (common_ok, chosen) {
            (true, Some(c)) => format!("picosnitch can run here with hook set {c}"),
            (false, _) => "picosnitch cannot run here: the process hooks cannot be attached".into(),
            (_, None) => "picosnitch cannot run here: no traffic hook set can be attached".into(),
        }
    );
    (out, ok)
}
