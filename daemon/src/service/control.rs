//! service::control: the verbs that manage the daemon rather than run it: `start` (daemonizes
//! with a pidfile, or defers to systemctl when the unit is installed and systemd runs), `stop`,
//! `restart` and `check-config`.
use super::manager::READY_ONLY_ENV;
use super::pidfile;
use super::units::SERVICE;
use crate::paths::{root_from_env, Paths};
use crate::run::EXIT_CONFIG;
use std::io::{Read, Seek};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for READY=1 and `stop` for the daemon to exit.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// `picosnitch check-config FILE`: loads FILE as the daemon would (with `PICOSNITCH_*`
/// overrides), prints the warnings, and exits 0 when it is valid, 78 when not. A `[data]` user
/// or group missing on this machine is only a warning here.
pub fn check_config(path: &Path, strict: bool) -> ExitCode {
    match crate::config::check(path) {
        Ok(loaded) if strict && !loaded.unknown.is_empty() => {
            for u in &loaded.unknown {
                eprintln!("picosnitch: config: {}: {u}", path.display());
            }
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("picosnitch: warning: {w}");
            }
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("picosnitch: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// systemd is the init system of this machine.
pub fn systemd_booted() -> bool {
    sd_notify::booted().unwrap_or(false)
}

/// The verbs go through systemctl: systemd runs, picosnitch.service is installed, and this is
/// not a second instance under `$PICOSNITCH_ROOT`.
pub fn systemd_in_use() -> bool {
    if root_from_env().is_some() || !systemd_booted() {
        return false;
    }
    [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .any(|d| Path::new(d).join(SERVICE).exists())
}

fn systemctl(verb: &str) -> ExitCode {
    match Command::new("systemctl").args([verb, SERVICE]).status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(e) => {
            eprintln!("picosnitch: cannot run systemctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `picosnitch start [--config FILE]`.
pub fn start(config: Option<PathBuf>) -> ExitCode {
    if systemd_in_use() {
        if config.is_some() {
            eprintln!("picosnitch: --config is ignored: {SERVICE} names its own configuration");
        }
        return systemctl("start");
    }
    let paths = Paths::from_env();
    let cfg_path = config.clone().unwrap_or_else(|| paths.config.clone());
    // A bad config is reported here, on the terminal, not by a daemon that has left it.
    if let Err(e) = crate::config::load(&cfg_path, config.is_some()) {
        eprintln!("picosnitch: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(pid) = pidfile::running(&paths.pidfile) {
        println!("picosnitch is already running (pid {pid})");
        return ExitCode::SUCCESS;
    }
    match daemonize(&paths, config.as_deref()) {
        Ok(pid) => {
            println!("picosnitch started (pid {pid})");
            ExitCode::SUCCESS
        }
        Err((msg, code)) => {
            eprintln!("picosnitch: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Starts `start-no-daemon` in its own session with no terminal and waits for its READY=1 on a
/// notification socket of our own. On failure: the message (with what the daemon wrote to
/// error.log meanwhile) and the exit status to return.
fn daemonize(paths: &Paths, config: Option<&Path>) -> Result<u32, (String, u8)> {
    let fail = |m: String| (m, 1u8);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&paths.run_dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", paths.run_dir.display())))?;
    let sock_path = paths
        .run_dir
        .join(format!("start-{}.notify", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)
        .map_err(|e| fail(format!("cannot bind {}: {e}", sock_path.display())))?;
    let _cleanup = RemoveOnDrop(sock_path.clone());
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| fail(e.to_string()))?;
    let log_start = std::fs::metadata(&paths.error_log).map_or(0, |m| m.len());
    let exe = std::env::current_exe().map_err(|e| fail(format!("cannot find myself: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("start-no-daemon");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env(READY_ONLY_ENV, "1")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("JOURNAL_STREAM")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start the daemon: {e}")))?;
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.lines().any(|l| l == "READY=1") {
                return Ok(child.id());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let code = status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(1);
            let mut m = format!("the daemon exited ({status}) before it was ready");
            let log = log_since(&paths.error_log, log_start);
            if !log.is_empty() {
                m.push_str(&format!("; {} says:\n{log}", paths.error_log.display()));
            }
            return Err((m, code));
        }
        if t.elapsed() > START_TIMEOUT {
            // SAFETY: plain kill(2) on the child we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            return Err(fail(format!(
                "the daemon was not ready after {} s and was stopped",
                START_TIMEOUT.as_secs()
            )));
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What was appended to `path` after byte `from`.
fn log_since(path: &Path, from: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut s = String::new();
    if f.seek(std::io::SeekFrom::Start(from)).is_ok() {
        let _ = f.take(64 * 1024).read_to_string(&mut s);
    }
    s.trim_end().to_string()
}

/// `picosnitch stop`: SIGTERM to the published pid once it is known to be picosnitch, then
/// waits until everything is written and the daemon is gone. A pid that is not picosnitch is
/// never signalled.
pub fn stop() -> ExitCode {
    if systemd_in_use() {
        return systemctl("stop");
    }
    let paths = Paths::from_env();
    let pid = match pidfile::daemon(&paths.pidfile) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            println!("picosnitch is not running");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("picosnitch: {e}: not signalled");
            return ExitCode::FAILURE;
        }
    };
    let Ok(pid_t) = i32::try_from(pid) else {
        eprintln!("picosnitch: bad pid {pid} in {}", paths.pidfile.display());
        return ExitCode::FAILURE;
    };
    // SAFETY: plain kill(2); the pid was just checked to be picosnitch.
    if unsafe { libc::kill(pid_t, libc::SIGTERM) } != 0 {
        eprintln!(
            "picosnitch: cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    let t = Instant::now();
    while pidfile::running(&paths.pidfile) == Some(pid) {
        if t.elapsed() > STOP_TIMEOUT {
            eprintln!(
                "picosnitch: pid {pid} still runs {} s after SIGTERM",
                STOP_TIMEOUT.as_secs()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("picosnitch stopped (pid {pid})");
    ExitCode::SUCCESS
}

/// `picosnitch restart [--config FILE]`.
pub fn restart(config: Option<PathBuf>) -> ExitCode {
    if systemd_in_use() {
        return systemctl("restart");
    }
    if stop() != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    start(config)
}
