//! Limits on `POST /api/tokens/renew`: a fixed window of requests per
//! license and per client address, kept in memory on each node (several
//! replicas each allow the limit). Same approach as
//! `api::auth::AuthLimiter`: a map of window start and count, pruned
//! when it grows large.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `max` hits per key within `window`; `max == 0` turns it off.
pub struct WindowLimiter<K> {
    max: u32,
    window: Duration,
    hits: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq + Clone> WindowLimiter<K> {
    /// Keys remembered at most; expired windows are dropped first.
    const MAX_TRACKED: usize = 100_000;

    pub fn new(max: u32, window: Duration) -> Self {
        WindowLimiter {
            max,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a hit for `key`: `Err(seconds until the window ends)` when the
    /// key has used up its window (the refused hit is not counted).
    pub fn hit(&self, key: &K) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let Ok(mut map) = self.hits.lock() else {
            return Ok(());
        };
        if map.len() >= Self::MAX_TRACKED && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, (since, _)| since.elapsed() < window);
            if map.len() >= Self::MAX_TRACKED {
                // Still full of live windows: refuse new keys rather than grow without bound.
                return Err(self.window.as_secs().max(1));
            }
        }
        let entry = map.entry(key.clone()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(entry.0.elapsed());
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// What limits the renew endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewLimits {
    /// Renewals per license per window (0: no limit).
    pub per_license: u32,
    /// Renewal requests per client address per window (0: no limit).
    pub per_address: u32,
    pub window: Duration,
}

impl Default for RenewLimits {
    fn default() -> Self {
        RenewLimits {
            per_license: 120,
            per_address: 600,
            window: Duration::from_secs(60),
        }
    }
}

/// The renew endpoint's two limiters.
pub struct RenewLimiter {
    pub by_license: WindowLimiter<String>,
    pub by_address: WindowLimiter<IpAddr>,
}

impl RenewLimiter {
    pub fn new(limits: RenewLimits) -> Self {
        RenewLimiter {
            by_license: WindowLimiter::new(limits.per_license, limits.window),
            by_address: WindowLimiter::new(limits.per_address, limits.window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_per_key_until_the_window_ends() {
        let l = WindowLimiter::new(2, Duration::from_millis(200));
        let (a, b) = ("a".to_string(), "b".to_string());
        assert!(l.hit(&a).is_ok() && l.hit(&a).is_ok());
        assert_eq!(l.hit(&a), Err(1));
        assert!(l.hit(&b).is_ok(), "per key");
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.hit(&a).is_ok(), "a new window");
    }

    #[test]
    fn zero_means_no_limit() {
        let l = WindowLimiter::new(0, Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(l.hit(&1u8).is_ok());
        }
    }
}
