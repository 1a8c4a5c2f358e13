//! Reconnect policy of URL sources: capped exponential backoff with an attempt budget
//! that a productive session restores. Pure: the caller sleeps.

use std::time::Duration;

/// How a URL source reconnects: the first delay, doubled per failed attempt up to
/// `cap`, and the attempts in a row after which the stream fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first reconnect.
    pub first: Duration,
    /// The delay never grows beyond this.
    pub cap: Duration,
    /// Reconnects in a row (without a decoded frame between them) before giving up.
    pub attempts: u32,
}

impl Backoff {
    /// A policy: `first` delay, doubling up to `cap`, `attempts` reconnects in a row.
    pub fn new(first: Duration, cap: Duration, attempts: u32) -> Self {
        Backoff {
            first,
            cap,
            attempts,
        }
    }

    /// A fresh run of attempts under this policy.
    pub(crate) fn start(self) -> Retries {
        Retries {
            policy: self,
            delay: self.first,
            failures: 0,
        }
    }
}

/// The state of one stream's reconnects.
#[derive(Debug, Clone)]
pub(crate) struct Retries {
    policy: Backoff,
    delay: Duration,
    failures: u32,
}

impl Retries {
    /// A session made progress (decoded a frame): the next failure starts over at the
    /// first delay with the whole attempt budget.
    pub fn reset(&mut self) {
        self.delay = self.policy.first;
        self.failures = 0;
    }

    /// A session ended without the stream ending: how long to wait before the next
    /// attempt, or `None` when the attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.failures += 1;
        if self.failures > self.policy.attempts {
            return None;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.policy.cap);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn delays_double_up_to_the_cap_then_the_attempts_run_out() {
        let mut r = Backoff::new(MS(500), MS(3000), 5).start();
        let delays: Vec<Option<Duration>> = (0..6).map(|_| r.next_delay()).collect();
        assert_eq!(
            delays,
            vec![
                Some(MS(500)),
                Some(MS(1000)),
                Some(MS(2000)),
                Some(MS(3000)),
                Some(MS(3000)),
                None
            ]
        );
        assert_eq!(r.next_delay(), None, "exhausted stays exhausted");
    }

    #[test]
    fn progress_restores_the_first_delay_and_the_whole_budget() {
        let mut r = Backoff::new(MS(100), MS(1000), 2).start();
        assert_eq!(r.next_delay(), Some(MS(100)));
        assert_eq!(r.next_delay(), Some(MS(200)));
        r.reset();
        assert_eq!(r.next_delay(), Some(MS(100)));
        assert_eq!(r.next_delay(), Some(MS(200)));
        assert_eq!(r.next_delay(), None);
    }

    #[test]
    fn zero_attempts_give_up_at_once() {
        assert_eq!(Backoff::new(MS(1), MS(1), 0).start().next_delay(), None);
    }
}
