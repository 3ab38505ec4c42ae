//! serve.rs: one HTTP/1.1 connection: hyper with a deadline for each request's header (an idle
//! keep-alive connection is closed when it passes), a bounded header buffer, the connection
//! marked busy from a request's arrival until its answer is sent whole, and closed early when a
//! newer connection needs its place. Also the short answer to a connection refused before any
//! request is read.
use super::conns::{Busy, Slot};
use super::host::LocalAddr;
use axum::body::{Body, Bytes};
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

/// Longest a client may take to send a request's header, and longest a keep-alive connection
/// may wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes buffered for one connection's request header (hyper's read buffer).
pub const MAX_HEADER_BUFFER: usize = 64 * 1024;
/// Longest the short answer of a refused connection may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// An answer's body that keeps its connection busy until it is sent whole (or dropped).
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `io` until the client closes, a deadline passes or `slot` is evicted.
pub async fn connection<I>(io: I, router: Router, slot: Slot, local: Option<SocketAddr>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = std::sync::Arc::new(slot);
    let marks = slot.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = marks.busy();
        if let Some(a) = local {
            req.extensions_mut().insert(LocalAddr(a));
        }
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(resp.map(|inner| Body::new(Guarded { inner, _busy: busy })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("API connection ended: {e}");
            }
        }
        () = slot.evicted() => {}
    }
}

/// Answers `status` with `{"error": message}` and closes, without parsing the request (what
/// the client sent is read and dropped for a moment, so that closing does not reset the
/// connection before the client reads the answer).
pub async fn refuse<I>(mut io: I, status: u16, message: &str)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let body = serde_json::json!({ "error": message }).to_string();
    let reason = match status {
        403 => "Forbidden",
        _ => "Service Unavailable",
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        io.write_all(text.as_bytes()).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = MAX_HEADER_BUFFER;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write).await;
}
