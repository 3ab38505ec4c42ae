//! batch.rs: whole-map reads and deletes with BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH.
//!
//! aya 0.14 has no batch API; one syscall per few thousand entries instead of two per entry keeps
//! the one-second drain of a full map near 20 ms.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads every (key, value) of a hash map. `K` and `V` must be the map's exact plain-data layouts.
pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
    capacity: usize,
) -> io::Result<Vec<(K, V)>> {
    let chunk = capacity.clamp(1, 8192);
    let mut keys = vec![K::default(); chunk];
    let mut vals = vec![V::default(); chunk];
    let mut out = Vec::new();
    let mut token = [0u64; 1];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(vals[..n].iter().copied()));
        match res {
            Ok(()) => first = false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Deletes the given keys; returns how many were deleted (missing keys stop the batch, so the
/// rest are retried one at a time by the kernel's semantics: we continue after them).
pub fn delete_keys<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut done = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let res = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let n = attr.count as usize;
        done += n;
        match res {
            Ok(()) => return Ok(done),
            // Key n was not found: skip it and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(n + 1).min(rest.len())..]
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
