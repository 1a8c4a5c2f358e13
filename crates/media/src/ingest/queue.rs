//! A bounded hand-over queue where the newest item wins: memory never grows when the
//! consumer (the detectors) falls behind. When full, the oldest item is dropped and
//! counted — at once ([`LatestQueue::push`]), or only once a deadline has passed
//! ([`LatestQueue::push_by`]: a producer with a latency budget waits for room first).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The queue.
#[derive(Debug)]
pub struct LatestQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    room: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> LatestQueue<T> {
    /// A queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        LatestQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds an item; returns the item dropped to make room, if any. Never blocks.
    pub fn push(&self, item: T) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = if inner.items.len() >= self.capacity {
            inner.items.pop_front()
        } else {
            None
        };
        inner.items.push_back(item);
        drop(inner);
        self.ready.notify_one();
        dropped
    }

    /// Adds an item, waiting until `deadline` for room; past it, drops the oldest
    /// item like [`LatestQueue::push`] and returns it. A closed queue does not wait.
    pub fn push_by(&self, item: T, deadline: Instant) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.items.len() >= self.capacity && !inner.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = self
                .room
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let dropped = if inner.items.len() >= self.capacity {
            inner.items.pop_front()
        } else {
            None
        };
        inner.items.push_back(item);
        drop(inner);
        self.ready.notify_one();
        dropped
    }

    /// Takes the oldest item, waiting up to `timeout`. `None` on timeout, or when the
    /// queue is closed and empty.
    pub fn pop(&self, timeout: Duration) -> Option<T> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (mut inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.items.is_empty() && !i.closed)
            .unwrap_or_else(|e| e.into_inner());
        let item = inner.items.pop_front();
        drop(inner);
        if item.is_some() {
            self.room.notify_one();
        }
        item
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No more items will come: wakes waiting consumers.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Whether [`LatestQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_when_full() {
        let q = LatestQueue::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.pop(Duration::ZERO), Some(2));
        assert_eq!(q.pop(Duration::ZERO), Some(3));
        assert_eq!(q.pop(Duration::ZERO), None);
        q.close();
        assert_eq!(
            q.pop(Duration::from_secs(60)),
            None,
            "a closed queue does not wait"
        );
    }

    #[test]
    fn a_producer_with_a_deadline_waits_for_room_instead_of_dropping() {
        let q = std::sync::Arc::new(LatestQueue::new(1));
        assert_eq!(q.push(1), None);
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                // Takes items until it has seen 1, 2 and 3 (waiting as long as needed).
                let mut seen = Vec::new();
                while seen.len() < 3 {
                    if let Some(v) = q.pop(Duration::from_secs(60)) {
                        seen.push(v);
                    }
                }
                seen
            })
        };
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(q.push_by(2, far), None, "waited for the consumer");
        assert_eq!(q.push_by(3, far), None, "waited for the consumer");
        assert_eq!(consumer.join().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_passed_deadline_drops_the_oldest_and_a_closed_queue_does_not_wait() {
        let q = LatestQueue::new(1);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push_by(2, Instant::now()), Some(1));
        q.close();
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(q.push_by(3, far), Some(2), "closed: no wait");
    }
}
