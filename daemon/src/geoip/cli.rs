//! geoip/cli.rs: `picosnitch geoip ADDR...`: what the databases know of each address, one JSON
//! line per address (`{"addr":..,"country":..,"country_name":..,"city":..,"asn":..,"as_org":..}`).
use super::{GeoError, Lookup};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The `[geoip] databases` of the configuration file given, or of the default one (which may
/// be missing: then the defaults).
pub fn configured(config: Option<PathBuf>) -> Result<Vec<PathBuf>, crate::config::ConfigError> {
    let (path, must_exist) = match config {
        Some(p) => (p, true),
        None => (crate::paths::Paths::from_env().config, false),
    };
    Ok(crate::config::load(&path, must_exist)?
        .config
        .geoip
        .databases)
}

pub fn cli(databases: Vec<PathBuf>, config: Option<PathBuf>, addrs: &[IpAddr]) -> ExitCode {
    let databases = if databases.is_empty() {
        match configured(config) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("picosnitch: {e}");
                return ExitCode::from(crate::run::EXIT_CONFIG);
            }
        }
    } else {
        databases
    };
    let (lookup, skipped) = Lookup::open_all(&databases);
    let Some(lookup) = lookup else {
        eprintln!("picosnitch: no GeoIP database could be opened");
        for e in skipped {
            eprintln!("  {e}");
        }
        return ExitCode::FAILURE;
    };
    for e in skipped
        .iter()
        .filter(|e| matches!(e, GeoError::Open { .. }))
    {
        eprintln!("picosnitch: {e}");
    }
    for &addr in addrs {
        let mut v =
            serde_json::to_value(lookup.lookup(addr).unwrap_or_default()).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("addr".into(), addr.to_string().into());
        }
        println!("{v}");
    }
    ExitCode::SUCCESS
}
