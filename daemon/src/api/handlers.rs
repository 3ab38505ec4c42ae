//! handlers.rs: the JSON endpoints and /metrics: parameters checked first (400 naming the
//! problem), then one query on a read-only connection, answered as JSON or Prometheus text.
use super::budget::Budget;
use super::exe::{self, Selector};
use super::params::{BadRequest, Extra, Params};
use super::query::{self, Aggregate, Distinct};
use super::{geo, metrics, status, ApiState, Problem};
use crate::sink::now_unix;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

type Answer = Result<Json<Value>, Problem>;

fn dim_names(dims: &[&super::dims::Dim]) -> Vec<&'static str> {
    dims.iter().map(|d| d.name).collect()
}

/// `GET /api/v1/aggregate?by=exe,domain&from&to&limit&order` plus filters.
pub async fn aggregate(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Answer {
    let agg = Aggregate::from_query(q.as_deref(), now_unix())?;
    let lookup = st.geo.get();
    geo::require(&agg.by, lookup.as_deref())?;
    let head = json!({
        "from": agg.range.from,
        "to": agg.range.to,
        "by": dim_names(&agg.by),
    });
    let mut out = st
        .reader
        .run(move |c| agg.run(c, lookup.as_deref(), &mut Budget::answer()))
        .await?;
    merge(&mut out, head);
    Ok(Json(out))
}

/// `GET /api/v1/distinct?dim=X&from&to&limit` plus filters.
pub async fn distinct(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["dim", "from", "to", "limit"],
        Extra::Filters,
    )?;
    let d = Distinct {
        dim: p.dim("dim")?,
        range: p.range(now_unix())?,
        filters: p.filters()?,
        limit: p.limit(1000)?,
    };
    let head = json!({ "from": d.range.from, "to": d.range.to, "dim": d.dim.name });
    let lookup = st.geo.get();
    geo::require(&[d.dim], lookup.as_deref())?;
    let mut out = st
        .reader
        .run(move |c| d.run(c, lookup.as_deref(), &mut Budget::answer()))
        .await?;
    merge(&mut out, head);
    Ok(Json(out))
}

/// `GET /api/v1/exe?exe=PATH` or `?sha256=H`, with `from`, `to` and `limit` (top lists).
pub async fn exe(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["exe", "sha256", "from", "to", "limit"],
        Extra::Nothing,
    )?;
    let sel = match (p.get("exe"), p.get("sha256")) {
        (Some(e), None) if !e.is_empty() => Selector::Exe(e.to_owned()),
        (None, Some(h)) if !h.is_empty() => Selector::Sha256(h.to_owned()),
        _ => {
            return Err(BadRequest(
                "give exactly one of the parameters exe (a path) and sha256, not empty".into(),
            )
            .into())
        }
    };
    let range = p.range(now_unix())?;
    let limit = p.limit(10)?;
    let wanted = sel.clone();
    let lookup = st.geo.get();
    let out = st
        .reader
        .run(move |c| exe::drill(c, &wanted, range, limit, lookup.as_deref()))
        .await?;
    out.map(Json).ok_or_else(|| {
        let what = match &sel {
            Selector::Exe(e) => format!("executable {e:?}"),
            Selector::Sha256(h) => format!("sha256 {h:?}"),
        };
        Problem::new(StatusCode::NOT_FOUND, format!("{what} was never recorded"))
    })
}

/// `GET /api/v1/losses?from&to&limit`.
pub async fn losses(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(q.as_deref(), &["from", "to", "limit"], Extra::Nothing)?;
    let range = p.range(now_unix())?;
    let limit = p.limit(100)?;
    let mut out = st
        .reader
        .run(move |c| Ok(query::losses(c, range, limit)?))
        .await?;
    merge(&mut out, json!({ "from": range.from, "to": range.to }));
    Ok(Json(out))
}

/// `GET /api/v1/status`.
pub async fn status(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Answer {
    Params::parse(q.as_deref(), &[], Extra::Nothing)?;
    let database = st.reader.run(|c| Ok(status::database(c)?)).await?;
    let snap = st.feed.metrics().snapshot();
    Ok(Json(status::status(
        &st.info,
        &snap,
        st.feed.subscribers(),
        database,
        st.geo.get().as_deref(),
        now_unix(),
    )))
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(
    State(st): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Problem> {
    Params::parse(q.as_deref(), &[], Extra::Nothing)?;
    let snap = st.feed.metrics().snapshot();
    let text = metrics::render(&snap, &st.info, st.feed.subscribers(), now_unix());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn merge(out: &mut Value, head: Value) {
    if let (Value::Object(o), Value::Object(h)) = (out, head) {
        for (k, v) in h {
            o.insert(k, v);
        }
    }
}
