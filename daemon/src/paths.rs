//! paths.rs: every file the daemon reads or writes, under `$PICOSNITCH_ROOT` when it is set.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub db: PathBuf,
    pub exe_log: PathBuf,
    pub conn_log: PathBuf,
}

impl Paths {
    /// Paths under `root` ("/" for the system's own files).
    pub fn under(root: &Path) -> Self {
        let p = |rel: &str| root.join(rel);
        Paths {
            config: p("etc/picosnitch/config.toml"),
            db: p("var/lib/picosnitch/picosnitch.db"),
            exe_log: p("var/log/picosnitch/exe.log"),
            conn_log: p("var/log/picosnitch/conn.log"),
        }
    }

    pub fn from_env() -> Self {
        let root = std::env::var_os("PICOSNITCH_ROOT")
            .filter(|r| !r.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::under(&root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_prefixes_everything() {
        let p = Paths::under(Path::new("/tmp/x"));
        assert_eq!(p.db, Path::new("/tmp/x/var/lib/picosnitch/picosnitch.db"));
        assert_eq!(p.config, Path::new("/tmp/x/etc/picosnitch/config.toml"));
        assert_eq!(
            Paths::under(Path::new("/")).db,
            Path::new("/var/lib/picosnitch/picosnitch.db")
        );
    }
}
