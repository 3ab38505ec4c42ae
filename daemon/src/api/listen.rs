//! listen.rs: the accept loops serving the API on the listeners `service::listen` hands over
//! (activated by systemd or bound by the daemon): at most `MAX_CONNECTIONS` connections per
//! listener, the Host check on TCP ones, and the caller's credentials checked on unix ones
//! before anything is read.
use super::conns::Slots;
use super::{peer, serve};
use crate::service::listen::{Listeners, SocketFile};
use axum::Router;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Most connections open at once on one listener; past it, the oldest idle one is closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (out of file descriptors, …) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// The running HTTP server; dropping it stops serving (and removes a socket file bound by the
/// daemon, which it keeps until then).
pub struct Server {
    tasks: Vec<JoinHandle<()>>,
    _socket_file: Option<SocketFile>,
}

const BUSY: &str = "every connection to the API is busy answering; try again later";

async fn accept_pause(what: &str, e: std::io::Error) {
    tracing::warn!("the API on {what} cannot accept a connection: {e}");
    tokio::time::sleep(ACCEPT_PAUSE).await;
}

async fn serve_tcp(l: tokio::net::TcpListener, router: Router, what: String) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                accept_pause(&what, e).await;
                continue;
            }
        };
        let local = s.local_addr().ok();
        let Some(slot) = slots.admit() else {
            tokio::spawn(serve::refuse(s, 503, BUSY));
            continue;
        };
        tokio::spawn(serve::connection(s, router.clone(), slot, local));
    }
}

async fn serve_unix(l: tokio::net::UnixListener, router: Router, group: u32, what: String) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                accept_pause(&what, e).await;
                continue;
            }
        };
        match peer::caller(&s) {
            Ok(c) if c.may_use(group) => {}
            Ok(c) => {
                tracing::debug!("API socket: {}", peer::refusal(&c, group));
                tokio::spawn(async move { serve::refuse(s, 403, &peer::refusal(&c, group)).await });
                continue;
            }
            Err(e) => {
                tracing::warn!("API socket: cannot read the caller's credentials: {e}");
                continue;
            }
        }
        let Some(slot) = slots.admit() else {
            tokio::spawn(serve::refuse(s, 503, BUSY));
            continue;
        };
        tokio::spawn(serve::connection(s, router.clone(), slot, None));
    }
}

impl Server {
    /// Serves `tcp` on TCP listeners and `unix` on unix ones, to root and members of the group
    /// `Listeners::unix_group` only. Must be called within a tokio runtime. A listener tokio
    /// cannot take is logged and skipped.
    pub fn start(listeners: Listeners, tcp_router: Router, unix_router: Router) -> Server {
        let Listeners {
            tcp,
            unix,
            socket_file,
            unix_group,
            ..
        } = listeners;
        let mut tasks = Vec::new();
        for l in tcp {
            let what = match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "a TCP socket".into(),
            };
            match l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
            {
                Ok(l) => {
                    // Logged before the task runs, so the line precedes "picosnitch is monitoring".
                    tracing::info!("API listening on {what}");
                    tasks.push(tokio::spawn(serve_tcp(l, tcp_router.clone(), what)));
                }
                Err(e) => tracing::error!("cannot serve the API on {what}: {e}"),
            }
        }
        for l in unix {
            let path = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            let what = match path {
                Some(p) => format!("unix:{}", p.display()),
                None => "a unix socket".into(),
            };
            match l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(l))
            {
                Ok(l) => {
                    tracing::info!("API listening on {what}");
                    let r = unix_router.clone();
                    tasks.push(tokio::spawn(serve_unix(l, r, unix_group, what)));
                }
                Err(e) => tracing::error!("cannot serve the API on {what}: {e}"),
            }
        }
        Server {
            tasks,
            _socket_file: socket_file,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The routers of each kind of listener, from the same routes.
pub fn routers(app: Router) -> (Router, Router) {
    let unix = app.layer(axum::middleware::from_fn(super::origin::check));
    let tcp = unix
        .clone()
        .layer(axum::middleware::from_fn(super::host::check));
    (tcp, unix)
}
