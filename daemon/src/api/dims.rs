//! dims.rs: the fixed list of dimensions a query may group or filter by, each mapped to the SQL
//! that computes it. Names from requests are only looked up here; they never reach SQL text.

/// One dimension of the `connections` table (directly or through a lookup table).
///
/// Queries group in two steps: first the `connections` rows by `column` (integers: ids, numbers,
/// times), then those few groups, joined to the lookup tables, by `expr`. Grouping a month of
/// rows by integers and joining afterwards is 2 to 3 times faster than joining every row first.
#[derive(Debug, PartialEq, Eq)]
pub struct Dim {
    pub name: &'static str,
    /// SQL over `connections c` of the first grouping step.
    pub column: &'static str,
    /// Name of `column` in the first step's result `x` (shared by dimensions of one lookup id).
    pub key: &'static str,
    /// SQL of the value over `x` and the joins in `joins`.
    pub expr: &'static str,
    /// Bit i set: `JOINS[i]` is needed for `expr`.
    pub joins: u8,
    /// Integer valued (filters must be integers); text otherwise.
    pub numeric: bool,
    /// SQL condition over `connections c` with one `?` for an equality filter (using the indexes
    /// on ids); `None`: not a filter (use `from`/`to` for time).
    pub filter: Option<&'static str>,
    /// Looked up from the remote address in the GeoIP databases rather than stored: the SQL
    /// fields are those of `raddr`, and `api::geo` groups the answer by the lookup.
    pub geo: Option<GeoKey>,
}

/// What a GeoIP dimension groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoKey {
    /// ISO 3166-1 alpha-2 code of the remote address's country (`""` when unknown).
    Country,
    /// Autonomous system number of the remote address (`null` when unknown).
    Asn,
}

/// Lookup-table joins on the first step's result `x`, referenced by bit from [`Dim::joins`].
pub const JOINS: [&str; 7] = [
    "LEFT JOIN executables e ON e.id = x.exe_id",
    "LEFT JOIN executables p ON p.id = x.pexe_id",
    "LEFT JOIN executables g ON g.id = x.gpexe_id",
    "LEFT JOIN addresses la ON la.id = x.laddr_id",
    "LEFT JOIN addresses ra ON ra.id = x.raddr_id",
    "LEFT JOIN domains d ON d.id = x.domain_id",
    "LEFT JOIN containers ct ON ct.id = x.container_id",
];

const E: u8 = 1;
const P: u8 = 1 << 1;
const G: u8 = 1 << 2;
const LA: u8 = 1 << 3;
const RA: u8 = 1 << 4;
const D: u8 = 1 << 5;
const CT: u8 = 1 << 6;

/// A text dimension from a lookup table: `column` is the id, `expr` the looked-up value.
const fn text(
    name: &'static str,
    (column, key): (&'static str, &'static str),
    expr: &'static str,
    joins: u8,
    filter: &'static str,
) -> Dim {
    Dim {
        name,
        column,
        key,
        expr,
        joins,
        numeric: false,
        filter: Some(filter),
        geo: None,
    }
}

/// An integer column of `connections`.
const fn int(
    name: &'static str,
    column: &'static str,
    expr: &'static str,
    filter: &'static str,
) -> Dim {
    Dim {
        name,
        column,
        key: name,
        expr,
        joins: 0,
        numeric: true,
        filter: Some(filter),
        geo: None,
    }
}

/// A time bucket (not a filter: `from` and `to` select time).
const fn time(name: &'static str, column: &'static str, expr: &'static str) -> Dim {
    Dim {
        filter: None,
        ..int(name, column, expr, "")
    }
}

/// A dimension looked up from the remote address (not a filter).
const fn geo(name: &'static str, key: GeoKey) -> Dim {
    Dim {
        name,
        column: RADDR.0,
        key: RADDR.1,
        expr: RADDR_EXPR,
        joins: RA,
        numeric: false,
        filter: None,
        geo: Some(key),
    }
}

const RADDR: (&str, &str) = ("c.raddr_id", "raddr_id");
const RADDR_EXPR: &str = "COALESCE(ra.addr, '')";

const EXE_ID: (&str, &str) = ("c.exe_id", "exe_id");

/// Every dimension, in the order the documentation lists them.
pub const DIMS: &[Dim] = &[
    text(
        "exe",
        EXE_ID,
        "COALESCE(e.exe, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    text(
        "name",
        EXE_ID,
        "COALESCE(e.name, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE name = ?)",
    ),
    text(
        "sha256",
        EXE_ID,
        "COALESCE(e.sha256, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE sha256 = ?)",
    ),
    text(
        "cmdline",
        EXE_ID,
        "COALESCE(e.cmdline, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE cmdline = ?)",
    ),
    text(
        "pexe",
        ("c.pexe_id", "pexe_id"),
        "COALESCE(p.exe, '')",
        P,
        "c.pexe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    text(
        "gpexe",
        ("c.gpexe_id", "gpexe_id"),
        "COALESCE(g.exe, '')",
        G,
        "c.gpexe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    int("uid", "c.uid", "x.uid", "c.uid = ?"),
    int("family", "c.family", "x.family", "c.family = ?"),
    int("protocol", "c.protocol", "x.protocol", "c.protocol = ?"),
    int("lport", "c.lport", "x.lport", "c.lport = ?"),
    int("rport", "c.rport", "x.rport", "c.rport = ?"),
    text(
        "laddr",
        ("c.laddr_id", "laddr_id"),
        "COALESCE(la.addr, '')",
        LA,
        "c.laddr_id IN (SELECT id FROM addresses WHERE addr = ?)",
    ),
    text(
        "raddr",
        RADDR,
        RADDR_EXPR,
        RA,
        "c.raddr_id IN (SELECT id FROM addresses WHERE addr = ?)",
    ),
    text(
        "domain",
        ("c.domain_id", "domain_id"),
        "COALESCE(d.domain, '')",
        D,
        "c.domain_id IN (SELECT id FROM domains WHERE domain = ?)",
    ),
    int("netns", "c.netns", "x.netns", "c.netns = ?"),
    text(
        "container",
        ("c.container_id", "container_id"),
        "COALESCE(ct.container, '')",
        CT,
        "c.container_id IN (SELECT id FROM containers WHERE container = ?)",
    ),
    time("hour", "(c.contime / 3600) * 3600", "x.hour"),
    time("day", "(c.contime / 86400) * 86400", "x.day"),
    geo("country", GeoKey::Country),
    geo("asn", GeoKey::Asn),
];

/// The dimension called exactly `name`.
pub fn find(name: &str) -> Option<&'static Dim> {
    DIMS.iter().find(|d| d.name == name)
}

pub fn filterable() -> impl Iterator<Item = &'static Dim> {
    DIMS.iter().filter(|d| d.filter.is_some())
}

/// "exe, name, …, day" for error messages.
pub fn names() -> String {
    DIMS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

/// The first step's columns for `dims`, each key once: `c.exe_id AS exe_id, c.uid AS uid`.
pub fn columns<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Vec<String> {
    let mut keys: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for d in dims {
        if !keys.contains(&d.key) {
            keys.push(d.key);
            out.push(format!("{} AS {}", d.column, d.key));
        }
    }
    out
}

/// The JOIN clauses `dims` need, in a fixed order, each once.
pub fn joins<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> String {
    let mask = dims.into_iter().fold(0u8, |m, d| m | d.joins);
    JOINS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, j)| format!(" {j}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sql_is_fixed() {
        for (i, d) in DIMS.iter().enumerate() {
            assert!(DIMS[..i].iter().all(|o| o.name != d.name), "{}", d.name);
            assert_eq!(
                d.filter.map(|f| f.matches('?').count()),
                d.filter.map(|_| 1)
            );
        }
        assert_eq!(DIMS.len(), 20);
        assert!(find("country").unwrap().filter.is_none());
        assert!(find("hour").unwrap().filter.is_none());
        assert!(find("exe ").is_none());
    }

    #[test]
    fn joins_are_deduplicated() {
        let j = joins([
            find("exe").unwrap(),
            find("name").unwrap(),
            find("raddr").unwrap(),
        ]);
        assert_eq!(
            j,
            " LEFT JOIN executables e ON e.id = x.exe_id LEFT JOIN addresses ra ON ra.id = x.raddr_id"
        );
        assert_eq!(joins([find("uid").unwrap()]), "");
        let c = columns([
            find("exe").unwrap(),
            find("sha256").unwrap(),
            find("hour").unwrap(),
        ]);
        assert_eq!(
            c,
            ["c.exe_id AS exe_id", "(c.contime / 3600) * 3600 AS hour"]
        );
    }
}
