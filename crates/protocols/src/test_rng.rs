//! The seeded noise source of the harness tests (the same inputs `cargo fuzz` would start from, without
//! cargo-fuzz): xorshift64*, so a fixed seed keeps every test reproducible.

/// xorshift64* with a fixed seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One to three mutations of a real frame: flip a bit, replace a byte, insert a byte, or truncate.
    pub(crate) fn mutate(&mut self, d: &mut Vec<u8>) {
        for _ in 0..=self.below(3) {
            let at = self.below(d.len() + 1);
            match self.below(4) {
                0 if at < d.len() => d[at] ^= 1 << self.below(8),
                1 if at < d.len() => d[at] = self.next() as u8,
                2 => d.insert(at, self.next() as u8),
                _ => d.truncate(at),
            }
        }
    }
}
