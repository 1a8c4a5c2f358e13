//! Request-rate limits, pure (the caller passes the time in).
//!
//! - [`TokenBuckets`]: each tenant may make `rate` requests per second sustained and
//!   `burst` at once; beyond that a request is refused with the seconds until the
//!   next one would be allowed (the `Retry-After`). In fleet mode a worker takes its
//!   share of both ([`TokenBuckets::set_share`]: one over the workers alive), so the
//!   limits hold for the fleet when requests are spread over the workers.
//! - [`FailureThrottle`]: a client address that fails authentication `limit` times
//!   within a minute is refused, without checking, until a minute after its first
//!   failure of that window.
//!
//! Both keep at most [`MAX_KEYS`] keys: when full, entries that no longer restrict
//! anything are dropped first, and if every entry still restricts, the oldest goes.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys (tenants, addresses) remembered at most.
pub const MAX_KEYS: usize = 65_536;

/// Per-key token buckets.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    rate: f64,
    burst: f64,
    /// The part of `rate` and `burst` this process grants (1 alone).
    share: f64,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// `rate` tokens per second, at most `burst` stored (a new key starts full).
    pub fn new(rate: f64, burst: u32) -> Self {
        TokenBuckets {
            rate,
            burst: f64::from(burst),
            share: 1.0,
            buckets: HashMap::new(),
        }
    }

    /// Grants `share` (0 to 1) of the rate and the burst from now on (at least one
    /// request of burst).
    pub fn set_share(&mut self, share: f64) {
        if share.is_finite() && share > 0.0 {
            self.share = share.min(1.0);
        }
    }

    /// The rate and the burst granted: the configured ones times the share.
    fn granted(&self) -> (f64, f64) {
        (self.rate * self.share, (self.burst * self.share).max(1.0))
    }

    /// Takes one token for `key` at `now`: `Ok(())`, or `Err(seconds)` until one is
    /// available (at least 1).
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), u64> {
        let (rate, burst) = self.granted();
        if !self.buckets.contains_key(key) && self.buckets.len() >= MAX_KEYS {
            // A bucket that has refilled restricts nothing.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_KEYS
                && let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, at) = self.buckets.entry(key.clone()).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *at = now.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / rate;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// Authentication failures per key within a window.
#[derive(Debug)]
pub struct FailureThrottle<K> {
    limit: u32,
    window: Duration,
    /// Failures counted, since when.
    failures: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Clone> FailureThrottle<K> {
    /// At most `limit` failures per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureThrottle {
            limit,
            window,
            failures: HashMap::new(),
        }
    }

    /// Whether `key` is refused at `now`: `Some(seconds)` until it is heard again.
    pub fn blocked(&self, key: &K, now: Instant) -> Option<u64> {
        let (n, since) = self.failures.get(key)?;
        let until = *since + self.window;
        (*n >= self.limit && now < until).then(|| {
            let left = until.saturating_duration_since(now).as_secs_f64();
            (left.ceil() as u64).max(1)
        })
    }

    /// Counts a failure of `key` at `now`; true when this failure reached the limit
    /// (the key is blocked from now on, for the rest of the window).
    pub fn fail(&mut self, key: &K, now: Instant) -> bool {
        let window = self.window;
        if !self.failures.contains_key(key) && self.failures.len() >= MAX_KEYS {
            self.failures
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
            if self.failures.len() >= MAX_KEYS
                && let Some(oldest) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| k.clone())
            {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(key.clone()).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0 == self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        // 2 per second, burst 3.
        let mut b = TokenBuckets::new(2.0, 3);
        for _ in 0..3 {
            assert_eq!(b.take(&"a", t0), Ok(()));
        }
        // Empty: the next token comes in 0.5 s, rounded up to 1 s.
        assert_eq!(b.take(&"a", t0), Err(1));
        // Another tenant is not affected.
        assert_eq!(b.take(&"b", t0), Ok(()));
        // 500 ms later one token has refilled, exactly one.
        assert_eq!(b.take(&"a", at(t0, 500)), Ok(()));
        assert_eq!(b.take(&"a", at(t0, 500)), Err(1));
        // 10 s later the bucket is full again but holds only the burst.
        let later = at(t0, 10_500);
        for _ in 0..3 {
            assert_eq!(b.take(&"a", later), Ok(()));
        }
        assert_eq!(b.take(&"a", later), Err(1));
    }

    #[test]
    fn a_share_grants_that_part_of_the_rate_and_the_burst() {
        let t0 = Instant::now();
        // 4 per second, burst 10, a third of it here: 4/3 per second, burst 3.33.
        let mut b = TokenBuckets::new(4.0, 10);
        b.set_share(1.0 / 3.0);
        for _ in 0..3 {
            assert_eq!(b.take(&"a", t0), Ok(()));
        }
        assert_eq!(b.take(&"a", t0), Err(1));
        // 0.33 tokens left; one more after (1 - 0.33) / (4/3) = 0.5 s.
        assert_eq!(b.take(&"a", at(t0, 490)), Err(1));
        assert_eq!(b.take(&"a", at(t0, 510)), Ok(()));
        // A bucket holding more than the new burst is cut to it: the share drops to
        // a tenth (burst 1, 0.4 per second).
        let mut b = TokenBuckets::new(4.0, 10);
        assert_eq!(b.take(&"a", t0), Ok(()));
        b.set_share(0.1);
        assert_eq!(b.take(&"a", t0), Ok(()));
        assert_eq!(b.take(&"a", t0), Err(3));
        // Nonsense is ignored; the whole again.
        b.set_share(f64::NAN);
        b.set_share(0.0);
        assert_eq!(b.take(&"a", at(t0, 2_500)), Ok(()));
        b.set_share(5.0);
        for _ in 0..10 {
            assert_eq!(b.take(&"b", t0), Ok(()));
        }
        assert_eq!(b.take(&"b", t0), Err(1));
    }

    #[test]
    fn a_slow_rate_says_how_long_to_wait() {
        let t0 = Instant::now();
        // One request per 10 s.
        let mut b = TokenBuckets::new(0.1, 1);
        assert_eq!(b.take(&"a", t0), Ok(()));
        assert_eq!(b.take(&"a", t0), Err(10));
        assert_eq!(b.take(&"a", at(t0, 2_500)), Err(8));
        assert_eq!(b.take(&"a", at(t0, 10_000)), Ok(()));
    }

    #[test]
    fn failures_block_after_the_limit_for_the_rest_of_the_window() {
        let t0 = Instant::now();
        let mut f = FailureThrottle::new(3, Duration::from_secs(60));
        assert!(!f.fail(&1, t0));
        assert!(!f.fail(&1, at(t0, 1_000)));
        assert_eq!(f.blocked(&1, at(t0, 1_000)), None);
        assert!(f.fail(&1, at(t0, 2_000)));
        // Blocked until 60 s after the first failure.
        assert_eq!(f.blocked(&1, at(t0, 2_000)), Some(58));
        assert_eq!(f.blocked(&1, at(t0, 59_500)), Some(1));
        assert_eq!(f.blocked(&1, at(t0, 60_000)), None);
        assert_eq!(f.blocked(&2, at(t0, 2_000)), None);
        // A new window starts from zero.
        assert!(!f.fail(&1, at(t0, 61_000)));
        assert_eq!(f.blocked(&1, at(t0, 61_000)), None);
    }

    #[test]
    fn failures_spread_over_windows_never_block() {
        let t0 = Instant::now();
        let mut f = FailureThrottle::new(3, Duration::from_secs(60));
        for i in 0..10 {
            // Two per window.
            assert!(!f.fail(&"x", at(t0, i * 60_000)));
            assert!(!f.fail(&"x", at(t0, i * 60_000 + 1)));
            assert_eq!(f.blocked(&"x", at(t0, i * 60_000 + 2)), None);
        }
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let t0 = Instant::now();
        let mut f = FailureThrottle::new(3, Duration::from_secs(60));
        for k in 0..(MAX_KEYS as u32 + 10) {
            f.fail(&k, t0);
        }
        assert_eq!(f.failures.len(), MAX_KEYS);
        let mut b = TokenBuckets::new(1.0, 2);
        for k in 0..(MAX_KEYS as u32 + 10) {
            let _ = b.take(&k, t0);
        }
        assert_eq!(b.buckets.len(), MAX_KEYS);
        // Entries that restrict nothing go first: a blocked key survives.
        let mut f = FailureThrottle::new(1, Duration::from_secs(60));
        for k in 0..(MAX_KEYS as u32 - 1) {
            f.fail(&k, t0);
        }
        let late = at(t0, 30_000);
        f.fail(&u32::MAX, late);
        // The window of every other key has passed: they are dropped, not the blocked one.
        let after = at(t0, 61_000);
        f.fail(&(u32::MAX - 1), after);
        assert_eq!(f.failures.len(), 2);
        assert_eq!(f.blocked(&u32::MAX, after), Some(29));
    }
}
