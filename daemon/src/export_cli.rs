//! export_cli.rs: `picosnitch export`: the stored rows of a time range, one line each with every
//! column resolved, as CSV or JSON lines, streamed in time order from a read-only connection.
use crate::api::export::{Export, Row, COLUMNS};
use crate::cli_args::{Rows, Short};
use crate::geoip::{Geo, Memo};
use crate::sink::now_unix;
use anyhow::{anyhow, Result};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header line, then one record per row.
    Csv,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub rows: Rows,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    #[command(flatten)]
    pub short: Short,
    /// Configuration file naming the GeoIP databases (default: /etc/picosnitch/config.toml);
    /// with one, rows say where their remote address is.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Columns added after [`COLUMNS`] when GeoIP databases are in use (about the remote address).
const GEO_COLUMNS: [&str; 5] = ["country", "country_name", "city", "asn", "as_org"];

/// A JSON line: the row, and with GeoIP databases what they know of its remote address.
#[derive(serde::Serialize)]
struct WithGeo<'a> {
    #[serde(flatten)]
    row: &'a Row,
    #[serde(skip_serializing_if = "Option::is_none")]
    geo: Option<Option<Geo>>,
}

/// Why writing stopped: the reader went away (not an error) or something failed.
enum Stop {
    Closed,
    Failed(anyhow::Error),
}

impl From<rusqlite::Error> for Stop {
    fn from(e: rusqlite::Error) -> Self {
        Stop::Failed(anyhow::Error::new(e).context("reading the rows failed"))
    }
}

fn io(e: std::io::Error) -> Stop {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Stop::Closed
    } else {
        Stop::Failed(anyhow::Error::new(e).context("writing the rows failed"))
    }
}

fn csv_err(e: csv::Error) -> Stop {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => io(e),
        other => Stop::Failed(anyhow!("writing the rows failed: {other:?}")),
    }
}

/// The export these arguments ask for, checked as the API checks its parameters.
fn export(a: &Args, now: i64) -> Result<Export> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    a.rows.append_to(&mut q, now)?;
    Export::from_query(Some(&q.finish()), now).map_err(|e| anyhow!("{e}"))
}

pub fn run(a: Args) -> Result<()> {
    let export = export(&a, now_unix())?;
    let lookup = crate::cli_args::geo_lookup(a.config.clone())?;
    let mut geo = Memo::new(lookup.as_ref());
    let db = a.rows.db();
    let conn = crate::api::db::open(&db)?;
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let format = a.short.pick(Format::Json, Format::Csv, a.format);
    let result = match format {
        Format::Csv => {
            // The header is written here, so that an empty range still has one.
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            let header: &[&str] = if lookup.is_some() { &GEO_COLUMNS } else { &[] };
            w.write_record(COLUMNS.iter().chain(header))
                .map_err(csv_err)
                .and_then(|()| {
                    export.for_each(&conn, |r| {
                        if lookup.is_some() {
                            // Five empty cells for an address the databases do not know.
                            let g = geo.get(&r.raddr).cloned().unwrap_or_default();
                            w.serialize((&r, &g)).map_err(csv_err)
                        } else {
                            w.serialize(&r).map_err(csv_err)
                        }
                    })
                })
                .and_then(|()| w.flush().map_err(io))
        }
        Format::Json => {
            let mut w = out;
            export
                .for_each(&conn, |r| {
                    let located = lookup.is_some().then(|| geo.get(&r.raddr).cloned());
                    let line = WithGeo {
                        row: &r,
                        geo: located,
                    };
                    serde_json::to_writer(&mut w, &line)
                        .map_err(|e| Stop::Failed(anyhow!("writing the rows failed: {e}")))?;
                    w.write_all(b"\n").map_err(io)
                })
                .and_then(|()| w.flush().map_err(io))
        }
    };
    match result {
        Ok(()) | Err(Stop::Closed) => Ok(()),
        Err(Stop::Failed(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_a_checked_export() {
        let a = Args {
            rows: Rows {
                from: Some("2h".into()),
                to: Some("1h".into()),
                filters: vec!["exe=/usr/bin/a b&c".into(), "uid=1000".into()],
                db: None,
            },
            format: Format::Csv,
            short: Short::default(),
            config: None,
        };
        let e = export(&a, 10_000).unwrap();
        assert_eq!((e.range.from, e.range.to), (10_000 - 7200, 10_000 - 3600));
        assert_eq!(e.filters.len(), 2);
        for (filters, says) in [
            (vec!["colour=red"], "unknown parameter \"colour\""),
            (vec!["uid=me"], "is not an integer"),
            (vec!["exe"], "expected DIM=VALUE"),
        ] {
            let mut bad = a.clone();
            bad.rows.filters = filters.into_iter().map(String::from).collect();
            let err = format!("{:#}", export(&bad, 10_000).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }
}
