//! desktop_support: the test user, a real session dbus-daemon running as that user with a
//! recording notification server on it, and snapshots of the user's home.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

pub const USER: &str = "picosnitch-notify-test";
pub const HOME: &str = "/var/tmp/picosnitch-notify-test";
const SERVER: &str = include_str!("notification_server.py");
const PYTHON: &str = "/usr/bin/python3";

static USER_LOCK: Mutex<()> = Mutex::new(());

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, USER]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The test user's (uid, gid), created with a home directory when missing.
pub fn test_user() -> (u32, u32) {
    let _guard = USER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args(["--system", "--create-home", "--home-dir", HOME])
            .args(["--shell", "/usr/sbin/nologin", USER])
            .status()
            .expect("run useradd");
        assert!(status.success(), "useradd {USER}: {status}");
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// Every entry under `dir` (symlinks not followed): path → (owner uid, inode, size, mtime, mode).
pub type Snapshot = BTreeMap<PathBuf, (u32, u64, u64, i64, i64, u32)>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let m = std::fs::symlink_metadata(&path).expect("lstat");
        if m.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                todo.push(entry.expect("dir entry").path());
            }
        }
        let info = (
            m.uid(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.mode(),
        );
        out.insert(path, info);
    }
    out
}

/// Paths in `snap` that root owns.
pub fn owned_by_root(snap: &Snapshot) -> Vec<&PathBuf> {
    snap.iter()
        .filter(|(_, i)| i.0 == 0)
        .map(|(p, _)| p)
        .collect()
}

fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--init-groups", "--", program])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    c
}

/// Starts `command` and waits for its first line of output.
fn start(mut command: Command, what: &str) -> (Child, String) {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        lines.for_each(drop);
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(line) => (child, line),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not start");
        }
    }
}

/// A session bus of the test user at `run_user/UID/bus` with a recording notification server.
/// Both processes are killed on drop.
pub struct Session {
    pub run_user: PathBuf,
    pub runtime: PathBuf,
    pub bus: PathBuf,
    pub work: PathBuf,
    pub record: PathBuf,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Session {
    pub fn start(uid: u32, gid: u32) -> Session {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o711);
        let run_user = dir.path().join("run-user");
        std::fs::create_dir(&run_user).expect("mkdir run-user");
        set_mode(&run_user, 0o755);
        let runtime = run_user.join(uid.to_string());
        let work = dir.path().join("work");
        for d in [&runtime, &work] {
            std::fs::create_dir(d).expect("mkdir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
            set_mode(d, 0o700);
        }
        let bus = runtime.join("bus");
        let record = work.join("notifications.jsonl");
        let mut dbus = as_user(uid, gid, "dbus-daemon");
        dbus.args(["--session", "--nofork", "--print-address", "--address"])
            .arg(format!("unix:path={}", bus.display()));
        let (dbus, address) = start(dbus, "dbus-daemon");
        let mut session = Session {
            run_user,
            runtime,
            bus,
            work,
            record: record.clone(),
            children: vec![dbus],
            _dir: dir,
        };
        let mut server = as_user(uid, gid, PYTHON);
        server
            .args(["-c", SERVER])
            .arg(&record)
            .env("DBUS_SESSION_BUS_ADDRESS", &address);
        let (server, ready) = start(server, "notification server");
        session.children.push(server);
        assert_eq!(ready, "ready");
        session
    }

    /// The Notify calls recorded so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(&self.record) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("record is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
