//! journald: with stderr connected to the journal (JOURNAL_STREAM), the daemon logs to journald
//! with structured fields (EXE=, NAME=, SHA256=, PARENT_EXE=, UID=, CONTAINER=, …). A real
//! systemd-journald runs in a private mount namespace (its own /run, its files in a temporary
//! directory) and the entries are read back with `journalctl -D`.
mod common;
mod service_support;

use common::{copy_exe, json_lines, run_json, sha256sum, trafficgen};
use service_support::{wait_for, NotifySocket, Service, BIN};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Inside `unshare --mount`: journald on a private /run, then the daemon with its stderr as the
/// "journal stream", then journald is stopped once the daemon has exited.
const SCRIPT: &str = r#"
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log
mount --bind "$D/log" /run/log
if [ -d /var/log/journal ]; then mount --bind "$D/varlog" /var/log/journal; fi
"$JOURNALD" & J=$!
n=0
while [ ! -S /run/systemd/journal/socket ]; do
  n=$((n + 1)); [ "$n" -lt 200 ] || { echo "journald did not start" >&2; exit 90; }
  sleep 0.05
done
: > "$D/stderr"
export JOURNAL_STREAM="$(stat -c %d:%i "$D/stderr")"
NOTIFY_SOCKET="$TEST_NOTIFY" PICOSNITCH_ROOT="$D/root" \
  "$BIN" start-no-daemon --config "$D/config.toml" 2>>"$D/stderr" & P=$!
echo "$P" > "$D/daemon.pid"
set +e
wait "$P"; rc=$?
kill "$J"; wait "$J"
exit "$rc"
"#;

type Entry = HashMap<String, serde_json::Value>;

fn field<'a>(e: &'a Entry, k: &str) -> &'a str {
    e.get(k).and_then(|v| v.as_str()).unwrap_or_default()
}

fn read_journal(dir: &Path) -> Vec<Entry> {
    json_lines(Command::new("journalctl").arg("-D").arg(dir).args([
        "-o",
        "json",
        "--no-pager",
        "SYSLOG_IDENTIFIER=picosnitch",
    ]))
}

#[test]
fn decisions_reach_journald_as_structured_fields() {
    assert!(
        Path::new(JOURNALD).exists(),
        "{JOURNALD} is missing: install Debian's systemd package (scripts/install-deps)"
    );
    let d = tempfile::tempdir().unwrap();
    for sub in ["log", "varlog", "root"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
    }
    std::fs::write(
        d.path().join("config.toml"),
        "[database]\nwrite_limit_seconds = 1\n",
    )
    .unwrap();
    let notify = NotifySocket::bind(d.path());
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("D", d.path())
        .env("BIN", BIN)
        .env("JOURNALD", JOURNALD)
        .env("TEST_NOTIFY", &notify.path)
        .env_remove("NOTIFY_SOCKET");
    let mut svc = Service::spawn(cmd);
    notify.until("READY=1", Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(d.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let exe = copy_exe(&trafficgen(), dir.path(), "tg-journal");
    run_json(Command::new(&exe).args(["tcp-up", "--bytes", "100"]));
    let exe_log = d.path().join("root/var/log/picosnitch/exe.log");
    wait_for("the decision", Duration::from_secs(10), || {
        std::fs::read_to_string(&exe_log).is_ok_and(|t| t.contains("tg-journal"))
    });
    // SAFETY: plain kill(2) on the daemon the script started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = svc.wait(Duration::from_secs(30));
    let stderr = std::fs::read_to_string(d.path().join("stderr")).unwrap();
    assert!(status.success(), "{status}: {stderr}\n{}", svc.log());
    assert!(
        stderr.trim().is_empty(),
        "under journald nothing goes to stderr: {stderr}"
    );

    let entries = read_journal(&d.path().join("log/journal"));
    let started = entries
        .iter()
        .find(|e| field(e, "MESSAGE").starts_with("picosnitch is monitoring"))
        .unwrap_or_else(|| panic!("no start entry in {entries:?}"));
    assert_eq!(field(started, "HOOK_SET"), "tp_btf");
    assert_eq!(field(started, "PRIORITY"), "5");
    let exe_s = exe.to_string_lossy();
    let decision = entries
        .iter()
        .find(|e| field(e, "EXE") == exe_s && field(e, "LEVEL") == "0")
        .unwrap_or_else(|| panic!("no decision for {exe_s} in {entries:?}"));
    let me = std::env::current_exe().unwrap();
    for (k, v) in [
        ("MESSAGE", "New program on the network: tg-journal"),
        ("DECISION", "NewExe"),
        ("NAME", "tg-journal"),
        ("SHA256", sha256sum(&exe).as_str()),
        ("UID", "0"),
        ("CONTAINER", ""),
        ("PRIORITY", "4"),
    ] {
        assert_eq!(field(decision, k), v, "{k} in {decision:?}");
    }
    // The generator's client runs under this test; its server side is its own child.
    let parent = field(decision, "PARENT_EXE");
    assert!(
        parent == me.to_str().unwrap() || parent == exe_s,
        "{decision:?}"
    );
    assert!(decision.contains_key("CONTAINER"), "{decision:?}");
    assert_eq!(field(decision, "_PID"), pid.to_string());
}
