//! origin.rs: refuses requests a web page sent: a `Sec-Fetch-Site` other than `same-origin` or
//! `none` (a URL typed in the address bar), or an `Origin` that is not the API's own
//! (`http://` and the request's Host). A page of another site, or of another port on the same
//! machine, cannot make the daemon run queries; clients that send neither header (curl, the
//! command line, Prometheus) are not concerned.
use super::Problem;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why the request is refused, if it is.
pub fn refusal(headers: &HeaderMap) -> Option<String> {
    let text = |v: &axum::http::HeaderValue| -> String {
        v.to_str()
            .unwrap_or("(not text)")
            .chars()
            .take(64)
            .collect()
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = text(site);
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Some(format!(
                "cross-site request refused (Sec-Fetch-Site: {site}): the API answers only \
                 its own pages and clients that are not browsers"
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = host.map(|h| format!("http://{h}"));
    let same = match (origin.to_str(), own) {
        (Ok(o), Some(own)) => o.eq_ignore_ascii_case(&own),
        _ => false,
    };
    (!same).then(|| {
        format!(
            "cross-origin request refused (Origin: {}): the API answers only requests from \
             its own origin",
            text(origin)
        )
    })
}

/// Middleware for every listener.
pub async fn check(req: Request, next: Next) -> Response {
    match refusal(req.headers()) {
        Some(msg) => Problem::new(StatusCode::FORBIDDEN, msg).into_response(),
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_same_origin_and_non_browsers() {
        for ok in [
            &[][..],
            &[("host", "127.0.0.1:5100")],
            &[
                ("sec-fetch-site", "same-origin"),
                ("host", "localhost:5100"),
            ],
            &[("sec-fetch-site", "none")],
            &[
                ("origin", "http://localhost:5100"),
                ("host", "LOCALHOST:5100"),
            ],
        ] {
            assert_eq!(refusal(&headers(ok)), None, "{ok:?}");
        }
        for (bad, why) in [
            (
                &[("sec-fetch-site", "cross-site")][..],
                "Sec-Fetch-Site: cross-site",
            ),
            (
                &[("sec-fetch-site", "same-site")],
                "Sec-Fetch-Site: same-site",
            ),
            (
                &[
                    ("origin", "http://evil.example"),
                    ("host", "127.0.0.1:5100"),
                ],
                "Origin: http://evil.example",
            ),
            (
                &[
                    ("origin", "http://localhost:8080"),
                    ("host", "localhost:5100"),
                ],
                "Origin: http://localhost:8080",
            ),
            (
                &[("origin", "null"), ("host", "localhost:5100")],
                "Origin: null",
            ),
            (
                &[("origin", "http://localhost:5100")],
                "Origin: http://localhost:5100",
            ),
        ] {
            let r = refusal(&headers(bad)).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(r.contains(why), "{r}");
        }
    }
}
