//! Retry back-off as a pure iterator: exponential with full jitter, capped.
//!
//! [`Backoff`] yields the delay before each next try: `initial × factor^n`, capped at `max`, with jitter
//! so that many dead meters (or many concentrators after a power cut) do not retry in lock step. It never
//! sleeps and never reads the clock; with [`Backoff::with_seed`] the sequence is reproducible in tests.
//! The iterator never ends: the caller decides when to give up.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No randomness: exactly `min(max, initial × factor^n)`.
    None,
    /// "Full jitter": uniform in `0..=d` where `d` is the capped exponential delay.
    Full,
    /// Proportional: uniform in `d × (1 − p) ..= d`, `p` in `0.0..=1.0` (0.25 = up to 25 % shorter).
    Proportional(f64),
}

/// Exponential back-off delays. Defaults from [`Backoff::new`]: factor 2, full jitter, entropy-seeded.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: Jitter,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Delays starting at `initial`, doubling, never above `max` (`max` below `initial` caps at `max`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, factor: 2.0, jitter: Jitter::Full, attempt: 0, rng: StdRng::from_entropy() }
    }

    /// Seeds the jitter RNG, for reproducible sequences.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// No jitter: the plain capped exponential sequence.
    #[must_use]
    pub fn without_jitter(mut self) -> Self {
        self.jitter = Jitter::None;
        self
    }

    /// Sets the jitter mode (a proportional fraction is clamped to `0.0..=1.0`, NaN means none).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = match jitter {
            Jitter::Proportional(p) if p.is_nan() => Jitter::None,
            Jitter::Proportional(p) => Jitter::Proportional(p.clamp(0.0, 1.0)),
            other => other,
        };
        self
    }

    /// Sets the growth factor (values below 1.0, or NaN, mean 1.0: constant delay). Default 2.
    #[must_use]
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_nan() { 1.0 } else { factor.max(1.0) };
        self
    }

    /// Starts over from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays have been handed out since the start or the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The capped exponential delay for `attempt`, before jitter.
    fn base(&self, attempt: u32) -> Duration {
        let max = self.max.as_secs_f64();
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        // `powi` may overflow to infinity; anything not finite or above the cap is the cap.
        if !secs.is_finite() || secs >= max {
            self.max
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(self.max)
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.base(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let delay = match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(self.rng.gen_range(0.0..=1.0)),
            Jitter::Proportional(p) => base.mul_f64(1.0 - p * self.rng.gen_range(0.0..=1.0)),
        };
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let b = Backoff::new(100 * MS, 1000 * MS).without_jitter();
        let got: Vec<_> = b.take(7).collect();
        assert_eq!(got, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS, 1000 * MS]);
    }

    #[test]
    fn never_overflows_after_many_attempts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600)).without_jitter();
        let last = b.by_ref().take(10_000).last();
        assert_eq!(last, Some(Duration::from_secs(3600)));
        assert_eq!(b.attempt(), 10_000);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_base() {
        let b = Backoff::new(100 * MS, 1000 * MS).with_seed(1);
        for (n, d) in b.take(200).enumerate() {
            let cap = (100 * MS * 2u32.saturating_pow(n as u32)).min(1000 * MS);
            assert!(d <= cap, "attempt {n}: {d:?} > {cap:?}");
        }
    }

    #[test]
    fn proportional_jitter_stays_within_its_band() {
        let b = Backoff::new(1000 * MS, 1000 * MS).with_seed(9).with_jitter(Jitter::Proportional(0.25));
        let delays: Vec<_> = b.take(200).collect();
        assert!(delays.iter().all(|d| *d >= 750 * MS && *d <= 1000 * MS));
        assert!(delays.iter().any(|d| *d < 900 * MS), "jitter actually varies");
    }

    #[test]
    fn same_seed_same_sequence_and_reset_starts_over() {
        let a: Vec<_> = Backoff::new(10 * MS, 10_000 * MS).with_seed(5).take(20).collect();
        let b: Vec<_> = Backoff::new(10 * MS, 10_000 * MS).with_seed(5).take(20).collect();
        let c: Vec<_> = Backoff::new(10 * MS, 10_000 * MS).with_seed(6).take(20).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);

        let mut b = Backoff::new(10 * MS, 10_000 * MS).without_jitter();
        b.nth(5);
        b.reset();
        assert_eq!(b.next(), Some(10 * MS));
    }

    #[test]
    fn odd_parameters_are_tamed() {
        // max below initial: the cap wins; factor below 1: constant.
        let got: Vec<_> = Backoff::new(500 * MS, 200 * MS).without_jitter().take(3).collect();
        assert_eq!(got, [200 * MS; 3]);
        let got: Vec<_> = Backoff::new(50 * MS, 200 * MS).with_factor(0.1).without_jitter().take(3).collect();
        assert_eq!(got, [50 * MS; 3]);
        let got: Vec<_> = Backoff::new(50 * MS, 200 * MS).with_factor(f64::NAN).without_jitter().take(2).collect();
        assert_eq!(got, [50 * MS; 2]);
    }
}
