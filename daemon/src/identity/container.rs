//! container.rs: names the container (or system unit) of a process from its cgroup v2 id, which the
//! kernel reports with every flow and exec, through the cgroup's path.
use lru::LruCache;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directories visited at most when looking for a cgroup whose process already exited.
const WALK_LIMIT: usize = 20_000;

/// The container or unit name of a cgroup path relative to the cgroup v2 root; empty for the host
/// (the root, user sessions and anything that is not a container or a system service).
///
/// Container runtimes are recognised by the scope or directory they create: podman
/// (`libpod-ID[.scope]`), docker (`docker-ID.scope`, `/docker/ID`), containerd/CRI
/// (`cri-containerd-ID.scope`), CRI-O (`crio-ID.scope`), kubepods with cgroupfs (`/kubepods/…/podUID/ID`),
/// systemd-nspawn and libvirt (`machine.slice/machine-NAME.scope`) and LXC (`lxc.payload.NAME`).
/// System services are `unit:NAME` (`/system.slice/NAME.service`).
///
/// Below a user's systemd instance (`user@UID.service`) the user creates cgroups as they like, so
/// nothing there may claim to be the system's container: what the subtree names is prefixed
/// `user:UID:` (a rootless podman container is `user:1000:podman:ID`), unless a container above
/// the user's instance already names it.
pub fn classify(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((at, uid)) = parts
        .iter()
        .enumerate()
        .find_map(|(i, p)| Some((i, user_instance(p)?)))
    else {
        return classify_parts(&parts);
    };
    let above = classify_parts(&parts[..at]);
    if has_own_files(&above) {
        return above;
    }
    match classify_parts(&parts[at + 1..]) {
        below if below.is_empty() => String::new(),
        below => format!("user:{uid}:{below}"),
    }
}

/// The uid of a user's systemd instance cgroup (`user@UID.service`), whose subtree is delegated.
fn user_instance(part: &str) -> Option<&str> {
    part.strip_prefix("user@")?
        .strip_suffix(".service")
        .filter(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// `classify` of a path already split into its directories, trusting every one of them.
fn classify_parts(parts: &[&str]) -> String {
    for (i, part) in parts.iter().enumerate().rev() {
        let scope = part.strip_suffix(".scope").unwrap_or(part);
        if let Some(id) = scope.strip_prefix("libpod-") {
            if id.starts_with("conmon-") {
                // podman's monitor process runs on the host.
                return String::new();
            }
            if is_id(id) {
                return format!("podman:{id}");
            }
        }
        for (prefix, kind) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "crio"),
        ] {
            if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_id(id)) {
                return format!("{kind}:{id}");
            }
        }
        if is_id(part) && i > 0 {
            let parent = parts[i - 1];
            if parent == "docker" {
                return format!("docker:{part}");
            }
            if parent.starts_with("pod") && parts.iter().any(|p| p.starts_with("kubepods")) {
                return format!("kubepods:{part}");
            }
        }
        if let Some(name) = part.strip_prefix("lxc.payload.") {
            return format!("lxc:{name}");
        }
        if let Some(name) = scope
            .strip_prefix("machine-")
            .filter(|_| part.ends_with(".scope"))
        {
            return format!("machine:{}", unescape(name));
        }
    }
    match parts {
        ["system.slice", unit, ..] if unit.ends_with(".service") || unit.ends_with(".scope") => {
            format!("unit:{}", unescape(unit))
        }
        _ => String::new(),
    }
}

/// Whether a container name names a separate filesystem (a container, not a host unit): its
/// executables are known separately from the host's.
pub fn has_own_files(container: &str) -> bool {
    let own = without_user(container);
    !own.is_empty() && !own.starts_with("unit:")
}

/// A name without its `user:UID:` prefix (what a user's subtree named itself).
fn without_user(name: &str) -> &str {
    name.strip_prefix("user:")
        .and_then(|rest| rest.split_once(':'))
        .map_or(name, |(_, own)| own)
}

/// Container ids: 12 to 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    (12..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// systemd escapes `-` and other bytes in unit names as `\xNN`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if b.is_ascii() => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cgroup v2 mount point, from the mount table; `None` without cgroup v2.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// cgroup id → container name, cached.
pub struct Containers {
    root: Option<PathBuf>,
    cache: LruCache<u64, Arc<str>>,
    host: Arc<str>,
    /// cgroups that could not be found (the cgroup was removed before it was looked up).
    pub unresolved: u64,
}

impl Containers {
    pub fn new(root: Option<PathBuf>) -> Self {
        Containers {
            root,
            cache: LruCache::new(NonZeroUsize::new(4096).expect("nonzero")),
            host: Arc::from(""),
            unresolved: 0,
        }
    }

    /// The container of cgroup `id`; `tgid` is a process that was in it (its /proc entry names
    /// the path without walking the tree).
    pub fn name(&mut self, id: u64, tgid: u32) -> Arc<str> {
        // 0: no cgroup v2 id (an old kernel); 1: the root cgroup.
        if id <= 1 {
            return self.host.clone();
        }
        if let Some(n) = self.cache.get(&id) {
            return n.clone();
        }
        let Some(root) = self.root.clone() else {
            return self.host.clone();
        };
        let path = proc_cgroup(tgid)
            .filter(|p| ino_of(&root.join(p.trim_start_matches('/'))) == Some(id))
            .or_else(|| find(&root, id));
        let name: Arc<str> = match path {
            Some(p) => Arc::from(classify(&p)),
            None => {
                self.unresolved += 1;
                tracing::debug!(cgroup = id, tgid, "cgroup not found");
                return self.host.clone();
            }
        };
        self.cache.put(id, name.clone());
        name
    }
}

fn ino_of(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// The cgroup v2 path of a live process ("0::/path" in /proc/PID/cgroup).
fn proc_cgroup(tgid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Walks the cgroup tree for the directory whose inode is `id`; the path relative to `root`.
fn find(root: &Path, id: u64) -> Option<String> {
    let mut stack = vec![root.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > WALK_LIMIT {
            return None;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if ino_of(&p) == Some(id) {
                return p
                    .strip_prefix(root)
                    .ok()
                    .map(|r| format!("/{}", r.display()));
            }
            stack.push(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "15bb599886648967ea49832e038eebefc774295abc527e3f02399dbcef8e301c";

    #[test]
    fn runtimes_and_units() {
        let cases = [
            (format!("/libpod_parent/libpod-{ID}"), format!("podman:{ID}")),
            (format!("/machine.slice/libpod-{ID}.scope/container"), format!("podman:{ID}")),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), String::new()),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
                format!("user:1000:podman:{ID}"),
            ),
            // A user's delegated subtree cannot pose as the system's containers or units.
            (
                format!("/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope"),
                format!("user:1000:docker:{ID}"),
            ),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker/{ID}"),
                format!("user:1000:docker:{ID}"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/system.slice/sshd.service".into(),
                "user:1000:unit:sshd.service".into(),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/machine.slice/machine-x.scope".into(),
                "user:1000:machine:x".into(),
            ),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/a.service".into(), String::new()),
            // Anywhere in the path, not only below /user.slice.
            (format!("/x/user@0.service/docker-{ID}.scope"), format!("user:0:docker:{ID}")),
            // A user inside a container is that container's.
            (
                format!("/system.slice/docker-{ID}.scope/user.slice/user@1000.service/libpod-{ID}.scope"),
                format!("docker:{ID}"),
            ),
            // Not a user instance: no digits, or not a service.
            (format!("/user@x.service/docker-{ID}.scope"), format!("docker:{ID}")),
            (format!("/system.slice/docker-{ID}.scope"), format!("docker:{ID}")),
            (format!("/docker/{ID}"), format!("docker:{ID}")),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope"),
                format!("containerd:{ID}"),
            ),
            (format!("/kubepods/besteffort/pod0c1d/{ID}"), format!("kubepods:{ID}")),
            (format!("/system.slice/crio-{ID}.scope"), format!("crio:{ID}")),
            ("/machine.slice/machine-web\\x2d1.scope/payload".into(), "machine:web-1".into()),
            ("/lxc.payload.db/init.scope".into(), "lxc:db".into()),
            ("/system.slice/nginx.service".into(), "unit:nginx.service".into()),
            ("/system.slice/getty@tty1.service/x".into(), "unit:getty@tty1.service".into()),
            ("/user.slice/user-1000.slice/session-2.scope".into(), String::new()),
            ("/".into(), String::new()),
            ("/init.scope".into(), String::new()),
            // Not an id: too short, or upper case.
            ("/docker/abc".into(), String::new()),
        ];
        for (path, want) in cases {
            assert_eq!(classify(&path), want, "{path}");
        }
        assert!(has_own_files("podman:ab"));
        assert!(!has_own_files("unit:nginx.service"));
        assert!(has_own_files("user:1000:podman:ab"));
        assert!(!has_own_files("user:1000:unit:nginx.service"));
        assert!(!has_own_files(""));
    }

    #[test]
    fn own_cgroup_resolves_by_pid_and_by_walk() {
        let Some(root) = cgroup2_root() else { return };
        let me = std::process::id();
        let path = proc_cgroup(me).expect("own cgroup");
        let id = ino_of(&root.join(path.trim_start_matches('/'))).expect("own cgroup dir");
        let mut c = Containers::new(Some(root.clone()));
        assert_eq!(&*c.name(id, me), classify(&path));
        if id > 1 {
            assert_eq!(find(&root, id), Some(path));
        }
        assert_eq!(c.unresolved, 0);
    }
}
