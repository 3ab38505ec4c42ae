//! service_support: a notification socket standing in for systemd's, a daemon started with the
//! environment systemd would give it, and small helpers for the service tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_picosnitch");

/// A datagram socket the daemon is told about through `NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket { path, sock }
    }

    /// The next message, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        let t = Instant::now();
        let mut buf = vec![0u8; 65536];
        while t.elapsed() < timeout {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Messages until one has a line equal to `line`; all of them, in order.
    pub fn until(&self, line: &str, timeout: Duration) -> Vec<String> {
        let t = Instant::now();
        let mut seen = Vec::new();
        while t.elapsed() < timeout {
            if let Some(m) = self.recv(Duration::from_millis(200)) {
                let done = m.lines().any(|l| l == line);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {line} within {timeout:?}; got {seen:?}");
    }
}

/// A daemon run as systemd would: `NOTIFY_SOCKET` and friends in its environment.
pub struct Service {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Service {
    /// Spawns `cmd` (stderr collected) and returns at once.
    pub fn spawn(mut cmd: Command) -> Service {
        cmd.env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Service { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.log().contains(text) {
            assert!(
                t.elapsed() < timeout,
                "no {text:?} in the log within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the exit (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("no exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `picosnitch start-no-daemon --config CFG` under `root`.
pub fn daemon_command(root: &Path, config: &str) -> Command {
    let cfg = root.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["start-no-daemon", "--config"])
        .arg(&cfg)
        .env("PICOSNITCH_ROOT", root);
    cmd
}

/// What the fds of `pid` point at (`socket:[123]`, `anon_inode:bpf_link`, …).
pub fn fd_targets(pid: i32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let t = std::fs::read_link(e.path()).ok()?;
            Some((fd, t.to_string_lossy().into_owned()))
        })
        .collect();
    out.sort();
    out
}

/// The inode of the socket listening on TCP 127.0.0.1:`port`, from /proc/net/tcp.
pub fn tcp_listener_inode(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("0100007F:{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| f[9].parse().ok())?
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a picosnitch verb under `root`: (status code, stdout, stderr).
pub fn verb(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("PICOSNITCH_ROOT", root)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `f` holds.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
