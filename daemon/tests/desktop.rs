//! desktop: notices reach a real session dbus-daemon through the real `picosnitch notify-helper`
//! running as the desktop user, the helper refuses root, and root writes nothing into the user's
//! home. Compiles `src/notify/desktop` as is, so the code under test is the daemon's own.
#[allow(dead_code, unused_imports)]
#[path = "../src/notify/desktop/mod.rs"]
mod desktop;
mod desktop_support;

use desktop::{Desktop, DesktopError, Notice, Throttle};
use desktop_support::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_picosnitch");
const OLD: &str = "0b1c6b8bcd6a1b46c5e6e4f0f6b7a0d0d86f1b3e2a9f3c1a1e2d3c4b5a697887";
const NEW: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const EDITED: &str = "5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed";

const CURL: &str = "/usr/bin/curl";

/// Sends through every bus found under the session's run-user directory, as the daemon does.
fn deliver(session: &Session, notices: &[Notice]) -> Result<(), DesktopError> {
    for (uid, gid, bus) in desktop::buses::session_buses_under(&session.run_user) {
        desktop::send::send_as_user(Path::new(HELPER), uid, gid, &bus, notices)?;
    }
    Ok(())
}

fn texts(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("summary"), s("body"))
        })
        .collect()
}

#[test]
fn notices_reach_the_users_session_bus_as_the_user() {
    let (uid, gid) = test_user();
    let home_before = snapshot(Path::new(HOME));
    let session = Session::start(uid, gid);
    assert_eq!(
        desktop::buses::session_buses_under(&session.run_user),
        vec![(uid, gid, session.bus.clone())]
    );
    let notices = [
        Notice::new_program(CURL, "curl", OLD),
        Notice::new_hash(CURL, NEW, Some(OLD)),
        Notice::modified(CURL, EDITED, Some(NEW)),
    ];
    deliver(&session, &notices).expect("deliver");
    let records = session.records();
    assert_eq!(
        texts(&records),
        vec![
            (
                "New program on the network: curl".to_string(),
                format!("/usr/bin/curl\nsha256 {OLD}")
            ),
            (
                "Program changed (new sha256): /usr/bin/curl".to_string(),
                format!("/usr/bin/curl\nsha256 {NEW}\nprevious {OLD}")
            ),
            (
                "Executable modified on disk: /usr/bin/curl".to_string(),
                format!("/usr/bin/curl\nsha256 {EDITED}\nprevious {NEW}")
            ),
        ]
    );
    for r in &records {
        assert_eq!(r["app_name"], "picosnitch", "{r}");
        assert_eq!(r["replaces_id"], 0, "{r}");
        assert_eq!(r["expire_timeout"], -1, "{r}");
        assert_eq!(r["actions"], serde_json::json!([]), "{r}");
        assert_eq!(r["hints"]["desktop-entry"], "picosnitch", "{r}");
        assert_eq!(r["sender_uid"], uid, "sent by the user, not by root: {r}");
    }
    for dir in [&session.runtime, &session.work] {
        let snap = snapshot(dir);
        assert!(owned_by_root(&snap).is_empty(), "{snap:?}");
    }
    drop(session);
    let home_after = snapshot(Path::new(HOME));
    assert!(owned_by_root(&home_after).is_empty(), "{home_after:?}");
    assert_eq!(home_before, home_after, "the user's home changed");
}

#[test]
fn a_flood_arrives_as_a_few_notices_and_a_digest_thread_names_as_nothing() {
    let (uid, gid) = test_user();
    let session = Session::start(uid, gid);
    // The delivery thread the daemon runs, delivering through this session's bus.
    let run_user = session.run_user.clone();
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = failures.clone();
    let deliver = move |notices: &[Notice]| {
        for (uid, gid, bus) in desktop::buses::session_buses_under(&run_user) {
            if let Err(e) = desktop::send::send_as_user(Path::new(HELPER), uid, gid, &bus, notices)
            {
                seen.lock().expect("lock").push(e.to_string());
            }
        }
    };
    let hour = Duration::from_secs(3600);
    let throttle = Throttle::new(Duration::from_secs(600), 5);
    let desktop = Desktop::spawn_with(throttle, hour, deliver).expect("spawn");
    let firefox = "/usr/lib/firefox/firefox";
    for name in ["firefox", "Socket Thread", "DNS Resolver #1"] {
        desktop.notify(Notice::new_program(firefox, name, NEW));
    }
    for i in 0..7 {
        let exe = format!("/usr/bin/tool{i}");
        desktop.notify(Notice::new_program(&exe, &format!("tool{i}"), OLD));
    }
    drop(desktop); // delivers what is waiting, then joins
    assert!(failures.lock().expect("lock").is_empty(), "{failures:?}");
    let got = texts(&session.records());
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0].0, "New program on the network: firefox");
    assert_eq!(got[4].0, "New program on the network: tool3");
    assert_eq!(
        got[5],
        (
            "and 3 more programs…".to_string(),
            "New program on the network: tool4\nNew program on the network: tool5\n\
             New program on the network: tool6"
                .to_string()
        )
    );
}

#[test]
fn the_helper_refuses_to_run_as_root() {
    let (uid, gid) = test_user();
    let session = Session::start(uid, gid);
    let mut child = Command::new(HELPER)
        .arg("notify-helper")
        .env_clear()
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            desktop::send::dbus_unix_address(&session.bus),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let notices = [Notice::new_program(CURL, "curl", OLD)];
    let json = serde_json::to_vec(&notices).expect("json");
    // The helper may exit before reading: a closed pipe is expected.
    let _ = child.stdin.take().expect("stdin").write_all(&json);
    let out = child.wait_with_output().expect("wait helper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to run as root"), "{stderr}");
    let sent = desktop::send::send_as_user(Path::new(HELPER), 0, 0, &session.bus, &notices);
    assert!(matches!(sent, Err(DesktopError::RootSession)), "{sent:?}");
    assert!(session.records().is_empty(), "{:?}", session.records());
}

#[test]
fn failures_name_the_user_and_the_reason() {
    let (uid, gid) = test_user();
    let session = Session::start(uid, gid);
    let notices = [Notice::new_program(CURL, "curl", OLD)];
    let missing = session.runtime.join("no-such-bus");
    let err = desktop::send::send_as_user(Path::new(HELPER), uid, gid, &missing, &notices)
        .expect_err("no bus there");
    let text = err.to_string();
    assert!(matches!(err, DesktopError::Helper { .. }), "{err:?}");
    assert!(text.contains(&format!("uid {uid}")), "{text}");
    assert!(
        text.contains("could not connect to the session bus"),
        "{text}"
    );
}

#[test]
fn a_helper_that_hangs_is_killed() {
    let (uid, gid) = test_user();
    let session = Session::start(uid, gid);
    // A socket that accepts connections but never speaks: authentication never completes.
    let silent = session.work.join("silent");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    std::os::unix::fs::chown(&silent, Some(uid), Some(gid)).expect("chown");
    let started = Instant::now();
    let notices = [Notice::new_program(CURL, "curl", OLD)];
    let err = desktop::send::send_as_user(Path::new(HELPER), uid, gid, &silent, &notices)
        .expect_err("silent bus");
    let took = started.elapsed();
    assert!(matches!(err, DesktopError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("uid {uid}")), "{err}");
    assert!(took >= desktop::send::HELPER_TIMEOUT, "{took:?}");
    assert!(
        took < desktop::send::HELPER_TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
}
