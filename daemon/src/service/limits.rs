//! service::limits: the daemon's soft limit on open files, raised to the hard one at start (API
//! connections and fanotify marks are descriptors).
use std::io;

fn get(resource: libc::__rlimit_resource_t) -> io::Result<libc::rlimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Raises the soft RLIMIT_NOFILE to the hard one; (soft before, soft after).
pub fn raise_nofile_to_hard() -> io::Result<(u64, u64)> {
    let r = get(libc::RLIMIT_NOFILE)?;
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r.rlim_cur, get(libc::RLIMIT_NOFILE)?.rlim_cur))
}

/// [`raise_nofile_to_hard`], logged.
pub fn raise_nofile() {
    match raise_nofile_to_hard() {
        Ok((before, after)) if before != after => {
            tracing::info!("open files: soft limit raised from {before} to {after}")
        }
        Ok((_, after)) => tracing::debug!("open files: soft limit {after}"),
        Err(e) => tracing::warn!("cannot raise the soft limit on open files: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let (_, after) = raise_nofile_to_hard().unwrap();
        let r = get(libc::RLIMIT_NOFILE).unwrap();
        assert_eq!((after, r.rlim_cur), (r.rlim_max, r.rlim_max));
    }
}
