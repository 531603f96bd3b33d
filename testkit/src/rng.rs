//! A small seeded PRNG: every random choice of a run (faults, jitter) follows from its
//! seed. The generator is the plugin core's SplitMix64 (`skylark_core::election::Rng`);
//! this adds the draws the harness needs. Not for cryptography.

use std::time::Duration;

/// SplitMix64 with draws for durations, fractions and picks.
#[derive(Clone, Debug)]
pub struct Rng(skylark_core::election::Rng);

impl Rng {
    /// A generator whose sequence follows from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(skylark_core::election::Rng::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sequence() {
        // SplitMix64 from seed 0 (the reference implementation's first outputs).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let u = r.next_unit();
            assert!((0.0..1.0).contains(&u));
            let d = r.millis(5, 9).as_millis();
            assert!((5..=9).contains(&d));
        }
        assert_eq!(r.below(0), 0);
    }
}
