//! identity: pid → executable. Opens /proc/PID/exe as soon as a process is seen, checks it against
//! the (dev, ino) the kernel reported, and keeps the fd so the binary can be hashed even after exit.
pub mod bounded;
pub mod container;
pub mod exe_cache;
pub mod fanotify;
pub mod hash_pool;
pub mod procfs;
pub mod versions;

use crate::model::{FileId, ProcEvent};
use bounded::{Bounded, Stalled};
use exe_cache::ExeCache;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Marker for an executable that could not be opened; the row keeps everything else known.
pub const EXE_UNAVAILABLE: &str = "!unavailable";

/// One process level of a row, before hashing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProcRef {
    /// The executable as the kernel named it (dev, ino); hashed through the cached fd.
    pub file: FileId,
    pub exe: String,
    pub name: String,
    pub cmdline: String,
    /// The version of the file's content this run executed: its change time (ns) at exec, as
    /// the kernel reported it; 0 when the exec was not seen (the current content is hashed).
    pub ctime: i64,
    /// Why the executable is unknown; `None` when `file` is in the fd cache.
    pub error: Option<&'static str>,
}

#[derive(Default, Debug)]
pub struct Counters {
    /// Processes whose executable could not be opened (exited first, or /proc unreadable).
    pub exe_unavailable: AtomicU64,
    /// /proc/PID/exe named another file than the kernel reported (pid reused or exec raced).
    pub exe_mismatch: AtomicU64,
    /// Command lines that could not be read.
    pub cmdline_unreadable: AtomicU64,
    /// cgroups removed before their container could be named (rows are stored as the host's).
    pub container_unresolved: AtomicU64,
    /// Reads of a user's path or a process's command line that missed their deadline (or were
    /// refused while earlier ones were still blocked); each is also counted as what it lost.
    pub read_stalled: AtomicU64,
}

struct Entry {
    start_ticks: u64,
    proc: Arc<ProcRef>,
    /// The file name given to execve, kept to resolve the process after it exited.
    hint: Option<Arc<str>>,
}

pub struct Identity {
    procs: HashMap<u32, Entry>,
    exited: HashSet<u32>,
    exiting: HashSet<u32>,
    pub cache: ExeCache,
    containers: container::Containers,
    pub counters: Arc<Counters>,
    /// Opens and stats of executables (a user's path may hang: FUSE).
    files: Bounded,
    /// Reads of /proc/PID/cmdline (a process's held or FUSE-backed memory may hang them).
    cmdlines: Bounded,
}

impl Identity {
    pub fn with_cache(cache: ExeCache) -> Self {
        Identity {
            procs: HashMap::new(),
            exited: HashSet::new(),
            exiting: HashSet::new(),
            cache,
            containers: container::Containers::new(container::cgroup2_root()),
            counters: Arc::new(Counters::default()),
            files: Bounded::new("executable open", bounded::DEADLINE, bounded::MAX_STUCK),
            cmdlines: Bounded::new("command line read", bounded::DEADLINE, bounded::MAX_STUCK),
        }
    }

    pub fn on_event(&mut self, ev: &ProcEvent) {
        match ev {
            ProcEvent::Exec {
                tgid,
                start_ns,
                exe,
                comm,
                path,
                cgroup,
                exe_ctime_ns,
                parent,
                ..
            } => {
                let version = i64::try_from(*exe_ctime_ns).unwrap_or(0);
                self.cache_from_parent(*exe, parent, version);
                // Named while the process lives: a short-lived container's cgroup is gone by the
                // time its traffic is drained.
                self.container(*cgroup, *tgid);
                let ticks = procfs::ns_to_ticks(*start_ns);
                let hint: Option<Arc<str>> = (!path.is_empty()).then(|| Arc::from(path.as_str()));
                let p = self.open(*tgid, ticks, *exe, version, Some(comm), hint.as_deref());
                self.procs.insert(
                    *tgid,
                    Entry {
                        start_ticks: ticks,
                        proc: p,
                        hint,
                    },
                );
            }
            ProcEvent::Fork {
                tgid,
                ppid,
                start_ns,
                exe,
            } => {
                // A forked child runs its parent's image: share what the parent resolved. When
                // the parent is not known the child is resolved at its first traffic.
                let inherited = self
                    .procs
                    .get(ppid)
                    .filter(|e| self.cache.same_file(e.proc.file, *exe) && e.proc.error.is_none())
                    .map(|e| (e.proc.clone(), e.hint.clone()));
                if let Some((proc, hint)) = inherited {
                    self.procs.insert(
                        *tgid,
                        Entry {
                            start_ticks: procfs::ns_to_ticks(*start_ns),
                            proc,
                            hint,
                        },
                    );
                }
            }
            ProcEvent::Exit { tgid } => {
                self.exiting.insert(*tgid);
            }
        }
    }

    /// A program that executes its own file again (`execv("/proc/self/exe")`, a re-exec after
    /// an update) may be gone before its record is read, and its exec name is a link that is
    /// never followed: when the file is not cached yet and the live parent runs the same file,
    /// the parent's /proc/PID/exe is held instead.
    fn cache_from_parent(&mut self, exe: FileId, parent: &crate::model::KernelProc, version: i64) {
        if parent.tgid == 0
            || !self.cache.same_file(parent.exe, exe)
            || self.cache.get(exe).is_some()
        {
            return;
        }
        if let Some(opened) = self.open_live(parent.tgid, 0, exe) {
            self.cache.insert(opened, (version != 0).then_some(version));
        }
    }

    /// The container (or system unit) of cgroup `id`, which process `tgid` was in; empty: host.
    pub fn container(&mut self, id: u64, tgid: u32) -> Arc<str> {
        let before = self.containers.unresolved;
        let name = self.containers.name(id, tgid);
        if self.containers.unresolved != before {
            self.counters
                .container_unresolved
                .fetch_add(1, Ordering::Relaxed);
        }
        name
    }

    /// Forgets processes that exited before the previous drain (their traffic is all counted).
    pub fn after_drain(&mut self) {
        for t in self.exited.drain() {
            self.procs.remove(&t);
        }
        std::mem::swap(&mut self.exited, &mut self.exiting);
    }

    /// Resolves a process the kernel reported with `exe`; `start_ns` 0 means "not known".
    pub fn resolve(&mut self, tgid: u32, start_ns: u64, exe: FileId, comm: &str) -> Arc<ProcRef> {
        if tgid == 0 {
            return Arc::new(ProcRef::default());
        }
        let ticks = if start_ns == 0 {
            0
        } else {
            procfs::ns_to_ticks(start_ns)
        };
        let mut hint = None;
        if let Some(e) = self.procs.get(&tgid) {
            let same_start = ticks == 0 || e.start_ticks == 0 || e.start_ticks == ticks;
            if same_start && self.cache.same_file(e.proc.file, exe) {
                if e.proc.error.is_none() {
                    return e.proc.clone();
                }
                hint = e.hint.clone();
            }
        }
        let comm = (!comm.is_empty()).then_some(comm);
        let p = self.open(tgid, ticks, exe, 0, comm, hint.as_deref());
        self.procs.insert(
            tgid,
            Entry {
                start_ticks: ticks,
                proc: p.clone(),
                hint,
            },
        );
        p
    }

    /// Reads a live process from /proc, or falls back to the cached fd of the kernel's (dev, ino);
    /// the content of version `ctime` (0: not known) is hashed at once.
    fn open(
        &mut self,
        tgid: u32,
        ticks: u64,
        kexe: FileId,
        ctime: i64,
        comm: Option<&str>,
        hint: Option<&str>,
    ) -> Arc<ProcRef> {
        let name = comm
            .map(str::to_string)
            .or_else(|| procfs::comm(tgid).ok())
            .unwrap_or_default();
        if kexe.is_none() {
            // Kernel threads have no executable.
            return Arc::new(ProcRef {
                file: kexe,
                name,
                error: Some("kernel thread"),
                ..Default::default()
            });
        }
        let hint = hint.filter(|h| h.starts_with('/')).map(str::to_string);
        let version = (ctime != 0).then_some(ctime);
        if let Some(cached) = self.cache.get(kexe) {
            if ctime != 0 {
                self.cache.want(kexe, ctime);
            }
            // A binary already held open: only what belongs to this process is read.
            let exe = self
                .name_of_cached(tgid, kexe, hint)
                .unwrap_or_else(|| cached.path.clone());
            let cmdline = self.cmdline(tgid);
            return Arc::new(ProcRef {
                file: kexe,
                exe,
                name,
                cmdline,
                ctime,
                error: None,
            });
        }
        if let Some(opened) = self.open_live(tgid, ticks, kexe) {
            let cmdline = self.cmdline(tgid);
            // The path this process was started by: hard links of one binary keep their names.
            let exe = opened.path.clone();
            self.cache.insert(opened, version);
            return Arc::new(ProcRef {
                file: kexe,
                exe,
                name,
                cmdline,
                ctime,
                error: None,
            });
        }
        // The process is gone: the file it executed, if it is still the same inode.
        if let Some(opened) = hint.and_then(|h| self.open_by_name(h, kexe)) {
            let exe = opened.path.clone();
            self.cache.insert(opened, version);
            return Arc::new(ProcRef {
                file: kexe,
                exe,
                name,
                cmdline: String::new(),
                ctime,
                error: None,
            });
        }
        tracing::debug!(tgid, kernel_file = ?kexe, name, "executable unavailable");
        self.counters
            .exe_unavailable
            .fetch_add(1, Ordering::Relaxed);
        Arc::new(ProcRef {
            file: kexe,
            exe: String::new(),
            name,
            cmdline: String::new(),
            ctime: 0,
            error: Some("exited before its executable could be opened"),
        })
    }

    /// The path a process running a cached binary was started by: /proc/PID/exe as its own mount
    /// namespace names it (hard links and bind mounts into containers keep their names), else
    /// the exec file name when it names the kernel's file here.
    fn name_of_cached(&self, tgid: u32, kexe: FileId, hint: Option<String>) -> Option<String> {
        let cache = self.cache.clone();
        let found = self.files.run(move || {
            let names_it =
                |p: &String| procfs::file_id(p).is_ok_and(|id| cache.same_file(id, kexe));
            procfs::live_exe(tgid)
                .ok()
                .filter(|(id, _)| cache.same_file(*id, kexe))
                .map(|(_, path)| path)
                .or_else(|| hint.filter(names_it))
        });
        self.stalled(found).flatten()
    }

    /// Opens /proc/PID/exe of a live process that still runs the kernel's file and started when
    /// the kernel said (`ticks` 0: not known).
    fn open_live(&self, tgid: u32, ticks: u64, kexe: FileId) -> Option<procfs::OpenedExe> {
        let opened = self.files.run(move || {
            let o = procfs::open_exe(tgid).ok()?;
            let same_start = ticks == 0 || procfs::start_ticks(tgid).ok() == Some(ticks);
            Some((o, same_start))
        });
        let (o, same_start) = self.stalled(opened).flatten()?;
        let same_file = self.cache.same_file(o.id, kexe);
        if !(same_file && same_start) {
            tracing::debug!(tgid, path = %o.path, proc_file = ?o.id, kernel_file = ?kexe, same_start, "executable mismatch");
            self.counters.exe_mismatch.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(o)
    }

    /// Opens the file an exited process executed by the name it was executed by, if that name
    /// still names the kernel's (dev, ino); never blocking the loop (see `procfs::open_path`).
    fn open_by_name(&self, hint: String, kexe: FileId) -> Option<procfs::OpenedExe> {
        let cache = self.cache.clone();
        let opened = self.files.run(move || {
            procfs::open_path(&hint, |id| cache.same_file(id, kexe))
                .map_err(|e| tracing::debug!(path = hint, "exec file name not opened: {e}"))
                .ok()
        });
        self.stalled(opened).flatten()
    }

    /// The answer of a bounded read, or `None` counted and logged when it stalled.
    fn stalled<T>(&self, r: Result<T, Stalled>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.counters.read_stalled.fetch_add(1, Ordering::Relaxed);
                match e {
                    Stalled::TooManyStuck { .. } => tracing::debug!("{e}"),
                    _ => tracing::warn!("{e}; recorded without it"),
                }
                None
            }
        }
    }

    /// The command line of a process (capped, see `procfs::cmdline`); empty when it cannot be
    /// read. A process that already exited has none left to read, which is not a failure.
    fn cmdline(&self, tgid: u32) -> String {
        let read = self.cmdlines.run(move || procfs::cmdline(tgid));
        let Some(read) = self.stalled(read) else {
            self.counters
                .cmdline_unreadable
                .fetch_add(1, Ordering::Relaxed);
            return String::new();
        };
        read.unwrap_or_else(|e| {
            if e.kind() != std::io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::ESRCH) {
                self.counters
                    .cmdline_unreadable
                    .fetch_add(1, Ordering::Relaxed);
            }
            String::new()
        })
    }

    /// sha256 (or a `!` marker) of a resolved process level; blocking.
    pub fn sha256_of(cache: &ExeCache, p: &ProcRef) -> String {
        match p.error {
            Some(_) if p.file.is_none() => String::new(),
            Some(_) => EXE_UNAVAILABLE.to_string(),
            None => cache
                .sha256(p.file, p.ctime)
                .unwrap_or_else(|| EXE_UNAVAILABLE.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn own_exe() -> FileId {
        let m = std::fs::metadata("/proc/self/exe").unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[test]
    fn resolves_self_with_cmdline_and_hash() {
        let mut id = Identity::with_cache(ExeCache::new(64, u64::MAX));
        let me = std::process::id();
        let p = id.resolve(me, 0, own_exe(), "me");
        assert!(p.error.is_none());
        assert_eq!(p.exe, std::env::current_exe().unwrap().to_string_lossy());
        id.cache
            .wait_hash(p.file, std::time::Duration::from_secs(10));
        let h = Identity::sha256_of(&id.cache, &p);
        let expect = exe_cache::hash_file(&std::fs::File::open("/proc/self/exe").unwrap()).unwrap();
        assert_eq!(h, expect);
    }

    #[test]
    fn mismatching_inode_is_never_attributed() {
        let mut id = Identity::with_cache(ExeCache::new(64, u64::MAX));
        let me = std::process::id();
        let wrong = FileId {
            dev: own_exe().dev,
            ino: own_exe().ino + 1,
        };
        let p = id.resolve(me, 0, wrong, "x");
        assert!(p.error.is_some());
        assert!(p.exe.is_empty());
        assert_eq!(id.counters.exe_mismatch.load(Ordering::Relaxed), 1);
        assert_eq!(id.counters.exe_unavailable.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn exited_process_resolves_through_cached_inode() {
        let mut id = Identity::with_cache(ExeCache::new(64, u64::MAX));
        id.resolve(std::process::id(), 0, own_exe(), "me");
        // A pid that does not exist, running the same binary.
        let p = id.resolve(u32::MAX - 1, 0, own_exe(), "child");
        assert!(p.error.is_none());
        assert_eq!(p.exe, std::env::current_exe().unwrap().to_string_lossy());
        assert_eq!(p.name, "child");
    }
}
