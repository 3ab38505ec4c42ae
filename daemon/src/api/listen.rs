//! listen.rs: the HTTP server tasks serving the API on the listeners `service::listen` hands
//! over (activated by systemd or bound by the daemon), with the Host check on loopback TCP ones.
use crate::service::listen::{Listeners, SocketFile};
use axum::Router;
use std::path::Path;
use tokio::task::JoinHandle;

/// The running HTTP server; dropping it stops serving (and removes a socket file bound by the
/// daemon, which it keeps until then).
pub struct Server {
    tasks: Vec<JoinHandle<()>>,
    _socket_file: Option<SocketFile>,
}

fn spawn<L>(listener: L, router: Router, what: String) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // Logged before the task runs, so the line precedes "picosnitch is monitoring".
    tracing::info!("API listening on {what}");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the API on {what} stopped: {e}");
        }
    })
}

impl Server {
    /// Serves `app` on every listener, `host_checked` on TCP ones bound to a loopback address.
    /// Must be called within a tokio runtime. A listener tokio cannot take is logged and skipped.
    pub fn start(listeners: Listeners, app: Router, host_checked: Router) -> Server {
        let Listeners {
            tcp,
            unix,
            socket_file,
            ..
        } = listeners;
        let mut tasks = Vec::new();
        for l in tcp {
            let addr = l.local_addr();
            let what = match &addr {
                Ok(a) => format!("http://{a}"),
                Err(_) => "a TCP socket".into(),
            };
            let router = if addr.is_ok_and(|a| a.ip().is_loopback()) {
                host_checked.clone()
            } else {
                app.clone()
            };
            match l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
            {
                Ok(l) => tasks.push(spawn(l, router, what)),
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
                Ok(l) => tasks.push(spawn(l, app.clone(), what)),
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
