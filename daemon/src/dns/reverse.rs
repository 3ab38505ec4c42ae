//! dns/reverse.rs: the optional reverse-DNS fallback (`[dns] reverse_dns`, off by default because
//! every lookup tells the resolver which addresses this machine talks to): a worker thread asks
//! the system resolver for the PTR name of addresses no answer named, once per address per hour.
use lru::LruCache;
use std::ffi::CStr;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

/// Addresses waiting for the worker; more are dropped (and asked again later).
const QUEUE: usize = 256;
/// Seconds before an address is asked again (also after "no name").
pub const RETRY_SECS: u64 = 3600;
/// Addresses remembered as asked.
const ASKED: usize = 16_384;

pub struct Reverse {
    tx: SyncSender<IpAddr>,
    rx: Receiver<(IpAddr, Option<String>)>,
    asked: LruCache<IpAddr, u64>,
    /// Addresses not asked because the queue was full.
    pub dropped: u64,
}

/// Addresses never sent to a resolver: they name nothing outside this machine.
fn worth_asking(addr: IpAddr) -> bool {
    !(addr.is_loopback() || addr.is_unspecified() || addr.is_multicast())
}

impl Reverse {
    /// Starts the worker thread.
    pub fn start() -> std::io::Result<Reverse> {
        let (tx, jobs) = mpsc::sync_channel::<IpAddr>(QUEUE);
        let (done, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("reverse-dns".into())
            .spawn(move || {
                for addr in jobs {
                    if done.send((addr, ptr_name(addr))).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Reverse {
            tx,
            rx,
            asked: LruCache::new(NonZeroUsize::new(ASKED).unwrap_or(NonZeroUsize::MIN)),
            dropped: 0,
        })
    }

    /// Queues `addr` unless it was asked within `RETRY_SECS`.
    pub fn ask(&mut self, addr: IpAddr, now: u64) {
        let addr = addr.to_canonical();
        if !worth_asking(addr) {
            return;
        }
        if let Some(&at) = self.asked.get(&addr) {
            if now.saturating_sub(at) < RETRY_SECS {
                return;
            }
        }
        match self.tx.try_send(addr) {
            Ok(()) => {
                self.asked.put(addr, now);
            }
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Names found since the last call, in reverse notation.
    pub fn answers(&mut self) -> Vec<(IpAddr, String)> {
        self.rx
            .try_iter()
            .filter_map(|(a, n)| Some((a, reverse_host(&n?)?)))
            .collect()
    }
}

/// `host.example.org.` (as the resolver prints it, `\DDD` escapes included) →
/// `org.example.host`; `None` for an empty name, a malformed one or one that is an address.
pub fn reverse_host(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    super::name::reverse_text(host).ok()
}

/// The PTR name of `addr` from the system resolver (getnameinfo with NI_NAMEREQD).
fn ptr_name(addr: IpAddr) -> Option<String> {
    let (sa, len) = sockaddr_of(addr);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `sa` is a valid sockaddr of `len` bytes; `host` is writable for its length.
    let r = unsafe {
        libc::getnameinfo(
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into `host`.
    let s = unsafe { CStr::from_ptr(host.as_ptr()) };
    s.to_str().ok().map(str::to_owned)
}

/// `addr` as a sockaddr_in/sockaddr_in6 (port 0) and its length.
fn sockaddr_of(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let s = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above.
            let s = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_addr.s6_addr = v6.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_in_reverse_notation() {
        assert_eq!(
            reverse_host("Host.Example.org.").as_deref(),
            Some("org.example.host")
        );
        assert_eq!(reverse_host("localhost").as_deref(), Some("localhost"));
        assert_eq!(
            reverse_host("a\\.b.Host\\032x.org").as_deref(),
            Some("org.host\\032x.a\\046b")
        );
        assert_eq!(reverse_host("bad..org"), None);
        assert_eq!(reverse_host("192.0.2.1"), None);
        assert_eq!(reverse_host(""), None);
    }

    #[test]
    fn local_addresses_are_never_asked() {
        let mut r = Reverse::start().unwrap();
        r.ask("127.0.0.1".parse().unwrap(), 0);
        r.ask("::1".parse().unwrap(), 0);
        r.ask("0.0.0.0".parse().unwrap(), 0);
        assert!(r.asked.is_empty());
    }
}
