//! config::virustotal: `[virustotal]`, the API key and how lookups may use it; checked here, used
//! by the VirusTotal helper.
use super::Problem;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VirusTotal {
    /// "" turns VirusTotal lookups off.
    pub api_key: String,
    /// Upload executables VirusTotal does not know yet (off: only hashes are sent).
    pub file_upload: bool,
    /// Seconds between two requests (the public API allows 4 a minute).
    pub request_limit_seconds: u32,
}

impl Default for VirusTotal {
    fn default() -> Self {
        VirusTotal {
            api_key: String::new(),
            file_upload: false,
            request_limit_seconds: 15,
        }
    }
}

// The key is a secret: never printed whole, not even in debug output.
impl std::fmt::Debug for VirusTotal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirusTotal")
            .field("api_key", &redact(&self.api_key))
            .field("file_upload", &self.file_upload)
            .field("request_limit_seconds", &self.request_limit_seconds)
            .finish()
    }
}

impl VirusTotal {
    pub fn enabled(&self) -> bool {
        !self.api_key.is_empty()
    }

    pub fn check(&self) -> Result<(), Problem> {
        let k = &self.api_key;
        if !k.is_empty()
            && (!(20..=128).contains(&k.len()) || !k.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(Problem::new(
                "virustotal.api_key",
                redact(k),
                "use the API key of your VirusTotal account (letters and digits only), or \"\" \
                 to turn lookups off",
            ));
        }
        if self.request_limit_seconds > 86400 {
            return Err(Problem::new(
                "virustotal.request_limit_seconds",
                self.request_limit_seconds.to_string(),
                "use 0 to 86400 seconds (15 suits the public API's 4 requests a minute)",
            ));
        }
        if self.file_upload && k.is_empty() {
            return Err(Problem::new(
                "virustotal.file_upload",
                "true".to_string(),
                "set virustotal.api_key too: uploads need a key",
            ));
        }
        Ok(())
    }
}

/// A key as errors show it: its first four characters and its length.
fn redact(k: &str) -> String {
    if k.is_empty() {
        return "\"\"".into();
    }
    let head: String = k.chars().take(4).collect();
    format!("\"{head}…\" ({} characters)", k.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_limits() {
        assert!(VirusTotal::default().check().is_ok());
        let good = VirusTotal {
            api_key: "0123456789abcdef".repeat(4),
            ..Default::default()
        };
        assert!(good.check().is_ok());
        assert!(good.enabled());
        let bad = VirusTotal {
            api_key: "secret key with spaces".into(),
            ..Default::default()
        };
        let e = bad.check().unwrap_err().to_string();
        assert!(e.starts_with("virustotal.api_key = \"secr…\""), "{e}");
        assert!(!e.contains("with spaces"), "the key is not printed: {e}");
        assert!(!format!("{bad:?}").contains("with spaces"));
        let slow = VirusTotal {
            request_limit_seconds: 100000,
            ..Default::default()
        };
        assert!(slow
            .check()
            .unwrap_err()
            .to_string()
            .contains("virustotal.request_limit_seconds = 100000"));
        let upload = VirusTotal {
            file_upload: true,
            ..Default::default()
        };
        assert!(upload
            .check()
            .unwrap_err()
            .to_string()
            .contains("file_upload"));
    }
}
