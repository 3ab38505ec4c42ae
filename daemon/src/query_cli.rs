//! query_cli.rs: `picosnitch query`: the API's aggregate over a time range, checked the same way,
//! printed as a table, JSON or CSV straight from a read-only connection to the database.
use crate::api::geo;
use crate::api::query::Aggregate;
use crate::cli_args::{Rows, Short};
use crate::sink::now_unix;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dimensions to group by, comma-separated (exe, name, sha256, domain, raddr, rport, uid,
    /// container, day, hour, country, asn, …); none: one total.
    #[arg(long, default_value = "exe")]
    pub by: String,
    #[command(flatten)]
    pub rows: Rows,
    /// Sort by bytes, send, recv, events or key.
    #[arg(long, default_value = "bytes")]
    pub order: String,
    /// Groups printed at most (up to 10000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub short: Short,
    /// Configuration file naming the GeoIP databases (default: /etc/picosnitch/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The query string the API would be given for these arguments.
fn query_string(a: &Args, now: i64) -> Result<String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if !a.by.is_empty() {
        q.append_pair("by", &a.by);
    }
    q.append_pair("order", &a.order);
    q.append_pair("limit", &a.limit.to_string());
    a.rows.append_to(&mut q, now)?;
    Ok(q.finish())
}

pub fn run(a: Args) -> Result<()> {
    let now = now_unix();
    let raw = query_string(&a, now)?;
    let agg = Aggregate::from_query(Some(&raw), now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let geo = crate::cli_args::geo_lookup(a.config.clone())?;
    geo::require(&agg.by, geo.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = a.rows.db();
    let conn = crate::api::db::open(&db)?;
    let out = agg
        .run(
            &conn,
            geo.as_ref(),
            &mut crate::api::budget::Budget::unlimited(),
        )
        .context("query failed")?;
    let mut columns: Vec<String> = Vec::new();
    for d in &agg.by {
        let extra = if geo.is_some() {
            geo_columns(d.name)
        } else {
            &[]
        };
        for c in std::iter::once(d.name).chain(extra.iter().copied()) {
            if !columns.iter().any(|have| have == c) {
                columns.push(c.to_string());
            }
        }
    }
    columns.extend(["send", "recv", "events"].map(String::from));
    let rows: Vec<Value> = out["rows"]
        .as_array()
        .map(|r| r.iter().map(flatten_geo).collect())
        .unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let format = a.short.pick(Format::Json, Format::Csv, a.format);
    match format {
        Format::Json => writeln!(stdout, "{out}")?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(stdout);
            w.write_record(&columns)?;
            for r in &rows {
                w.write_record(columns.iter().map(|c| cell(&r[c])))?;
            }
            w.flush()?;
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| columns.iter().map(|c| cell(&r[c])).collect())
                .collect();
            let width = |i: usize| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([columns[i].len()])
                    .max()
                    .unwrap_or(0)
            };
            let widths: Vec<usize> = (0..columns.len()).map(width).collect();
            let line = |vals: &[String]| {
                vals.iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            writeln!(stdout, "{}", line(&columns))?;
            for r in &cells {
                writeln!(stdout, "{}", line(r))?;
            }
            if out["truncated"].as_bool() == Some(true) {
                writeln!(stdout, "(more groups than --limit {})", a.limit)?;
            }
        }
    }
    Ok(())
}

/// Table and CSV columns that follow a dimension when GeoIP databases are in use.
fn geo_columns(dim: &str) -> &'static [&'static str] {
    match dim {
        "raddr" => &["country", "city", "asn", "as_org"],
        "country" => &["country_name"],
        "asn" => &["as_org"],
        _ => &[],
    }
}

/// A row with its `geo` object's fields moved up, for the table and CSV columns.
fn flatten_geo(row: &Value) -> Value {
    let mut row = row.clone();
    if let Some(obj) = row.as_object_mut() {
        if let Some(Value::Object(geo)) = obj.remove("geo") {
            for (k, v) in geo {
                obj.entry(k).or_insert(v);
            }
        }
    }
    row
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let a = Args {
            by: "exe,domain".into(),
            rows: Rows {
                from: Some("1h".into()),
                filters: vec!["exe=/usr/bin/a b&c".into()],
                ..Rows::default()
            },
            order: "bytes".into(),
            limit: 5,
            format: Format::Table,
            short: Short::default(),
            config: None,
        };
        let q = query_string(&a, 7200).unwrap();
        assert_eq!(
            q,
            "by=exe%2Cdomain&order=bytes&limit=5&from=3600&exe=%2Fusr%2Fbin%2Fa+b%26c"
        );
        assert!(Aggregate::from_query(Some(&q), 7200).is_ok());
        let bad = Args {
            rows: Rows {
                filters: vec!["exe".into()],
                ..Rows::default()
            },
            ..a
        };
        assert!(query_string(&bad, 0).is_err());
    }
}
