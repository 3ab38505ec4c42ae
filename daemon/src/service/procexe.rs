//! service::procexe: whether a pid is a picosnitch process, before `stop` signals it or `status`
//! reports it: its executable is this binary's file, or a file of the same name (a binary
//! replaced by an upgrade); a user who may not read another's `/proc/PID/exe` compares `comm`.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Ok when `pid` runs picosnitch; otherwise why not (the executable or name it runs).
pub fn is_picosnitch(pid: u32) -> Result<(), String> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let exe_link = proc_dir.join("exe");
    let ours = std::fs::metadata("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    if let Ok(theirs) = std::fs::metadata(&exe_link) {
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Ok(());
        }
    }
    let our_name = our_exe_name()?;
    match std::fs::read_link(&exe_link) {
        Ok(target) => {
            let text = target.to_string_lossy();
            let path = Path::new(text.strip_suffix(" (deleted)").unwrap_or(&text));
            if path.file_name().map(|n| n.to_string_lossy().into_owned()) == Some(our_name) {
                Ok(())
            } else {
                Err(format!("it runs {}", target.display()))
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err("no such process".into()),
        Err(_) => {
            // Another user's process: only its name is visible.
            let comm = std::fs::read_to_string(proc_dir.join("comm"))
                .map_err(|_| "no such process".to_string())?;
            let comm = comm.trim_end_matches('\n');
            // The kernel keeps the first 15 bytes of the executable's name.
            let want: String = our_name.chars().take(15).collect();
            if comm == want {
                Ok(())
            } else {
                Err(format!("its name is {comm:?}"))
            }
        }
    }
}

/// The file name of this binary (as the kernel started it).
fn our_exe_name() -> Result<String, String> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let text = exe.to_string_lossy();
    let path = Path::new(text.strip_suffix(" (deleted)").unwrap_or(&text));
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no file name", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_itself_and_sleep_is_not() {
        assert_eq!(is_picosnitch(std::process::id()), Ok(()));
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let why = is_picosnitch(sleep.id()).unwrap_err();
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert!(why.contains("sleep"), "{why}");
        assert_eq!(
            is_picosnitch(sleep.id()).unwrap_err(),
            "no such process",
            "a reaped pid"
        );
    }
}
