//! params.rs: the query string of an API request, checked against what the endpoint accepts and
//! turned into typed values (time range, limit, dimensions, filters); every error names the
//! parameter and what is allowed.
use super::dims::{self, Dim};

/// The longest time range a query may cover.
pub const MAX_RANGE_DAYS: i64 = 400;
/// The range used when `from` is not given: the last day before `to`.
pub const DEFAULT_RANGE_SECONDS: i64 = 86_400;
/// The most rows one answer may hold.
pub const MAX_LIMIT: u32 = 10_000;
/// Longest accepted parameter value (paths and command lines included).
const MAX_VALUE_BYTES: usize = 4096;
/// Most parameters in one request.
const MAX_PARAMS: usize = 32;
/// Largest accepted unix time (year 5138): keeps every sum of times far from overflowing.
const MAX_TIME: i64 = 1 << 37;

/// A request the API refuses; the text says which parameter and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad<T>(msg: String) -> Result<T, BadRequest> {
    Err(BadRequest(msg))
}

/// A parsed query string whose parameter names were all accepted.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// What an endpoint accepts besides its fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    Nothing,
    /// Any filterable dimension name, as an equality filter (`exe=/usr/bin/curl`).
    Filters,
}

impl Params {
    /// Parses `raw` (the part after `?`), refusing unknown and repeated names.
    pub fn parse(raw: Option<&str>, fixed: &[&str], extra: Extra) -> Result<Params, BadRequest> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if pairs.len() == MAX_PARAMS {
                return bad(format!("more than {MAX_PARAMS} parameters"));
            }
            let known = fixed.contains(&k.as_ref())
                || (extra == Extra::Filters && dims::find(&k).is_some_and(|d| d.filter.is_some()));
            if !known {
                let mut list = fixed.join(", ");
                if extra == Extra::Filters {
                    let f: Vec<&str> = dims::filterable().map(|d| d.name).collect();
                    list = format!("{list}, and filters on {}", f.join(", "));
                }
                return bad(format!(
                    "unknown parameter {:?}; this endpoint accepts {list}",
                    truncate(&k)
                ));
            }
            if pairs.iter().any(|(n, _)| *n == k) {
                return bad(format!("parameter {k} is given more than once"));
            }
            if v.len() > MAX_VALUE_BYTES {
                return bad(format!(
                    "parameter {k} is longer than {MAX_VALUE_BYTES} bytes"
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`, if given.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, BadRequest> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => bad(format!(
                "parameter {name} = {:?} is not an integer from {min} to {max}",
                truncate(v)
            )),
        }
    }

    /// `limit`, default `default`, at most [`MAX_LIMIT`].
    pub fn limit(&self, default: u32) -> Result<u32, BadRequest> {
        Ok(self
            .int("limit", 1, i64::from(MAX_LIMIT))?
            .map_or(default, |n| n as u32))
    }

    /// `from` and `to` (unix seconds, rows with `from <= contime < to`); `to` defaults to just
    /// after `now`, `from` to a day before `to`.
    pub fn range(&self, now: i64) -> Result<Range, BadRequest> {
        let to = self.int("to", 0, MAX_TIME)?.unwrap_or(now + 1);
        let from = self
            .int("from", 0, MAX_TIME)?
            .unwrap_or((to - DEFAULT_RANGE_SECONDS).max(0));
        if from >= to {
            return bad(format!("parameter from = {from} is not before to = {to}"));
        }
        if to - from > MAX_RANGE_DAYS * 86_400 {
            return bad(format!(
                "parameters from and to span {} days; a query covers at most {MAX_RANGE_DAYS} days",
                (to - from + 86_399) / 86_400
            ));
        }
        Ok(Range { from, to })
    }

    /// The equality filters given (parameters named after a filterable dimension), checked.
    pub fn filters(&self) -> Result<Vec<Filter>, BadRequest> {
        let mut out = Vec::new();
        for (k, v) in &self.pairs {
            let Some(dim) = dims::find(k) else { continue };
            if dim.filter.is_none() {
                continue;
            }
            out.push(Filter::new(dim, v)?);
        }
        Ok(out)
    }

    /// A comma-separated list of dimensions from `name`; empty if not given.
    pub fn dims(&self, name: &str) -> Result<Vec<&'static Dim>, BadRequest> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<&'static Dim> = Vec::new();
        for part in v.split(',') {
            let Some(d) = dims::find(part) else {
                return bad(format!(
                    "parameter {name}: {:?} is not a dimension; use {}",
                    truncate(part),
                    dims::names()
                ));
            };
            if out.iter().any(|o| o.name == d.name) {
                return bad(format!("parameter {name} names {} twice", d.name));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// One dimension from `name`, required.
    pub fn dim(&self, name: &str) -> Result<&'static Dim, BadRequest> {
        match self.dims(name)?.as_slice() {
            [d] => Ok(d),
            [] => bad(format!(
                "parameter {name} is required: one of {}",
                dims::names()
            )),
            _ => bad(format!("parameter {name} takes one dimension")),
        }
    }

    /// A parameter whose value must be one of `allowed`; `allowed[0]` when not given.
    pub fn choice(&self, name: &str, allowed: &[&'static str]) -> Result<&'static str, BadRequest> {
        match self.get(name) {
            None => Ok(allowed[0]),
            Some(v) => allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
                BadRequest(format!(
                    "parameter {name} = {:?} is not one of {}",
                    truncate(v),
                    allowed.join(", ")
                ))
            }),
        }
    }
}

/// A time range in unix seconds, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// An equality filter on one dimension, its value already typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub dim: &'static Dim,
    pub value: rusqlite::types::Value,
}

impl Filter {
    pub fn new(dim: &'static Dim, v: &str) -> Result<Filter, BadRequest> {
        use rusqlite::types::Value;
        let value = if dim.numeric {
            match v.parse::<i64>() {
                Ok(n) => Value::Integer(n),
                Err(_) => {
                    return bad(format!(
                        "parameter {} = {:?} is not an integer",
                        dim.name,
                        truncate(v)
                    ))
                }
            }
        } else {
            Value::Text(v.to_owned())
        };
        Ok(Filter { dim, value })
    }
}

/// Quotes at most 64 characters of user input in error messages.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str, fixed: &[&str]) -> Result<Params, BadRequest> {
        Params::parse(Some(q), fixed, Extra::Filters)
    }

    #[test]
    fn unknown_and_repeated_names_are_refused() {
        let e = p("by=exe&bogus=1", &["by"]).unwrap_err().0;
        assert!(e.contains("unknown parameter \"bogus\""), "{e}");
        assert!(e.contains("accepts by, and filters on exe"), "{e}");
        let e = p("by=exe&by=uid", &["by"]).unwrap_err().0;
        assert!(e.contains("by is given more than once"), "{e}");
        let e = Params::parse(Some("exe=/x"), &["limit"], Extra::Nothing)
            .unwrap_err()
            .0;
        assert!(e.contains("unknown parameter \"exe\""), "{e}");
        // hour is a dimension but no filter.
        assert!(p("hour=1", &[]).is_err());
        assert!(p(&"a=1&".repeat(40), &["a"]).is_err());
        assert!(p(&format!("exe={}", "x".repeat(5000)), &[]).is_err());
    }

    #[test]
    fn numbers_name_the_parameter() {
        let q = p("limit=abc&from=1'%20OR%201=1", &["limit", "from", "to"]).unwrap();
        let e = q.limit(100).unwrap_err().0;
        assert_eq!(
            e,
            "parameter limit = \"abc\" is not an integer from 1 to 10000"
        );
        assert!(q
            .range(1000)
            .unwrap_err()
            .0
            .starts_with("parameter from = \"1' OR 1=1\""));
        let q = p("limit=10001", &["limit"]).unwrap();
        assert!(q.limit(100).unwrap_err().0.contains("limit = \"10001\""));
        let q = p("limit=0", &["limit"]).unwrap();
        assert!(q.limit(100).is_err());
        assert_eq!(p("", &["limit"]).unwrap().limit(100), Ok(100));
        assert_eq!(p("limit=10000", &["limit"]).unwrap().limit(100), Ok(10000));
    }

    #[test]
    fn ranges() {
        let none = p("", &["from", "to"]).unwrap();
        assert_eq!(
            none.range(100_000),
            Ok(Range {
                from: 100_001 - 86_400,
                to: 100_001
            })
        );
        let q = p("from=10&to=20", &["from", "to"]).unwrap();
        assert_eq!(q.range(0), Ok(Range { from: 10, to: 20 }));
        let q = p("from=20&to=20", &["from", "to"]).unwrap();
        assert!(q.range(0).unwrap_err().0.contains("not before"));
        let q = p("from=0&to=100000000", &["from", "to"]).unwrap();
        let e = q.range(0).unwrap_err().0;
        assert!(e.contains("span 1158 days"), "{e}");
        assert!(e.contains("at most 400 days"), "{e}");
        let q = p(&format!("from=0&to={}", 400 * 86_400), &["from", "to"]).unwrap();
        assert!(q.range(0).is_ok());
        let q = p("from=-1", &["from", "to"]).unwrap();
        assert!(q.range(0).is_err());
        let q = p("to=99999999999999999999", &["from", "to"]).unwrap();
        assert!(q.range(0).unwrap_err().0.contains("parameter to"));
    }

    #[test]
    fn dimensions_come_from_the_whitelist() {
        let q = p("by=exe,domain,hour", &["by"]).unwrap();
        let names: Vec<&str> = q.dims("by").unwrap().iter().map(|d| d.name).collect();
        assert_eq!(names, ["exe", "domain", "hour"]);
        for bad in [
            "by=exe,",
            "by=exe;DROP TABLE connections",
            "by=e.exe",
            "by=EXE",
            "by=exe,exe",
        ] {
            let q = p(bad, &["by"]).unwrap();
            assert!(q.dims("by").is_err(), "{bad}");
        }
        let e = p("dim=nope", &["dim"]).unwrap().dim("dim").unwrap_err().0;
        assert!(
            e.contains("\"nope\" is not a dimension; use exe, name"),
            "{e}"
        );
        assert!(p("", &["dim"]).unwrap().dim("dim").is_err());
    }

    #[test]
    fn filters_are_typed() {
        let q = p("exe=/bin/x'--&uid=0&by=exe", &["by"]).unwrap();
        let f = q.filters().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].value, rusqlite::types::Value::Text("/bin/x'--".into()));
        assert_eq!(f[1].value, rusqlite::types::Value::Integer(0));
        let q = p("uid=0%20OR%201=1", &[]).unwrap();
        assert!(q.filters().unwrap_err().0.contains("parameter uid"));
    }

    #[test]
    fn choices() {
        let q = p("order=bytes", &["order"]).unwrap();
        assert_eq!(q.choice("order", &["bytes", "send"]), Ok("bytes"));
        let q = p("order=rowid", &["order"]).unwrap();
        assert!(q.choice("order", &["bytes", "send"]).is_err());
        assert_eq!(p("", &["order"]).unwrap().choice("order", &["x"]), Ok("x"));
    }
}
