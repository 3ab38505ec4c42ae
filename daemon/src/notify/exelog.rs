//! exelog.rs: exe.log, the decision lines in picosnitch's format, appended through
//! [`crate::logfile`] (O_NOFOLLOW, regular file, a single hard link, `[data]` access).
pub use crate::logfile::AppendLog as ExeLog;

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
    fn time_format() {
        let s = local_time(0);
        assert_eq!(s.len(), 19, "{s}");
        assert_eq!(&s[4..5], "-");
    }
}
