//! geoip/shared.rs: the GeoIP databases in use, shared by the API and the event feed, and
//! reopened from the configured paths on SIGHUP (after `geoipupdate` replaced them).
use super::{open_configured, GeoipConfig, Lookup};
use std::sync::{Arc, RwLock};

/// The databases of `[geoip]`, replaced as a whole when reloaded: a reader keeps the set it
/// took until it is done.
pub struct Shared {
    config: GeoipConfig,
    current: RwLock<Option<Arc<Lookup>>>,
}

impl Shared {
    /// Opens the configured databases (a missing one is a note in the log).
    pub fn open(config: &GeoipConfig) -> Arc<Shared> {
        Arc::new(Shared {
            current: RwLock::new(open_configured(config).map(Arc::new)),
            config: config.clone(),
        })
    }

    /// The databases in use now, if any.
    pub fn get(&self) -> Option<Arc<Lookup>> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Reads the configured files again (blocking: call it off the async threads).
    pub fn reload(&self) {
        let fresh = open_configured(&self.config).map(Arc::new);
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
    }
}
