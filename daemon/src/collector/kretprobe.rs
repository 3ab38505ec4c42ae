//! kretprobe.rs: return probes with room for every call in flight. A kretprobe keeps one slot per
//! call between entry and return; the ones perf creates (and aya attaches) keep 10 on a 2-CPU
//! machine and silently skip the return of every further call, so 50 processes sleeping in
//! `inet_sendmsg` lost their bytes. These are created through tracefs with `MAXACTIVE` slots, the
//! program is attached to the event with a perf event, and the returns the kernel still missed
//! (`kprobe_profile`) are reported as a loss.
use aya::programs::KProbe;
use aya_obj::generated::{
    perf_event_attr, perf_type_id::PERF_TYPE_TRACEPOINT, PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC,
};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

/// Calls in flight a return probe can follow (the kernel's largest, KRETPROBE_MAXACTIVE_MAX).
pub const MAXACTIVE: u32 = 4096;
/// The tracefs group of our events.
const GROUP: &str = "picosnitch";

/// One attached return probe: its perf event (closing it detaches the program) and its event,
/// removed from tracefs once the perf event is closed (the kernel keeps an event in use).
struct RetProbe {
    program: &'static str,
    event: String,
    _perf: OwnedFd,
}

static ATTACHED: Mutex<Vec<RetProbe>> = Mutex::new(Vec::new());

fn tracefs() -> io::Result<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("kprobe_events").exists())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no tracefs with kprobe_events"))
}

fn write_events(line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(tracefs()?.join("kprobe_events"))?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// The event's name for a program of this daemon (pid: events of a dead daemon are stale).
fn event_name(program: &str) -> String {
    format!("{program}_{}", std::process::id())
}

/// Removes the events a daemon that is no longer running left behind (once per process).
fn remove_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(remove_stale_now);
}

fn remove_stale_now() {
    let Ok(list) = fs::read_to_string(
        tracefs()
            .map(|d| d.join("kprobe_events"))
            .unwrap_or_default(),
    ) else {
        return;
    };
    for line in list.lines() {
        // r4096:picosnitch/kr_inet_sendmsg_1234 inet_sendmsg
        let Some(name) = line
            .split_whitespace()
            .next()
            .and_then(|w| w.split_once(':'))
            .and_then(|(_, n)| n.strip_prefix(&format!("{GROUP}/")))
        else {
            continue;
        };
        let pid = name.rsplit('_').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid
            .is_some_and(|p| p == std::process::id() || fs::metadata(format!("/proc/{p}")).is_ok());
        if !alive {
            let _ = write_events(&format!("-:{GROUP}/{name}"));
        }
    }
}

fn perf_open(event_id: u64) -> io::Result<OwnedFd> {
    // SAFETY: a plain C struct of integers and unions of integers; all zeros is its default.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = PERF_TYPE_TRACEPOINT as u32;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = event_id;
    attr.__bindgen_anon_2.wakeup_events = 1;
    // SAFETY: perf_event_open reads `attr` (valid for its size) and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl(fd: &OwnedFd, request: u32, arg: libc::c_int) -> io::Result<()> {
    // SAFETY: both requests take an int argument (a program fd, or ignored).
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the loaded `prog` to the return of `func` with `MAXACTIVE` slots.
pub fn attach(program: &'static str, prog: &mut KProbe, func: &str) -> Result<(), String> {
    remove_stale();
    let fail = |what: &str, e: io::Error| format!("{program}: {what}: {e}");
    let event = event_name(program);
    write_events(&format!("r{MAXACTIVE}:{GROUP}/{event} {func}"))
        .map_err(|e| fail("creating the return probe in tracefs", e))?;
    let made = (|| {
        let id_path = tracefs()?.join(format!("events/{GROUP}/{event}/id"));
        let id: u64 = fs::read_to_string(&id_path)?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad event id"))?;
        let perf = perf_open(id)?;
        let prog_fd = prog
            .fd()
            .map_err(|e| io::Error::other(e.to_string()))?
            .as_fd()
            .as_raw_fd();
        ioctl(&perf, PERF_EVENT_IOC_SET_BPF, prog_fd)?;
        ioctl(&perf, PERF_EVENT_IOC_ENABLE, 0)?;
        Ok::<_, io::Error>(perf)
    })();
    match made {
        Ok(perf) => {
            lock().push(RetProbe {
                program,
                event,
                _perf: perf,
            });
            Ok(())
        }
        Err(e) => {
            let _ = write_events(&format!("-:{GROUP}/{event}"));
            Err(fail("attaching to the return probe", e))
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<RetProbe>> {
    ATTACHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Detaches the program's return probe (if attached) and removes its event.
pub fn detach(program: &str) {
    let gone: Vec<RetProbe> = {
        let mut all = lock();
        let (gone, keep) = all.drain(..).partition(|r| r.program == program);
        *all = keep;
        gone
    };
    remove(gone);
}

/// Detaches every return probe and removes their events (the daemon's exit).
pub fn detach_all() {
    let gone: Vec<RetProbe> = lock().drain(..).collect();
    remove(gone);
}

/// Closes each probe's perf event (which detaches its program), then removes its event.
fn remove(gone: Vec<RetProbe>) {
    for r in gone {
        let event = r.event.clone();
        drop(r);
        let _ = write_events(&format!("-:{GROUP}/{event}"));
    }
}

/// Returns the kernel missed on our return probes, summed (`kprobe_profile`: name, hits, misses).
pub fn missed() -> u64 {
    let names: Vec<String> = lock().iter().map(|r| r.event.clone()).collect();
    if names.is_empty() {
        return 0;
    }
    let Ok(profile) = tracefs().and_then(|d| fs::read_to_string(d.join("kprobe_profile"))) else {
        return 0;
    };
    missed_in(&profile, &names)
}

fn missed_in(profile: &str, names: &[String]) -> u64 {
    profile
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let name = w.first()?;
            let name = name.strip_prefix(&format!("{GROUP}/")).unwrap_or(name);
            names
                .iter()
                .any(|n| n == name)
                .then(|| w.get(2)?.parse::<u64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_read_for_our_events_only() {
        let profile = "  kr_inet_sendmsg_7                              12        3\n\
                       picosnitch/kr_inet_recvmsg_7                    40        2\n\
                       kr_inet_sendmsg_8                               99       50\n";
        let names = [
            "kr_inet_sendmsg_7".to_string(),
            "kr_inet_recvmsg_7".to_string(),
        ];
        assert_eq!(missed_in(profile, &names), 5);
        assert_eq!(missed_in("", &names), 0);
    }
}
