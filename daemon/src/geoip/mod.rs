//! geoip: country, city and autonomous system of remote addresses from MaxMind-format `.mmdb`
//! databases (GeoLite2 Country/City/ASN, DB-IP lite, or any database with the same fields).
//!
//! ```ignore
//! let geo = crate::geoip::Lookup::open("/var/lib/GeoIP/GeoLite2-City.mmdb")?;
//! if let Some(g) = geo.lookup("192.0.2.1".parse()?) {
//!     println!("{:?} {:?} {:?}", g.country, g.city, g.asn);
//! }
//! ```
//!
//! `Lookup` is `Send + Sync`: the daemon's readers share one through [`Shared`], which SIGHUP
//! reopens.
mod cli;
mod shared;

pub use cli::{cli, configured};
use serde::{Deserialize, Serialize};
pub use shared::Shared;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the usual packages and `geoipupdate` put the databases; the `[geoip]` default.
pub const DEFAULT_DATABASES: &[&str] = &[
    "/var/lib/GeoIP/GeoLite2-City.mmdb",
    "/var/lib/GeoIP/GeoLite2-Country.mmdb",
    "/var/lib/GeoIP/GeoLite2-ASN.mmdb",
    "/usr/share/GeoIP/GeoLite2-City.mmdb",
    "/usr/share/GeoIP/GeoLite2-Country.mmdb",
    "/usr/share/GeoIP/GeoLite2-ASN.mmdb",
    "/usr/share/GeoIP/dbip-city-lite.mmdb",
    "/usr/share/GeoIP/dbip-country-lite.mmdb",
    "/usr/share/GeoIP/dbip-asn-lite.mmdb",
];

/// The `[geoip]` config section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GeoipConfig {
    /// Databases to read, in order (a field found in an earlier one wins); missing files are
    /// skipped with a note in the log. An empty list turns GeoIP off.
    pub databases: Vec<PathBuf>,
}

impl Default for GeoipConfig {
    fn default() -> Self {
        GeoipConfig {
            databases: DEFAULT_DATABASES.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Keys of `[geoip]`, for the unknown-key warning.
pub const CONFIG_KEYS: &[&str] = &["databases"];

/// What the databases know of one address. Fields a database lacks are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 code, e.g. `"DE"` (the registered country when no location is known).
    pub country: Option<String>,
    /// English name of the country.
    pub country_name: Option<String>,
    /// English name of the city.
    pub city: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Organisation of the autonomous system.
    pub as_org: Option<String>,
}

impl Geo {
    fn is_empty(&self) -> bool {
        *self == Geo::default()
    }

    /// Fills the fields still missing from `other`.
    fn merge(&mut self, other: Geo) {
        self.country = self.country.take().or(other.country);
        self.country_name = self.country_name.take().or(other.country_name);
        self.city = self.city.take().or(other.city);
        self.asn = self.asn.or(other.asn);
        self.as_org = self.as_org.take().or(other.as_org);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("GeoIP database {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read GeoIP database {path}: {source}")]
    Open {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
}

/// The subset of the GeoIP2/GeoLite2/DB-IP record layout that is read.
#[derive(Deserialize, Default)]
struct Record {
    country: Option<Country>,
    registered_country: Option<Country>,
    city: Option<Named>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

#[derive(Deserialize, Default)]
struct Country {
    iso_code: Option<String>,
    names: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct Named {
    names: Option<BTreeMap<String, String>>,
}

fn english(names: Option<BTreeMap<String, String>>) -> Option<String> {
    names.and_then(|mut n| n.remove("en"))
}

/// One or more opened databases.
pub struct Lookup {
    readers: Vec<(PathBuf, maxminddb::Reader<Vec<u8>>)>,
}

impl Lookup {
    /// Opens one database (read into memory: a file replaced while it is open does no harm).
    #[allow(dead_code)] // the entry point of the query side (API, CLI)
    pub fn open(path: impl AsRef<Path>) -> Result<Lookup, GeoError> {
        let path = path.as_ref();
        Ok(Lookup {
            readers: vec![(path.to_path_buf(), read(path)?)],
        })
    }

    /// Opens every database that can be read, in order; returns why the others were skipped.
    /// `None` when none could be opened.
    pub fn open_all(paths: &[PathBuf]) -> (Option<Lookup>, Vec<GeoError>) {
        let mut readers = Vec::new();
        let mut skipped = Vec::new();
        for p in paths {
            match read(p) {
                Ok(r) => readers.push((p.clone(), r)),
                Err(e) => skipped.push(e),
            }
        }
        let lookup = (!readers.is_empty()).then_some(Lookup { readers });
        (lookup, skipped)
    }

    /// The databases in use, with their type (e.g. `GeoLite2-City`).
    pub fn databases(&self) -> Vec<(PathBuf, String)> {
        self.readers
            .iter()
            .map(|(p, r)| (p.clone(), r.metadata().database_type.clone()))
            .collect()
    }

    /// What the databases know of `addr`; `None` when none has a record for it. IPv4-mapped
    /// IPv6 addresses are looked up as IPv4.
    pub fn lookup(&self, addr: IpAddr) -> Option<Geo> {
        let addr = addr.to_canonical();
        let mut geo = Geo::default();
        for (_, r) in &self.readers {
            // An IPv6 address in an IPv4-only database is an error, not a miss: skip it.
            let Ok(found) = r.lookup(addr) else { continue };
            let Ok(Some(rec)) = found.decode::<Record>() else {
                continue;
            };
            let country = rec.country.or(rec.registered_country).unwrap_or_default();
            geo.merge(Geo {
                country: country.iso_code,
                country_name: english(country.names),
                city: rec.city.and_then(|c| english(c.names)),
                asn: rec.autonomous_system_number,
                as_org: rec.autonomous_system_organization,
            });
        }
        (!geo.is_empty()).then_some(geo)
    }
}

/// Lookups of one answer or export, each address once.
pub struct Memo<'a> {
    lookup: Option<&'a Lookup>,
    seen: std::collections::HashMap<String, Option<Geo>>,
}

impl<'a> Memo<'a> {
    pub fn new(lookup: Option<&'a Lookup>) -> Memo<'a> {
        Memo {
            lookup,
            seen: std::collections::HashMap::new(),
        }
    }

    /// What the databases know of `addr` (text form); `None` without databases, for an address
    /// they do not know, or for text that is not an address.
    pub fn get(&mut self, addr: &str) -> Option<&Geo> {
        let lookup = self.lookup?;
        self.seen
            .entry(addr.to_owned())
            .or_insert_with(|| addr.parse().ok().and_then(|ip| lookup.lookup(ip)))
            .as_ref()
    }
}

fn read(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, GeoError> {
    if !path.exists() {
        return Err(GeoError::Missing {
            path: path.to_path_buf(),
        });
    }
    maxminddb::Reader::open_readfile(path).map_err(|source| GeoError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens the configured databases at start-up and says in the log what is used; a missing
/// database is a note, never an error.
pub fn open_configured(cfg: &GeoipConfig) -> Option<Lookup> {
    if cfg.databases.is_empty() {
        tracing::info!("GeoIP is off ([geoip] databases = [])");
        return None;
    }
    let (lookup, skipped) = Lookup::open_all(&cfg.databases);
    for e in &skipped {
        match e {
            GeoError::Missing { .. } => tracing::debug!("{e}"),
            GeoError::Open { .. } => tracing::warn!("{e}"),
        }
    }
    match &lookup {
        Some(l) => {
            for (path, kind) in l.databases() {
                tracing::info!(path = %path.display(), kind, "GeoIP database in use");
            }
        }
        None => tracing::info!(
            "no GeoIP database found (looked for {}): countries are not shown; install one (e.g. GeoLite2 or DB-IP lite) and list it in [geoip] databases",
            cfg.databases
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    lookup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_database_is_reported_not_fatal() {
        let (l, skipped) = Lookup::open_all(&[PathBuf::from("/nonexistent/x.mmdb")]);
        assert!(l.is_none());
        assert!(matches!(skipped[0], GeoError::Missing { .. }));
        assert!(open_configured(&GeoipConfig {
            databases: vec!["/nonexistent/x.mmdb".into()]
        })
        .is_none());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.mmdb");
        std::fs::write(&bad, b"not a database").unwrap();
        assert!(matches!(Lookup::open(&bad), Err(GeoError::Open { .. })));
    }

    #[test]
    fn merge_keeps_earlier_fields() {
        let mut g = Geo {
            country: Some("DE".into()),
            ..Default::default()
        };
        g.merge(Geo {
            country: Some("FR".into()),
            asn: Some(64500),
            ..Default::default()
        });
        assert_eq!(g.country.as_deref(), Some("DE"));
        assert_eq!(g.asn, Some(64500));
    }
}
