//! durability: SIGTERM during heavy traffic loses nothing the kernel counted before the signal;
//! SIGKILL loses at most the open window (plus the last drain and the write in flight), leaves an
//! intact database, and a daemon restarted on it carries on.
mod common;
mod service_support;

use common::{copy_exe, rows_for_exe, run_json, sum, trafficgen, DbRow};
use service_support::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// No API listener: daemons of other tests may hold the default port.
const NO_API: &str = "[api]\nlisten = \"\"\nsocket = false\n";

/// A TCP stream from this test process to a sink in this process. `sent` only counts bytes whose
/// `write` already returned, so it never exceeds what the kernel hooks have seen; `timeline`
/// (paced streams only) records when each total was reached.
struct Stream {
    /// The client socket's local port (its rows' `lport`).
    client_port: u16,
    sink_port: u16,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    timeline: Arc<Mutex<Vec<(Instant, u64)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Stream {
    /// `pace`: one chunk every this often (None: as fast as the socket takes it).
    fn start(chunk: usize, pace: Option<Duration>) -> Stream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        let sink = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => r.fetch_add(n as u64, Ordering::SeqCst),
                    Err(e) => panic!("sink: {e}"),
                };
            }
        });
        let mut client = TcpStream::connect(("127.0.0.1", sink_port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let timeline = Arc::new(Mutex::new(Vec::new()));
        let (s, st, tl) = (sent.clone(), stop.clone(), timeline.clone());
        let sender = std::thread::spawn(move || {
            let data = vec![0x5au8; chunk];
            while !st.load(Ordering::SeqCst) {
                client.write_all(&data).unwrap();
                let total = s.fetch_add(chunk as u64, Ordering::SeqCst) + chunk as u64;
                if let Some(p) = pace {
                    tl.lock().unwrap().push((Instant::now(), total));
                    std::thread::sleep(p);
                }
            }
        });
        Stream {
            client_port,
            sink_port,
            sent,
            received,
            stop,
            timeline,
            threads: vec![sender, sink],
        }
    }

    /// Stops sending; returns (bytes sent, bytes the sink received), which are then equal.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let out = (
            self.sent.load(Ordering::SeqCst),
            self.received.load(Ordering::SeqCst),
        );
        assert_eq!(out.0, out.1);
        out
    }

    /// The bytes sent by `t` at the latest (0 if none).
    fn sent_by(&self, t: Instant) -> u64 {
        let tl = self.timeline.lock().unwrap();
        tl.iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, n)| *n)
    }
}

/// A trafficgen copy that keeps loopback busy until killed.
struct Load(Child);

impl Load {
    fn start(dir: &Path) -> Load {
        let exe = copy_exe(&trafficgen(), dir, "tg-load");
        use std::os::unix::process::CommandExt;
        let child = Command::new(exe)
            .args(["tcp-duplex", "--bytes", "1000000000000"])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // Its server is a forked child in the process group the client leads.
        // SAFETY: kill(2) on the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(root: &Path, config: &str) -> (Service, NotifySocket) {
    // The socket of an earlier daemon on this root.
    let _ = std::fs::remove_file(root.join("notify.sock"));
    let notify = NotifySocket::bind(root);
    let mut cmd = daemon_command(root, &format!("{config}{NO_API}"));
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let svc = Service::spawn(cmd);
    notify.until("READY=1", SECS(30));
    (svc, notify)
}

fn this_exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

fn with_lport(rows: &[DbRow], port: u16) -> Vec<&DbRow> {
    rows.iter().filter(|r| r.lport == i64::from(port)).collect()
}

fn with_ports(rows: &[DbRow], lport: u16, rport: u16) -> Vec<&DbRow> {
    rows.iter()
        .filter(|r| r.lport == i64::from(lport) && r.rport == i64::from(rport))
        .collect()
}

fn stored_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM connections", [], |r| r.get(0))
        .unwrap()
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sigterm_during_heavy_traffic_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    // A window far longer than the test: every row below can only come from the final write.
    let (mut svc, notify) = start(root.path(), "[database]\nwrite_limit_seconds = 3600\n");
    let dir = tempfile::tempdir().unwrap();
    let _load = Load::start(dir.path());
    let stream = Stream::start(1 << 16, None);
    let t = Instant::now();
    while stream.sent.load(Ordering::SeqCst) < 64 << 20 {
        assert!(t.elapsed() < SECS(30), "the stream is stuck");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A transfer of known size ends, and the signal follows at once, with the load and the
    // stream still flowing.
    let exact = copy_exe(&trafficgen(), dir.path(), "tg-exact");
    const N: i64 = 32_000_000;
    let json = run_json(Command::new(&exact).args(["tcp-duplex", "--bytes", &N.to_string()]));
    assert_eq!(
        stored_rows(&db),
        0,
        "a window was written before the signal"
    );
    let sent_before = stream.sent.load(Ordering::SeqCst);
    let received_before = stream.received.load(Ordering::SeqCst);
    svc.signal(libc::SIGTERM);
    let signalled = Instant::now();
    notify.until("STOPPING=1", SECS(10));
    let status = svc.wait(SECS(60));
    assert!(status.success(), "{status}\n{}", svc.log());
    assert!(
        stream.sent.load(Ordering::SeqCst) > sent_before,
        "the stream stopped before the signal"
    );
    let (client_port, sink_port) = (stream.client_port, stream.sink_port);
    let (sent_total, _) = stream.finish();
    println!(
        "stopped {:?} after SIGTERM; stream: {sent_before} bytes before the signal, {sent_total} \
         in all",
        signalled.elapsed()
    );

    // The finished transfer: exactly, on both sides.
    let rows = rows_for_exe(&db, &exact);
    let lport = json["lport"].as_i64().unwrap() as u16;
    let rport = json["rport"].as_i64().unwrap() as u16;
    assert_eq!(
        sum(&with_ports(&rows, lport, rport)),
        (N, N),
        "{}",
        svc.log()
    );
    assert_eq!(
        sum(&with_ports(&rows, rport, lport)),
        (N, N),
        "{}",
        svc.log()
    );

    // The stream in flight: everything sent before the signal, nothing more than was sent.
    let rows = rows_for_exe(&db, &this_exe());
    let (send, recv) = sum(&with_ports(&rows, client_port, sink_port));
    assert!(
        sent_before as i64 <= send && send <= sent_total as i64 && recv == 0,
        "client: {send} sent, {recv} received stored; {sent_before} sent before the signal, \
         {sent_total} in all\n{}",
        svc.log()
    );
    let (send, recv) = sum(&with_ports(&rows, sink_port, client_port));
    assert!(
        received_before as i64 <= recv && recv <= sent_total as i64 && send == 0,
        "sink: {recv} received stored; {received_before} received before the signal\n{}",
        svc.log()
    );
    assert_eq!(integrity(&db), "ok");
}

#[test]
fn sigkill_loses_at_most_the_open_window_and_a_restart_carries_on() {
    const WINDOW: u64 = 2;
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("var/lib/picosnitch/picosnitch.db");
    let config = format!("[database]\nwrite_limit_seconds = {WINDOW}\n");
    let (mut svc, _notify) = start(root.path(), &config);
    let dir = tempfile::tempdir().unwrap();
    let _load = Load::start(dir.path());
    // 100 kB every 50 ms for 12 s: six windows' worth, each chunk's time recorded.
    let stream = Stream::start(100_000, Some(Duration::from_millis(50)));
    std::thread::sleep(SECS(6 * WINDOW));
    let killed = Instant::now();
    svc.signal(libc::SIGKILL);
    let status = svc.wait(SECS(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(stream.sent_by(Instant::now()) > stream.sent_by(killed - SECS(1)));
    // Counted by the kernel, then drained (every second) into a window that closed, then
    // written: whatever was sent earlier than this before the kill must be stored.
    let stored_by = killed - SECS(WINDOW + 3);
    let must = stream.sent_by(stored_by);
    let (client_port, sink_port) = (stream.client_port, stream.sink_port);
    let (sent_total, _) = stream.finish();
    assert!(must >= sent_total / 3, "{must} of {sent_total}");

    // The database is intact, and every stored row of the stream is whole.
    assert_eq!(integrity(&db), "ok");
    let rows = rows_for_exe(&db, &this_exe());
    let client = with_ports(&rows, client_port, sink_port);
    for r in &client {
        assert!(
            r.send + r.events > 0 && r.send <= sent_total as i64,
            "{r:?}"
        );
        assert_eq!((r.recv, r.family, r.protocol), (0, 2, 6), "{r:?}");
        assert_eq!(
            (r.laddr.as_str(), r.raddr.as_str()),
            ("127.0.0.1", "127.0.0.1")
        );
    }
    let (send, _) = sum(&client);
    let windows: std::collections::BTreeSet<i64> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut st = conn
            .prepare("SELECT DISTINCT contime FROM connections WHERE lport = ?1 AND rport = ?2")
            .unwrap();
        st.query_map([client_port, sink_port], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    println!(
        "SIGKILL: {send} of {sent_total} bytes stored in {} windows; at least {must} required",
        windows.len()
    );
    assert!(
        windows.len() >= 3,
        "windows written before the kill: {windows:?}"
    );
    assert!(
        must as i64 <= send && send <= sent_total as i64,
        "stored {send}; sent {must} by {:?} before the kill, {sent_total} in all\n{}",
        SECS(WINDOW + 3),
        svc.log()
    );

    // A daemon started on the same database carries on: the old rows stay, new ones are exact.
    let (mut svc, _notify) = start(root.path(), &config);
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-after-kill");
    let json = run_json(Command::new(&exe).args(["tcp-up", "--bytes", "123456"]));
    svc.signal(libc::SIGTERM);
    let status = svc.wait(SECS(60));
    assert!(status.success(), "{status}\n{}", svc.log());
    assert_eq!(integrity(&db), "ok");
    let after = rows_for_exe(&db, &this_exe());
    assert_eq!(sum(&with_ports(&after, client_port, sink_port)).0, send);
    let rows = rows_for_exe(&db, &exe);
    let lport = json["lport"].as_i64().unwrap() as u16;
    assert_eq!(sum(&with_lport(&rows, lport)), (123456, 0), "{}", svc.log());
}
