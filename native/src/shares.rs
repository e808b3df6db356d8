//! Exact share vectors: the twin of `attribution/shares.py`.
//!
//! One common denominator D and a numerator n_r per recipient, S[r] = n_r / D,
//! every n_r > 0 and Σ n_r == D (asserted on construction), recipients in code
//! point order. Operations are the reference's, step for step, so results are
//! structurally equal (same D, same numerators), not merely equal in value.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};

use crate::json::{self, Value};
use crate::num::{self, Nat};

pub const PLATFORM: &str = "@platform";
pub const UNATTRIBUTED: &str = "@unattributed";
pub const BPS_PER_UNIT: u32 = 10_000;
/// `attribution.shares.JSON_MAX_HEX_DIGITS` and `JSON_MAX_RECIPIENTS`.
pub const JSON_MAX_HEX_DIGITS: usize = 4_000_000;
pub const JSON_MAX_RECIPIENTS: usize = 1_000_000;
/// Estimated bytes per entry beside its digits (`attribution.graph._CACHE_ENTRY_OVERHEAD_BYTES`).
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareVector {
    pub denominator: Nat,
    /// (recipient, numerator), sorted by recipient.
    pub numerators: Vec<(String, Nat)>,
    /// The same over u64, when D fits one: allocation's fast path.
    small: Option<(u64, Vec<u64>)>,
}

impl ShareVector {
    /// Build and check (sorts the recipients).
    pub fn new(denominator: Nat, mut numerators: Vec<(String, Nat)>) -> ShareVector {
        numerators.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        assert!(!denominator.is_zero(), "denominator must be positive");
        assert!(numerators.iter().all(|(_, n)| !n.is_zero()), "numerators must be positive");
        assert!(numerators.windows(2).all(|w| w[0].0 != w[1].0), "recipients must be distinct");
        let sum: Nat = numerators.iter().map(|(_, n)| n).sum();
        assert!(sum == denominator, "shares must sum to exactly 1");
        let small = denominator.to_u64().map(|d| (d, numerators.iter().map(|(_, n)| n.to_u64().unwrap()).collect()));
        ShareVector { denominator, numerators, small }
    }

    pub fn small(&self) -> Option<(u64, &[u64])> {
        self.small.as_ref().map(|(d, n)| (*d, n.as_slice()))
    }

    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.numerators.iter().map(|(r, _)| r.as_str())
    }

    /// `ShareVector.in_lowest_terms`.
    pub fn in_lowest_terms(denominator: Nat, numerators: Vec<(String, Nat)>) -> ShareVector {
        let g = common_factor(&denominator, &numerators);
        divided(denominator, numerators, &g)
    }

    /// `ShareVector.reduced`.
    pub fn reduced(&self) -> ShareVector {
        let g = common_factor(&self.denominator, &self.numerators);
        if g.is_one() { self.clone() } else { divided(self.denominator.clone(), self.numerators.clone(), &g) }
    }

    /// `ShareVector.with_fee`: {PLATFORM: f} + (1 − f) · self, reduced the
    /// reference's way (a reduced input gives a reduced output).
    pub fn with_fee(&self, fee_bps: u32) -> ShareVector {
        assert!(fee_bps <= BPS_PER_UNIT, "fee_bps must be 0..10000");
        if fee_bps == 0 {
            return self.clone();
        }
        if fee_bps == BPS_PER_UNIT {
            return ShareVector::new(Nat::one(), vec![(PLATFORM.to_owned(), Nat::one())]);
        }
        let h = num::gcd_u64(u64::from(fee_bps), u64::from(BPS_PER_UNIT));
        let (fee_num, whole) = (u64::from(fee_bps) / h, u64::from(BPS_PER_UNIT) / h);
        let keep = whole - fee_num;
        let g = self.denominator.gcd(&Nat::from(keep));
        let d_over_g = &self.denominator / &g;
        let den = &d_over_g * whole;
        let keep_scaled = Nat::from(keep) / &g;
        let mut nums: Vec<(String, Nat)> = self.numerators.iter().map(|(r, n)| (r.clone(), n * &keep_scaled)).collect();
        let fee_part = &d_over_g * fee_num;
        match nums.iter_mut().find(|(r, _)| r == PLATFORM) {
            Some((_, n)) => *n += fee_part,
            None => nums.push((PLATFORM.to_owned(), fee_part)),
        }
        ShareVector::new(den, nums)
    }

    /// S[recipient] as reduced "n/d" text (`fraction_str(shares.share(r))`).
    pub fn fraction_str(&self, numerator: &Nat) -> String {
        num::ratio_str(numerator, &self.denominator)
    }

    /// (entries, estimated bytes): `attribution.graph.vector_size`.
    pub fn size(&self) -> (usize, usize) {
        let digits = |n: &Nat| (n.bits() as usize).div_ceil(8);
        let bytes = digits(&self.denominator)
            + self.numerators.iter().map(|(_, n)| digits(n) + CACHE_ENTRY_OVERHEAD_BYTES).sum::<usize>();
        (self.numerators.len(), bytes)
    }

    /// `orjson.dumps(to_json_obj(v))`: `{"d":"<hex>","n":{"r":"<hex>",…}}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 24 * self.numerators.len());
        out.extend_from_slice(b"{\"d\":\"");
        out.extend_from_slice(num::hex(&self.denominator).as_bytes());
        out.extend_from_slice(b"\",\"n\":{");
        for (i, (r, n)) in self.numerators.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(r, &mut out);
            out.extend_from_slice(b":\"");
            out.extend_from_slice(num::hex(n).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        out
    }

    /// `from_json_obj(orjson.loads(bytes))`, checking everything.
    pub fn from_json(bytes: &[u8]) -> Result<ShareVector, String> {
        let bad = || "share vector JSON: expected {\"d\": hex, \"n\": {recipient: hex}}".to_owned();
        let v = json::parse(bytes).map_err(|_| bad())?;
        let pairs = v.as_object().ok_or_else(bad)?;
        if pairs.len() != 2 {
            return Err(bad());
        }
        let d = v.get("d").and_then(Value::as_str).ok_or_else(bad)?;
        let n = v.get("n").and_then(Value::as_object).ok_or_else(bad)?;
        if n.len() > JSON_MAX_RECIPIENTS {
            return Err("share vector JSON: too many recipients".into());
        }
        let hex = |t: &str| num::parse_hex(t, JSON_MAX_HEX_DIGITS)
            .ok_or_else(|| "share vector JSON: expected canonical lower-case hex of a positive int".to_owned());
        let denominator = hex(d)?;
        let mut numerators = Vec::with_capacity(n.len());
        for (r, x) in n {
            numerators.push((r.clone(), hex(x.as_str().ok_or_else(bad)?)?));
        }
        let sum: Nat = numerators.iter().map(|(_, n)| n).sum();
        if sum != denominator {
            return Err("share vector JSON: shares do not sum to 1".into());
        }
        Ok(ShareVector::new(denominator, numerators))
    }
}

/// gcd(D, n_1, …) starting from the smallest numerator (`_common_factor`).
fn common_factor(denominator: &Nat, numerators: &[(String, Nat)]) -> Nat {
    if numerators.len() == 1 {
        return denominator.clone();
    }
    let smallest = numerators.iter().map(|(_, n)| n).min_by_key(|n| n.bits()).unwrap();
    let mut g = denominator.gcd(smallest);
    for (_, n) in numerators {
        if g.is_one() {
            break;
        }
        g = g.gcd(n);
    }
    g
}

fn divided(denominator: Nat, numerators: Vec<(String, Nat)>, g: &Nat) -> ShareVector {
    if g.is_one() {
        return ShareVector::new(denominator, numerators);
    }
    ShareVector::new(denominator / g, numerators.into_iter().map(|(r, n)| (r, n / g)).collect())
}

/// A vector whose numerators are small integers over their sum (usage splits).
pub fn from_counts(counts: &[(String, u64)]) -> ShareVector {
    let total: u128 = counts.iter().map(|(_, c)| u128::from(*c)).sum();
    ShareVector::new(BigUint::from(total), counts.iter().map(|(w, c)| (w.clone(), Nat::from(*c))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(d: u64, n: &[(&str, u64)]) -> ShareVector {
        ShareVector::new(Nat::from(d), n.iter().map(|(r, x)| (r.to_string(), Nat::from(*x))).collect())
    }

    #[test]
    fn the_worked_example_with_its_fee() {
        let s = v(15, &[("carol", 10), ("alice", 3), ("bob", 2)]).with_fee(1000);
        assert_eq!(s, v(50, &[("@platform", 5), ("alice", 9), ("bob", 6), ("carol", 30)]));
        assert_eq!(String::from_utf8(s.to_json()).unwrap(),
                   r#"{"d":"32","n":{"@platform":"5","alice":"9","bob":"6","carol":"1e"}}"#);
        assert_eq!(ShareVector::from_json(&s.to_json()).unwrap(), s);
    }
}
