//! exe_cache.rs: open executables kept by (dev & st_dev_mask, ino) and their sha256, hashed from the fd.
use super::fanotify::Watcher;
use super::procfs::OpenedExe;
use crate::model::FileId;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};

/// Marker stored instead of a hash when the executable could not be read.
pub const HASH_UNREADABLE: &str = "!unreadable";

pub struct CachedExe {
    pub file: File,
    pub path: String,
}

/// Identity of the file content that a hash belongs to: a change of size or mtime means rehash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Version {
    id: FileId,
    size: u64,
    mtime_ns: i128,
}

#[derive(Clone)]
pub struct ExeCache {
    mask: u64,
    open: Arc<Mutex<LruCache<FileId, Arc<CachedExe>>>>,
    hashes: Arc<Mutex<HashMap<Version, String>>>,
    /// Marks every cached executable for writes, when fanotify is available.
    watcher: Option<Arc<Watcher>>,
}

impl ExeCache {
    pub fn new(capacity: usize, dev_mask: u64) -> Self {
        ExeCache {
            mask: dev_mask,
            open: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(16)).expect("nonzero"),
            ))),
            hashes: Arc::new(Mutex::new(HashMap::new())),
            watcher: None,
        }
    }

    /// Watches every executable cached from now on with `watcher`.
    pub fn with_watcher(mut self, watcher: Arc<Watcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Forgets the hash of a file (it was written to) and returns the last one computed.
    pub fn forget_hash(&self, id: FileId) -> Option<String> {
        let key = self.key(id);
        let mut hashes = self.hashes.lock().expect("hash cache lock");
        let old = hashes
            .iter()
            .find(|(k, _)| k.id == key)
            .map(|(_, h)| h.clone());
        hashes.retain(|k, _| k.id != key);
        old
    }

    /// Whether a hash of this file was computed (and not forgotten since).
    pub fn hash_known(&self, id: FileId) -> bool {
        let key = self.key(id);
        let hashes = self.hashes.lock().expect("hash cache lock");
        hashes.keys().any(|k| k.id == key)
    }

    /// Every cached executable (to rehash them all when fanotify lost events).
    pub fn ids(&self) -> Vec<FileId> {
        let open = self.open.lock().expect("exe cache lock");
        open.iter().map(|(k, _)| *k).collect()
    }

    /// The path of a cached executable.
    pub fn path_of(&self, id: FileId) -> Option<String> {
        self.get(id).map(|c| c.path.clone())
    }

    /// The cache key of a file: the device masked by `st_dev_mask`.
    pub fn key(&self, id: FileId) -> FileId {
        FileId {
            dev: id.dev & self.mask,
            ino: id.ino,
        }
    }

    pub fn same_file(&self, a: FileId, b: FileId) -> bool {
        self.key(a) == self.key(b)
    }

    /// Keeps an opened executable unless one with the same key is cached.
    pub fn insert(&self, opened: OpenedExe) {
        let key = self.key(opened.id);
        let mut open = self.open.lock().expect("exe cache lock");
        if open.get(&key).is_some() {
            return;
        }
        let path = opened.path.clone();
        if let Some(w) = &self.watcher {
            if let Err(e) = w.watch(&opened.file) {
                tracing::warn!("cannot watch {path} for modification: {e}");
            }
        }
        open.put(
            key,
            Arc::new(CachedExe {
                file: opened.file,
                path: opened.path,
            }),
        );
    }

    pub fn get(&self, id: FileId) -> Option<Arc<CachedExe>> {
        self.open
            .lock()
            .expect("exe cache lock")
            .get(&self.key(id))
            .cloned()
    }

    /// sha256 of a cached executable, computed from the open fd (blocking: call from a blocking pool).
    pub fn sha256(&self, id: FileId) -> Option<String> {
        let exe = self.get(id)?;
        let Ok(meta) = exe.file.metadata() else {
            return Some(HASH_UNREADABLE.into());
        };
        let v = Version {
            id: self.key(id),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        if let Some(h) = self.hashes.lock().expect("hash cache lock").get(&v) {
            return Some(h.clone());
        }
        let h = hash_file(&exe.file).unwrap_or_else(|_| HASH_UNREADABLE.into());
        let mut hashes = self.hashes.lock().expect("hash cache lock");
        hashes.retain(|k, _| k.id != v.id);
        hashes.insert(v, h.clone());
        Some(h)
    }
}

/// Hashes a whole file with positional reads (the fd's offset is left alone).
pub fn hash_file(f: &File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let n = f.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `st_dev_mask` when not configured: 0 when a btrfs filesystem is mounted (its st_dev differs
/// from the kernel's superblock device), all ones otherwise.
pub fn auto_dev_mask() -> u64 {
    let btrfs = std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("btrfs"))
        })
        .unwrap_or(false);
    if btrfs {
        0
    } else {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::procfs;

    #[test]
    fn hashes_from_fd_and_rehashes_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let meta = f.metadata().unwrap();
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let cache = ExeCache::new(4, u64::MAX);
        cache.insert(OpenedExe {
            file: f,
            id,
            path: p.to_string_lossy().into(),
        });
        assert_eq!(
            cache.sha256(id).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"abcd").unwrap();
        assert_eq!(
            cache.sha256(id).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn mask_zero_compares_inode_only() {
        let c = ExeCache::new(4, 0);
        assert!(c.same_file(FileId { dev: 1, ino: 5 }, FileId { dev: 9, ino: 5 }));
        let own = procfs::open_exe(std::process::id()).unwrap();
        let id = own.id;
        c.insert(own);
        assert!(c
            .get(FileId {
                dev: 12345,
                ino: id.ino
            })
            .is_some());
    }
}
