//! config::inert: keys this version accepts (picosnitch 1 and earlier files have them) but does
//! not act on; each set one gets a warning naming it, so that nobody believes it works.
use figment::Figment;

/// The warnings for the inert keys `fig` sets. `virustotal` and `remote_database` also keep the
/// service unit's network closed (see `service::units::needs_network`).
pub fn warnings(fig: &Figment, virustotal: bool, remote_database: bool) -> Vec<String> {
    let set = |key: &str| fig.find_value(key).is_ok();
    let mut out = Vec::new();
    if set("desktop.user") {
        out.push(
            "desktop.user has no effect: desktop notifications go to every logged-in user's \
             session (desktop.notifications = false turns them off)"
                .to_string(),
        );
    }
    if set("desktop.geoip_lookup") {
        out.push(
            "desktop.geoip_lookup has no effect: countries are looked up in the databases that \
             geoip.databases names"
                .to_string(),
        );
    }
    if virustotal {
        out.push(
            "virustotal.api_key has no effect: VirusTotal lookups do not exist in this version \
             (nothing is sent, and the service unit keeps the network closed)"
                .to_string(),
        );
    }
    if remote_database {
        out.push(
            "[database.remote] has no effect: remote databases do not exist in this version \
             (nothing is sent, and the service unit keeps the network closed)"
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    #[test]
    fn every_inert_key_is_named() {
        let l = load_str(
            "[desktop]\nuser = \"alice\"\ngeoip_lookup = true\n\
             [virustotal]\napi_key = \"0123456789abcdef0123456789abcdef\"\n\
             [database.remote]\nurl = \"postgres://db.example/ps\"\n",
        )
        .unwrap();
        let w = l.warnings.join("\n");
        for key in [
            "desktop.user has no effect",
            "desktop.geoip_lookup has no effect",
            "virustotal.api_key has no effect",
            "[database.remote] has no effect",
        ] {
            assert!(w.contains(key), "no {key:?} in {w}");
        }
        assert_eq!(l.warnings.len(), 4, "{w}");
        let l = load_str("[desktop]\nnotifications = false\n").unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }
}
