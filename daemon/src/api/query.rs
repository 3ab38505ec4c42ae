//! query.rs: builds and runs the parameterised SQL of the aggregate, distinct and losses queries.
//! SQL text comes only from the dimension whitelist and fixed fragments; every value from a
//! request is a bound parameter.
use super::budget::Budget;
use super::db::QueryError;
use super::dims::{self, Dim};
use super::params::{BadRequest, Extra, Filter, Params, Range};
use crate::geoip::Lookup;
use rusqlite::types::Value;
use rusqlite::Connection;
use serde_json::{json, Map, Value as Json};

/// What an aggregate is sorted by (largest first; `key` sorts by the group values, ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Bytes,
    Send,
    Recv,
    Events,
    Key,
}

impl Order {
    pub const NAMES: [&'static str; 5] = ["bytes", "send", "recv", "events", "key"];

    pub fn from_name(name: &str) -> Order {
        match name {
            "send" => Order::Send,
            "recv" => Order::Recv,
            "events" => Order::Events,
            "key" => Order::Key,
            _ => Order::Bytes,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Order::Bytes => "(sum(x.send) + sum(x.recv)) DESC",
            Order::Send => "sum(x.send) DESC",
            Order::Recv => "sum(x.recv) DESC",
            Order::Events => "sum(x.events) DESC",
            Order::Key => "",
        }
    }
}

/// SQL text and its bound parameters, in order (`?` placeholders only).
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Value>,
}

/// `WHERE` over the time range and the filters; pushes their parameters.
pub(super) fn conditions(range: Range, filters: &[Filter], params: &mut Vec<Value>) -> String {
    let mut text = String::from(" WHERE c.contime >= ? AND c.contime < ?");
    params.push(Value::Integer(range.from));
    params.push(Value::Integer(range.to));
    for f in filters {
        if let Some(cond) = f.dim.filter {
            text.push_str(" AND ");
            text.push_str(cond);
            params.push(f.value.clone());
        }
    }
    text
}

/// Sums of send, recv and events (and the row count), grouped by `by`.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub by: Vec<&'static Dim>,
    pub range: Range,
    pub filters: Vec<Filter>,
    pub order: Order,
    pub limit: u32,
}

impl Aggregate {
    /// The aggregate a query string asks for (`by`, `from`, `to`, `limit`, `order` and filters):
    /// the API and the CLI check it the same way.
    pub fn from_query(raw: Option<&str>, now: i64) -> Result<Aggregate, BadRequest> {
        let p = Params::parse(raw, &["by", "from", "to", "limit", "order"], Extra::Filters)?;
        Ok(Aggregate {
            range: p.range(now)?,
            filters: p.filters()?,
            order: Order::from_name(p.choice("order", &Order::NAMES)?),
            limit: p.limit(100)?,
            by: p.dims("by")?,
        })
    }

    /// The query; it asks for `limit + 1` rows so that a cut answer can say so. With dimensions,
    /// rows are summed by their integer columns first and joined to the lookup tables after.
    pub fn sql(&self) -> Sql {
        let mut params = Vec::new();
        let sums = "sum(c.send) AS send, sum(c.recv) AS recv, sum(c.events) AS events, \
                    count(*) AS n FROM connections c";
        let cond = conditions(self.range, &self.filters, &mut params);
        if self.by.is_empty() {
            let text = format!("SELECT {sums}{cond} LIMIT ?");
            params.push(Value::Integer(i64::from(self.limit) + 1));
            return Sql { text, params };
        }
        let columns = dims::columns(self.by.iter().copied());
        let keys: Vec<String> = (1..=columns.len()).map(|i| i.to_string()).collect();
        let mut text = String::from("SELECT ");
        for d in &self.by {
            text.push_str(d.expr);
            text.push_str(", ");
        }
        text.push_str("sum(x.send), sum(x.recv), sum(x.events), sum(x.n) FROM (SELECT ");
        text.push_str(&columns.join(", "));
        text.push_str(", ");
        text.push_str(sums);
        text.push_str(&cond);
        text.push_str(" GROUP BY ");
        text.push_str(&keys.join(", "));
        text.push_str(") AS x");
        text.push_str(&dims::joins(self.by.iter().copied()));
        let groups: Vec<String> = (1..=self.by.len()).map(|i| i.to_string()).collect();
        text.push_str(" GROUP BY ");
        text.push_str(&groups.join(", "));
        text.push_str(" ORDER BY ");
        let order = self.order.sql();
        if !order.is_empty() {
            text.push_str(order);
            text.push_str(", ");
        }
        text.push_str(&groups.join(", "));
        text.push_str(" LIMIT ?");
        params.push(Value::Integer(i64::from(self.limit) + 1));
        Sql { text, params }
    }

    /// Runs the query: `{"rows": [...], "truncated": bool}`. With `geo`, rows grouped by the
    /// remote address say what the databases know of it, and the `country` and `asn`
    /// dimensions can be used. Rows are charged to `budget`.
    pub fn run(
        &self,
        conn: &Connection,
        geo: Option<&Lookup>,
        budget: &mut Budget,
    ) -> Result<Json, QueryError> {
        let (mut rows, truncated) = if self.by.iter().any(|d| d.geo.is_some()) {
            super::geo::grouped(self, conn, geo, budget)?
        } else {
            self.fetch(conn, budget)?
        };
        if let Some(lookup) = geo {
            super::geo::annotate(&mut rows, lookup);
        }
        Ok(json!({ "rows": rows, "truncated": truncated }))
    }

    /// The rows of the SQL query (each `{dim: value, …, "send", "recv", "events", "rows"}`) and
    /// whether there were more than `limit`; each row is charged to `budget` before it is kept.
    pub fn fetch(
        &self,
        conn: &Connection,
        budget: &mut Budget,
    ) -> Result<(Vec<Json>, bool), QueryError> {
        let sql = self.sql();
        let mut st = conn.prepare(&sql.text)?;
        let n = self.by.len();
        let mut rows = st.query(rusqlite::params_from_iter(sql.params.iter()))?;
        let mut out = Vec::new();
        let mut truncated = false;
        while let Some(r) = rows.next()? {
            if out.len() == self.limit as usize {
                truncated = true;
                break;
            }
            let values = (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<Value>>>()?;
            budget.row(&values)?;
            let mut obj = Map::new();
            for (d, v) in self.by.iter().zip(values) {
                obj.insert(d.name.to_owned(), to_json(v));
            }
            let sum = |i: usize| -> rusqlite::Result<i64> {
                Ok(r.get::<_, Option<i64>>(i)?.unwrap_or_default())
            };
            for (i, name) in SUMS.iter().enumerate() {
                obj.insert((*name).into(), sum(n + i)?.into());
            }
            out.push(Json::Object(obj));
        }
        Ok((out, truncated))
    }
}

/// The sums every aggregate row carries, in the order of the query's columns.
pub const SUMS: [&str; 4] = ["send", "recv", "events", "rows"];

/// The distinct values of one dimension, ascending.
#[derive(Debug, Clone)]
pub struct Distinct {
    pub dim: &'static Dim,
    pub range: Range,
    pub filters: Vec<Filter>,
    pub limit: u32,
}

impl Distinct {
    pub fn sql(&self) -> Sql {
        let mut params = Vec::new();
        let cond = conditions(self.range, &self.filters, &mut params);
        let text = format!(
            "SELECT DISTINCT {} FROM (SELECT DISTINCT {} FROM connections c{cond}) AS x{} \
             ORDER BY 1 LIMIT ?",
            self.dim.expr,
            dims::columns([self.dim]).join(", "),
            dims::joins([self.dim])
        );
        params.push(Value::Integer(i64::from(self.limit) + 1));
        Sql { text, params }
    }

    /// `{"values": [...], "truncated": bool}`; the values of a GeoIP dimension are those of the
    /// remote addresses in the range, looked up in `geo`. Values are charged to `budget`.
    pub fn run(
        &self,
        conn: &Connection,
        geo: Option<&Lookup>,
        budget: &mut Budget,
    ) -> Result<Json, QueryError> {
        if self.dim.geo.is_some() {
            let agg = Aggregate {
                by: vec![self.dim],
                range: self.range,
                filters: self.filters.clone(),
                order: Order::Key,
                limit: self.limit,
            };
            let (rows, truncated) = super::geo::grouped(&agg, conn, geo, budget)?;
            let values: Vec<Json> = rows.iter().map(|r| r[self.dim.name].clone()).collect();
            return Ok(json!({ "values": values, "truncated": truncated }));
        }
        let sql = self.sql();
        let mut st = conn.prepare(&sql.text)?;
        let mut rows = st.query(rusqlite::params_from_iter(sql.params.iter()))?;
        let mut values: Vec<Json> = Vec::new();
        while let Some(r) = rows.next()? {
            let v = r.get::<_, Value>(0)?;
            budget.value(&v)?;
            values.push(to_json(v));
        }
        let truncated = values.len() > self.limit as usize;
        values.truncate(self.limit as usize);
        Ok(json!({ "values": values, "truncated": truncated }))
    }
}

/// Loss reports in a range: totals by source and the most recent reports.
pub fn losses(conn: &Connection, range: Range, limit: u32) -> rusqlite::Result<Json> {
    let mut st = conn.prepare(
        "SELECT source, sum(count), count(*) FROM losses WHERE contime >= ?1 AND contime < ?2
         GROUP BY source ORDER BY 2 DESC, 1",
    )?;
    let sources: Vec<Json> = st
        .query_map([range.from, range.to], |r| {
            Ok(json!({
                "source": r.get::<_, String>(0)?,
                "count": r.get::<_, i64>(1)?,
                "reports": r.get::<_, i64>(2)?,
            }))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare(
        "SELECT contime, source, count FROM losses WHERE contime >= ?1 AND contime < ?2
         ORDER BY contime DESC, rowid DESC LIMIT ?3",
    )?;
    let recent: Vec<Json> = st
        .query_map([range.from, range.to, i64::from(limit)], |r| {
            Ok(json!({
                "contime": r.get::<_, i64>(0)?,
                "source": r.get::<_, String>(1)?,
                "count": r.get::<_, i64>(2)?,
            }))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(json!({ "sources": sources, "recent": recent }))
}

/// A SQLite value as JSON (text stays text, integers stay integers).
pub fn to_json(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => i.into(),
        Value::Real(f) => f.into(),
        Value::Text(s) => s.into(),
        Value::Blob(b) => hex::encode(b).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dims::find;

    fn range() -> Range {
        Range { from: 10, to: 20 }
    }

    #[test]
    fn aggregate_sql_binds_every_value() {
        let q = Aggregate {
            by: vec![find("exe").unwrap(), find("hour").unwrap()],
            range: range(),
            filters: vec![
                Filter::new(find("raddr").unwrap(), "1.2.3.4' OR '1'='1").unwrap(),
                Filter::new(find("uid").unwrap(), "1000").unwrap(),
            ],
            order: Order::Bytes,
            limit: 5,
        };
        let sql = q.sql();
        assert_eq!(
            sql.text,
            "SELECT COALESCE(e.exe, ''), x.hour, sum(x.send), sum(x.recv), sum(x.events), \
             sum(x.n) FROM (SELECT c.exe_id AS exe_id, (c.contime / 3600) * 3600 AS hour, \
             sum(c.send) AS send, sum(c.recv) AS recv, sum(c.events) AS events, count(*) AS n \
             FROM connections c WHERE c.contime >= ? AND c.contime < ? \
             AND c.raddr_id IN (SELECT id FROM addresses WHERE addr = ?) AND c.uid = ? \
             GROUP BY 1, 2) AS x LEFT JOIN executables e ON e.id = x.exe_id \
             GROUP BY 1, 2 ORDER BY (sum(x.send) + sum(x.recv)) DESC, 1, 2 LIMIT ?"
        );
        assert_eq!(
            sql.params,
            vec![
                Value::Integer(10),
                Value::Integer(20),
                Value::Text("1.2.3.4' OR '1'='1".into()),
                Value::Integer(1000),
                Value::Integer(6),
            ]
        );
    }

    #[test]
    fn totals_without_dimensions() {
        let q = Aggregate {
            by: vec![],
            range: range(),
            filters: vec![],
            order: Order::Key,
            limit: 1,
        };
        assert_eq!(
            q.sql().text,
            "SELECT sum(c.send) AS send, sum(c.recv) AS recv, sum(c.events) AS events, \
             count(*) AS n FROM connections c WHERE c.contime >= ? AND c.contime < ? LIMIT ?"
        );
    }

    #[test]
    fn distinct_sql() {
        let q = Distinct {
            dim: find("container").unwrap(),
            range: range(),
            filters: vec![Filter::new(find("exe").unwrap(), "/x").unwrap()],
            limit: 3,
        };
        let sql = q.sql();
        assert_eq!(
            sql.text,
            "SELECT DISTINCT COALESCE(ct.container, '') FROM (SELECT DISTINCT \
             c.container_id AS container_id FROM connections c \
             WHERE c.contime >= ? AND c.contime < ? \
             AND c.exe_id IN (SELECT id FROM executables WHERE exe = ?)) AS x \
             LEFT JOIN containers ct ON ct.id = x.container_id ORDER BY 1 LIMIT ?"
        );
        assert_eq!(sql.params.len(), 4);
    }
}
