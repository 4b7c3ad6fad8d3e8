//! Retry delays after failed fetches.
//!
//! Owns: the exponential backoff with jitter, and the jitter source. Does not own: when a
//! fetch runs (`source`). Jitter spreads the retries of many proxies that lost the same IdP
//! at the same moment, so they do not all come back in lockstep when it recovers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// No background delay is shorter than this, so zero settings cannot spin a task.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(10);

/// The delay before retry number `failures` (1 = after the first failure):
/// `initial * 2^(failures-1)`, capped at `max`, times `1 + 0.2 * jitter` (`jitter` in
/// `[-1, 1]`, clamped), capped at `max` again so `max` is a hard ceiling, and at least 10 ms.
pub fn backoff_delay(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    let base = initial
        .checked_mul(1u32 << exponent)
        .unwrap_or(max)
        .min(max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let factor = 1.0 + 0.2 * jitter;
    let jittered = Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(max);
    jittered.min(max).max(MIN_DELAY)
}

/// A value in `[-1, 1]`, different on every call. Not cryptographic: it only spreads retries.
pub(crate) fn jitter() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState is seeded randomly per process, so proxies started together still differ.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(nanos);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_up_to_max() {
        let got: Vec<u64> = (1..=12)
            .map(|n| backoff_delay(n, S(1), S(300), 0.0).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn jitter_is_twenty_percent() {
        assert_eq!(backoff_delay(1, S(10), S(300), 1.0), S(12));
        assert_eq!(backoff_delay(1, S(10), S(300), -1.0), S(8));
        // Out-of-range or non-finite jitter is clamped / ignored.
        assert_eq!(backoff_delay(1, S(10), S(300), 7.0), S(12));
        assert_eq!(backoff_delay(1, S(10), S(300), f64::NAN), S(10));
        // The cap is a ceiling even with positive jitter.
        assert_eq!(backoff_delay(20, S(1), S(300), 1.0), S(300));
        assert_eq!(backoff_delay(20, S(1), S(300), -1.0), S(240));
    }

    #[test]
    fn extremes_do_not_panic() {
        assert_eq!(backoff_delay(0, S(1), S(300), 0.0), S(1));
        assert_eq!(backoff_delay(u32::MAX, S(1), S(300), 0.0), S(300));
        assert_eq!(
            backoff_delay(40, Duration::MAX, Duration::MAX, 1.0),
            Duration::MAX
        );
        assert_eq!(backoff_delay(3, Duration::ZERO, S(1), 0.0), MIN_DELAY);
    }

    #[test]
    fn jitter_in_range_and_varies() {
        let values: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(values.iter().any(|v| *v < 0.0) && values.iter().any(|v| *v > 0.0));
    }
}
