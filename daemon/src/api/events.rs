//! events.rs: `GET /api/v1/events`, the live feed of rows and loss reports as they are written,
//! as Server-Sent Events (default) or JSON lines (`?format=jsonl`).
use super::feed::Batch;
use super::params::{Extra, Params};
use super::{ApiState, Problem};
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::{error::RecvError, Receiver};

/// Most clients following the feed at once.
pub const MAX_SUBSCRIBERS: usize = 64;

/// What a subscriber receives: a committed batch, or how many batches it missed.
enum Item {
    Batch(Batch),
    Lagged(u64),
}

fn items(rx: Receiver<Batch>) -> impl Stream<Item = Item> {
    stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(b) => Some((Item::Batch(b), rx)),
            Err(RecvError::Lagged(n)) => Some((Item::Lagged(n), rx)),
            Err(RecvError::Closed) => None,
        }
    })
}

fn lagged_json(n: u64) -> String {
    format!("{{\"kind\":\"lagged\",\"missed_batches\":{n}}}")
}

pub async fn events(
    State(st): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    let p = Params::parse(q.as_deref(), &["format"], Extra::Nothing)?;
    let format = p.choice("format", &["sse", "jsonl"])?;
    if st.feed.subscribers() >= MAX_SUBSCRIBERS {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_SUBSCRIBERS} clients already follow the event feed"),
        ));
    }
    // Subscribed before the answer starts: every commit after the headers is delivered.
    let rx = st.feed.subscribe();
    if format == "jsonl" {
        let body = items(rx).map(|item| {
            let mut text = String::new();
            match item {
                Item::Batch(b) => {
                    for e in b.iter() {
                        text.push_str(&e.json);
                        text.push('\n');
                    }
                }
                Item::Lagged(n) => {
                    text.push_str(&lagged_json(n));
                    text.push('\n');
                }
            }
            Ok::<_, Infallible>(Bytes::from(text))
        });
        return Ok((
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Body::from_stream(body),
        )
            .into_response());
    }
    let events = items(rx).flat_map(|item| {
        let events: Vec<Result<Event, Infallible>> = match item {
            Item::Batch(b) => b
                .iter()
                .map(|e| Ok(Event::default().event(e.kind).data(&e.json)))
                .collect(),
            Item::Lagged(n) => vec![Ok(Event::default().event("lagged").data(lagged_json(n)))],
        };
        stream::iter(events)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
