//! dns/tcp.rs: DNS over TCP: joins each stream's segments in sequence order and cuts out the
//! length-prefixed messages. A segment the kernel copied only in part still yields the start of
//! its message; the stream then skips to the next message boundary, or is dropped when that
//! boundary was in the part not copied.
use lru::LruCache;
use std::net::IpAddr;
use std::num::NonZeroUsize;

/// Streams followed at once; the least recently used one is dropped first.
pub const MAX_STREAMS: usize = 256;
/// A stream unseen for this many seconds starts afresh.
pub const IDLE_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub netns: u32,
    pub server: IpAddr,
    pub sport: u16,
    pub client: IpAddr,
    pub dport: u16,
}

#[derive(Debug)]
struct Stream {
    /// Sequence number of the next byte expected.
    next: u32,
    /// Bytes still to be passed over before the next message starts.
    skip: u32,
    /// The boundary was lost: every further byte is ignored until the stream goes idle.
    lost: bool,
    buf: Vec<u8>,
    last: u64,
}

/// One DNS message cut out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    /// Only the start of the message was copied.
    pub partial: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments after a hole in the sequence (one was not seen): the stream restarts.
    pub gaps: u64,
    /// Streams whose next message boundary was in bytes the kernel did not copy.
    pub lost: u64,
}

pub struct Streams {
    map: LruCache<StreamKey, Stream>,
    pub stats: TcpStats,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            map: LruCache::new(NonZeroUsize::new(MAX_STREAMS).unwrap_or(NonZeroUsize::MIN)),
            stats: TcpStats::default(),
        }
    }
}

/// `a` is at or after `b` in sequence space.
fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl Streams {
    /// Feeds one segment: `data` is what was copied of its `len` payload bytes, starting at `seq`.
    pub fn segment(
        &mut self,
        key: StreamKey,
        seq: u32,
        len: u32,
        data: &[u8],
        now: u64,
    ) -> Vec<Message> {
        let data = &data[..data.len().min(len as usize)];
        let fresh = || Stream {
            next: seq,
            skip: 0,
            lost: false,
            buf: Vec::new(),
            last: now,
        };
        let s = match self.map.get_mut(&key) {
            Some(s) if now.saturating_sub(s.last) <= IDLE_SECS => s,
            _ => {
                self.map.put(key, fresh());
                self.map.get_mut(&key).expect("just put")
            }
        };
        s.last = now;
        if seq != s.next {
            if !seq_ge(seq, s.next) {
                return Vec::new(); // retransmitted
            }
            self.stats.gaps += 1;
            *s = fresh();
        }
        s.next = seq.wrapping_add(len);
        if s.lost {
            return Vec::new();
        }
        // Bytes of a message whose start was already handed out.
        let mut data = data;
        let mut missing = len - data.len() as u32;
        let pass = s.skip.min(data.len() as u32);
        data = &data[pass as usize..];
        s.skip -= pass;
        if s.skip > 0 {
            let more = s.skip.min(missing);
            s.skip -= more;
            missing -= more;
            if s.skip > 0 {
                return Vec::new();
            }
        }
        s.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if s.buf.len() < 2 {
                break;
            }
            let want = 2 + usize::from(u16::from_be_bytes([s.buf[0], s.buf[1]]));
            if s.buf.len() >= want {
                out.push(Message {
                    bytes: s.buf[2..want].to_vec(),
                    partial: false,
                });
                s.buf.drain(..want);
                continue;
            }
            if missing > 0 {
                // The rest of this message was not copied: hand out its start, skip its rest.
                out.push(Message {
                    bytes: s.buf[2..].to_vec(),
                    partial: true,
                });
                let rest = (want - s.buf.len()) as u32;
                s.buf.clear();
                if rest >= missing {
                    s.skip = rest - missing;
                    missing = 0;
                } else {
                    s.lost = true;
                    self.stats.lost += 1;
                }
            }
            break;
        }
        if missing > 0 && !s.lost {
            // Not copied bytes hold a length prefix (or part of one): the boundary is gone.
            s.buf.clear();
            s.lost = true;
            self.stats.lost += 1;
        }
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            netns: 1,
            server: "127.0.0.1".parse().unwrap(),
            sport: 53,
            client: "127.0.0.1".parse().unwrap(),
            dport: 40000,
        }
    }

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u16).to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    }

    fn full(m: &[u8]) -> Message {
        Message {
            bytes: m.to_vec(),
            partial: false,
        }
    }

    #[test]
    fn messages_across_and_within_segments() {
        let mut s = Streams::default();
        let bytes = framed(&[b"hello", b"second message", b"x"]);
        let (a, b) = bytes.split_at(4);
        assert!(s.segment(key(), 1000, a.len() as u32, a, 0).is_empty());
        let got = s.segment(key(), 1004, b.len() as u32, b, 0);
        assert_eq!(
            got,
            vec![full(b"hello"), full(b"second message"), full(b"x")]
        );
        // A retransmission changes nothing.
        assert!(s.segment(key(), 1000, a.len() as u32, a, 0).is_empty());
    }

    #[test]
    fn gap_restarts_the_stream() {
        let mut s = Streams::default();
        let one = framed(&[b"abcdef"]);
        assert!(s.segment(key(), 0, 5, &one[..5], 0).is_empty());
        let two = framed(&[b"zz"]);
        assert_eq!(s.segment(key(), 100, 4, &two, 0), vec![full(b"zz")]);
        assert_eq!(s.stats.gaps, 1);
    }

    #[test]
    fn partial_copy_yields_the_start_and_skips_the_rest() {
        let mut s = Streams::default();
        let big = vec![7u8; 3000];
        let bytes = framed(&[&big, b"next"]);
        // First segment: 2000 payload bytes, 1232 copied.
        let got = s.segment(key(), 0, 2000, &bytes[..1232], 0);
        assert_eq!(got.len(), 1);
        assert!(got[0].partial);
        assert_eq!(got[0].bytes.len(), 1230);
        // Second segment: the rest of the big message and the next one, copied whole.
        let rest = &bytes[2000..];
        let got = s.segment(key(), 2000, rest.len() as u32, rest, 0);
        assert_eq!(got, vec![full(b"next")]);
    }

    #[test]
    fn lost_boundary_ignores_the_stream() {
        let mut s = Streams::default();
        let bytes = framed(&[b"short", &[1u8; 100]]);
        // Copied: the first message and one byte of the next length prefix.
        let got = s.segment(key(), 0, bytes.len() as u32, &bytes[..8], 0);
        assert_eq!(got, vec![full(b"short")]);
        assert_eq!(s.stats.lost, 1);
        let more = framed(&[b"ignored"]);
        assert!(s
            .segment(key(), bytes.len() as u32, more.len() as u32, &more, 1)
            .is_empty());
        // Idle long enough, it starts afresh.
        let t = bytes.len() as u32 + more.len() as u32;
        assert_eq!(
            s.segment(key(), t, more.len() as u32, &more, 100),
            vec![full(b"ignored")]
        );
    }

    #[test]
    fn streams_are_bounded() {
        let mut s = Streams::default();
        for port in 0..(MAX_STREAMS as u16 * 3) {
            let k = StreamKey {
                dport: port,
                ..key()
            };
            s.segment(k, 0, 1, &[0], 0);
        }
        assert_eq!(s.len(), MAX_STREAMS);
    }
}
