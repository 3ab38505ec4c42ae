//! versions.rs: the hash of each version of an executable's content that ran, keyed by the
//! change time (ns) the kernel reported at exec, so a file edited between two runs gives each run
//! its own hash; a bounded number of versions per file.
use crate::model::FileId;
use std::collections::HashMap;

/// Versions kept per file: past it the oldest other than the one just recorded is forgotten (a
/// run of it then asks again: `!modified` if its content is gone, its hash if it is not).
pub const MAX_VERSIONS: usize = 8;

#[derive(Default)]
pub struct Versions {
    by_file: HashMap<FileId, Vec<(i64, String)>>,
}

impl Versions {
    /// The hash (or `!` marker) of version `ctime` of `file`, if known.
    pub fn get(&self, file: FileId, ctime: i64) -> Option<&str> {
        self.by_file
            .get(&file)?
            .iter()
            .find(|(c, _)| *c == ctime)
            .map(|(_, h)| h.as_str())
    }

    /// Records the hash of a version; past `MAX_VERSIONS` the oldest other version is dropped
    /// (never the one just recorded, which a waiting run asked for). A known version keeps its
    /// first hash (its content cannot have changed without its change time changing).
    pub fn insert(&mut self, file: FileId, ctime: i64, hash: String) {
        let list = self.by_file.entry(file).or_default();
        if list.iter().any(|(c, _)| *c == ctime) {
            return;
        }
        list.push((ctime, hash));
        list.sort_by_key(|(c, _)| *c);
        if list.len() > MAX_VERSIONS {
            if let Some(i) = list.iter().position(|(c, _)| *c != ctime) {
                list.remove(i);
            }
        }
    }

    /// Forgets every version of a file (it left the fd cache).
    pub fn remove(&mut self, file: FileId) {
        self.by_file.remove(&file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_version_and_only_the_newest_few() {
        let f = FileId { dev: 1, ino: 2 };
        let mut v = Versions::default();
        v.insert(f, 10, "a".into());
        v.insert(f, 10, "other".into());
        v.insert(f, 20, "b".into());
        assert_eq!(v.get(f, 10), Some("a"));
        assert_eq!(v.get(f, 20), Some("b"));
        for c in 30..(30 + MAX_VERSIONS as i64) {
            v.insert(f, c, c.to_string());
        }
        assert_eq!(v.get(f, 10), None, "the oldest left");
        assert_eq!(v.get(f, 20), None);
        assert_eq!(v.get(f, 30), Some("30"));
        // An older version asked for again is kept, the oldest other one goes.
        v.insert(f, 5, "old".into());
        assert_eq!(v.get(f, 5), Some("old"));
        assert_eq!(v.get(f, 30), None);
        v.remove(f);
        assert_eq!(v.get(f, 5), None);
    }
}
