//! notify::desktop::buses: finds every logged-in user's session bus socket, `/run/user/UID/bus`,
//! by reading metadata only (no socket is opened and nothing is written as root).
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where systemd-logind puts each user's runtime directory.
pub const RUN_USER: &str = "/run/user";

/// Every logged-in user's session bus: `(uid, gid, socket)`, sorted by uid.
pub fn session_buses() -> Vec<(u32, u32, PathBuf)> {
    session_buses_under(Path::new(RUN_USER))
}

/// Like [`session_buses`] with another directory in place of `/run/user`.
///
/// A bus counts when `DIR/UID/bus` is a socket (not a symlink) owned by that same UID; its owner's
/// gid is returned with it. uid 0 is left out: the helper never runs as root, so root's own
/// desktop session gets its warnings from journald and exe.log only. An unreadable directory
/// means no buses.
pub fn session_buses_under(run_user_dir: &Path) -> Vec<(u32, u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(run_user_dir) else {
        return Vec::new();
    };
    let mut buses: Vec<(u32, u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let uid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if uid == 0 {
                return None;
            }
            let bus = entry.path().join("bus");
            let meta = fs::symlink_metadata(&bus).ok()?;
            (meta.file_type().is_socket() && meta.uid() == uid).then(|| (uid, meta.gid(), bus))
        })
        .collect();
    buses.sort();
    buses
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn me() -> (u32, u32) {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    #[test]
    fn finds_sockets_owned_by_their_directory_uid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, gid) = me();
        let mine = dir.path().join(uid.to_string());
        fs::create_dir(&mine).expect("mkdir");
        let _listener = UnixListener::bind(mine.join("bus")).expect("bind");
        let found = session_buses_under(dir.path());
        if uid == 0 {
            assert!(found.is_empty(), "root is never a target: {found:?}");
        } else {
            assert_eq!(found, vec![(uid, gid, mine.join("bus"))]);
        }
    }

    #[test]
    fn skips_everything_that_is_not_a_users_own_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, _) = me();
        let other = uid.wrapping_add(4242);
        // A socket in a directory named for another uid: owner does not match.
        let d = dir.path().join(other.to_string());
        fs::create_dir(&d).expect("mkdir");
        let _l1 = UnixListener::bind(d.join("bus")).expect("bind");
        // A regular file named bus.
        let d = dir.path().join(other.wrapping_add(1).to_string());
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("bus"), b"").expect("write");
        // A symlink to a real socket.
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let _l2 = UnixListener::bind(real.join("bus")).expect("bind");
        let d = dir.path().join(other.wrapping_add(2).to_string());
        fs::create_dir(&d).expect("mkdir");
        std::os::unix::fs::symlink(real.join("bus"), d.join("bus")).expect("symlink");
        // Not a uid at all, no bus at all, and root.
        fs::create_dir(dir.path().join("not-a-uid")).expect("mkdir");
        fs::create_dir(dir.path().join(other.wrapping_add(3).to_string())).expect("mkdir");
        let d = dir.path().join("0");
        fs::create_dir(&d).expect("mkdir");
        let _l3 = UnixListener::bind(d.join("bus")).expect("bind");
        let found: Vec<u32> = session_buses_under(dir.path())
            .into_iter()
            .map(|(u, _, _)| u)
            .collect();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_missing_directory_has_no_buses() {
        assert!(session_buses_under(Path::new("/nonexistent/picosnitch/run/user")).is_empty());
    }
}
