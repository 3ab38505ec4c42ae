//! kernel.rs: facts about the running kernel the collector depends on (BTF, tracefs, memlock, privileges).
use std::path::Path;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn has_btf() -> bool {
    Path::new(BTF_PATH).exists()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Effective capabilities from /proc/self/status (bit numbers of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN).
pub fn has_bpf_caps() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return is_root();
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    has(21) || (has(39) && has(38))
}

/// Makes sure tracefs is mounted (tracepoint attach needs it); mounts it when missing.
pub fn ensure_tracefs() -> Result<(), String> {
    let events = Path::new(TRACEFS).join("events");
    if events.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; mounting a pseudo filesystem with no data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps to it; a refusal is tolerated.
pub fn raise_memlock() -> Option<u64> {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } == 0 {
        return None;
    }
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) };
    Some(cur.rlim_cur)
}

pub fn cgroup2_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| f[1].to_string())
}

pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    [TRACEFS, "/sys/kernel/debug/tracing"].iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(category)
            .join(name)
            .exists()
    })
}
