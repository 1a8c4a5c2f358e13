//! A bounded hand-over queue where the newest item wins: a producer (a decode thread)
//! never blocks, and memory never grows, when the consumer (the detectors) falls
//! behind. When full, the oldest item is dropped and counted.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The queue.
#[derive(Debug)]
pub struct LatestQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
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

    /// Takes the oldest item, waiting up to `timeout`. `None` on timeout, or when the
    /// queue is closed and empty.
    pub fn pop(&self, timeout: Duration) -> Option<T> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (mut inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.items.is_empty() && !i.closed)
            .unwrap_or_else(|e| e.into_inner());
        inner.items.pop_front()
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
}
