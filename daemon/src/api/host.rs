//! host.rs: DNS-rebinding protection on every TCP listener: a request is answered only when its
//! `Host` (and absolute URI authority) names localhost, a loopback IP literal, the IP literal of
//! the local address the connection arrived on, or this machine's host name, each with an
//! optional port. A name an outsider's DNS could point at us is refused, so a web page cannot
//! reach the API through a name of its own, whatever address `[api] listen` binds (0.0.0.0
//! included).
use super::Problem;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// The local address a TCP connection arrived on, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// A Host value split into its name or IP literal (without brackets) and whether it was a
/// bracketed IPv6 literal; None when it is malformed.
fn split(h: &str) -> Option<(&str, bool)> {
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then_some((addr, true));
    }
    match h.split_once(':') {
        Some((host, port)) if is_port(port) => Some((host, false)),
        Some(_) => None,
        None => Some((h, false)),
    }
}

fn literal(host: &str, bracketed: bool) -> Option<IpAddr> {
    if bracketed {
        host.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, each with an optional port.
#[cfg(test)]
pub fn is_loopback_host(h: &str) -> bool {
    is_allowed_host(h, None, None)
}

/// A loopback name or literal, the literal of `local` (the address the request arrived on), or
/// `hostname`, each with an optional port.
pub fn is_allowed_host(h: &str, local: Option<IpAddr>, hostname: Option<&str>) -> bool {
    let Some((host, bracketed)) = split(h) else {
        return false;
    };
    if let Some(ip) = literal(host, bracketed) {
        return ip.is_loopback() || local.is_some_and(|l| l.to_canonical() == ip);
    }
    if bracketed {
        return false;
    }
    host.eq_ignore_ascii_case("localhost")
        || hostname.is_some_and(|n| !n.is_empty() && host.eq_ignore_ascii_case(n))
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// This machine's host name, as the kernel has it now.
fn hostname() -> Option<String> {
    let n = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(n.trim().to_string())
}

/// Middleware for TCP listeners.
pub async fn check(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    let authority = req.uri().authority().map(|a| a.as_str());
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0.ip());
    let refused = match (host, authority) {
        (None, None) => Some("a Host header is required".to_string()),
        (h, a) => {
            let name = hostname();
            [h, a]
                .into_iter()
                .flatten()
                .find(|h| !is_allowed_host(h, local, name.as_deref()))
                .map(|h| refusal(h, local, name.as_deref()))
        }
    };
    match refused {
        Some(msg) => Problem::new(StatusCode::FORBIDDEN, msg).into_response(),
        None => next.run(req).await,
    }
}

fn refusal(h: &str, local: Option<IpAddr>, hostname: Option<&str>) -> String {
    let shown: String = h.chars().take(64).collect();
    let mut allowed = "localhost, 127.0.0.1 or [::1]".to_string();
    if let Some(ip) = local.map(|l| l.to_canonical()).filter(|l| !l.is_loopback()) {
        allowed = match ip {
            IpAddr::V4(v4) => format!("{v4}, {allowed}"),
            IpAddr::V6(v6) => format!("[{v6}], {allowed}"),
        };
    }
    if let Some(n) = hostname.filter(|n| !n.is_empty()) {
        allowed = format!("{n}, {allowed}");
    }
    format!("Host {shown:?} is refused: this listener answers only requests for {allowed}")
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
            "[localhost]",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn wildcard_listeners_accept_our_own_address_and_name() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let name = Some("box");
        for (h, local) in [
            ("192.0.2.7:5100", v4),
            ("192.0.2.7", mapped),
            ("[2001:db8::7]:5100", v6),
            ("BOX:5100", v4),
            ("localhost:5100", v4),
            ("127.0.0.1", v6),
        ] {
            assert!(is_allowed_host(h, Some(local), name), "{h} on {local}");
        }
        for (h, local) in [
            ("192.0.2.8:5100", v4),
            ("[::ffff:192.0.2.7]", v4),
            ("2001:db8::7", v6),
            ("box.evil.example", v4),
            ("evil.example:5100", v4),
            ("0.0.0.0:5100", v4),
            ("[2001:db8::8]", v6),
        ] {
            assert!(!is_allowed_host(h, Some(local), name), "{h} on {local}");
        }
        assert!(!is_allowed_host("", Some(v4), Some("")));
        assert_eq!(
            refusal("evil.example", Some(v4), name),
            "Host \"evil.example\" is refused: this listener answers only requests for box, \
             192.0.2.7, localhost, 127.0.0.1 or [::1]"
        );
    }
}
