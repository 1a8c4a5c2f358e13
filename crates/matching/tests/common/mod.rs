//! Helpers shared by the integration tests.

use firebreak_hashing::Hash256;

/// splitmix64: a small deterministic generator, so a proptest case is one seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn hash(&mut self) -> Hash256 {
        Hash256::from_limbs([self.next(), self.next(), self.next(), self.next()])
    }

    /// `h` with `flips` distinct random bits flipped.
    pub fn near(&mut self, h: &Hash256, flips: u32) -> Hash256 {
        let mut limbs = h.limbs();
        let mut taken = [false; 256];
        let mut flipped = 0;
        while flipped < flips {
            let bit = self.below(256) as usize;
            if !taken[bit] {
                taken[bit] = true;
                limbs[bit / 64] ^= 1 << (bit % 64);
                flipped += 1;
            }
        }
        Hash256::from_limbs(limbs)
    }
}
