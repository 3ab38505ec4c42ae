//! known.rs: the record of executables seen on the network (names, hashes, first/last seen), and
//! what is new about an executable when it is seen again.
use super::writer::Store;
use super::StoreError;
use crate::model::ExeIdent;
use rusqlite::params;

/// What was new about one sighting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Novelty {
    /// The path was never seen at this level in this container.
    pub new_exe: bool,
    /// The path was seen, never with this name.
    pub new_name: bool,
    /// The path was seen, never with this sha256.
    pub new_hash: bool,
}

impl Store {
    /// Records that `ident` was seen at `level` (0 process, 1 parent, 2 grandparent) and returns
    /// what was new. Executables with an unknown path are not recorded.
    pub fn observe(
        &mut self,
        container: &str,
        level: u8,
        ident: &ExeIdent,
        now: i64,
    ) -> Result<Novelty, StoreError> {
        if ident.exe.is_empty() {
            return Ok(Novelty::default());
        }
        let path = self.path().to_path_buf();
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sql { path, what, source }
        };
        let conn = self.conn_mut();
        let tx = conn.transaction().map_err(err("begin a transaction"))?;
        let (exe_rows, name_rows, hash_rows): (i64, i64, i64) = tx
            .prepare_cached(
                "SELECT count(*), coalesce(sum(name = ?4), 0), coalesce(sum(sha256 = ?5), 0)
                 FROM known_executables WHERE container = ?1 AND level = ?2 AND exe = ?3",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![container, level, ident.exe, ident.name, ident.sha256],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .map_err(err("look up a known executable"))?;
        tx.prepare_cached(
            "INSERT INTO known_executables (container, level, exe, name, sha256, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (container, level, exe, name, sha256) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .and_then(|mut st| st.execute(params![container, level, ident.exe, ident.name, ident.sha256, now]))
        .map_err(err("record a known executable"))?;
        tx.commit().map_err(err("commit a known executable"))?;
        Ok(Novelty {
            new_exe: exe_rows == 0,
            new_name: exe_rows > 0 && name_rows == 0,
            new_hash: exe_rows > 0 && hash_rows == 0,
        })
    }

    /// The hashes recorded for an executable, newest first.
    pub fn known_hashes(&self, container: &str, exe: &str) -> Result<Vec<String>, StoreError> {
        let q = "SELECT sha256 FROM known_executables WHERE container = ?1 AND exe = ?2
                 GROUP BY sha256 ORDER BY max(last_seen) DESC";
        self.conn_ref()
            .prepare_cached(q)
            .and_then(|mut st| {
                st.query_map(params![container, exe], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(|source| StoreError::Sql {
                path: self.path().to_path_buf(),
                what: "read known hashes",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str, sha: &str) -> ExeIdent {
        ExeIdent {
            exe: "/usr/bin/curl".into(),
            name: name.into(),
            cmdline: "curl x".into(),
            sha256: sha.into(),
        }
    }

    #[test]
    fn novelty_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let mut s = Store::open(&db).unwrap();
        let new = s.observe("", 0, &ident("curl", "aa"), 1).unwrap();
        assert_eq!(
            new,
            Novelty {
                new_exe: true,
                ..Default::default()
            }
        );
        assert_eq!(
            s.observe("", 0, &ident("curl", "aa"), 2).unwrap(),
            Novelty::default()
        );
        let renamed = s.observe("", 0, &ident("curl-x", "aa"), 3).unwrap();
        assert_eq!(
            renamed,
            Novelty {
                new_name: true,
                ..Default::default()
            }
        );
        // Another level and another container are separate records.
        assert!(s.observe("", 1, &ident("curl", "aa"), 3).unwrap().new_exe);
        assert!(
            s.observe("podman:abc", 0, &ident("curl", "bb"), 3)
                .unwrap()
                .new_exe
        );
        drop(s);
        let mut s = Store::open(&db).unwrap();
        let rehashed = s.observe("", 0, &ident("curl", "bb"), 4).unwrap();
        assert_eq!(
            rehashed,
            Novelty {
                new_hash: true,
                ..Default::default()
            }
        );
        assert_eq!(
            s.known_hashes("", "/usr/bin/curl").unwrap(),
            vec!["bb", "aa"]
        );
        // Retention keeps the record.
        s.retention(1, 10_000_000).unwrap();
        assert!(!s.observe("", 0, &ident("curl", "bb"), 5).unwrap().new_exe);
    }

    #[test]
    fn unknown_paths_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("p.db")).unwrap();
        let anon = ExeIdent::default();
        assert_eq!(s.observe("", 0, &anon, 1).unwrap(), Novelty::default());
    }
}
