//! Exponential backoff with full jitter (Marc Brooker, "Exponential Backoff And Jitter",
//! AWS Architecture Blog, 2015).
//!
//! The delay before retry `k` (the retry after the `k`-th failed attempt) is drawn uniformly
//! from `[0, min(cap, base · 2^(k−1))]`. Drawing from the whole range, rather than adding a
//! little noise to a fixed delay, is what spreads many consumers that failed together: their
//! retries land anywhere in the window instead of in a wall at its end.

use std::time::Duration;

/// A seeded source of jittered retry delays.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Delays with ceiling `base · 2^(k−1)`, at most `cap`, drawn from a generator seeded
    /// with `seed` (random when `None`).
    pub fn new(base: Duration, cap: Duration, seed: Option<u64>) -> Backoff {
        Backoff {
            base,
            cap,
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        }
    }

    /// The largest delay retry `attempt` may get: `min(cap, base · 2^(attempt−1))`
    /// (`attempt` 0 is treated as 1). Saturates instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.max(1) - 1;
        let base = self.base.as_nanos();
        // 2^doublings overflows u128 past 127 doublings; the cap is reached long before.
        let ceiling = if doublings >= 64 {
            u128::MAX
        } else {
            base.saturating_mul(1u128 << doublings)
        };
        let nanos = ceiling.min(self.cap.as_nanos());
        // The cap is a Duration, so the minimum fits in one.
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// A delay for retry `attempt`, uniform in `[0, ceiling(attempt)]`.
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos() as u64;
        Duration::from_nanos(self.rng.u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_base_up_to_cap_and_never_overflow() {
        let b = Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            Some(1),
        );
        let ms = |k| b.ceiling(k).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5)],
            [10, 10, 20, 40, 80, 100]
        );
        assert_eq!(ms(u32::MAX), 100);
        let huge = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600), None);
        assert_eq!(huge.ceiling(200), Duration::from_secs(3600));
    }

    #[test]
    fn zero_base_means_no_delay() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, Some(3));
        assert!((1..50).all(|k| b.delay(k) == Duration::ZERO));
    }
}
