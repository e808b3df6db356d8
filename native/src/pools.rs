//! Splitting a usage pool (EVENTS.md §7): the twin of `attribution/pools.py`.
//!
//! Stage 1 (money to works, in whole units) for both methods in one pass over
//! the subscribers in id order (`PoolSplitter`); stage 2 (works to recipients,
//! exact, rounded once) for both methods in one pass over the used works in id
//! order, fed one V(w) at a time (`Stage2`), so the engine hands vectors over
//! in chunks and nothing holds all of them.

use std::collections::{BTreeMap, HashMap};

use num_integer::Integer;
use num_traits::One;

use crate::allocation::{allocate, MAX_AMOUNT_MINOR};
use crate::num::Nat;
use crate::schema::PoolMethod;
use crate::shares::{from_counts, ShareVector, UNATTRIBUTED};

/// `usage.recorded`: a count is 1 .. 10^9 uses.
pub const USE_COUNT_MAX: u64 = 1_000_000_000;

/// Stage 1 of one pool under both methods: work -> units, in work id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSplits {
    pub amount: u64,
    pub uses: u128,
    pub pro_rata: Vec<(String, u64)>,
    pub user_centric: Vec<(String, u64)>,
}

impl WorkSplits {
    pub fn works(&self, method: PoolMethod) -> &[(String, u64)] {
        match method {
            PoolMethod::ProRata => &self.pro_rata,
            PoolMethod::UserCentric => &self.user_centric,
        }
    }

    /// The works with units under either method, in id order (`used_works`).
    pub fn used_works(&self) -> Vec<String> {
        let mut set: BTreeMap<&str, ()> = BTreeMap::new();
        for (w, u) in self.pro_rata.iter().chain(&self.user_centric) {
            if *u > 0 {
                set.insert(w, ());
            }
        }
        set.into_keys().map(str::to_owned).collect()
    }
}

/// `alloc(amount, {w: uses[w] / Σ uses})`, every work of `uses`, in id order.
pub fn split_by_usage(amount: u64, uses: &[(String, u64)]) -> Vec<(String, u64)> {
    allocate(amount, &from_counts(uses))
}

/// `PoolSplitter`: subscribers once each, in increasing id order.
#[derive(Default)]
pub struct PoolSplitter {
    last: Option<String>,
    funded: u64,
    uses_by_work: HashMap<String, u64>,
    user_centric: HashMap<String, u64>,
    idle_by_funding: BTreeMap<u64, u64>,
}

impl PoolSplitter {
    pub fn new() -> PoolSplitter {
        PoolSplitter::default()
    }

    pub fn add(&mut self, subscriber: &str, funded: u64, uses: &[(String, u64)]) {
        assert!(self.last.as_deref().is_none_or(|l| subscriber.as_bytes() > l.as_bytes()),
                "subscribers must come once each, in increasing id order");
        self.last = Some(subscriber.to_owned());
        self.funded = self.funded.checked_add(funded).filter(|x| *x <= MAX_AMOUNT_MINOR).expect("pool funding over 2^63 - 1");
        let mut own: BTreeMap<&str, u64> = BTreeMap::new();
        for (w, c) in uses {
            assert!((1..=USE_COUNT_MAX).contains(c), "use count out of range");
            *own.entry(w).or_insert(0) += c;
        }
        for (w, c) in &own {
            *self.uses_by_work.entry((*w).to_owned()).or_insert(0) += c;
        }
        if funded == 0 {
            return;
        }
        if own.is_empty() {
            *self.idle_by_funding.entry(funded).or_insert(0) += 1;
            return;
        }
        let own: Vec<(String, u64)> = own.into_iter().map(|(w, c)| (w.to_owned(), c)).collect();
        for (w, units) in split_by_usage(funded, &own) {
            *self.user_centric.entry(w).or_insert(0) += units;
        }
    }

    pub fn finish(self) -> WorkSplits {
        let x = self.funded;
        let mut totals: Vec<(String, u64)> = self.uses_by_work.into_iter().collect();
        totals.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let used: u128 = totals.iter().map(|(_, c)| u128::from(*c)).sum();
        if used == 0 {
            return WorkSplits { amount: x, uses: 0, pro_rata: vec![], user_centric: vec![] };
        }
        let everyone = from_counts(&totals);
        let pro_rata = allocate(x, &everyone);
        let mut m = self.user_centric;
        for (funded, subscribers) in self.idle_by_funding {
            for (w, units) in allocate(funded, &everyone) {
                *m.entry(w).or_insert(0) += subscribers * units;
            }
        }
        let mut user_centric: Vec<(String, u64)> = m.into_iter().collect();
        user_centric.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        assert_eq!(pro_rata.iter().map(|(_, u)| u128::from(*u)).sum::<u128>(), u128::from(x));
        assert_eq!(user_centric.iter().map(|(_, u)| u128::from(*u)).sum::<u128>(), u128::from(x));
        WorkSplits { amount: x, uses: used, pro_rata, user_centric }
    }
}

/// One method's stage 2 accumulation: per distinct denominator d of the V(w),
/// recipient -> Σ m(w)·n_{w,r}.
struct Accumulator {
    units: HashMap<String, u64>,
    by_denominator: Vec<(Nat, HashMap<String, Nat>)>,
}

impl Accumulator {
    fn new(works: &[(String, u64)]) -> Accumulator {
        Accumulator { units: works.iter().cloned().collect(), by_denominator: Vec::new() }
    }

    fn add(&mut self, work: &str, vector: &ShareVector) {
        let units = self.units.get(work).copied().unwrap_or(0);
        if units == 0 {
            return;
        }
        let pos = match self.by_denominator.iter().position(|(d, _)| *d == vector.denominator) {
            Some(i) => i,
            None => {
                self.by_denominator.push((vector.denominator.clone(), HashMap::new()));
                self.by_denominator.len() - 1
            }
        };
        let acc = &mut self.by_denominator[pos].1;
        let u = Nat::from(units);
        for (r, n) in &vector.numerators {
            let add = &u * n;
            match acc.get_mut(r) {
                Some(x) => *x += add,
                None => {
                    acc.insert(r.clone(), add);
                }
            }
        }
    }

    fn finish(self, amount: u64, fee_bps: u32) -> ShareVector {
        if self.units.is_empty() {
            return ShareVector::new(Nat::one(), vec![(UNATTRIBUTED.to_owned(), Nat::one())]).with_fee(fee_bps);
        }
        let mut common = Nat::one();
        for (d, _) in &self.by_denominator {
            common = common.lcm(d);
        }
        let mut numerators: HashMap<String, Nat> = HashMap::new();
        for (d, acc) in self.by_denominator {
            let scale = &common / &d;
            for (r, n) in acc {
                let add = n * &scale;
                match numerators.get_mut(&r) {
                    Some(x) => *x += add,
                    None => {
                        numerators.insert(r, add);
                    }
                }
            }
        }
        let denominator = Nat::from(amount) * &common;
        let sum: Nat = numerators.values().sum();
        assert!(sum == denominator, "stage 2 shares do not sum to 1");
        ShareVector::in_lowest_terms(denominator, numerators.into_iter().collect()).with_fee(fee_bps)
    }
}

/// One method's split: stage 1, stage 2 (None when X = 0) and alloc(X, S).
#[derive(Debug, Clone)]
pub struct MethodSplit {
    pub method: PoolMethod,
    pub works: Vec<(String, u64)>,
    pub shares: Option<ShareVector>,
    pub allocation: Vec<(String, u64)>,
}

/// Stage 2 of both methods (`split_pool`), fed V(w) for each of `used_works` in order.
pub struct Stage2 {
    splits: WorkSplits,
    method: PoolMethod,
    same: bool,
    booked: Accumulator,
    other: Option<Accumulator>,
}

impl Stage2 {
    pub fn new(splits: WorkSplits, method: PoolMethod) -> Stage2 {
        let same = splits.works(method) == splits.works(method.other());
        let booked = Accumulator::new(splits.works(method));
        let other = (!same).then(|| Accumulator::new(splits.works(method.other())));
        Stage2 { splits, method, same, booked, other }
    }

    pub fn add(&mut self, work: &str, vector: &ShareVector) {
        self.booked.add(work, vector);
        if let Some(o) = self.other.as_mut() {
            o.add(work, vector);
        }
    }

    /// (the split the pool books, the other method's, never booked).
    pub fn finish(self, fee_bps: u32) -> (MethodSplit, MethodSplit) {
        let x = self.splits.amount;
        let split = |method: PoolMethod, acc: Accumulator| {
            let works = self.splits.works(method).to_vec();
            let shares = (x > 0).then(|| acc.finish(x, fee_bps));
            let allocation = shares.as_ref().map(|s| allocate(x, s)).unwrap_or_default();
            MethodSplit { method, works, shares, allocation }
        };
        let booked = split(self.method, self.booked);
        if self.same {
            let other = MethodSplit { method: self.method.other(), works: self.splits.works(self.method.other()).to_vec(),
                                      shares: booked.shares.clone(), allocation: booked.allocation.clone() };
            return (booked, other);
        }
        let other = split(self.method.other(), self.other.unwrap());
        (booked, other)
    }
}

/// For tests and callers that hold every V(w): `split_pool`.
pub fn split_pool(splits: WorkSplits, method: PoolMethod, vector_of: impl Fn(&str) -> ShareVector, fee_bps: u32) -> (MethodSplit, MethodSplit) {
    let order = splits.used_works();
    let mut stage = Stage2::new(splits, method);
    for w in &order {
        stage.add(w, &vector_of(w));
    }
    stage.finish(fee_bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_of_section_7() {
        let mut s = PoolSplitter::new();
        s.add("s1", 60, &[("o1".into(), 1)]);
        s.add("s2", 30, &[("c2".into(), 4), ("c2".into(), 5)]);
        s.add("s3", 11, &[]);
        let r = s.finish();
        assert_eq!(r.pro_rata, vec![("c2".to_string(), 91), ("o1".to_string(), 10)]);
        assert_eq!(r.user_centric, vec![("c2".to_string(), 40), ("o1".to_string(), 61)]);
        let v = |w: &str| if w == "o1" {
            ShareVector::new(Nat::from(2u8), vec![("alice".into(), Nat::one()), ("carol".into(), Nat::one())])
        } else {
            ShareVector::new(Nat::one(), vec![("bob".into(), Nat::one())])
        };
        let (booked, other) = split_pool(r, PoolMethod::ProRata, v, 1000);
        assert_eq!(booked.allocation, vec![("@platform".to_string(), 10), ("alice".into(), 5), ("bob".into(), 82), ("carol".into(), 4)]);
        assert_eq!(other.allocation, vec![("@platform".to_string(), 10), ("alice".into(), 28), ("bob".into(), 36), ("carol".into(), 27)]);
    }
}
