//! notify::desktop::send: the root side: re-executes this binary as `notify-helper` with a user's
//! uid, gid and groups, hands it the notices on stdin and waits for it, killing it when it hangs.
use super::{DesktopError, Notice, HELPER_SUBCOMMAND};
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a helper may take before it is killed.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// The `exe` for the daemon to pass: its own binary, even when the file has been replaced or
/// deleted since it started. Reached through the magic link, so the directories on the way need
/// not be searchable by the user; the file itself must be executable by them.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The only PATH the helper sees.
const HELPER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How much of the helper's stderr goes into an error.
const STDERR_LIMIT: u64 = 8192;

/// Sends `notices` to the session bus socket `bus` of user `uid` (primary group `gid`).
///
/// Runs `exe notify-helper` with that user's credentials (supplementary groups from the user
/// database, or none but `gid` when the uid has no entry), nice 0 and an ordinary locked-memory
/// limit, an environment holding only `DBUS_SESSION_BUS_ADDRESS` and `PATH`, cwd `/`, and the
/// notices as JSON on stdin. Nothing is opened in the user's directories by this process. Fails
/// on uid 0, on a helper that exits non-zero (with its stderr) and on one that takes longer than
/// [`HELPER_TIMEOUT`].
pub fn send_as_user(
    exe: &Path,
    uid: u32,
    gid: u32,
    bus: &Path,
    notices: &[Notice],
) -> Result<(), DesktopError> {
    if uid == 0 {
        return Err(DesktopError::RootSession);
    }
    let input =
        serde_json::to_vec(notices).map_err(|source| DesktopError::Encode { uid, source })?;
    let groups = supplementary_groups(uid, gid);
    let mut command = Command::new(exe);
    command
        .arg(HELPER_SUBCOMMAND)
        .env_clear()
        .env("DBUS_SESSION_BUS_ADDRESS", dbus_unix_address(bus))
        .env("PATH", HELPER_PATH)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only makes raw system calls on memory
    // prepared before the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            // Not the daemon's Nice=-10 nor its unlimited locked memory.
            ordinary_limits()?;
            become_user(uid, gid, &groups)
        });
    }
    let spawn_error = |source| DesktopError::Spawn {
        exe: exe.display().to_string(),
        uid,
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A helper that dies early closes the pipe; its exit status tells why.
            let _ = stdin.write_all(&input);
        }
    });
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(STDERR_LIMIT).read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).trim().to_string()
    });
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(DesktopError::Timeout {
                    uid,
                    secs: HELPER_TIMEOUT.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(DesktopError::Wait { uid, source });
            }
        }
    };
    let _ = writer.join();
    let stderr = reader.join().unwrap_or_default();
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(DesktopError::Helper {
            uid,
            status,
            stderr,
        })
    }
}

/// The locked-memory limit of a helper: the kernel's default since 5.16 (8 MiB), not the daemon's
/// LimitMEMLOCK=infinity.
pub const HELPER_MEMLOCK: libc::rlim_t = 8 << 20;
/// The nice value of a helper, not the daemon's -10.
pub const HELPER_NICE: libc::c_int = 0;

/// In the child: ordinary priority and locked-memory limit, [`HELPER_MEMLOCK`] or the hard limit
/// when that is lower (raw system calls only).
fn ordinary_limits() -> std::io::Result<()> {
    let mut memlock = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on the calling process with values we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut memlock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        memlock.rlim_max = memlock.rlim_max.min(HELPER_MEMLOCK);
        memlock.rlim_cur = memlock.rlim_max;
        if libc::setpriority(libc::PRIO_PROCESS, 0, HELPER_NICE) != 0
            || libc::setrlimit(libc::RLIMIT_MEMLOCK, &memlock) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In the child: drop every root credential for good, groups first (only root may set them).
fn become_user(uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: plain system calls; `groups` outlives the call.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Paranoia: root must be gone for good.
        if libc::setuid(0) == 0 || libc::getuid() != uid || libc::geteuid() != uid {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

/// The user's groups from the user database (including `gid`), or just `gid` when it has no entry.
fn supplementary_groups(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    let Some(name) = user_name(uid) else {
        return vec![gid];
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..8 {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most that many and
        // sets `n` to the number it needs.
        let found = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if found >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        groups.resize((n.max(0) as usize).max(groups.len() * 2), 0);
    }
    vec![gid]
}

/// The login name of `uid`, if the user database knows it.
fn user_name(uid: u32) -> Option<CString> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    for _ in 0..8 {
        // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the stated length for the duration of the call.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in `buf`.
        return Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned());
    }
    None
}

/// `unix:path=…` for a socket path, escaped as the D-Bus specification requires.
pub fn dbus_unix_address(socket: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut address = String::from("unix:path=");
    for &b in socket.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            address.push(b as char);
        } else {
            address.push_str(&format!("%{b:02x}"));
        }
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_escaped() {
        assert_eq!(
            dbus_unix_address(Path::new("/run/user/1000/bus")),
            "unix:path=/run/user/1000/bus"
        );
        assert_eq!(
            dbus_unix_address(Path::new("/tmp/a b,c=d;%/bus")),
            "unix:path=/tmp/a%20b%2cc%3dd%3b%25/bus"
        );
    }

    #[test]
    fn root_is_refused_before_anything_runs() {
        let err = send_as_user(Path::new("/nonexistent"), 0, 0, Path::new("/x"), &[]);
        assert!(matches!(err, Err(DesktopError::RootSession)), "{err:?}");
    }

    #[test]
    fn the_child_runs_this_binary_without_root() {
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            return; // only root can change credentials
        }
        let mut command = Command::new(SELF_EXE);
        command
            .args(["--list", "--format=terse"])
            .env_clear()
            .current_dir("/")
            .stdout(Stdio::null());
        // SAFETY: as in send_as_user.
        unsafe {
            command.pre_exec(|| become_user(65534, 65534, &[65534]));
        }
        let status = command.status().expect("run this test binary as nobody");
        assert!(status.success(), "{status}");
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "id -u; id -G"])
            .stderr(Stdio::inherit());
        // SAFETY: as in send_as_user.
        unsafe {
            command.pre_exec(|| become_user(65534, 65534, &[65534, 4242]));
        }
        let out = command.output().expect("run id as nobody");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n65534 4242\n");
    }

    #[test]
    fn the_helper_runs_without_the_daemons_priority_and_memlock() {
        // SAFETY: getuid cannot fail.
        assert_eq!(
            unsafe { libc::getuid() },
            0,
            "only root can change credentials"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let helper = dir.path().join("helper");
        std::fs::write(
            &helper,
            "#!/bin/sh\necho \"uid=$(id -u) nice=$(cut -d' ' -f19 /proc/$$/stat) \
             memlock=$(ulimit -l)\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // This thread as the daemon runs: nice -10 (per thread on Linux), and a memlock limit
        // of its own: the soft one at 1 MiB (raising it above the hard one would need
        // CAP_SYS_RESOURCE), so the helper's is not inherited.
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on this thread and process, with values we own.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved), 0);
            let daemons = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: saved.rlim_max,
            };
            assert_eq!(libc::setpriority(libc::PRIO_PROCESS, 0, -10), 0);
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &daemons), 0);
        }
        let err = send_as_user(&helper, 65534, 65534, Path::new("/nonexistent/bus"), &[]);
        // SAFETY: as above.
        unsafe {
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &saved);
        }
        let want = saved.rlim_max.min(HELPER_MEMLOCK) / 1024;
        match err {
            Err(DesktopError::Helper { stderr, .. }) => {
                assert_eq!(stderr, format!("uid=65534 nice=0 memlock={want}"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_users_get_only_their_gid() {
        assert_eq!(supplementary_groups(u32::MAX - 7, 4242), vec![4242]);
        assert_eq!(user_name(0).as_deref(), Some(c"root"));
        assert!(supplementary_groups(0, 0).contains(&0));
    }
}
