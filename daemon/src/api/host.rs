//! host.rs: DNS-rebinding protection for listeners bound to a loopback address: a request whose
//! `Host` (or absolute URI authority) is not localhost or a loopback IP literal is refused.
use super::Problem;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// `localhost`, `127.x.y.z` or `[::1]`, each with an optional port.
pub fn is_loopback_host(h: &str) -> bool {
    let host = if let Some(rest) = h.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    } else {
        match h.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => h,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Middleware for loopback TCP listeners.
pub async fn check(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    let authority = req.uri().authority().map(|a| a.as_str());
    let refused = match (host, authority) {
        (None, None) => Some("a Host header is required".to_string()),
        (h, a) => [h, a]
            .into_iter()
            .flatten()
            .find(|h| !is_loopback_host(h))
            .map(|h| {
                let shown: String = h.chars().take(64).collect();
                format!(
                    "Host {shown:?} is refused: this listener answers only requests for \
                     localhost, 127.0.0.1 or [::1]"
                )
            }),
    };
    match refused {
        Some(msg) => Problem::new(StatusCode::FORBIDDEN, msg).into_response(),
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_only() {
        for ok in [
            "localhost",
            "LocalHost:5100",
            "127.0.0.1",
            "127.0.0.1:5100",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5100",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:5100",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:5100",
            "::1",
            "[::1]x",
            "[::2]:5100",
            "[::ffff:127.0.0.1]",
            "127.0.0.1:",
            "127.0.0.1:5100:1",
            "localhost:http",
            "0.0.0.0:5100",
            "127.0.0.1 ",
            "[::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
