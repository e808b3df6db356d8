//! Largest remainder and reversal bookings: the twin of `attribution/allocation.py`.
//!
//! Each recipient gets ⌊X·n_r/D⌋; the units left go one each to the largest
//! remainders, ties by recipient id (code point order). When D fits a u64 the
//! whole allocation is u128 arithmetic (X < 2^63, n_r ≤ D < 2^64: X·n_r < 2^127).

use num_integer::Integer;
use num_traits::ToPrimitive;

use crate::num::Nat;
use crate::shares::ShareVector;

/// EVENTS.md §1: amounts are 1 .. 2^63 − 1; a refunded total never exceeds its amount.
pub const MAX_AMOUNT_MINOR: u64 = (1 << 63) - 1;

/// `allocate(amount, shares)`: every recipient, in recipient order, summing to `amount`.
pub fn allocate(amount: u64, shares: &ShareVector) -> Vec<(String, u64)> {
    assert!(amount <= MAX_AMOUNT_MINOR, "amount out of range");
    let k = shares.numerators.len();
    let mut floors: Vec<u64> = Vec::with_capacity(k);
    // (remainder, index): sorted by remainder descending, then index ascending
    // (recipients are in id order, so the index order is the id order).
    let mut total: u128 = 0;
    let leftover;
    let mut order: Vec<usize>;
    if let Some((d, nums)) = shares.small() {
        let d = u128::from(d);
        let mut rems: Vec<(u128, usize)> = Vec::with_capacity(k);
        for (i, &n) in nums.iter().enumerate() {
            let x = u128::from(amount) * u128::from(n);
            let (q, r) = (x / d, x % d);
            floors.push(q as u64);
            total += q;
            if r != 0 {
                rems.push((r, i));
            }
        }
        leftover = (u128::from(amount) - total) as usize;
        assert!(leftover <= rems.len(), "largest remainder invariant broken");
        rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        order = rems.into_iter().take(leftover).map(|(_, i)| i).collect();
    } else {
        let x = Nat::from(amount);
        let mut rems: Vec<(Nat, usize)> = Vec::with_capacity(k);
        for (i, (_, n)) in shares.numerators.iter().enumerate() {
            let (q, r) = (&x * n).div_rem(&shares.denominator);
            let q = q.to_u64().expect("a share of an amount fits the amount");
            floors.push(q);
            total += u128::from(q);
            if r != Nat::from(0u8) {
                rems.push((r, i));
            }
        }
        leftover = (u128::from(amount) - total) as usize;
        assert!(leftover <= rems.len(), "largest remainder invariant broken");
        rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        order = rems.into_iter().take(leftover).map(|(_, i)| i).collect();
    }
    order.sort_unstable();
    for i in order {
        floors[i] += 1;
    }
    let out: Vec<(String, u64)> = shares.numerators.iter().zip(floors).map(|((r, _), u)| (r.clone(), u)).collect();
    assert_eq!(out.iter().map(|(_, u)| u128::from(*u)).sum::<u128>(), u128::from(amount));
    out
}

/// `reversal_bookings`: alloc(T, S)[r] − alloc(T + R, S)[r], summing to −R.
pub fn reversal_bookings(shares: &ShareVector, before: u64, reversal: u64) -> Vec<(String, i64)> {
    assert!(before.checked_add(reversal).is_some_and(|t| t <= MAX_AMOUNT_MINOR));
    let a = allocate(before, shares);
    let b = allocate(before + reversal, shares);
    let out: Vec<(String, i64)> = a.into_iter().zip(b).map(|((r, x), (_, y))| (r, x as i64 - y as i64)).collect();
    assert_eq!(out.iter().map(|(_, u)| i128::from(*u)).sum::<i128>(), -i128::from(reversal));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(d: u64, n: &[(&str, u64)]) -> ShareVector {
        ShareVector::new(Nat::from(d), n.iter().map(|(r, x)| (r.to_string(), Nat::from(*x))).collect())
    }

    #[test]
    fn the_worked_example() {
        let s = v(50, &[("@platform", 5), ("alice", 9), ("bob", 6), ("carol", 30)]);
        let got: Vec<u64> = allocate(1001, &s).into_iter().map(|(_, u)| u).collect();
        assert_eq!(got, vec![100, 180, 120, 601]);
        let r: Vec<i64> = reversal_bookings(&s, 0, 500).into_iter().map(|(_, u)| u).collect();
        assert_eq!(r, vec![-50, -90, -60, -300]);
        let one: Vec<u64> = allocate(1, &v(3, &[("b", 1), ("a", 1), ("c", 1)])).into_iter().map(|(_, u)| u).collect();
        assert_eq!(one, vec![1, 0, 0]);
    }
}
