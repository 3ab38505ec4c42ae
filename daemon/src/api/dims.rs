//! dims.rs: the fixed list of dimensions a query may group or filter by, each mapped to the SQL
//! that computes it. Names from requests are only looked up here; they never reach SQL text.

/// One dimension of the `connections` table (directly or through a lookup table).
#[derive(Debug, PartialEq, Eq)]
pub struct Dim {
    pub name: &'static str,
    /// SQL expression of the value over `connections c` and the joins in `joins`.
    pub expr: &'static str,
    /// Bit i set: `JOINS[i]` is needed for `expr`.
    pub joins: u8,
    /// Integer valued (filters must be integers); text otherwise.
    pub numeric: bool,
    /// SQL condition with one `?` for an equality filter (using the indexes on ids); `None`:
    /// not a filter (use `from`/`to` for time).
    pub filter: Option<&'static str>,
}

/// Lookup-table joins, referenced by bit from [`Dim::joins`].
pub const JOINS: [&str; 7] = [
    "LEFT JOIN executables e ON e.id = c.exe_id",
    "LEFT JOIN executables p ON p.id = c.pexe_id",
    "LEFT JOIN executables g ON g.id = c.gpexe_id",
    "LEFT JOIN addresses la ON la.id = c.laddr_id",
    "LEFT JOIN addresses ra ON ra.id = c.raddr_id",
    "LEFT JOIN domains d ON d.id = c.domain_id",
    "LEFT JOIN containers ct ON ct.id = c.container_id",
];

const E: u8 = 1;
const P: u8 = 1 << 1;
const G: u8 = 1 << 2;
const LA: u8 = 1 << 3;
const RA: u8 = 1 << 4;
const D: u8 = 1 << 5;
const CT: u8 = 1 << 6;

const fn text(name: &'static str, expr: &'static str, joins: u8, filter: &'static str) -> Dim {
    Dim {
        name,
        expr,
        joins,
        numeric: false,
        filter: Some(filter),
    }
}

const fn int(name: &'static str, expr: &'static str, filter: &'static str) -> Dim {
    Dim {
        name,
        expr,
        joins: 0,
        numeric: true,
        filter: Some(filter),
    }
}

const fn time(name: &'static str, expr: &'static str) -> Dim {
    Dim {
        name,
        expr,
        joins: 0,
        numeric: true,
        filter: None,
    }
}

/// Every dimension, in the order the documentation lists them.
pub const DIMS: &[Dim] = &[
    text(
        "exe",
        "COALESCE(e.exe, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    text(
        "name",
        "COALESCE(e.name, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE name = ?)",
    ),
    text(
        "sha256",
        "COALESCE(e.sha256, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE sha256 = ?)",
    ),
    text(
        "cmdline",
        "COALESCE(e.cmdline, '')",
        E,
        "c.exe_id IN (SELECT id FROM executables WHERE cmdline = ?)",
    ),
    text(
        "pexe",
        "COALESCE(p.exe, '')",
        P,
        "c.pexe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    text(
        "gpexe",
        "COALESCE(g.exe, '')",
        G,
        "c.gpexe_id IN (SELECT id FROM executables WHERE exe = ?)",
    ),
    int("uid", "c.uid", "c.uid = ?"),
    int("family", "c.family", "c.family = ?"),
    int("protocol", "c.protocol", "c.protocol = ?"),
    int("lport", "c.lport", "c.lport = ?"),
    int("rport", "c.rport", "c.rport = ?"),
    text(
        "laddr",
        "COALESCE(la.addr, '')",
        LA,
        "c.laddr_id IN (SELECT id FROM addresses WHERE addr = ?)",
    ),
    text(
        "raddr",
        "COALESCE(ra.addr, '')",
        RA,
        "c.raddr_id IN (SELECT id FROM addresses WHERE addr = ?)",
    ),
    text(
        "domain",
        "COALESCE(d.domain, '')",
        D,
        "c.domain_id IN (SELECT id FROM domains WHERE domain = ?)",
    ),
    int("netns", "c.netns", "c.netns = ?"),
    text(
        "container",
        "COALESCE(ct.container, '')",
        CT,
        "c.container_id IN (SELECT id FROM containers WHERE container = ?)",
    ),
    time("hour", "(c.contime / 3600) * 3600"),
    time("day", "(c.contime / 86400) * 86400"),
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
        assert_eq!(DIMS.len(), 18);
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
            " LEFT JOIN executables e ON e.id = c.exe_id LEFT JOIN addresses ra ON ra.id = c.raddr_id"
        );
        assert_eq!(joins([find("uid").unwrap()]), "");
    }
}
