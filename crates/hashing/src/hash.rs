//! The 256-bit PDQ hash: bit layout, hex text and Hamming distance.

use std::fmt;
use std::str::FromStr;

/// Number of bits in a PDQ hash.
pub const HASH_BITS: u32 = 256;

/// A 256-bit PDQ hash.
///
/// Bit `k` (0..256) is the bit for DCT coefficient `k = 16 * i + j` of the 16x16 DCT
/// output. It is stored in `limbs[k / 64]` at bit `k % 64`, so the 256-bit number is
/// `limbs[3]:limbs[2]:limbs[1]:limbs[0]`, most significant limb first. The hex text is
/// that number written out most significant digit first, which is the same text as the
/// reference C++ `Hash256::format()` (sixteen 16-bit words, most significant first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash256 {
    limbs: [u64; 4],
}

/// Why a hex string is not a PDQ hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseHashError {
    /// The text is not 64 characters long.
    Length(usize),
    /// A character is not a hex digit.
    Digit {
        /// The offending character.
        ch: char,
        /// Its zero-based position.
        pos: usize,
    },
}

impl fmt::Display for ParseHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseHashError::Length(n) => {
                write!(
                    f,
                    "a PDQ hash has 64 hex digits, this text has {n} characters"
                )
            }
            ParseHashError::Digit { ch, pos } => {
                write!(f, "character {ch:?} at position {pos} is not a hex digit")
            }
        }
    }
}

impl std::error::Error for ParseHashError {}

impl Hash256 {
    /// The all-zero hash (what the reference returns for unhashable input).
    pub const ZERO: Hash256 = Hash256 { limbs: [0; 4] };

    /// Builds a hash from its limbs, least significant first.
    pub const fn from_limbs(limbs: [u64; 4]) -> Self {
        Hash256 { limbs }
    }

    /// The limbs, least significant first (bit `k` is `limbs[k / 64] >> (k % 64) & 1`).
    pub const fn limbs(&self) -> [u64; 4] {
        self.limbs
    }

    /// Whether bit `k` is set.
    #[inline]
    pub fn bit(&self, k: usize) -> bool {
        (self.limbs[k / 64] >> (k % 64)) & 1 == 1
    }

    /// Sets bit `k`.
    #[inline]
    pub fn set_bit(&mut self, k: usize) {
        self.limbs[k / 64] |= 1 << (k % 64);
    }

    /// Number of set bits.
    #[inline]
    pub fn count_ones(&self) -> u32 {
        self.limbs.iter().map(|l| l.count_ones()).sum()
    }

    /// Hamming distance (number of differing bits), 0..=256.
    #[inline]
    pub fn distance(&self, other: &Hash256) -> u32 {
        (self.limbs[0] ^ other.limbs[0]).count_ones()
            + (self.limbs[1] ^ other.limbs[1]).count_ones()
            + (self.limbs[2] ^ other.limbs[2]).count_ones()
            + (self.limbs[3] ^ other.limbs[3]).count_ones()
    }

    /// Whether every bit is zero.
    pub fn is_zero(&self) -> bool {
        self.limbs == [0; 4]
    }

    /// The 32 bytes in hex-text order (`bytes.fromhex(hex)` in Python): the most
    /// significant byte first.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.limbs[3 - i].to_be_bytes());
        }
        out
    }

    /// The inverse of [`Hash256::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            limbs[3 - i] = u64::from_be_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        Hash256 { limbs }
    }

    /// The 64-digit lowercase hex text, as the reference prints it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses 64 hex digits (either case). Surrounding whitespace is not accepted.
    pub fn from_hex(text: &str) -> Result<Self, ParseHashError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 || text.chars().count() != 64 {
            return Err(ParseHashError::Length(text.chars().count()));
        }
        let mut limbs = [0u64; 4];
        for (pos, &b) in bytes.iter().enumerate() {
            let v = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => {
                    return Err(ParseHashError::Digit {
                        ch: text[pos..].chars().next().unwrap_or('?'),
                        pos,
                    });
                }
            };
            // Digit `pos` counts from the most significant end.
            let limb = 3 - pos / 16;
            limbs[limb] = (limbs[limb] << 4) | v as u64;
        }
        Ok(Hash256 { limbs })
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}{:016x}{:016x}{:016x}",
            self.limbs[3], self.limbs[2], self.limbs[1], self.limbs[0]
        )
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

impl FromStr for Hash256 {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash256::from_hex(s)
    }
}

/// A PDQ hash with its quality (0..=100): how much gradient the image has. Hashes of
/// quality below 50 are unreliable for matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PdqHash {
    /// The hash bits.
    pub hash: Hash256,
    /// Quality, 0..=100.
    pub quality: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_layout_matches_reference_word_order() {
        // Bit 0 is the least significant bit of the last hex digit.
        let mut h = Hash256::ZERO;
        h.set_bit(0);
        assert_eq!(h.to_hex(), format!("{}1", "0".repeat(63)));
        // Bit 255 is the most significant bit of the first digit.
        let mut h = Hash256::ZERO;
        h.set_bit(255);
        assert_eq!(h.to_hex(), format!("8{}", "0".repeat(63)));
        // Bit 16 is the lowest bit of the second-to-last 16-bit word.
        let mut h = Hash256::ZERO;
        h.set_bit(16);
        assert_eq!(&h.to_hex()[56..], "00010000");
    }

    #[test]
    fn parse_errors_are_specific() {
        assert_eq!(Hash256::from_hex("abc"), Err(ParseHashError::Length(3)));
        let bad = format!("{}g{}", "0".repeat(10), "0".repeat(53));
        assert_eq!(
            Hash256::from_hex(&bad),
            Err(ParseHashError::Digit { ch: 'g', pos: 10 })
        );
        let multibyte = format!("{}é", "0".repeat(62));
        assert!(Hash256::from_hex(&multibyte).is_err());
    }

    #[test]
    fn uppercase_parses_to_lowercase_text() {
        let text = "E271017837246AACCDDEA259648FB7D62F435C89D9E99B2497763E216C8D055C";
        let h: Hash256 = text.parse().unwrap();
        assert_eq!(h.to_hex(), text.to_lowercase());
    }

    #[test]
    fn distance_counts_differing_bits() {
        let a = Hash256::from_limbs([0b1011, 0, u64::MAX, 0]);
        let b = Hash256::from_limbs([0b0001, 0, 0, 1 << 63]);
        assert_eq!(a.distance(&b), 2 + 64 + 1);
        assert_eq!(a.distance(&a), 0);
    }

    #[test]
    fn bytes_follow_hex_order() {
        let text = "e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c";
        let h: Hash256 = text.parse().unwrap();
        let bytes = h.to_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, text);
        assert_eq!(Hash256::from_bytes(&bytes), h);
    }
}
