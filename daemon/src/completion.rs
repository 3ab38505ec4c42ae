//! completion.rs: what the writer waits for from the hash pool without blocking: executables
//! stored as `!pending` (their rows are completed when the hash arrives) and written-to
//! executables (a decision when their new hash differs).
use crate::identity::exe_cache::ExeCache;
use crate::model::{ExeIdent, FileId, Row};
use crate::notify::{Decision, Kind};
use std::sync::Arc;

/// Executables waiting for their hash, at most; the oldest is given up past it (its rows keep
/// `!pending`).
pub const MAX_WAITING: usize = 4096;

/// A stored executable level whose hash was not ready.
struct Pending {
    file: FileId,
    /// The version of its content the run executed (change time, 0: the current content).
    version: i64,
    ident: Arc<ExeIdent>,
    /// The window it was stored in: rows from then on are completed.
    since: i64,
    /// A row that names it, for the notifier once the hash is known.
    row: Row,
}

/// One executable whose hash arrived: rows stored with `pending` now name `done`.
pub struct Completed {
    pub pending: Arc<ExeIdent>,
    pub done: Arc<ExeIdent>,
    pub since: i64,
    /// The sample row with the completed executable, for the notifier.
    pub row: Row,
}

#[derive(Default)]
pub struct Waiting {
    pending: Vec<Pending>,
    modified: Vec<(FileId, Option<String>)>,
}

impl Waiting {
    /// Remembers the `!pending` executables of a window just handed to the store.
    pub fn add_pending(&mut self, list: Vec<(FileId, i64, Arc<ExeIdent>)>, rows: &[Row]) {
        for (file, version, wanted) in list {
            // As stored: the [log] rules may have blanked its command line.
            let same = |i: &Arc<ExeIdent>| i.exe == wanted.exe && i.sha256 == wanted.sha256;
            let found = rows.iter().find_map(|r| {
                let k = &r.key;
                [&k.exe, &k.parent, &k.grandparent]
                    .into_iter()
                    .find(|i| same(i))
                    .map(|i| (r, i.clone()))
            });
            let Some((row, ident)) = found else {
                // Filtered out by the [log] rules: nothing stored to complete.
                continue;
            };
            if self
                .pending
                .iter()
                .any(|p| p.file == file && p.version == version && p.ident == ident)
            {
                continue;
            }
            if self.pending.len() >= MAX_WAITING {
                let gone = self.pending.remove(0);
                tracing::warn!(
                    exe = gone.ident.exe,
                    "too many executables wait for their hash: rows of the oldest keep !pending"
                );
            }
            self.pending.push(Pending {
                file,
                version,
                since: row.contime,
                ident,
                row: row.clone(),
            });
        }
    }

    /// Whether stored executables still wait for their hash.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Rehashes a written-to executable; `ready` reports it once its new hash is known.
    pub fn add_modified(&mut self, cache: &ExeCache, id: FileId) {
        let old = cache.forget_hash(id);
        if let Some(w) = self
            .modified
            .iter_mut()
            .find(|(f, _)| cache.same_file(*f, id))
        {
            // Still waiting: the older hash is what it changed from.
            w.1 = w.1.take().or(old);
            return;
        }
        if self.modified.len() < MAX_WAITING {
            self.modified.push((id, old));
        }
    }

    /// The executables whose hash arrived since the last call (those that left the fd cache
    /// are given up: their rows keep `!pending`).
    pub fn completed(&mut self, cache: &ExeCache) -> Vec<Completed> {
        let mut out = Vec::new();
        self.pending.retain(|p| {
            if cache.get(p.file).is_none() {
                return false;
            }
            let Some(hash) = cache.run_hash(p.file, p.version) else {
                if p.version != 0 {
                    // Asked again if its job was refused (queue full).
                    cache.want(p.file, p.version);
                }
                return true;
            };
            let done = Arc::new(ExeIdent {
                sha256: hash,
                ..(*p.ident).clone()
            });
            let mut row = p.row.clone();
            for level in [
                &mut row.key.exe,
                &mut row.key.parent,
                &mut row.key.grandparent,
            ] {
                if Arc::ptr_eq(level, &p.ident) {
                    *level = done.clone();
                }
            }
            out.push(Completed {
                pending: p.ident.clone(),
                done,
                since: p.since,
                row,
            });
            false
        });
        out
    }

    /// Some written-to executable is being rehashed.
    pub fn has_modified(&self) -> bool {
        !self.modified.is_empty()
    }

    /// Decisions for written-to executables whose new hash arrived and differs.
    pub fn modified(&mut self, cache: &ExeCache) -> Vec<Decision> {
        let mut out = Vec::new();
        self.modified.retain(|(id, old)| {
            if cache.get(*id).is_none() {
                return false;
            }
            let Some(new) = cache.hash_ready(*id) else {
                return true;
            };
            if old.as_deref() != Some(new.as_str()) {
                out.push(Decision {
                    kind: Kind::Modified,
                    level: 0,
                    exe: cache.path_of(*id).unwrap_or_default(),
                    name: String::new(),
                    sha256: new,
                    previous_sha256: old.clone(),
                    uid: None,
                    parent_exe: String::new(),
                    container: String::new(),
                });
            }
            false
        });
        out
    }
}
