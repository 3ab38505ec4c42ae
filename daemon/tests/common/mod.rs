//! common: runs the real daemon under a temporary PICOSNITCH_ROOT, builds the traffic generator,
//! and reads what the daemon stored.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_picosnitch");

pub struct Daemon {
    child: Child,
    pub root: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

pub struct Stopped {
    pub root: tempfile::TempDir,
    pub db: PathBuf,
    pub log: String,
}

impl Daemon {
    /// Starts `picosnitch start-no-daemon` with `config` and waits until its hooks are attached.
    /// Unless `config` has an `[api]` section, the API's TCP listener takes a free port (see
    /// [`Daemon::api_addr`]), so daemons of tests running at the same time never collide.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_wrapped(config, &[])
    }

    /// Like `start`, with the daemon run by a wrapper command (`wrapper` then the daemon's
    /// command line), e.g. one that gives it its own mount namespace. The wrapper must exec it.
    pub fn start_wrapped(config: &str, wrapper: &[&str]) -> Daemon {
        let root = tempfile::tempdir().expect("tempdir");
        let cfg = root.path().join("config.toml");
        let mut config = config.to_string();
        if !config.contains("[api]") {
            config.push_str("\n[api]\nlisten = \"127.0.0.1:0\"\n");
        }
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(["start-no-daemon", "--config"])
            .arg(&cfg)
            .env("PICOSNITCH_ROOT", root.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn picosnitch");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("picosnitch is monitoring") {
                    let _ = tx.send(());
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("daemon did not become ready:\n{}", log.lock().unwrap());
        }
        Daemon { child, root, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The address the API's TCP listener got, from the daemon's log.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.log().lines().find_map(|l| {
            let rest = l.split("API listening on http://").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// The API's unix socket.
    pub fn api_socket(&self) -> PathBuf {
        self.root.path().join("run/picosnitch/api.sock")
    }

    /// SIGTERM, then expects exit status 0 within 30 s.
    pub fn stop(mut self) -> Stopped {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("daemon did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log();
        assert!(status.success(), "daemon exited with {status}:\n{log}");
        let db = self.root.path().join("var/lib/picosnitch/picosnitch.db");
        Stopped {
            root: self.root,
            db,
            log,
        }
    }
}

/// Builds every tests/trafficgen/*.c (sorted) into one static binary, once per test process.
/// Test binaries that run at the same time share the output path, so each links to its own
/// temporary file and renames it into place: nobody runs or overwrites a half-written binary.
pub fn trafficgen() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/trafficgen");
            let mut srcs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .map(|entry| entry.expect("read tests/trafficgen").path())
                .filter(|p| p.is_file() && p.extension() == Some(std::ffi::OsStr::new("c")))
                .collect();
            srcs.sort();
            assert!(!srcs.is_empty(), "no .c files in {}", dir.display());
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trafficgen");
            let tmp = out.with_file_name(format!("trafficgen.{}.tmp", std::process::id()));
            let st = Command::new("gcc")
                .args(["-O2", "-static", "-Wall", "-Werror", "-o"])
                .arg(&tmp)
                .args(&srcs)
                .status()
                .expect("gcc");
            if !st.success() {
                let _ = std::fs::remove_file(&tmp);
                panic!("building trafficgen failed");
            }
            std::fs::rename(&tmp, &out).expect("install trafficgen");
            out
        })
        .clone()
}

/// A private copy of an executable, so rows can be selected by executable path.
pub fn copy_exe(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs a command that must succeed and parses every line it prints as JSON.
pub fn json_lines<T: serde::de::DeserializeOwned>(cmd: &mut Command) -> Vec<T> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

/// Runs a traffic generator copy and parses the JSON line it prints last.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("run traffic generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from {cmd:?}: {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line}: {e}"))
}

#[derive(Debug, Clone)]
pub struct DbRow {
    pub exe: String,
    pub name: String,
    pub cmdline: String,
    pub sha256: String,
    pub pexe: String,
    pub psha256: String,
    pub gpexe: String,
    pub uid: i64,
    pub family: i64,
    pub protocol: i64,
    pub lport: i64,
    pub rport: i64,
    pub laddr: String,
    pub raddr: String,
    pub netns: i64,
    pub container: String,
    pub send: i64,
    pub recv: i64,
    pub events: i64,
}

/// Every stored row whose executable is `exe`.
pub fn rows_for_exe(db: &Path, exe: &Path) -> Vec<DbRow> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut st = conn
        .prepare(
            "SELECT e.exe, e.name, e.cmdline, e.sha256, p.exe, p.sha256, g.exe, c.uid, c.family,
                    c.protocol, c.lport, c.rport, la.addr, ra.addr, c.netns, c.send, c.recv, c.events,
                    ct.container
             FROM connections c
             JOIN executables e ON e.id = c.exe_id
             JOIN executables p ON p.id = c.pexe_id
             JOIN executables g ON g.id = c.gpexe_id
             JOIN addresses la ON la.id = c.laddr_id
             JOIN addresses ra ON ra.id = c.raddr_id
             JOIN containers ct ON ct.id = c.container_id
             WHERE e.exe = ?1",
        )
        .unwrap();
    st.query_map([exe.to_string_lossy()], |r| {
        Ok(DbRow {
            exe: r.get(0)?,
            name: r.get(1)?,
            cmdline: r.get(2)?,
            sha256: r.get(3)?,
            pexe: r.get(4)?,
            psha256: r.get(5)?,
            gpexe: r.get(6)?,
            uid: r.get(7)?,
            family: r.get(8)?,
            protocol: r.get(9)?,
            lport: r.get(10)?,
            rport: r.get(11)?,
            laddr: r.get(12)?,
            raddr: r.get(13)?,
            netns: r.get(14)?,
            container: r.get(18)?,
            send: r.get(15)?,
            recv: r.get(16)?,
            events: r.get(17)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub fn sum(rows: &[&DbRow]) -> (i64, i64) {
    rows.iter()
        .fold((0, 0), |(s, r), x| (s + x.send, r + x.recv))
}

/// The network namespace inode of a process (what the kernel reports as netns).
pub fn netns_of(pid: u32) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .ino() as i64
}

/// Runs `picosnitch VERB --db DB ARGS…` (the verbs that read a database: query, export).
pub fn on_db(db: &Path, verb: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg(verb)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

/// The standard output of a command that must have succeeded (its stderr otherwise).
pub fn success_stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The port a generator server (`serve-tcp`, `serve-udp`, …) started with `stdout` piped prints
/// on its first line.
pub fn served_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    v["port"].as_u64().unwrap() as u16
}
