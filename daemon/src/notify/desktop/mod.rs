//! notify::desktop: desktop notifications, sent to each logged-in user's session bus by a helper
//! process that runs as that user, with per-executable cooldown and a digest for floods.
//!
//! The daemon (root) never opens, creates or writes anything in a user's home or runtime directory:
//! it only reads the metadata of `/run/user/UID/bus` ([`buses::session_buses`]), then re-executes
//! its own binary as `picosnitch notify-helper` with that user's uid, gid and groups
//! ([`send::send_as_user`]). The helper ([`helper_main`]) reads the notices as JSON on stdin and
//! talks D-Bus as the user. [`Desktop`] runs all of this on its own thread behind a [`Throttle`].
//!
//! This module refers to nothing else in the crate, so the integration test compiles it as is.
pub mod buses;
pub mod helper;
pub mod runner;
pub mod send;
pub mod throttle;

pub use helper::helper_main;
pub use runner::Desktop;
pub use throttle::Throttle;

use serde::{Deserialize, Serialize};

/// The hidden subcommand that runs [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "notify-helper";

/// One desktop notification about one executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// What cooldown and de-duplication go by: the executable path and its sha256
    /// ([`Notice::key_for`]), never a process or thread name.
    pub key: String,
    pub summary: String,
    pub body: String,
}

impl Notice {
    /// The cooldown key of an executable: its path and sha256.
    pub fn key_for(exe: &str, sha256: &str) -> String {
        format!("{exe} sha256:{sha256}")
    }

    fn about(exe: &str, sha256: &str, previous: Option<&str>, summary: String) -> Notice {
        let mut body = format!("{exe}\nsha256 {sha256}");
        if let Some(previous) = previous {
            body.push_str(&format!("\nprevious {previous}"));
        }
        Notice {
            key: Notice::key_for(exe, sha256),
            summary,
            body,
        }
    }

    /// A new executable made its first network connection.
    pub fn new_program(exe: &str, name: &str, sha256: &str) -> Notice {
        let summary = format!("New program on the network: {name}");
        Notice::about(exe, sha256, None, summary)
    }

    /// A known executable connected under a name it never had.
    pub fn new_name(exe: &str, name: &str, sha256: &str) -> Notice {
        let summary = format!("Known program under a new name: {name}");
        Notice::about(exe, sha256, None, summary)
    }

    /// A known executable appeared with a sha256 not seen for it before.
    pub fn new_hash(exe: &str, sha256: &str, previous: Option<&str>) -> Notice {
        let summary = format!("Program changed (new sha256): {exe}");
        Notice::about(exe, sha256, previous, summary)
    }

    /// A cached executable was modified on disk; `sha256` is its hash after the change.
    pub fn modified(exe: &str, sha256: &str, previous: Option<&str>) -> Notice {
        let summary = format!("Executable modified on disk: {exe}");
        Notice::about(exe, sha256, previous, summary)
    }
}

/// Why notices did not reach a user's session bus.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("desktop notifications are never sent as root (uid 0)")]
    RootSession,
    #[error("could not encode the notices for uid {uid}: {source}")]
    Encode {
        uid: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not start {exe} {HELPER_SUBCOMMAND} as uid {uid}: {source}")]
    Spawn {
        exe: String,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("could not wait for the notification helper of uid {uid}: {source}")]
    Wait {
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the notification helper of uid {uid} did not finish within {secs} s and was killed")]
    Timeout { uid: u32, secs: u64 },
    #[error("the notification helper of uid {uid} failed ({status}): {stderr}")]
    Helper {
        uid: u32,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_keyed_by_path_and_hash() {
        let a = Notice::new_program("/usr/bin/curl", "curl", "aa");
        let b = Notice::new_name("/usr/bin/curl", "thread-name", "aa");
        assert_eq!(a.key, b.key);
        assert_ne!(
            a.key,
            Notice::new_program("/usr/bin/curl", "curl", "bb").key
        );
        assert_ne!(a.key, Notice::new_program("/bin/curl", "curl", "aa").key);
        assert_eq!(a.summary, "New program on the network: curl");
        assert_eq!(a.body, "/usr/bin/curl\nsha256 aa");
        assert_eq!(b.summary, "Known program under a new name: thread-name");
        let h = Notice::new_hash("/usr/bin/curl", "bb", Some("aa"));
        assert_eq!(h.summary, "Program changed (new sha256): /usr/bin/curl");
        assert_eq!(h.body, "/usr/bin/curl\nsha256 bb\nprevious aa");
        let m = Notice::modified("/usr/bin/curl", "cc", None);
        assert_eq!(m.summary, "Executable modified on disk: /usr/bin/curl");
        assert_eq!(m.body, "/usr/bin/curl\nsha256 cc");
    }

    #[test]
    fn notices_round_trip_through_json() {
        let n = vec![Notice::new_program("/bin/x", "x", "00")];
        let json = serde_json::to_string(&n).expect("encode");
        let back: Vec<Notice> = serde_json::from_str(&json).expect("decode");
        assert_eq!(n, back);
    }
}
