//! notify::desktop::throttle: per-executable cooldown and the digest that replaces a flood of
//! notices with a few individual ones and one "and K more programs…" summary.
use super::Notice;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many skipped summaries a digest lists in its body before it stops listing.
const DIGEST_LINES: usize = 10;

/// Decides which notices go out. Times are passed in, so the logic is testable without sleeping.
///
/// A notice whose key was accepted less than `cooldown` ago is dropped. Accepted notices wait until
/// [`Throttle::flush`]; when more than `individual` of them are waiting, the first `individual`
/// go out as they are and the rest are folded into one digest notice.
#[derive(Debug)]
pub struct Throttle {
    cooldown: Duration,
    individual: usize,
    last_accepted: HashMap<String, Instant>,
    pending: Vec<Notice>,
}

impl Default for Throttle {
    /// Ten minutes per key; at most five individual notices per flush.
    fn default() -> Self {
        Throttle::new(Duration::from_secs(600), 5)
    }
}

impl Throttle {
    pub fn new(cooldown: Duration, individual: usize) -> Throttle {
        Throttle {
            cooldown,
            individual,
            last_accepted: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Offers a notice at time `now`; returns whether it was accepted (not in cooldown).
    pub fn push(&mut self, notice: Notice, now: Instant) -> bool {
        if let Some(&last) = self.last_accepted.get(&notice.key) {
            if now.saturating_duration_since(last) < self.cooldown {
                return false;
            }
        }
        self.last_accepted.insert(notice.key.clone(), now);
        self.pending.push(notice);
        true
    }

    /// Number of accepted notices waiting for the next flush.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes what should be sent now, and forgets keys whose cooldown is over.
    pub fn flush(&mut self, now: Instant) -> Vec<Notice> {
        let cooldown = self.cooldown;
        self.last_accepted
            .retain(|_, &mut last| now.saturating_duration_since(last) < cooldown);
        let mut out = std::mem::take(&mut self.pending);
        if out.len() > self.individual {
            let rest = out.split_off(self.individual);
            out.push(digest(&rest));
        }
        out
    }
}

/// One notice standing for `rest`.
fn digest(rest: &[Notice]) -> Notice {
    let k = rest.len();
    let summary = if k == 1 {
        "and 1 more program…".to_string()
    } else {
        format!("and {k} more programs…")
    };
    let mut lines: Vec<&str> = rest
        .iter()
        .take(DIGEST_LINES)
        .map(|n| n.summary.as_str())
        .collect();
    let more = k.saturating_sub(DIGEST_LINES);
    let tail = format!("… {more} more: see exe.log or `journalctl -u picosnitch`");
    if more > 0 {
        lines.push(&tail);
    }
    Notice {
        key: "picosnitch digest".to_string(),
        summary,
        body: lines.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(i: usize) -> Notice {
        Notice::new_program(&format!("/usr/bin/p{i}"), &format!("p{i}"), "ab")
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_key_is_quiet_for_its_cooldown() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(600), 5);
        assert!(t.push(notice(1), t0));
        assert!(!t.push(notice(1), t0 + secs(1)), "same key, same flush");
        assert_eq!(t.flush(t0 + secs(2)), vec![notice(1)]);
        assert!(!t.push(notice(1), t0 + secs(599)));
        assert!(t.push(notice(2), t0 + secs(599)), "other keys are not held");
        assert!(t.push(notice(1), t0 + secs(600)), "cooldown over");
        assert_eq!(t.flush(t0 + secs(600)), vec![notice(2), notice(1)]);
        assert!(t.flush(t0 + secs(601)).is_empty());
    }

    #[test]
    fn thread_names_do_not_make_new_keys() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let exe = "/usr/lib/firefox/firefox";
        assert!(t.push(Notice::new_program(exe, "firefox", "ff"), t0));
        for name in ["Socket Thread", "DNS Resolver #1", "StreamTrans #5"] {
            assert!(!t.push(Notice::new_program(exe, name, "ff"), t0));
        }
        assert!(
            t.push(Notice::new_program(exe, "firefox", "f2"), t0),
            "new hash"
        );
        assert_eq!(t.flush(t0).len(), 2);
    }

    #[test]
    fn up_to_n_go_out_individually() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(60), 5);
        for i in 0..5 {
            assert!(t.push(notice(i), t0));
        }
        assert_eq!(t.pending(), 5);
        assert_eq!(t.flush(t0), (0..5).map(notice).collect::<Vec<_>>());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_flood_becomes_a_digest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(60), 5);
        for i in 0..8 {
            t.push(notice(i), t0 + secs(i as u64));
        }
        let out = t.flush(t0 + secs(10));
        assert_eq!(out.len(), 6);
        assert_eq!(&out[..5], &(0..5).map(notice).collect::<Vec<_>>()[..]);
        assert_eq!(out[5].summary, "and 3 more programs…");
        assert_eq!(
            out[5].body,
            "New program on the network: p5\nNew program on the network: p6\n\
             New program on the network: p7"
        );
        // Digested keys are in cooldown too.
        assert!(!t.push(notice(7), t0 + secs(20)));
    }

    #[test]
    fn a_digest_lists_at_most_ten_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(60), 2);
        for i in 0..15 {
            t.push(notice(i), t0);
        }
        let out = t.flush(t0);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].summary, "and 13 more programs…");
        let lines: Vec<&str> = out[2].body.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "New program on the network: p2");
        assert!(lines[10].starts_with("… 3 more"), "{}", lines[10]);
    }

    #[test]
    fn one_extra_is_singular_and_zero_individual_digests_all() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(60), 1);
        t.push(notice(0), t0);
        t.push(notice(1), t0);
        assert_eq!(t.flush(t0)[1].summary, "and 1 more program…");
        let mut t = Throttle::new(secs(60), 0);
        t.push(notice(0), t0);
        let out = t.flush(t0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].summary, "and 1 more program…");
    }

    #[test]
    fn expired_keys_are_forgotten_on_flush() {
        let t0 = Instant::now();
        let mut t = Throttle::new(secs(60), 5);
        for i in 0..3 {
            t.push(notice(i), t0);
        }
        t.flush(t0);
        assert_eq!(t.last_accepted.len(), 3);
        t.flush(t0 + secs(61));
        assert!(t.last_accepted.is_empty());
    }
}
