//! api: the read-only HTTP API of the query side (JSON endpoints, the live event feed and
//! /metrics), served on TCP and unix listeners from read-only database connections.
//!
//! - `listen.rs`, `serve.rs`, `conns.rs`: accepting and serving connections, a bounded number per
//!   listener, each with a header deadline.
//! - `peer.rs`: who may use the unix socket (SO_PEERCRED, SO_PEERGROUPS).
//! - `host.rs`, `origin.rs`: Host check on TCP listeners (DNS rebinding), cross-site refusal.
//! - `params.rs`, `dims.rs`: query-string checking and the dimension whitelist.
//! - `query.rs`, `exe.rs`: parameterised SQL for aggregates, distinct values, losses, drill-down.
//! - `export.rs`: every row of a range, resolved and streamed (`picosnitch export`).
//! - `db.rs`: read-only connections in the blocking pool, bounded in time and in waiting queries.
//! - `budget.rs`: the bytes an answer may take while it is built.
//! - `feed.rs`, `events.rs`: what the writer publishes after each commit, and its live feed.
//! - `geo.rs`: what the GeoIP databases say of remote addresses, and grouping by it.
//! - `metrics.rs`, `status.rs`: counters and facts, as Prometheus text and as JSON.
pub mod budget;
mod conns;
pub mod db;
mod dims;
mod events;
mod exe;
pub mod export;
mod feed;
pub mod geo;
mod handlers;
mod host;
mod listen;
mod metrics;
mod origin;
pub mod params;
mod peer;
pub mod query;
mod serve;
mod status;
#[cfg(test)]
mod tests;

pub use feed::Feed;
pub use listen::Server;
pub use status::Info;

use crate::geoip::Shared;
use crate::service::listen::Listeners;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use db::{QueryError, Reader};
use params::BadRequest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest a query may run before it is stopped.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct ApiState {
    reader: Arc<Reader>,
    feed: Feed,
    info: Info,
    geo: Arc<Shared>,
}

/// An error answer: a status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    message: String,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

impl From<BadRequest> for Problem {
    fn from(e: BadRequest) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, e.0)
    }
}

impl From<QueryError> for Problem {
    fn from(e: QueryError) -> Problem {
        let status = match e {
            QueryError::Timeout(_) | QueryError::Cancelled | QueryError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::TooLarge(_) => StatusCode::BAD_REQUEST,
            QueryError::Open { .. } | QueryError::Sql(_) => {
                tracing::error!("API query failed: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Problem::new(status, e.to_string())
    }
}

/// The routes of TCP listeners (cross-site refusal and Host check) and of unix ones (cross-site
/// refusal).
fn routers(state: Arc<ApiState>) -> (Router, Router) {
    let app = Router::new()
        .route("/api/v1/aggregate", get(handlers::aggregate))
        .route("/api/v1/distinct", get(handlers::distinct))
        .route("/api/v1/exe", get(handlers::exe))
        .route("/api/v1/losses", get(handlers::losses))
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/events", get(events::events))
        .route("/metrics", get(handlers::metrics))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state);
    listen::routers(app)
}

/// Serves the API on `listeners` from read-only connections to the database at `db`, with the
/// GeoIP databases of `geo`. Must be called within a tokio runtime.
pub fn start(
    listeners: Listeners,
    db: PathBuf,
    feed: Feed,
    info: Info,
    geo: Arc<Shared>,
) -> Server {
    let state = Arc::new(ApiState {
        reader: Arc::new(Reader::new(db, QUERY_TIMEOUT)),
        feed,
        info,
        geo,
    });
    let (tcp, unix) = routers(state);
    Server::start(listeners, tcp, unix)
}
