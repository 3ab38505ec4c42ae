//! notify::desktop::runner: the thread that owns the [`Throttle`] and hands notices to every
//! logged-in user's helper, so that the slow part never blocks whoever reports a decision.
use super::{buses::session_buses, send::send_as_user, send::SELF_EXE, Notice, Throttle};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long notices gather before they go out: a burst inside one period becomes a digest.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Handle to the delivery thread. Dropping it delivers what is still waiting, then joins.
#[derive(Debug)]
pub struct Desktop {
    tx: Option<mpsc::Sender<Notice>>,
    handle: Option<JoinHandle<()>>,
}

impl Desktop {
    /// Starts the thread that sends to every session bus under `/run/user` through
    /// `picosnitch notify-helper` (this very binary), logging failures as warnings.
    pub fn spawn(throttle: Throttle) -> std::io::Result<Desktop> {
        Desktop::spawn_with(throttle, FLUSH_EVERY, deliver_to_sessions)
    }

    /// Like [`Desktop::spawn`] with another period and another way to deliver a flush.
    pub fn spawn_with<F>(
        throttle: Throttle,
        every: Duration,
        deliver: F,
    ) -> std::io::Result<Desktop>
    where
        F: FnMut(&[Notice]) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("picosnitch-desktop".into())
            .spawn(move || run(rx, throttle, every, deliver))?;
        Ok(Desktop {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queues a notice; never blocks.
    pub fn notify(&self, notice: Notice) {
        if let Some(tx) = &self.tx {
            // The thread only ends when this handle is dropped.
            let _ = tx.send(notice);
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run<F>(rx: mpsc::Receiver<Notice>, mut throttle: Throttle, every: Duration, mut deliver: F)
where
    F: FnMut(&[Notice]),
{
    let mut last_flush = Instant::now();
    loop {
        let wait = every.saturating_sub(last_flush.elapsed());
        let stop = match rx.recv_timeout(wait) {
            Ok(notice) => {
                throttle.push(notice, Instant::now());
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        if stop || last_flush.elapsed() >= every {
            last_flush = Instant::now();
            let notices = throttle.flush(last_flush);
            if !notices.is_empty() {
                deliver(&notices);
            }
        }
        if stop {
            return;
        }
    }
}

fn deliver_to_sessions(notices: &[Notice]) {
    for (uid, gid, bus) in session_buses() {
        if let Err(e) = send_as_user(Path::new(SELF_EXE), uid, gid, &bus, notices) {
            tracing::warn!(uid, "desktop notification not delivered: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Flushes = Arc<Mutex<Vec<Vec<String>>>>;

    fn recording(every: Duration) -> (Desktop, Flushes) {
        let flushes: Flushes = Arc::default();
        let seen = flushes.clone();
        let deliver = move |n: &[Notice]| {
            let summaries = n.iter().map(|n| n.summary.clone()).collect();
            seen.lock().expect("lock").push(summaries);
        };
        let desktop =
            Desktop::spawn_with(Throttle::new(Duration::from_secs(600), 5), every, deliver)
                .expect("spawn");
        (desktop, flushes)
    }

    #[test]
    fn a_burst_is_one_flush_and_dropping_delivers_it() {
        let (desktop, flushes) = recording(Duration::from_secs(3600));
        for i in 0..8 {
            desktop.notify(Notice::new_program(&format!("/bin/p{i}"), "p", "00"));
        }
        desktop.notify(Notice::new_program("/bin/p0", "thread", "00"));
        drop(desktop);
        let flushes = flushes.lock().expect("lock");
        assert_eq!(flushes.len(), 1, "{flushes:?}");
        assert_eq!(flushes[0].len(), 6);
        assert_eq!(flushes[0][5], "and 3 more programs…");
    }

    #[test]
    fn nothing_waiting_delivers_nothing() {
        let (desktop, flushes) = recording(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        drop(desktop);
        assert!(flushes.lock().expect("lock").is_empty());
    }
}
