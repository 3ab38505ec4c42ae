//! cli_docs: shell completions and the manual page are generated from the command definitions and
//! name every verb; the bash script is valid bash.
mod common;

use common::BIN;
use std::process::Command;

const VERBS: &[&str] = &[
    "start",
    "stop",
    "restart",
    "status",
    "systemd",
    "start-no-daemon",
    "check-config",
    "migrate",
    "query",
    "export",
    "doctor",
    "version",
];

fn stdout(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn completions_and_man_page_name_every_verb() {
    let bash = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("picosnitch.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let text = stdout(&["completions", shell]);
        for v in VERBS {
            assert!(text.contains(v), "{shell} completion lacks {v}");
        }
    }
    let man = stdout(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH picosnitch"),
        "{man}"
    );
    for v in VERBS {
        assert!(bash.contains(v), "bash completion lacks {v}");
        // roff escapes the hyphens.
        assert!(man.contains(&v.replace('-', "\\-")), "man page lacks {v}");
    }
    // The hidden helper is not advertised.
    assert!(!man.contains("notify-helper"));
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
