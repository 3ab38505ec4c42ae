//! geo.rs: GeoIP in query answers: rows with a remote address say what the databases know of it
//! (`"geo": {...}`), and the `country` and `asn` dimensions regroup the sums by remote address
//! into sums by what the databases say of each address.
use super::budget::Budget;
use super::db::QueryError;
use super::dims::{self, Dim, GeoKey};
use super::params::BadRequest;
use super::query::{Aggregate, Order, SUMS};
use crate::geoip::{Lookup, Memo};
use rusqlite::Connection;
use serde_json::{Map, Value as Json};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Most groups (by remote address and the other dimensions) one GeoIP answer regroups.
pub const MAX_GEO_GROUPS: u32 = 200_000;

/// Refuses GeoIP dimensions when no GeoIP database is in use.
pub fn require(by: &[&Dim], lookup: Option<&Lookup>) -> Result<(), BadRequest> {
    match by.iter().find(|d| d.geo.is_some()) {
        Some(d) if lookup.is_none() => Err(BadRequest(format!(
            "dimension {} is looked up in a GeoIP database and none is in use; \
             list one in [geoip] databases",
            d.name
        ))),
        _ => Ok(()),
    }
}

/// Adds `"geo"` (`{"country", "country_name", "city", "asn", "as_org"}`, `null` where the
/// databases know nothing) to every row with a `raddr`.
pub fn annotate(rows: &mut [Json], lookup: &Lookup) {
    let mut cache = Memo::new(Some(lookup));
    for row in rows {
        let Some(obj) = row.as_object_mut() else {
            continue;
        };
        let Some(addr) = obj.get("raddr").and_then(Json::as_str) else {
            continue;
        };
        // Plain strings and integers always serialise.
        let geo = serde_json::to_value(cache.get(addr)).unwrap_or_default();
        obj.insert("geo".into(), geo);
    }
}

/// One regrouped row: its dimension values, the names that go with them, and its sums.
struct Group {
    key: Vec<Json>,
    names: Map<String, Json>,
    sums: [i64; 4],
}

/// The aggregate with GeoIP dimensions: grouped by the remote address (and the other dimensions)
/// in SQL, then by what `lookup` says of each address. Addresses it does not know are grouped
/// under `""` (country) or `null` (asn).
pub fn grouped(
    agg: &Aggregate,
    conn: &Connection,
    lookup: Option<&Lookup>,
    budget: &mut Budget,
) -> Result<(Vec<Json>, bool), QueryError> {
    let raddr = dims::find("raddr").expect("raddr is a dimension");
    let mut by: Vec<_> = agg.by.iter().copied().filter(|d| d.geo.is_none()).collect();
    if !by.iter().any(|d| d.name == raddr.name) {
        by.push(raddr);
    }
    let inner = Aggregate {
        by,
        range: agg.range,
        filters: agg.filters.clone(),
        order: Order::Key,
        limit: MAX_GEO_GROUPS,
    };
    let (rows, truncated) = inner.fetch(conn, budget)?;
    if truncated {
        return Err(QueryError::TooLarge(format!(
            "grouping by {} looks up more than {MAX_GEO_GROUPS} groups of remote addresses; \
             ask for a shorter range or add filters",
            geo_names(agg)
        )));
    }
    let mut cache = Memo::new(lookup);
    let mut groups: HashMap<String, Group> = HashMap::new();
    for row in rows {
        let geo = row["raddr"]
            .as_str()
            .and_then(|a| cache.get(a))
            .cloned()
            .unwrap_or_default();
        let mut key = Vec::with_capacity(agg.by.len());
        let mut names = Map::new();
        for d in &agg.by {
            key.push(match d.geo {
                Some(GeoKey::Country) => {
                    if let Some(n) = &geo.country_name {
                        names.insert("country_name".into(), n.clone().into());
                    }
                    geo.country.clone().unwrap_or_default().into()
                }
                Some(GeoKey::Asn) => {
                    if let Some(o) = &geo.as_org {
                        names.insert("as_org".into(), o.clone().into());
                    }
                    geo.asn.map_or(Json::Null, Json::from)
                }
                None => row[d.name].clone(),
            });
        }
        let g = groups
            .entry(Json::Array(key.clone()).to_string())
            .or_insert_with(|| Group {
                key,
                names: Map::new(),
                sums: [0; 4],
            });
        for (k, v) in names {
            g.names.entry(k).or_insert(v);
        }
        for (sum, name) in g.sums.iter_mut().zip(SUMS) {
            *sum += row[name].as_i64().unwrap_or_default();
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| by_order(agg.order, a, b));
    let truncated = groups.len() > agg.limit as usize;
    groups.truncate(agg.limit as usize);
    let rows = groups
        .into_iter()
        .map(|g| {
            let mut obj = Map::new();
            for (d, v) in agg.by.iter().zip(g.key) {
                obj.insert(d.name.into(), v);
            }
            obj.extend(g.names);
            for (name, sum) in SUMS.iter().zip(g.sums) {
                obj.insert((*name).into(), sum.into());
            }
            Json::Object(obj)
        })
        .collect();
    Ok((rows, truncated))
}

fn geo_names(agg: &Aggregate) -> String {
    let names: Vec<&str> = agg
        .by
        .iter()
        .filter(|d| d.geo.is_some())
        .map(|d| d.name)
        .collect();
    names.join(" and ")
}

/// Largest first by the chosen sum, then by the dimension values, as the SQL orders.
fn by_order(order: Order, a: &Group, b: &Group) -> Ordering {
    // `g.sums` is in the order of SUMS: send, recv, events, rows.
    let metric = |g: &Group| match order {
        Order::Bytes => g.sums[0] + g.sums[1],
        Order::Send => g.sums[0],
        Order::Recv => g.sums[1],
        Order::Events => g.sums[2],
        Order::Key => 0,
    };
    metric(b).cmp(&metric(a)).then_with(|| {
        a.key
            .iter()
            .zip(&b.key)
            .map(|(x, y)| cmp_value(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    })
}

/// SQLite's order of values: NULL, then numbers, then text.
fn cmp_value(a: &Json, b: &Json) -> Ordering {
    fn rank(v: &Json) -> u8 {
        match v {
            Json::Null => 0,
            Json::Number(_) => 1,
            _ => 2,
        }
    }
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Json::String(x), Json::String(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_sort_as_sqlite_sorts_them() {
        let mut v = vec![json!("b"), json!(10), json!(null), json!("a"), json!(2)];
        v.sort_by(cmp_value);
        assert_eq!(
            v,
            vec![json!(null), json!(2), json!(10), json!("a"), json!("b")]
        );
    }
}
