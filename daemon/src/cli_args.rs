//! cli_args.rs: what `query` and `export` read the same way: times (unix seconds or a time ago)
//! and `--where DIM=VALUE` filters, added to the query string the API would be given, and the
//! database they are read from, and the GeoIP databases of the configuration.
use crate::geoip::{GeoError, Lookup};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Which stored rows a verb reads: the time range, the filters and the database.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Rows {
    /// Start: unix seconds, or a time ago like 30m, 12h, 7d (default: a day before --to).
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): unix seconds or a time ago (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only rows where DIM equals VALUE (repeatable), e.g. --where exe=/usr/bin/curl.
    #[arg(long = "where", value_name = "DIM=VALUE")]
    pub filters: Vec<String>,
    /// Database (default: /var/lib/picosnitch/picosnitch.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// `--json` and `--csv`, short for `--format json` and `--format csv` (the verb's own option).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Short {
    /// Short for --format json.
    #[arg(long, conflicts_with_all = ["format", "csv"])]
    pub json: bool,
    /// Short for --format csv.
    #[arg(long, conflicts_with = "format")]
    pub csv: bool,
}

impl Short {
    /// `json` or `csv` when a flag asks for it, `given` otherwise.
    pub fn pick<F>(self, json: F, csv: F, given: F) -> F {
        if self.json {
            json
        } else if self.csv {
            csv
        } else {
            given
        }
    }
}

/// The GeoIP databases of the configuration file given (or the default one), if any can be
/// opened; a database that exists but cannot be read is a note on stderr.
pub fn geo_lookup(config: Option<PathBuf>) -> Result<Option<Lookup>> {
    let databases = crate::geoip::configured(config)?;
    let (lookup, skipped) = Lookup::open_all(&databases);
    for e in skipped {
        if matches!(e, GeoError::Open { .. }) {
            eprintln!("picosnitch: {e}");
        }
    }
    Ok(lookup)
}

impl Rows {
    /// Appends this range and these filters to `q`, as [`range_and_filters`] does.
    pub fn append_to(&self, q: &mut form_urlencoded::Serializer<String>, now: i64) -> Result<()> {
        range_and_filters(
            q,
            self.from.as_deref(),
            self.to.as_deref(),
            &self.filters,
            now,
        )
    }

    /// The database given, or the daemon's.
    pub fn db(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| crate::paths::Paths::from_env().db)
    }
}

/// A time argument: unix seconds, or a duration ago (`90s`, `30m`, `12h`, `7d`, `2w`).
pub fn time_arg(s: &str, now: i64) -> Result<i64> {
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("{s:?} is not unix seconds or a time ago like 12h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("{s:?}: unit {unit:?} is not one of s, m, h, d, w"),
    };
    Ok(now - n.saturating_mul(secs))
}

/// Appends `from`, `to` (as unix seconds) and one pair per `--where DIM=VALUE` to `q`.
pub fn range_and_filters(
    q: &mut form_urlencoded::Serializer<String>,
    from: Option<&str>,
    to: Option<&str>,
    filters: &[String],
    now: i64,
) -> Result<()> {
    if let Some(f) = from {
        q.append_pair("from", &time_arg(f, now).context("--from")?.to_string());
    }
    if let Some(t) = to {
        q.append_pair("to", &time_arg(t, now).context("--to")?.to_string());
    }
    for f in filters {
        let Some((dim, value)) = f.split_once('=') else {
            bail!("--where {f:?}: expected DIM=VALUE");
        };
        q.append_pair(dim, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_filters() {
        assert_eq!(time_arg("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(time_arg("2h", 10_000).unwrap(), 10_000 - 7200);
        assert_eq!(time_arg("7d", 1_000_000).unwrap(), 1_000_000 - 604_800);
        assert!(time_arg("2y", 0).is_err());
        assert!(time_arg("soon", 0).is_err());
        let mut q = form_urlencoded::Serializer::new(String::new());
        range_and_filters(&mut q, Some("1h"), Some("100"), &["exe=a=b".into()], 7200).unwrap();
        assert_eq!(q.finish(), "from=3600&to=100&exe=a%3Db");
        let mut q = form_urlencoded::Serializer::new(String::new());
        let e = range_and_filters(&mut q, None, None, &["exe".into()], 0).unwrap_err();
        assert!(e.to_string().contains("expected DIM=VALUE"), "{e}");
        let e = range_and_filters(&mut q, Some("soon"), None, &[], 0).unwrap_err();
        assert!(format!("{e:#}").starts_with("--from: \"soon\""), "{e:#}");
    }
}
