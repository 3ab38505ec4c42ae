//! conns.rs: the open connections of one listener, at most a fixed number: a new connection
//! beyond it takes the place of the oldest idle one (waiting for a request), and is refused only
//! when every connection is busy answering.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The connections of one listener.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// By id, so the first entries are the oldest connections.
    open: BTreeMap<u64, Entry>,
    /// Connections closed to make room for new ones, since start.
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    /// Requests being answered (their answer not yet sent whole).
    busy: u32,
    close: Arc<Notify>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    close: Arc<Notify>,
}

/// Held while a request of a connection is answered: the connection is not idle.
#[derive(Debug)]
pub struct Busy {
    id: u64,
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (plain map updates).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: a free one, or the place of the oldest idle connection,
    /// which is told to close. None when all `max` connections are busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.lock();
        if st.open.len() >= self.max {
            let oldest = st
                .open
                .iter()
                .find(|(_, e)| e.busy == 0)
                .map(|(id, _)| *id)?;
            if let Some(e) = st.open.remove(&oldest) {
                e.close.notify_one();
                st.evicted += 1;
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        let close = Arc::new(Notify::new());
        st.open.insert(
            id,
            Entry {
                busy: 0,
                close: close.clone(),
            },
        );
        Some(Slot {
            id,
            slots: self.clone(),
            close,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Idle connections closed to make room, since start.
    #[cfg(test)]
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

impl Slot {
    /// Marks the connection busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(e) = self.slots.lock().open.get_mut(&self.id) {
            e.busy += 1;
        }
        Busy {
            id: self.id,
            slots: self.slots.clone(),
        }
    }

    /// Resolves when the connection must close to make room for a newer one.
    pub async fn evicted(&self) {
        self.close.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.slots.lock().open.get_mut(&self.id) {
            e.busy = e.busy.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room() {
        let slots = Slots::new(2);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let busy_a = a.busy();
        // a is busy: b, the oldest idle one, is told to close.
        let c = slots.admit().unwrap();
        assert_eq!((slots.open(), slots.evicted()), (2, 1));
        tokio::time::timeout(Duration::from_secs(1), b.evicted())
            .await
            .expect("b is told to close");
        drop(b);
        assert_eq!(slots.open(), 2, "b's place is c's already");
        // Both busy: refused.
        let busy_c = c.busy();
        assert!(slots.admit().is_none());
        drop(busy_c);
        let d = slots.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), c.evicted())
            .await
            .expect("c is told to close");
        drop((busy_a, d, c, a));
        assert_eq!(slots.open(), 0);
    }
}
