//! How long a failed live source waits before it reconnects.

use std::time::Duration;

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so many
/// cameras that dropped together (a switch reboot) do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
            rng: seed,
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .initial
            .saturating_mul(1u32 << exponent.min(31))
            .min(self.max);
        let half = base / 2;
        half + half.mul_f64(self.random_unit())
    }

    /// A source that delivered frames again starts over from the initial delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn random_unit(&mut self) -> f64 {
        // SplitMix64: tiny, and good enough to spread reconnects.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 7);
        let delays: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        let bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0];
        for (d, base) in delays.iter().zip(bases) {
            assert!(*d >= base / 2.0 && *d <= base, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_differs_between_sources() {
        let mut a = Backoff::new(Duration::from_secs(10), Duration::from_secs(60), 1);
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60), 2);
        assert_ne!(a.next_delay(), b.next_delay());
    }
}
