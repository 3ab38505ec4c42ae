//! config::api: `[api]`, where the daemon serves its read-only API when no sockets are passed to
//! it (socket activation passes its own): a TCP address and the unix socket switch.
use super::Problem;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Api {
    /// TCP address of the API; "" turns the TCP listener off.
    pub listen: String,
    /// Also serve the API on the unix socket `/run/picosnitch/api.sock`.
    pub socket: bool,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: "127.0.0.1:5100".into(),
            socket: true,
        }
    }
}

impl Api {
    /// The TCP address to bind, if TCP is on (`listen` was checked when the config was loaded).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    pub fn check(&self, warnings: &mut Vec<String>) -> Result<(), Problem> {
        if self.listen.is_empty() {
            return Ok(());
        }
        let Some(addr) = self.tcp_addr() else {
            return Err(Problem::new(
                "api.listen",
                format!("{:?}", self.listen),
                "use an IP address and port such as \"127.0.0.1:5100\" or \"[::1]:5100\", or \"\" \
                 to turn the TCP listener off",
            ));
        };
        if !addr.ip().is_loopback() {
            warnings.push(format!(
                "api.listen = {addr} is not a loopback address: anyone who can reach it can read \
                 the recorded traffic (the API has no authentication)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_str;

    #[test]
    fn listen_and_socket() {
        let d = super::Api::default();
        assert_eq!(d.tcp_addr(), Some("127.0.0.1:5100".parse().unwrap()));
        assert!(d.socket);
        let l = load_str("[api]\nlisten = \"\"\nsocket = false\n").unwrap();
        assert_eq!(l.config.api.tcp_addr(), None);
        assert!(!l.config.api.socket);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let l = load_str("[api]\nlisten = \"[::1]:0\"\n").unwrap();
        assert_eq!(l.config.api.tcp_addr(), Some("[::1]:0".parse().unwrap()));
        let l = load_str("[api]\nlisten = \"0.0.0.0:5100\"\n").unwrap();
        assert!(
            l.warnings[0].contains("not a loopback address"),
            "{:?}",
            l.warnings
        );
        for bad in ["localhost:5100", "127.0.0.1", "127.0.0.1:99999", "x"] {
            let e = load_str(&format!("[api]\nlisten = \"{bad}\"\n"))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains(&format!("api.listen = \"{bad}\" is not allowed")),
                "{e}"
            );
            assert!(e.contains("127.0.0.1:5100"), "{e}");
        }
        let e = load_str("[api]\nsocket = \"yes\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("api.socket"), "{e}");
    }
}
