//! exelog.rs: exe.log, the decision lines in picosnitch's format, appended through
//! [`crate::logfile`] (O_NOFOLLOW, regular file, a single hard link, `[data]` access), with the
//! names users choose escaped so that none can forge or hide a line.
pub use crate::logfile::AppendLog as ExeLog;
use std::borrow::Cow;
use std::fmt::Write as _;

/// A character [`escape`] rewrites: a backslash, a control character, a Unicode line separator
/// or a text-direction override.
fn special(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` as one line of exe.log: `\\` for a backslash, `\n`, `\r`, `\t`, `\xNN` for other control
/// characters below U+0100 and `\u{NNNN}` for the other [`special`] ones.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if special(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Local time as picosnitch writes it: `YYYY-mm-dd HH:MM:SS`.
pub fn local_time(unix: i64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; an all-zero tm is a valid initial value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return unix.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_user_names_makes_or_hides_a_line() {
        assert!(matches!(escape("/usr/bin/curl"), Cow::Borrowed(_)));
        assert_eq!(
            escape("/tmp/a\n2026-01-01 00:00:00 sshd /usr/sbin/sshd (new name, exe)"),
            "/tmp/a\\n2026-01-01 00:00:00 sshd /usr/sbin/sshd (new name, exe)"
        );
        assert_eq!(escape("a\\n\r\t\x1b[2K\x7f"), "a\\\\n\\r\\t\\x1b[2K\\x7f");
        assert_eq!(escape("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        assert_eq!(escape("é ü 中"), "é ü 中");
    }

    #[test]
    fn time_format() {
        let s = local_time(0);
        assert_eq!(s.len(), 19, "{s}");
        assert_eq!(&s[4..5], "-");
    }
}
