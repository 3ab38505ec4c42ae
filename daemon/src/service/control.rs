//! service::control: the verbs that manage the daemon rather than run it: `check-config`.
use crate::run::EXIT_CONFIG;
use std::path::Path;
use std::process::ExitCode;

/// `picosnitch check-config FILE`: loads FILE as the daemon would (with `PICOSNITCH_*`
/// overrides), prints the warnings, and exits 0 when it is valid, 78 when not.
pub fn check_config(path: &Path) -> ExitCode {
    match crate::config::load(path, true) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("picosnitch: warning: {w}");
            }
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("picosnitch: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
