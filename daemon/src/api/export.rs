//! export.rs: every `connections` row of a time range with its lookup ids resolved to their
//! values, in time order, handed one at a time to the caller (constant memory however many rows).
use super::params::{BadRequest, Extra, Filter, Params, Range};
use super::query::{conditions, Sql};
use rusqlite::Connection;

/// The columns of one exported row, in order; `pname`, `psha256`, … are the parent's, `gpname`,
/// … the grandparent's.
pub const COLUMNS: [&str; 26] = [
    "contime",
    "exe",
    "name",
    "cmdline",
    "sha256",
    "pexe",
    "pname",
    "pcmdline",
    "psha256",
    "gpexe",
    "gpname",
    "gpcmdline",
    "gpsha256",
    "uid",
    "family",
    "protocol",
    "lport",
    "rport",
    "laddr",
    "raddr",
    "domain",
    "netns",
    "container",
    "send",
    "recv",
    "events",
];

/// One `connections` row, every column resolved (field order is [`COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub contime: i64,
    pub exe: String,
    pub name: String,
    pub cmdline: String,
    pub sha256: String,
    pub pexe: String,
    pub pname: String,
    pub pcmdline: String,
    pub psha256: String,
    pub gpexe: String,
    pub gpname: String,
    pub gpcmdline: String,
    pub gpsha256: String,
    pub uid: i64,
    pub family: i64,
    pub protocol: i64,
    pub lport: i64,
    pub rport: i64,
    pub laddr: String,
    pub raddr: String,
    pub domain: String,
    pub netns: i64,
    pub container: String,
    pub send: i64,
    pub recv: i64,
    pub events: i64,
}

impl Row {
    fn from_sql(r: &rusqlite::Row) -> rusqlite::Result<Row> {
        Ok(Row {
            contime: r.get(0)?,
            exe: r.get(1)?,
            name: r.get(2)?,
            cmdline: r.get(3)?,
            sha256: r.get(4)?,
            pexe: r.get(5)?,
            pname: r.get(6)?,
            pcmdline: r.get(7)?,
            psha256: r.get(8)?,
            gpexe: r.get(9)?,
            gpname: r.get(10)?,
            gpcmdline: r.get(11)?,
            gpsha256: r.get(12)?,
            uid: r.get(13)?,
            family: r.get(14)?,
            protocol: r.get(15)?,
            lport: r.get(16)?,
            rport: r.get(17)?,
            laddr: r.get(18)?,
            raddr: r.get(19)?,
            domain: r.get(20)?,
            netns: r.get(21)?,
            container: r.get(22)?,
            send: r.get(23)?,
            recv: r.get(24)?,
            events: r.get(25)?,
        })
    }
}

/// The rows of a range matching every filter.
#[derive(Debug, Clone)]
pub struct Export {
    pub range: Range,
    pub filters: Vec<Filter>,
}

impl Export {
    /// The export a query string asks for (`from`, `to` and filters), checked like the API's.
    pub fn from_query(raw: Option<&str>, now: i64) -> Result<Export, BadRequest> {
        let p = Params::parse(raw, &["from", "to"], Extra::Filters)?;
        Ok(Export {
            range: p.range(now)?,
            filters: p.filters()?,
        })
    }

    /// Ordered by time, then by insertion: the `contime` index gives that order without a sort.
    pub fn sql(&self) -> Sql {
        let mut params = Vec::new();
        let cond = conditions(self.range, &self.filters, &mut params);
        let exe = |t: &str| {
            format!(
                "COALESCE({t}.exe, ''), COALESCE({t}.name, ''), COALESCE({t}.cmdline, ''), \
                 COALESCE({t}.sha256, '')"
            )
        };
        let text = format!(
            "SELECT c.contime, {}, {}, {}, c.uid, c.family, c.protocol, c.lport, c.rport, \
             COALESCE(la.addr, ''), COALESCE(ra.addr, ''), COALESCE(d.domain, ''), c.netns, \
             COALESCE(ct.container, ''), c.send, c.recv, c.events \
             FROM connections c \
             LEFT JOIN executables e ON e.id = c.exe_id \
             LEFT JOIN executables p ON p.id = c.pexe_id \
             LEFT JOIN executables g ON g.id = c.gpexe_id \
             LEFT JOIN addresses la ON la.id = c.laddr_id \
             LEFT JOIN addresses ra ON ra.id = c.raddr_id \
             LEFT JOIN domains d ON d.id = c.domain_id \
             LEFT JOIN containers ct ON ct.id = c.container_id\
             {cond} ORDER BY c.contime, c.rowid",
            exe("e"),
            exe("p"),
            exe("g"),
        );
        Sql { text, params }
    }

    /// Calls `each` with every row, in order, stopping at the first error it returns. Rows are
    /// read as they are handed over, never collected.
    pub fn for_each<E>(
        &self,
        conn: &Connection,
        mut each: impl FnMut(Row) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<rusqlite::Error>,
    {
        let sql = self.sql();
        let mut st = conn.prepare(&sql.text)?;
        let mut rows = st.query(rusqlite::params_from_iter(sql.params.iter()))?;
        while let Some(r) = rows.next()? {
            each(Row::from_sql(r)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn sql_binds_every_value_and_rows_resolve() {
        let q = "from=10&to=20&exe=%2Fx'%20OR%20'1'%3D'1&uid=1000";
        let e = Export::from_query(Some(q), 0).unwrap();
        let sql = e.sql();
        assert_eq!(sql.text.matches('?').count(), sql.params.len());
        assert!(!sql.text.contains("OR '1'"), "{}", sql.text);
        assert!(sql.text.ends_with("ORDER BY c.contime, c.rowid"));
        for (bad, says) in [
            ("hour=1", "unknown parameter \"hour\""),
            ("uid=x", "is not an integer"),
            ("from=5&to=5", "is not before"),
            ("limit=5", "unknown parameter \"limit\""),
        ] {
            let err = Export::from_query(Some(bad), 100).unwrap_err().0;
            assert!(err.contains(says), "{bad}: {err}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO executables VALUES (1, '/bin/a', 'a', 'a -x', 'aa'), (2, '/bin/p', 'p', 'p', 'pp');
             INSERT INTO addresses VALUES (1, '10.0.0.1'), (2, '10.0.0.2');
             INSERT INTO domains VALUES (1, 'example.org');
             INSERT INTO containers VALUES (1, 'docker:abc');
             INSERT INTO connections VALUES (12, 5, 6, 1, 1, 2, 0, 1000, 2, 6, 40000, 443, 1, 2, 1, 4026531840, 1);
             INSERT INTO connections VALUES (11, 7, 8, 2, 2, 0, 0, 0, 10, 17, 53, 53, 2, 1, 0, 1, 0);
             INSERT INTO connections VALUES (25, 1, 1, 1, 1, 0, 0, 0, 2, 6, 1, 1, 1, 1, 0, 1, 0);",
        )
        .unwrap();
        let ro = crate::api::db::open(&path).unwrap();
        let mut rows = Vec::new();
        let all = Export::from_query(Some("from=10&to=20"), 0).unwrap();
        all.for_each(&ro, |r| {
            rows.push(r);
            Ok::<(), rusqlite::Error>(())
        })
        .unwrap();
        assert_eq!(rows.iter().map(|r| r.contime).collect::<Vec<_>>(), [11, 12]);
        let r = &rows[1];
        assert_eq!(
            (
                r.exe.as_str(),
                r.cmdline.as_str(),
                r.pexe.as_str(),
                r.psha256.as_str()
            ),
            ("/bin/a", "a -x", "/bin/p", "pp")
        );
        assert_eq!((r.gpexe.as_str(), r.domain.as_str()), ("", "example.org"));
        assert_eq!(
            (r.laddr.as_str(), r.raddr.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        assert_eq!((r.container.as_str(), r.netns), ("docker:abc", 4026531840));
        assert_eq!(
            (r.send, r.recv, r.events, r.uid, r.rport),
            (5, 6, 1, 1000, 443)
        );
        let csv_header = serde_json::to_value(r).unwrap();
        let keys: Vec<&String> = csv_header.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), COLUMNS.len());
        let mut n = 0;
        Export::from_query(Some("from=10&to=20&exe=%2Fbin%2Fa"), 0)
            .unwrap()
            .for_each(&ro, |r| {
                assert_eq!(r.exe, "/bin/a");
                n += 1;
                Ok::<(), rusqlite::Error>(())
            })
            .unwrap();
        assert_eq!(n, 1);
    }
}
