//! containers: two podman containers run different binaries at the same path; their rows carry
//! their own sha256, container id and network namespace, never the host's.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const PODMAN_RUN: &[&str] = &[
    "run",
    "--runtime",
    "runc",
    "--pull=never",
    "--rm",
    "--network=none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

/// A local image holding only `/bin/tg`: the traffic generator with `suffix` appended, so each
/// image's binary has its own sha256. Removed when dropped.
struct Image {
    tag: String,
    sha256: String,
}

impl Image {
    fn build(dir: &Path, name: &str, suffix: &[u8]) -> Image {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let mut bin = std::fs::read(trafficgen()).unwrap();
        bin.extend_from_slice(suffix);
        let tg = root.join("bin/tg");
        std::fs::write(&tg, &bin).unwrap();
        std::fs::set_permissions(&tg, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let tar = dir.join(format!("{name}.tar"));
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let tag = format!("localhost/picosnitch-test-{name}:{}", std::process::id());
        let out = Command::new("podman")
            .args(["import", "-q"])
            .arg(&tar)
            .arg(&tag)
            .output()
            .expect("podman is installed (scripts/install-deps)");
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image {
            tag,
            sha256: sha256sum(&tg),
        }
    }

    /// Runs `/bin/tg ARGS` in a new container; returns the container id and the JSON it printed.
    fn run(&self, dir: &Path, args: &[&str]) -> (String, serde_json::Value) {
        let cidfile: PathBuf = dir.join(format!("cid-{}", rand_suffix()));
        let json = run_json(
            Command::new("podman")
                .args(PODMAN_RUN)
                .arg("--cidfile")
                .arg(&cidfile)
                .arg(&self.tag)
                .arg("/bin/tg")
                .args(args),
        );
        let cid = std::fs::read_to_string(&cidfile)
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(cid.len(), 64, "container id {cid:?}");
        (cid, json)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn containers_are_told_apart_by_hash_container_and_netns() {
    let dir = tempfile::tempdir().unwrap();
    let a = Image::build(dir.path(), "a", b"\0container a");
    let b = Image::build(dir.path(), "b", b"\0container b");
    let host = trafficgen();
    let host_sha = sha256sum(&host);
    assert_ne!(a.sha256, b.sha256);

    let daemon = Daemon::start("[database]\nwrite_limit_seconds = 1\n");
    // Each run lives ~0.3 s: a process that exits before the daemon reads its exec record is
    // stored as `!unavailable` (README), which a loaded machine makes likely for a 1 ms run.
    let drip = |bytes: &'static str| {
        [
            "drip",
            "--bytes",
            bytes,
            "--count",
            "2",
            "--interval-ms",
            "150",
        ]
    };
    let (cid_a, ja) = a.run(dir.path(), &drip("617"));
    let (cid_b, jb) = b.run(dir.path(), &drip("2160"));
    assert_eq!(ja["sent"], 1234);
    assert_eq!(jb["sent"], 4320);
    let stopped = daemon.stop();

    let rows = rows_for_exe(&stopped.db, Path::new("/bin/tg"));
    let host_netns = netns_of(std::process::id());
    for (img, cid, sent) in [(&a, &cid_a, 1234), (&b, &cid_b, 4320)] {
        let mine: Vec<&DbRow> = rows
            .iter()
            .filter(|r| r.container == format!("podman:{cid}"))
            .collect();
        assert!(
            !mine.is_empty(),
            "no rows of container {cid}: {rows:#?}\n{}",
            stopped.log
        );
        // Client and server both run in the container and echo: each sent and received it.
        assert_eq!(sum(&mine), (2 * sent, 2 * sent), "{mine:#?}");
        for r in &mine {
            assert_eq!(r.sha256, img.sha256, "{r:?}");
            assert_ne!(r.sha256, host_sha);
            assert_ne!(r.netns, host_netns, "{r:?}");
        }
    }
    // Each container's executables are known on their own: /bin/tg is new in both.
    let conn = rusqlite::Connection::open(&stopped.db).unwrap();
    for (img, cid) in [(&a, &cid_a), (&b, &cid_b)] {
        let known: i64 = conn
            .query_row(
                "SELECT count(*) FROM known_executables
                 WHERE container = ?1 AND exe = '/bin/tg' AND sha256 = ?2 AND level = 0",
                [format!("podman:{cid}"), img.sha256.clone()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(known, 1, "{cid}");
    }
}
