//! Exact naturals: text forms and a few helpers over num-bigint's BigUint.
//!
//! Shares are rationals whose denominators are usually small and sometimes
//! thousands of digits long (a remix chain 3000 deep). The hot paths that can
//! stay in machine integers do so where they use the numbers (allocation works
//! in u128 when a vector's denominator fits u64); everything else is exact big
//! integers. Never floats.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};

pub type Nat = BigUint;

/// Lower-case hex without prefix or leading zeros ("0" for zero), the stored
/// form of vectors (`attribution.shares._hex`).
pub fn hex(n: &Nat) -> String {
    n.to_str_radix(16)
}

/// Canonical lower-case hex of a positive int (`attribution.shares._parse_hex`):
/// no leading zero, no prefix, at most `max_digits`.
pub fn parse_hex(text: &str, max_digits: usize) -> Option<Nat> {
    if text.is_empty() || text.len() > max_digits || text.starts_with('0') {
        return None;
    }
    if !text.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    BigUint::parse_bytes(text.as_bytes(), 16)
}

/// Decimal text of any length (`attribution.numbers.decimal_str`).
pub fn decimal(n: &Nat) -> String {
    n.to_str_radix(10)
}

/// "n/d" in lowest terms (`attribution.numbers.ratio_str`).
pub fn ratio_str(numerator: &Nat, denominator: &Nat) -> String {
    assert!(!denominator.is_zero(), "ratio_str needs a positive denominator");
    let g = numerator.gcd(denominator);
    if g.is_one() {
        format!("{}/{}", decimal(numerator), decimal(denominator))
    } else {
        format!("{}/{}", decimal(&(numerator / &g)), decimal(&(denominator / &g)))
    }
}

/// The value as a u64, if it fits.
pub fn small(n: &Nat) -> Option<u64> {
    n.to_u64()
}

/// Product of many naturals by balanced pairwise multiplication
/// (`attribution.graph._product`): big operands stay balanced.
pub fn product(mut level: Vec<Nat>) -> Nat {
    if level.is_empty() {
        return Nat::one();
    }
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut it = level.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(a * b),
                None => next.push(a),
            }
        }
        level = next;
    }
    level.pop().unwrap()
}

pub fn gcd_u64(a: u64, b: u64) -> u64 {
    a.gcd(&b)
}
