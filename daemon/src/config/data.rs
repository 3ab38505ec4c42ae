//! config::data: `[data]`, who owns the files the daemon writes (database, exe.log, error.log) and
//! their mode; names are resolved to ids when the config is loaded.
use super::Problem;
use serde::{Deserialize, Serialize};
use std::ffi::CString;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Data {
    /// User name (or numeric uid) that owns the data files.
    pub owner: String,
    /// Group name (or numeric gid) of the data files; also the group of the API's unix socket.
    pub group: String,
    /// Octal permission bits of the data files, as a string ("0640": the owner and the group only).
    pub mode: String,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            owner: "root".into(),
            group: "root".into(),
            mode: "0640".into(),
        }
    }
}

/// The id of a `[data]` owner or group this machine does not have (a file checked where it is
/// built, not where it runs); never applied to a file.
pub const ID_NOT_HERE: u32 = u32::MAX;

/// `[data]` resolved: numeric owner, group and mode, applied to every data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAccess {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Default for DataAccess {
    fn default() -> Self {
        DataAccess {
            uid: 0,
            gid: 0,
            mode: 0o640,
        }
    }
}

impl Data {
    /// Resolves the names and parses the mode; every problem names its key.
    pub fn resolve(&self) -> Result<DataAccess, Problem> {
        let uid = self.uid()?;
        let gid = self.gid()?;
        Ok(DataAccess {
            uid,
            gid,
            mode: self.mode()?,
        })
    }

    /// Like [`Data::resolve`], but a user or group missing on this machine is a warning (and
    /// [`ID_NOT_HERE`] stands in for it: not root, so the units still grant what it needs).
    pub fn resolve_or_warn(&self, warnings: &mut Vec<String>) -> Result<DataAccess, Problem> {
        let mut missing = |r: Result<u32, Problem>| {
            r.unwrap_or_else(|p| {
                warnings.push(format!(
                    "{p} (not on this machine; the daemon will not start where it is missing)"
                ));
                ID_NOT_HERE
            })
        };
        let uid = missing(self.uid());
        let gid = missing(self.gid());
        Ok(DataAccess {
            uid,
            gid,
            mode: self.mode()?,
        })
    }

    fn uid(&self) -> Result<u32, Problem> {
        lookup_id(&self.owner, IdKind::User).ok_or_else(|| {
            Problem::new(
                "data.owner",
                format!("{:?}", self.owner),
                "use the name (or number) of an existing user, such as \"root\"",
            )
        })
    }

    fn gid(&self) -> Result<u32, Problem> {
        lookup_id(&self.group, IdKind::Group).ok_or_else(|| {
            Problem::new(
                "data.group",
                format!("{:?}", self.group),
                "use the name (or number) of an existing group, such as \"root\" or \"adm\"",
            )
        })
    }

    fn mode(&self) -> Result<u32, Problem> {
        parse_mode(&self.mode).ok_or_else(|| {
            Problem::new(
                "data.mode",
                format!("{:?}", self.mode),
                "use an octal mode string such as \"0644\" or \"0640\": permission bits only, \
                 readable and writable by the owner, not writable by other users",
            )
        })
    }
}

/// "0644", "644" or "0o644" → 0o644, when it is a sensible mode for a data file.
fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    let mode = u32::from_str_radix(digits, 8).ok()?;
    let owner_rw = mode & 0o600 == 0o600;
    let special = mode & !0o777 != 0;
    let other_writable = mode & 0o002 != 0;
    (owner_rw && !special && !other_writable).then_some(mode)
}

#[derive(Clone, Copy)]
enum IdKind {
    User,
    Group,
}

/// A user or group name (or a plain number) → its numeric id, from the system's databases.
fn lookup_id(name: &str, kind: IdKind) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if let Some(id) = by_name(name, kind) {
        return Some(id);
    }
    name.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

fn by_name(name: &str, kind: IdKind) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getpwnam_r/getgrnam_r write only into the struct and the buffer we own and pass
    // with its length; the result pointer is either null or points at our struct.
    unsafe {
        match kind {
            IdKind::User => {
                let mut pw: libc::passwd = std::mem::zeroed();
                let mut out: *mut libc::passwd = std::ptr::null_mut();
                let r = libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                );
                (r == 0 && !out.is_null()).then_some(pw.pw_uid)
            }
            IdKind::Group => {
                let mut gr: libc::group = std::mem::zeroed();
                let mut out: *mut libc::group = std::ptr::null_mut();
                let r = libc::getgrnam_r(
                    cname.as_ptr(),
                    &mut gr,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                );
                (r == 0 && !out.is_null()).then_some(gr.gr_gid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("640"), Some(0o640));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        for bad in ["", "0666", "0444", "4755", "0x1a4", "abc", "06440", "0o"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_resolve() {
        let d = Data::default().resolve().unwrap();
        assert_eq!(d, DataAccess::default());
        let nobody = Data {
            owner: "nobody".into(),
            group: "65534".into(),
            ..Data::default()
        };
        assert_eq!(nobody.resolve().unwrap().uid, 65534);
        let bad = Data {
            owner: "no-such-user-here".into(),
            ..Data::default()
        };
        let e = bad.resolve().unwrap_err().to_string();
        assert!(e.starts_with("data.owner = \"no-such-user-here\""), "{e}");
        let bad = Data {
            group: String::new(),
            ..Data::default()
        };
        assert!(bad
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("data.group"));
    }
}
