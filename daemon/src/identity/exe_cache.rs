//! exe_cache.rs: open executables kept by (dev & st_dev_mask, ino) and their sha256, hashed from
//! the fd by the hash pool as soon as a file is cached or a run of a new version of it is seen
//! (each run's hash is its content's: see `versions`); lookups never block.
use super::fanotify::Watcher;
use super::hash_pool::{
    HashCounters, HashPool, Job, Limits, Outcome, Source, Stamp, HASH_MODIFIED,
};
use super::procfs::OpenedExe;
use super::versions::Versions;
use crate::model::FileId;
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Marker stored instead of a hash when the executable could not be read.
pub const HASH_UNREADABLE: &str = "!unreadable";
/// Marker stored when the hash was not ready when the row's window was written; the row's
/// executable is completed when the hash arrives. Stored as `!pending:DEV:INO:CTIME` (see
/// [`pending_marker`]) so that two runs waiting for different files or versions under one path
/// never share a stored executable.
pub const HASH_PENDING: &str = "!pending";

/// The `!pending` marker of version `ctime` of file `key`.
pub fn pending_marker(key: FileId, ctime: i64) -> String {
    format!("{HASH_PENDING}:{}:{}:{ctime}", key.dev, key.ino)
}

/// Whether a stored hash is a `!pending` marker.
pub fn is_pending(hash: &str) -> bool {
    hash.starts_with(HASH_PENDING)
}
/// Without fanotify, a cached hash is checked against the file's size and mtime this often.
const RECHECK: Duration = Duration::from_secs(1);

pub struct CachedExe {
    pub file: File,
    pub path: String,
}

impl Source for CachedExe {
    fn file(&self) -> &File {
        &self.file
    }
}

/// A computed hash and the stamp of the file it was computed from.
struct Hashed {
    hash: String,
    stamp: Option<Stamp>,
    checked: Instant,
}

#[derive(Default)]
struct Hashes {
    /// The hash of each file's content as it is now (forgotten when it is written to).
    done: HashMap<FileId, Hashed>,
    /// The hash of each version of a file's content that ran, by change time.
    runs: Versions,
    /// Keys with a job queued or running: for the current content (None) or one version.
    inflight: HashSet<(FileId, Option<i64>)>,
}

#[derive(Clone)]
pub struct ExeCache {
    mask: u64,
    open: Arc<Mutex<LruCache<FileId, Arc<CachedExe>>>>,
    hashes: Arc<Mutex<Hashes>>,
    pool: HashPool,
    pub hash_counters: Arc<HashCounters>,
    /// Marks every cached executable for writes, when fanotify is available.
    watcher: Option<Arc<Watcher>>,
}

impl ExeCache {
    #[cfg(test)]
    pub fn new(capacity: usize, dev_mask: u64) -> Self {
        ExeCache::with_limits(capacity, dev_mask, Limits::default())
    }

    /// A cache of `capacity` open files (at least 16) whose hashes follow `limits`.
    pub fn with_limits(capacity: usize, dev_mask: u64, limits: Limits) -> Self {
        let counters = Arc::new(HashCounters::default());
        ExeCache {
            mask: dev_mask,
            open: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(16)).expect("nonzero"),
            ))),
            hashes: Arc::new(Mutex::new(Hashes::default())),
            pool: HashPool::new(limits, counters.clone()),
            hash_counters: counters,
            watcher: None,
        }
    }

    /// Watches every executable cached from now on with `watcher`.
    pub fn with_watcher(mut self, watcher: Arc<Watcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Forgets the hash of a file (it was written to), asks for a new one and returns the last
    /// one computed.
    pub fn forget_hash(&self, id: FileId) -> Option<String> {
        let key = self.key(id);
        let old = self
            .hashes
            .lock()
            .expect("hash cache lock")
            .done
            .remove(&key)
            .map(|h| h.hash);
        self.request(key, None, None);
        old
    }

    /// Whether a hash of this file was computed (and not forgotten since).
    pub fn hash_known(&self, id: FileId) -> bool {
        let key = self.key(id);
        self.hashes
            .lock()
            .expect("hash cache lock")
            .done
            .contains_key(&key)
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

    /// Keeps an opened executable unless one with the same key is cached, and starts hashing
    /// it (as version `version` of its content when a run's change time is known). The file the
    /// cache drops to make room loses its fanotify mark and its hash.
    pub fn insert(&self, opened: OpenedExe, version: Option<i64>) {
        let key = self.key(opened.id);
        let evicted = {
            let mut open = self.open.lock().expect("exe cache lock");
            if open.get(&key).is_some() {
                return;
            }
            if let Some(w) = &self.watcher {
                if let Err(e) = w.watch(&opened.file) {
                    tracing::warn!("cannot watch {} for modification: {e}", opened.path);
                }
            }
            let exe = Arc::new(CachedExe {
                file: opened.file,
                path: opened.path,
            });
            open.push(key, exe).filter(|(k, _)| *k != key)
        };
        if let Some((old, exe)) = evicted {
            self.drop_evicted(old, &exe);
        }
        self.request(key, None, version);
    }

    /// A run of version `ctime` (change time at exec, ns) of a cached file was seen: its content
    /// is hashed now, while the run holds it unwritable, unless that version is known.
    pub fn want(&self, id: FileId, ctime: i64) {
        let key = self.key(id);
        let known = {
            let h = self.hashes.lock().expect("hash cache lock");
            h.runs.get(key, ctime).is_some()
        };
        if !known {
            self.request(key, None, Some(ctime));
        }
    }

    /// A file left the cache: its mark and its hash go with it.
    fn drop_evicted(&self, key: FileId, exe: &CachedExe) {
        if let Some(w) = &self.watcher {
            if let Err(e) = w.unwatch(&exe.file) {
                tracing::debug!("cannot remove the fanotify mark of {}: {e}", exe.path);
            }
        }
        let mut h = self.hashes.lock().expect("hash cache lock");
        h.done.remove(&key);
        h.runs.remove(key);
    }

    pub fn get(&self, id: FileId) -> Option<Arc<CachedExe>> {
        self.open
            .lock()
            .expect("exe cache lock")
            .get(&self.key(id))
            .cloned()
    }

    /// Queues a hash of a cached file (its current content, or version `version`) unless one is
    /// queued or running.
    fn request(&self, key: FileId, known: Option<Stamp>, version: Option<i64>) {
        let Some(exe) = self.get(key) else { return };
        if !self
            .hashes
            .lock()
            .expect("hash cache lock")
            .inflight
            .insert((key, version))
        {
            return;
        }
        let hashes = self.hashes.clone();
        let open = self.open.clone();
        let counters = self.hash_counters.clone();
        let path = exe.path.clone();
        let job = Job {
            file: exe,
            known,
            version,
            done: Box::new(move |o: Outcome| {
                let cached = open.lock().expect("exe cache lock").contains(&key);
                let mut h = hashes.lock().expect("hash cache lock");
                h.inflight.remove(&(key, version));
                if !cached {
                    // Evicted meanwhile: its hashes went with it.
                    return;
                }
                record(&mut h, key, version, o);
                let lost = version.is_some_and(|v| h.runs.get(key, v) == Some(HASH_MODIFIED));
                if lost {
                    counters
                        .modified_before_hash
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        exe = path,
                        "{path} was written to after a run executed it and before its content \
                         was hashed: that run is stored as {HASH_MODIFIED}"
                    );
                }
            }),
        };
        if !self.pool.submit(job) {
            self.hashes
                .lock()
                .expect("hash cache lock")
                .inflight
                .remove(&(key, version));
        }
    }

    /// The hash of version `ctime` of a cached file if it is known (ctime 0: the current
    /// content's, as `hash_ready`); never asks for it.
    pub fn run_hash(&self, id: FileId, ctime: i64) -> Option<String> {
        if ctime == 0 {
            return self.hash_ready(id);
        }
        let key = self.key(id);
        let h = self.hashes.lock().expect("hash cache lock");
        h.runs.get(key, ctime).map(str::to_string)
    }

    /// sha256 of a cached executable if it is ready, without blocking; otherwise it is asked
    /// for and None is returned. None also when the file is not cached.
    pub fn hash_ready(&self, id: FileId) -> Option<String> {
        let key = self.key(id);
        self.pool.check_deadlines();
        let found = {
            let h = self.hashes.lock().expect("hash cache lock");
            h.done
                .get(&key)
                .map(|d| (d.hash.clone(), d.stamp, d.checked.elapsed() >= RECHECK))
        };
        match found {
            Some((hash, stamp, stale)) => {
                // Without fanotify, a change is seen by size and mtime.
                if self.watcher.is_none() && stale {
                    self.request(key, stamp, None);
                }
                Some(hash)
            }
            None => {
                self.request(key, None, None);
                None
            }
        }
    }

    /// sha256 of the content a run executed (version `ctime`; 0: not known, the current
    /// content's), `!pending` when it is not ready yet (it is asked for); None when the file is
    /// not cached. Never blocks.
    pub fn sha256(&self, id: FileId, ctime: i64) -> Option<String> {
        self.get(id)?;
        let pending = pending_marker(self.key(id), ctime);
        if ctime == 0 {
            return Some(self.hash_ready(id).unwrap_or(pending));
        }
        Some(self.run_hash(id, ctime).unwrap_or_else(|| {
            self.want(id, ctime);
            pending
        }))
    }

    /// Waits up to `timeout` for the hash of a cached file (tests; never the writer).
    #[cfg(test)]
    pub fn wait_hash(&self, id: FileId, timeout: Duration) -> Option<String> {
        let t = Instant::now();
        loop {
            if let Some(h) = self.hash_ready(id) {
                return Some(h);
            }
            if t.elapsed() > timeout || self.get(id).is_none() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Keeps what a hash job found: the current content's hash (unless the file changed under it)
/// and the version it names.
fn record(h: &mut Hashes, key: FileId, version: Option<i64>, o: Outcome) {
    let checked = Instant::now();
    let Some(hash) = o.hash else {
        // Unchanged since the hash already known.
        if let Some(d) = h.done.get_mut(&key) {
            d.checked = checked;
        }
        return;
    };
    if let Some(v) = version.or(o.stamp.map(|s| s.ctime_ns)) {
        h.runs.insert(key, v, hash.clone());
    }
    if hash != HASH_MODIFIED && (version.is_none() || !h.done.contains_key(&key)) {
        h.done.insert(
            key,
            Hashed {
                hash,
                stamp: o.stamp,
                checked,
            },
        );
    }
}

/// Hashes a whole file with positional reads (the fd's offset is left alone).
#[cfg(test)]
pub fn hash_file(f: &File) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
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
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn opened(p: &std::path::Path) -> OpenedExe {
        let f = File::open(p).unwrap();
        let meta = f.metadata().unwrap();
        OpenedExe {
            file: f,
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            path: p.to_string_lossy().into(),
        }
    }

    #[test]
    fn hashes_from_fd_and_rehashes_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let o = opened(&p);
        let id = o.id;
        let cache = ExeCache::new(4, u64::MAX);
        cache.insert(o, None);
        let first = cache.wait_hash(id, Duration::from_secs(10)).unwrap();
        assert_eq!(
            first,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"abcd").unwrap();
        // Without fanotify the change is seen by size and mtime within a recheck.
        let t = Instant::now();
        while cache.hash_ready(id).unwrap() == first {
            assert!(t.elapsed() < Duration::from_secs(10), "change not seen");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            cache.hash_ready(id).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    fn ctime_of(p: &std::path::Path) -> i64 {
        let m = std::fs::metadata(p).unwrap();
        m.ctime() * 1_000_000_000 + m.ctime_nsec()
    }

    fn wait_run(cache: &ExeCache, id: FileId, ctime: i64) -> String {
        let t = Instant::now();
        loop {
            match cache.sha256(id, ctime).unwrap() {
                h if !is_pending(&h) => return h,
                _ => assert!(t.elapsed() < Duration::from_secs(10), "no hash"),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Each version of a file's content keeps its own hash; a version whose content is gone
    /// before it was hashed is `!modified`, never the hash of what replaced it.
    #[test]
    fn each_version_keeps_its_hash_and_a_lost_one_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let first = ctime_of(&p);
        let o = opened(&p);
        let id = o.id;
        let cache = ExeCache::new(4, u64::MAX);
        cache.insert(o, Some(first));
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(wait_run(&cache, id, first), abc);
        std::thread::sleep(Duration::from_millis(20));
        // In place: same inode, new change time.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"d")
            .unwrap();
        let second = ctime_of(&p);
        assert_ne!(first, second);
        cache.want(id, second);
        let abcd = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589";
        assert_eq!(wait_run(&cache, id, second), abcd);
        assert_eq!(
            wait_run(&cache, id, first),
            abc,
            "the first run keeps its hash"
        );
        // A run of a version never hashed before it was replaced.
        assert_eq!(wait_run(&cache, id, second - 1), HASH_MODIFIED);
        assert_eq!(
            cache
                .hash_counters
                .modified_before_hash
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_file_over_the_cap_is_too_large_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        File::create(&p).unwrap().set_len(4 << 40).unwrap();
        let o = opened(&p);
        let id = o.id;
        let cache = ExeCache::new(4, u64::MAX);
        let t = Instant::now();
        cache.insert(o, None);
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(
            cache.wait_hash(id, Duration::from_secs(10)).unwrap(),
            super::super::hash_pool::HASH_TOO_LARGE
        );
        assert_eq!(
            cache
                .hash_counters
                .too_large
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// The fd cache's least recently used file leaves with its fanotify mark and its hash.
    #[test]
    fn eviction_removes_the_mark_and_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let watcher = Arc::new(Watcher::new().unwrap());
        let cache = ExeCache::new(16, u64::MAX).with_watcher(watcher.clone());
        let mut ids = Vec::new();
        for i in 0..17 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, format!("{i}")).unwrap();
            let o = opened(&p);
            ids.push(o.id);
            cache.insert(o, None);
            cache.wait_hash(ids[i], Duration::from_secs(10)).unwrap();
        }
        assert!(cache.get(ids[0]).is_none(), "the first file is evicted");
        assert!(!cache.hash_known(ids[0]));
        assert!(cache.hash_known(ids[1]));
        for i in [0, 1] {
            std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join(format!("f{i}")))
                .unwrap()
                .write_all(b"x")
                .unwrap();
        }
        let c = watcher.read().unwrap();
        assert_eq!(
            c.modified,
            vec![ids[1]],
            "only the cached file is still marked"
        );
    }

    #[test]
    fn mask_zero_compares_inode_only() {
        let c = ExeCache::new(4, 0);
        assert!(c.same_file(FileId { dev: 1, ino: 5 }, FileId { dev: 9, ino: 5 }));
        let own = procfs::open_exe(std::process::id()).unwrap();
        let id = own.id;
        c.insert(own, None);
        assert!(c
            .get(FileId {
                dev: 12345,
                ino: id.ino
            })
            .is_some());
    }
}
