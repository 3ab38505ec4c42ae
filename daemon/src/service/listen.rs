//! service::listen: the API's listening sockets. Under systemd, `picosnitch.socket` passes them
//! (`LISTEN_FDS`, named by `LISTEN_FDNAMES`) and they are served as they are (a difference from `[api]`
//! is reported); otherwise the daemon binds `[api] listen` (127.0.0.1:5100 by default) and
//! the unix socket `/run/picosnitch/api.sock` (mode 0660, group `[data] group`) itself.
//!
//! The API server takes what [`listeners`] returns: every listener is non-blocking (ready for
//! `tokio::net::TcpListener::from_std` / `UnixListener::from_std`). [`listeners`] may be called
//! once per process; a second call is an error rather than a second owner of the same fds.
use super::ServiceError;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What the daemon binds when systemd passed nothing.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// None: no TCP listener.
    pub tcp: Option<SocketAddr>,
    /// None: no unix socket.
    pub unix: Option<PathBuf>,
    /// Group of the unix socket (`[data] group`); its mode is 0660.
    pub unix_gid: u32,
}

impl Fallback {
    /// What `[api]` asks for (by default 127.0.0.1:5100 and `api.sock` under the run directory
    /// of `paths`).
    pub fn new(paths: &crate::paths::Paths, api: &crate::config::Api, unix_gid: u32) -> Self {
        Fallback {
            tcp: api.tcp_addr(),
            unix: api.socket.then(|| paths.api_socket.clone()),
            unix_gid,
        }
    }
}

/// Removes a unix socket file the daemon bound itself when dropped (keep it as long as the
/// listener serves).
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub unix: Vec<UnixListener>,
    /// True when systemd passed them (socket activation).
    pub activated: bool,
    /// The socket file bound by the daemon, removed when this is dropped.
    pub socket_file: Option<SocketFile>,
    /// The group (`[data] group`) whose members, besides root, may use the unix sockets.
    pub unix_group: u32,
}

impl Listeners {
    pub fn len(&self) -> usize {
        self.tcp.len() + self.unix.len()
    }

    /// "tcp 127.0.0.1:5100, unix /run/picosnitch/api.sock", for the log.
    pub fn describe(&self) -> String {
        let tcp = self.tcp.iter().map(|l| match l.local_addr() {
            Ok(a) => format!("tcp {a}"),
            Err(_) => "tcp ?".into(),
        });
        let unix = self.unix.iter().map(|l| {
            let path = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            match path {
                Some(p) => format!("unix {}", p.display()),
                None => "unix (unnamed)".into(),
            }
        });
        tcp.chain(unix).collect::<Vec<_>>().join(", ")
    }

    /// How activated sockets differ from what `[api]` asks for ("tcp 127.0.0.1:5100 is not
    /// passed", …); empty when they match or when nothing was activated. The daemon serves what
    /// it was handed either way.
    pub fn differences(&self, fallback: &Fallback) -> Vec<String> {
        if !self.activated {
            return Vec::new();
        }
        let passed: Vec<SocketAddr> = self
            .tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let mut out = Vec::new();
        if let Some(want) = fallback.tcp {
            if !passed.contains(&want) {
                out.push(format!("tcp {want} ([api] listen) is not among them"));
            }
        }
        for a in passed.iter().filter(|a| Some(**a) != fallback.tcp) {
            out.push(format!("tcp {a} is not [api] listen"));
        }
        match (fallback.unix.is_some(), self.unix.is_empty()) {
            (true, true) => out.push("no unix socket although [api] socket is on".into()),
            (false, false) => out.push("a unix socket although [api] socket is off".into()),
            _ => {}
        }
        out
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The API's listeners: the ones systemd passed, or else the ones of `fallback`, bound here.
/// A fallback socket that cannot be bound (port in use, …) is a warning, not an error.
pub fn listeners(fallback: &Fallback) -> Result<Listeners, ServiceError> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ServiceError::ListenersTaken);
    }
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ServiceError::ListenFds)?
        .collect();
    if !fds.is_empty() {
        let mut out = Listeners {
            activated: true,
            unix_group: fallback.unix_gid,
            ..Listeners::default()
        };
        for (fd, name) in fds {
            // SAFETY: systemd passed this fd to this process (LISTEN_PID matched) for it to own;
            // nothing else in the process wraps it (guarded by TAKEN).
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            adopt(owned, &name, &mut out)?;
        }
        return Ok(out);
    }
    Ok(bind(fallback))
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, which we own.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// Sorts a passed fd by its socket family; anything but a listening stream socket is refused.
fn adopt(fd: OwnedFd, name: &str, out: &mut Listeners) -> Result<(), ServiceError> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let bad = |why: String| ServiceError::BadActivatedSocket {
        fd: raw,
        name: name.to_string(),
        why,
    };
    let domain = sockopt(raw, libc::SO_DOMAIN).map_err(|e| bad(format!("not a socket: {e}")))?;
    let kind = sockopt(raw, libc::SO_TYPE).map_err(|e| bad(e.to_string()))?;
    let listening = sockopt(raw, libc::SO_ACCEPTCONN).map_err(|e| bad(e.to_string()))?;
    if kind != libc::SOCK_STREAM || listening == 0 {
        return Err(bad("not a listening stream socket".into()));
    }
    let nonblocking = |r: std::io::Result<()>| r.map_err(|e| bad(e.to_string()));
    match domain {
        libc::AF_INET | libc::AF_INET6 => {
            let l = TcpListener::from(fd);
            nonblocking(l.set_nonblocking(true))?;
            out.tcp.push(l);
        }
        libc::AF_UNIX => {
            let l = UnixListener::from(fd);
            nonblocking(l.set_nonblocking(true))?;
            out.unix.push(l);
        }
        other => return Err(bad(format!("socket family {other} is not TCP or unix"))),
    }
    Ok(())
}

fn bind(fallback: &Fallback) -> Listeners {
    let mut out = Listeners {
        unix_group: fallback.unix_gid,
        ..Listeners::default()
    };
    if let Some(addr) = fallback.tcp {
        match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => out.tcp.push(l),
            Err(e) => tracing::warn!("cannot listen on {addr}, the API is not served there: {e}"),
        }
    }
    if let Some(path) = &fallback.unix {
        match bind_unix(path, fallback.unix_gid) {
            Ok(l) => {
                out.unix.push(l);
                out.socket_file = Some(SocketFile(path.clone()));
            }
            Err(e) => tracing::warn!(
                "cannot listen on {}, the API is not served there: {e}",
                path.display()
            ),
        }
    }
    out
}

/// Binds a unix socket at `path` with mode 0660 and group `gid`; a stale socket left by a
/// previous run is replaced, any other file is not.
fn bind_unix(path: &Path, gid: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(std::io::Error::other)?;
    // SAFETY: lchown on a NUL-terminated path we own; u32::MAX keeps the owner.
    if unsafe { libc::lchown(c.as_ptr(), u32::MAX, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn activated_sockets_are_compared_with_api() {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = t.local_addr().unwrap();
        let l = Listeners {
            tcp: vec![t],
            activated: true,
            ..Listeners::default()
        };
        let same = Fallback {
            tcp: Some(addr),
            unix: None,
            unix_gid: 0,
        };
        assert!(
            l.differences(&same).is_empty(),
            "{:?}",
            l.differences(&same)
        );
        let other = Fallback {
            tcp: Some("[::1]:5100".parse().unwrap()),
            unix: Some(PathBuf::from("/run/picosnitch/api.sock")),
            unix_gid: 0,
        };
        let d = l.differences(&other);
        assert_eq!(
            d,
            [
                "tcp [::1]:5100 ([api] listen) is not among them".to_string(),
                format!("tcp {addr} is not [api] listen"),
                "no unix socket although [api] socket is on".to_string(),
            ]
        );
    }

    #[test]
    fn binds_the_fallback_once() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/picosnitch/api.sock");
        // A stale socket from an earlier run is replaced.
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        drop(UnixListener::bind(&sock).unwrap());
        let fb = Fallback {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            unix: Some(sock.clone()),
            unix_gid: 0,
        };
        let l = listeners(&fb).unwrap();
        assert!(!l.activated);
        assert!(l
            .differences(&Fallback {
                tcp: None,
                ..fb.clone()
            })
            .is_empty());
        assert_eq!((l.tcp.len(), l.unix.len()), (1, 1));
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!(m.mode() & 0o777, 0o660);
        assert!(l.describe().contains("api.sock"), "{}", l.describe());
        std::os::unix::net::UnixStream::connect(&sock).unwrap();
        std::net::TcpStream::connect(l.tcp[0].local_addr().unwrap()).unwrap();
        assert!(matches!(listeners(&fb), Err(ServiceError::ListenersTaken)));
        drop(l);
        assert!(!sock.exists(), "the socket file goes with the listeners");
        // Not a socket: left alone.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(bind_unix(&plain, 0).is_err());
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "x");
    }
}
