//! notify: decisions about executables (new program, new name, new hash, modified on disk) and
//! how they reach the user: the log (journald under systemd) and exe.log.
pub mod desktop;
pub mod exelog;

use crate::identity::container::has_own_files;
use crate::model::{ExeIdent, Row};
use crate::store::{Novelty, Store};
use exelog::{escape, local_time, ExeLog};
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An executable's first network traffic.
    NewExe,
    /// A known executable under a name it never had.
    NewName,
    /// A known executable with a sha256 it never had.
    NewHash,
    /// A cached executable was written to on disk.
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: Kind,
    /// 0 the process, 1 its parent, 2 its grandparent.
    pub level: u8,
    pub exe: String,
    pub name: String,
    pub sha256: String,
    pub previous_sha256: Option<String>,
    pub uid: Option<u32>,
    pub parent_exe: String,
    pub container: String,
}

impl Decision {
    /// The exe.log line, in picosnitch's format, names escaped ([`exelog::escape`]).
    pub fn exe_log_line(&self, now: i64) -> String {
        let t = local_time(now);
        let level = match self.level {
            1 => " (parent)",
            2 => " (grandparent)",
            _ => "",
        };
        let short = |h: &str| escape(h).chars().take(16).collect::<String>();
        let (name, exe) = (escape(&self.name), escape(&self.exe));
        match self.kind {
            Kind::NewExe => format!("{t} {name} {exe} (new name, exe){level}"),
            Kind::NewName => format!("{t} {name} {exe} (new name){level}"),
            Kind::NewHash => format!("{t} {} {exe} (new hash){level}", short(&self.sha256)),
            Kind::Modified => format!("{t} {} {exe} (modified on disk)", short(&self.sha256)),
        }
    }

    /// The desktop notification, keyed by executable path and sha256.
    pub fn desktop_notice(&self) -> desktop::Notice {
        let previous = self.previous_sha256.as_deref();
        match self.kind {
            Kind::NewExe => desktop::Notice::new_program(&self.exe, &self.name, &self.sha256),
            Kind::NewName => desktop::Notice::new_name(&self.exe, &self.name, &self.sha256),
            Kind::NewHash => desktop::Notice::new_hash(&self.exe, &self.sha256, previous),
            Kind::Modified => desktop::Notice::modified(&self.exe, &self.sha256, previous),
        }
    }

    pub fn summary(&self) -> String {
        match self.kind {
            Kind::NewExe => format!("New program on the network: {}", self.name),
            Kind::NewName => format!("Known program under a new name: {}", self.name),
            Kind::NewHash => format!("Program changed (new sha256): {}", self.exe),
            Kind::Modified => format!("Executable modified on disk: {}", self.exe),
        }
    }
}

pub struct Notifier {
    exe_log: ExeLog,
    desktop: Option<desktop::Desktop>,
}

impl Notifier {
    pub fn new(exe_log: ExeLog) -> Self {
        Notifier {
            exe_log,
            desktop: None,
        }
    }

    /// Also shows every decision as a desktop notification (`[desktop] notifications`).
    pub fn with_desktop(mut self, desktop: desktop::Desktop) -> Self {
        self.desktop = Some(desktop);
        self
    }

    /// Records every executable level of a written window and returns what was new.
    pub fn on_rows(&mut self, store: &mut Store, rows: &[Row], now: i64) -> Vec<Decision> {
        let mut seen: HashSet<(u8, Arc<ExeIdent>, &str)> = HashSet::new();
        let mut out = Vec::new();
        for row in rows {
            let k = &row.key;
            let levels = [(0u8, &k.exe), (1, &k.parent), (2, &k.grandparent)];
            // A container has its own files: its executables are known separately from the
            // host's. A system unit shares the host's.
            let files = if has_own_files(&k.container) {
                k.container.as_str()
            } else {
                ""
            };
            for (level, ident) in levels {
                // Observed when its hash arrives (the writer completes it then).
                if crate::identity::exe_cache::is_pending(&ident.sha256) {
                    continue;
                }
                if !seen.insert((level, ident.clone(), files)) {
                    continue;
                }
                let novelty = match store.observe(files, level, ident, now) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("cannot record a known executable: {e}");
                        continue;
                    }
                };
                let decide = |kind| Decision {
                    kind,
                    level,
                    exe: ident.exe.clone(),
                    name: ident.name.clone(),
                    sha256: ident.sha256.clone(),
                    previous_sha256: None,
                    uid: (level == 0).then_some(k.uid),
                    parent_exe: if level == 0 {
                        k.parent.exe.clone()
                    } else {
                        String::new()
                    },
                    container: k.container.clone(),
                };
                let Novelty {
                    new_exe,
                    new_name,
                    new_hash,
                } = novelty;
                if new_exe {
                    out.push(decide(Kind::NewExe));
                }
                if new_name {
                    out.push(decide(Kind::NewName));
                }
                if new_hash {
                    let mut d = decide(Kind::NewHash);
                    d.previous_sha256 = store
                        .known_hashes(files, &ident.exe)
                        .ok()
                        .and_then(|h| h.into_iter().find(|h| *h != ident.sha256));
                    out.push(d);
                }
            }
        }
        out
    }

    /// Writes a decision to the log (structured fields for journald) and to exe.log.
    pub fn report(&mut self, d: &Decision, now: i64) {
        tracing::warn!(
            decision = ?d.kind,
            exe = %d.exe,
            name = %d.name,
            sha256 = %d.sha256,
            previous_sha256 = d.previous_sha256.as_deref().unwrap_or(""),
            level = d.level,
            uid = d.uid.map(i64::from).unwrap_or(-1),
            parent_exe = %d.parent_exe,
            container = %d.container,
            "{}",
            d.summary()
        );
        if let Err(e) = self.exe_log.append(&d.exe_log_line(now)) {
            tracing::error!("cannot write {}: {e}", self.exe_log.path().display());
        }
        if let Some(desktop) = &self.desktop {
            desktop.notify(d.desktop_notice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_log_lines() {
        let d = Decision {
            kind: Kind::NewExe,
            level: 1,
            exe: "/usr/bin/curl".into(),
            name: "curl".into(),
            sha256: "0123456789abcdef0123".into(),
            previous_sha256: None,
            uid: None,
            parent_exe: String::new(),
            container: String::new(),
        };
        let l = d.exe_log_line(0);
        assert!(
            l.ends_with(" curl /usr/bin/curl (new name, exe) (parent)"),
            "{l}"
        );
        let h = Decision {
            kind: Kind::NewHash,
            level: 0,
            ..d
        };
        assert!(h
            .exe_log_line(0)
            .ends_with(" 0123456789abcdef /usr/bin/curl (new hash)"));
    }
}
