//! The rules of EVENTS.md §4, §7 and §8 and the fold of §3 and §7: the twin of
//! `ledger/contract/rules.py` (messages word for word) and `projections/fold.py`.
//!
//! Every event is decided in two phases: everything it reads first (a row the
//! engine lacks is a `Miss`, and the event is tried again once the shell has
//! read it), then its changes, which can no longer fail. So a miss never leaves
//! half an event behind. A pool's close is the exception that proves the rule:
//! it streams its members and its works' vectors over many rounds, so it keeps
//! its progress in a `PoolClose` between them, and changes nothing until its
//! last round.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::allocation::{allocate, reversal_bookings, MAX_AMOUNT_MINOR};
use crate::engine::state::*;
use crate::graph::{self, Leaves, Work, WorkKind, Works, EXPLAIN_MAX_PATHS, EXPLAIN_MAX_WORKS};
use crate::json;
use crate::pools::{PoolSplitter, Stage2, WorkSplits};
use crate::schema::{Event, EventData, PoolMethod};
use crate::shares::{ShareVector, BPS_PER_UNIT};

/// Works whose vectors a pool's close holds at once (`POOL_VECTORS_CHUNK`).
pub const POOL_VECTORS_CHUNK: usize = 2_000;
/// Works whose V(w) is stored with a closed pool (`POOL_VECTORS_KEPT`).
pub const POOL_VECTORS_KEPT: usize = 10;

pub const CONFLICT: &str = "conflict";
pub const UNKNOWN_REFERENCE: &str = "unknown_reference";
pub const ALREADY_EXISTS: &str = "already_exists";
pub const INSUFFICIENT_BALANCE: &str = "insufficient_balance";
pub const OVER_REVERSAL: &str = "over_reversal";
pub const INVALID_STATE: &str = "invalid_state";
pub const INVALID: &str = "invalid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Result<Option<Refusal>, Miss> {
    Ok(Some(Refusal { code, message }))
}

/// Python's repr of an id (ids hold no quote or backslash).
fn r(s: &str) -> String {
    format!("'{s}'")
}

/// What applying one event booked: one column of one currency.
#[derive(Debug, Default)]
pub struct Applied {
    pub column: Option<usize>,
    pub currency: String,
    pub bookings: Vec<(String, i128)>,
}

impl Applied {
    /// `Applied.effect_hash`: BLAKE2b-128 of orjson.dumps((kind, currency, bookings)).
    pub fn effect_hash(&self) -> [u8; 16] {
        let mut h = Blake2bVar::new(16).unwrap();
        if let Some(column) = self.column.filter(|_| !self.bookings.is_empty()) {
            let mut text = Vec::with_capacity(32 + 24 * self.bookings.len());
            text.extend_from_slice(b"[\"");
            text.extend_from_slice(COLUMNS[column].as_bytes());
            text.extend_from_slice(b"\",");
            json::write_str(&self.currency, &mut text);
            text.extend_from_slice(b",{");
            for (i, (account, units)) in self.bookings.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                json::write_str(account, &mut text);
                text.push(b':');
                text.extend_from_slice(units.to_string().as_bytes());
            }
            text.extend_from_slice(b"}]");
            h.update(&text);
        }
        let mut out = [0u8; 16];
        h.finalize_variable(&mut out).unwrap();
        out
    }
}

// -- the graph over the state ----------------------------------------------------

/// The sub-DAG below `work` that carries value, one level per round of reads;
/// with `use_leaves`, works whose vector is known end the walk.
fn gather(st: &mut PlatformState, c: &mut Caches, work: &str, top: Arc<Work>, use_leaves: bool) -> Result<(Works, Leaves), Miss> {
    let mut works: Works = HashMap::default();
    works.insert(work.to_owned(), top);
    let mut leaves: Leaves = HashMap::default();
    let mut level: Vec<String> = vec![work.to_owned()];
    loop {
        let mut wanted: Vec<String> = Vec::new();
        for node in &level {
            let w = &works[node];
            if !w.passes_on() || leaves.contains_key(node) {
                continue;
            }
            for (comp, _) in &w.components {
                if !works.contains_key(comp) && !wanted.contains(comp) {
                    wanted.push(comp.clone());
                }
            }
        }
        if wanted.is_empty() {
            return Ok((works, leaves));
        }
        let found = st.works_of(c, wanted.iter().map(String::as_str)).inspect_err(|_| st.needs.works_below = true)?;
        assert_eq!(found.len(), wanted.len(), "a component is missing from the store");
        if use_leaves {
            let mut missed = false;
            for comp in &wanted {
                match st.vector(c, &(comp.clone(), found[comp].version)) {
                    Ok(Some(v)) => {
                        leaves.insert(comp.clone(), v);
                    }
                    Ok(None) => {}
                    Err(Miss) => missed = true,
                }
            }
            if missed {
                return Err(Miss);
            }
        }
        works.extend(found);
        level = wanted;
    }
}

/// flow(work, 1), reduced (`WorkGraph.vector`): known, or computed and cached.
pub fn vector_of(st: &mut PlatformState, c: &mut Caches, work: &str) -> Result<Arc<ShareVector>, Miss> {
    let top = st.work(c, work)?.expect("the vector of an existing work");
    let key = (work.to_owned(), top.version);
    if let Some(v) = st.vector(c, &key)? {
        return Ok(v);
    }
    let (works, leaves) = gather(st, c, work, top, true)?;
    let v = Arc::new(graph::vector(work, &works, &leaves));
    st.put_computed_vector(c, key, v.clone());
    Ok(v)
}

/// V(w) of each of `works`, asking for every miss at once.
fn vectors_of(st: &mut PlatformState, c: &mut Caches, works: &[String]) -> Result<Vec<Arc<ShareVector>>, Miss> {
    let mut out = Vec::with_capacity(works.len());
    let mut missed = false;
    for w in works {
        match vector_of(st, c, w) {
            Ok(v) => out.push(v),
            Err(Miss) => missed = true,
        }
    }
    if missed { Err(Miss) } else { Ok(out) }
}

/// `work_explanation`: the vector and the stored explanation's bytes.
///
/// The explanation walks the whole sub-DAG, so the components' vectors are
/// computed within it, with the vectors already at hand as leaves, rather
/// than read from the store one level per round: a work's vector at a version
/// is the flow of the graph at that state, whichever leaves it is computed from.
fn explanation_of(st: &mut PlatformState, c: &mut Caches, work: &str) -> Result<(Arc<ShareVector>, Vec<u8>), Miss> {
    let top = st.work(c, work)?.expect("an explained work exists");
    let (works, _) = gather(st, c, work, top.clone(), false)?;
    let component_vectors = if top.passes_on() {
        let leaves = vectors_at_hand(st, c, &works);
        let mut out = Vec::with_capacity(top.components.len());
        for (comp, _) in &top.components {
            let v = match leaves.get(comp) {
                Some(v) => v.clone(),
                None => {
                    let v = Arc::new(graph::vector(comp, &works, &leaves));
                    // Kept as computed only where the store is known not to
                    // have the row: cached as "not stored", a stored vector
                    // would be explained and written again at its first sale.
                    let key = (comp.clone(), works[comp].version);
                    if st.vectors.absent.contains(&key) {
                        st.put_computed_vector(c, key, v.clone());
                    }
                    v
                }
            };
            out.push(v);
        }
        out
    } else {
        Vec::new()
    };
    let ex = graph::explain_exact(work, &works, EXPLAIN_MAX_PATHS, EXPLAIN_MAX_WORKS);
    let routes = graph::routes(work, &top, &component_vectors);
    let bytes = graph::explanation_json(&ex, &routes);
    Ok((Arc::new(ex.vector), bytes))
}

/// The vectors of `works` (at their versions) the batch, the one in flight
/// and the caches hold: no read.
fn vectors_at_hand(st: &mut PlatformState, c: &mut Caches, works: &Works) -> Leaves {
    let mut leaves: Leaves = HashMap::default();
    for (id, w) in works {
        let key = (id.clone(), w.version);
        if st.vectors.known(&key, &mut c.vectors, st.generation) {
            if let Ok(Some(v)) = st.vector(c, &key) {
                leaves.insert(id.clone(), v);
            }
        }
    }
    leaves
}

/// The works whose vector a change of `work` may change: it and everything
/// built on it, with their rows (`WorkGraph._invalidate`'s walk).
fn dependents_closure(st: &mut PlatformState, c: &mut Caches, work: &str) -> Result<Vec<(String, Arc<Work>)>, Miss> {
    let mut seen: rustc_hash::FxHashSet<String> = Default::default();
    seen.insert(work.to_owned());
    let mut out = Vec::new();
    let mut level = vec![work.to_owned()];
    while !level.is_empty() {
        let rows = st.works_of(c, level.iter().map(String::as_str))?;
        let mut next = Vec::new();
        let mut missed = false;
        for w in &level {
            match st.dependents_of(w) {
                Ok(mut deps) => {
                    deps.sort();
                    for d in deps {
                        if seen.insert(d.clone()) {
                            next.push(d);
                        }
                    }
                }
                Err(Miss) => missed = true,
            }
        }
        if missed {
            return Err(Miss);
        }
        for w in level {
            let row = rows[&w].clone();
            out.push((w, row));
        }
        level = next;
    }
    Ok(out)
}

fn invalidate(st: &mut PlatformState, closure: Vec<(String, Arc<Work>)>, changed: &str, new_top: Work) {
    for (w, row) in closure {
        let mut next = if w == changed { new_top.clone() } else { (*row).clone() };
        next.version += 1;
        st.put_work(&w, next, None);
    }
}

fn sorted(weights: &[(String, u32)]) -> Vec<(String, u32)> {
    let mut v = weights.to_vec();
    v.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

fn total(weights: &[(String, u32)]) -> u64 {
    weights.iter().map(|(_, w)| u64::from(*w)).sum()
}

/// The shares of a sale of `work` at `version` with `fee_bps` (`PlatformState.shares`).
fn shares(st: &mut PlatformState, c: &mut Caches, work: &str, version: u64, fee_bps: u32) -> Result<Arc<ShareVector>, Miss> {
    let key = (work.to_owned(), version, fee_bps);
    if let Some(v) = c.fee_vectors.get(st.generation, &key) {
        return Ok(v);
    }
    let vector = match st.vector(c, &(work.to_owned(), version))? {
        Some(v) => v,
        None => {
            let top = st.work(c, work)?.expect("a sold work exists");
            assert_eq!(top.version, version, "a past version's vector must be stored");
            vector_of(st, c, work)?
        }
    };
    let s = Arc::new(vector.with_fee(fee_bps));
    let (e, b) = s.size();
    c.fee_vectors.put(st.generation, key, s.clone(), e, b + 150);
    Ok(s)
}

// -- the rules ----------------------------------------------------------------------

fn first_unregistered(st: &mut PlatformState, c: &mut Caches, authors: &[(String, u32)]) -> Result<Option<String>, Miss> {
    // The first unregistered author in the event's order; a miss before it
    // leaves the answer open (every miss of the list is asked for at once).
    let mut missed = false;
    for (p, _) in authors {
        match st.prosumer(c, p) {
            Ok(true) => {}
            Ok(false) if !missed => return Ok(Some(p.clone())),
            Ok(false) => {}
            Err(Miss) => missed = true,
        }
    }
    if missed { Err(Miss) } else { Ok(None) }
}

fn work_exists(st: &mut PlatformState, c: &mut Caches, w: &str) -> Result<bool, Miss> {
    Ok(st.work(c, w)?.is_some())
}

fn value_or_pool_exists(st: &mut PlatformState, c: &mut Caches, id: &str) -> Result<bool, Miss> {
    let v = st.value(c, id);
    let p = st.pool(c, id);
    Ok(v?.is_some() || p?.is_some())
}

/// `rules.check`: None if the event may be appended now.
pub fn check(st: &mut PlatformState, c: &mut Caches, ev: &Event) -> Result<Option<Refusal>, Miss> {
    use EventData::*;
    // 1. already_exists
    let created: Option<(&str, &str, bool)> = match &ev.data {
        ProsumerRegistered { prosumer } => Some(("prosumer", prosumer, st.prosumer(c, prosumer)?)),
        ContributionRecorded { work, .. } | OutputComposed { work, .. } => Some(("work", work, work_exists(st, c, work)?)),
        ValueRealized { value, .. } => Some(("value", value, value_or_pool_exists(st, c, value)?)),
        PoolOpened { pool, .. } => Some(("pool", pool, value_or_pool_exists(st, c, pool)?)),
        PayoutIssued { payout, .. } => Some(("payout", payout, st.payout(payout)?.is_some())),
        _ => None,
    };
    if let Some((name, id, true)) = created {
        return refuse(ALREADY_EXISTS, format!("{name} {} exists already", r(id)));
    }
    // 2. unknown_reference
    match &ev.data {
        ContributionRecorded { authors, .. } | OutputComposed { authors, .. } | WorkReassigned { authors, .. } => {
            if let WorkReassigned { work, .. } = &ev.data {
                if !work_exists(st, c, work)? {
                    return refuse(UNKNOWN_REFERENCE, format!("work {} does not exist", r(work)));
                }
            }
            if let OutputComposed { components, .. } = &ev.data {
                let found = st.works_of(c, components.iter().map(|(w, _)| w.as_str()))?;
                if let Some((w, _)) = components.iter().find(|(w, _)| !found.contains_key(w)) {
                    return refuse(UNKNOWN_REFERENCE, format!("component work {} does not exist", r(w)));
                }
            }
            if let Some(p) = first_unregistered(st, c, authors)? {
                return refuse(UNKNOWN_REFERENCE, format!("author {} is not a registered prosumer", r(&p)));
            }
        }
        ValueRealized { work, .. } | WorkRetracted { work } | WorkReinstated { work } => {
            if !work_exists(st, c, work)? {
                return refuse(UNKNOWN_REFERENCE, format!("work {} does not exist", r(work)));
            }
        }
        PoolFunded { pool, .. } | UsageRecorded { pool, .. } | PoolClosed { pool } => {
            if st.pool(c, pool)?.is_none() {
                return refuse(UNKNOWN_REFERENCE, format!("pool {} does not exist", r(pool)));
            }
            if let UsageRecorded { uses, .. } = &ev.data {
                let mut ids: Vec<&str> = uses.iter().map(|(w, _)| w.as_str()).collect();
                ids.sort_unstable();
                let found = st.works_of(c, ids.iter().copied())?;
                if let Some(w) = ids.iter().find(|w| !found.contains_key(**w)) {
                    return refuse(UNKNOWN_REFERENCE, format!("work {} in uses does not exist", r(w)));
                }
            }
        }
        ValueReversed { value, .. } => {
            if !value_or_pool_exists(st, c, value)? {
                return refuse(UNKNOWN_REFERENCE, format!("value {} does not exist", r(value)));
            }
        }
        PayoutIssued { prosumer, .. } => {
            if !st.prosumer(c, prosumer)? {
                return refuse(UNKNOWN_REFERENCE, format!("prosumer {} is not registered", r(prosumer)));
            }
        }
        PayoutReturned { payout } => {
            if st.payout(payout)?.is_none() {
                return refuse(UNKNOWN_REFERENCE, format!("payout {} was never issued", r(payout)));
            }
        }
        _ => {}
    }
    // 3. the remaining codes
    match &ev.data {
        ValueReversed { value, amount } => match st.value(c, value)? {
            None => return refuse(INVALID_STATE, format!("pool {} is still open: close it before reversing", r(value))),
            Some(record) => {
                let remaining = record.amount - record.reversed;
                if *amount > remaining {
                    return refuse(OVER_REVERSAL, format!("value {}: reversing {amount} but only {remaining} of {} remains",
                                                         r(&record.value), record.amount));
                }
            }
        },
        PayoutIssued { prosumer, amount, currency, .. } => {
            let balance = st.balance(c, prosumer, currency)?.balance();
            if i128::from(*amount) > balance {
                return refuse(INSUFFICIENT_BALANCE, format!("payout of {amount} {currency} exceeds {}'s balance of {balance}", r(prosumer)));
            }
        }
        PayoutReturned { payout } => {
            let p = st.payout(payout)?.expect("checked above");
            if p.returned_seq != 0 {
                return refuse(INVALID_STATE, format!("payout {} was returned already (at seq {}): a payout is returned whole, once",
                                                     r(&p.payout), p.returned_seq));
            }
        }
        PoolFunded { pool, .. } | UsageRecorded { pool, .. } | PoolClosed { pool } => {
            let p = st.pool(c, pool)?.expect("checked above");
            if p.closed {
                return refuse(INVALID_STATE, format!("pool {} is closed", r(&p.pool)));
            }
            if let PoolFunded { amount, .. } = &ev.data {
                if u128::from(p.funded) + u128::from(*amount) > u128::from(MAX_AMOUNT_MINOR) {
                    return refuse(INVALID_STATE, format!("pool {}: funding {amount} would take its total of {} past 2^63 - 1",
                                                         r(&p.pool), p.funded));
                }
            }
        }
        WorkRetracted { work } => {
            if st.work(c, work)?.expect("checked above").retracted {
                return refuse(INVALID_STATE, format!("work {} is already retracted", r(work)));
            }
        }
        WorkReinstated { work } => {
            if !st.work(c, work)?.expect("checked above").retracted {
                return refuse(INVALID_STATE, format!("work {} is not retracted", r(work)));
            }
        }
        WorkReassigned { work, authors } if authors.is_empty() => {
            let w = st.work(c, work)?.expect("checked above");
            if w.kind != WorkKind::Output || w.upstream_bps != BPS_PER_UNIT {
                return refuse(INVALID, format!("work {}: empty authors are allowed only for an output whose upstream_bps is 10000", r(work)));
            }
        }
        _ => {}
    }
    Ok(None)
}

// -- the fold ---------------------------------------------------------------------------

/// A pool's close between rounds (see the module doc).
pub struct PoolClose {
    pool: Arc<PoolRecord>,
    splitter: Option<PoolSplitter>,
    /// This batch's funding and usage of the pool, by subscriber (not yet merged).
    batch_members: Vec<Member>,
    batch_next: usize,
    members_done: bool,
    splits: Option<WorkSplits>,
    stage: Option<Stage2>,
    order: Vec<String>,
    next: usize,
}

impl PoolClose {
    fn new(st: &PlatformState, pool: Arc<PoolRecord>) -> PoolClose {
        // What the database does not have yet: this batch's funding and usage
        // (the batch before it has committed: see `Needs::settle`).
        assert!(st.pending_funding.is_empty() && st.pending_usage.is_empty());
        let mut by: std::collections::BTreeMap<String, (u64, Vec<(String, u64)>)> = std::collections::BTreeMap::new();
        for ((p, s), units) in &st.funding {
            if *p == pool.pool {
                by.entry(s.clone()).or_default().0 += units;
            }
        }
        for ((p, s, w), n) in &st.usage {
            if *p == pool.pool {
                by.entry(s.clone()).or_default().1.push((w.clone(), *n));
            }
        }
        let batch_members = by.into_iter().map(|(s, (f, u))| (s, f, u)).collect();
        PoolClose { pool, splitter: Some(PoolSplitter::new()), batch_members, batch_next: 0, members_done: false,
                    splits: None, stage: None, order: Vec::new(), next: 0 }
    }

    /// Take the pages handed over until the members are all split, asking for more.
    fn members(&mut self, st: &mut PlatformState) -> Result<(), Miss> {
        let splitter = self.splitter.as_mut().expect("members before the split");
        while !self.members_done {
            let Some((page, last)) = st.members_page.take() else {
                st.needs.pool_members = Some(self.pool.pool.clone());
                return Err(Miss);
            };
            for (subscriber, mut funded, mut uses) in page {
                while let Some(b) = self.batch_members.get(self.batch_next) {
                    if b.0.as_bytes() >= subscriber.as_bytes() {
                        break;
                    }
                    splitter.add(&b.0, b.1, &b.2);
                    self.batch_next += 1;
                }
                if let Some(b) = self.batch_members.get(self.batch_next).filter(|b| b.0 == subscriber) {
                    funded += b.1;
                    uses.extend(b.2.iter().cloned());
                    self.batch_next += 1;
                }
                splitter.add(&subscriber, funded, &uses);
            }
            self.members_done = last;
        }
        for b in &self.batch_members[self.batch_next..] {
            splitter.add(&b.0, b.1, &b.2);
        }
        self.batch_next = self.batch_members.len();
        Ok(())
    }
}

/// Apply a checked event at `seq`. `close` holds a pool's close between rounds.
pub fn apply(st: &mut PlatformState, c: &mut Caches, ev: &Event, seq: u64, close: &mut Option<PoolClose>) -> Result<Applied, Miss> {
    use EventData::*;
    assert_eq!(seq, st.head.seq + 1, "log order broken");
    let mut applied = Applied::default();
    match &ev.data {
        ValueRealized { value, work, amount, currency } => {
            let top = st.work(c, work)?.expect("checked");
            let version = top.version;
            let key = (work.clone(), version);
            let explained = if st.vector_stored(c, &key)? { None } else { Some(explanation_of(st, c, work)?) };
            let fee = st.head.fee_bps;
            let s = match &explained {
                // The first sale at this graph state: its vector is the explanation's.
                Some((v, _)) => Arc::new(v.with_fee(fee)),
                None => shares(st, c, work, version, fee)?,
            };
            if let Some((v, bytes)) = explained {
                st.store_vector(key, v, bytes);
            }
            st.values.batch.insert(value.clone(), Arc::new(ValueRecord {
                value: value.clone(), work: work.clone(), amount: *amount, currency: currency.clone(), fee_bps: fee,
                vector_version: version, reversed: 0, seq }));
            applied.column = Some(EARNED);
            applied.currency = currency.clone();
            applied.bookings = allocate(*amount, &s).into_iter().map(|(r, u)| (r, i128::from(u))).collect();
        }
        ValueReversed { value, amount } => {
            let before = st.value(c, value)?.expect("checked");
            assert!(before.reversed + amount <= before.amount);
            let s = shares(st, c, &before.work, before.vector_version, before.fee_bps)?;
            applied.column = Some(REVERSED);
            applied.currency = before.currency.clone();
            applied.bookings = reversal_bookings(&s, before.reversed, *amount).into_iter().map(|(r, u)| (r, i128::from(u))).collect();
            let mut after = (*before).clone();
            after.reversed += amount;
            st.values.batch.insert(value.clone(), Arc::new(after));
        }
        PayoutIssued { payout, prosumer, amount, currency } => {
            st.payouts.batch.insert(payout.clone(), Arc::new(PayoutRecord {
                payout: payout.clone(), prosumer: prosumer.clone(), amount: *amount, currency: currency.clone(), seq,
                returned_seq: 0 }));
            applied.column = Some(PAID);
            applied.currency = currency.clone();
            applied.bookings = vec![(prosumer.clone(), i128::from(*amount))];
        }
        PayoutReturned { payout } => {
            let p = st.payout(payout)?.expect("checked");
            assert_eq!(p.returned_seq, 0);
            let mut after = (*p).clone();
            after.returned_seq = seq;
            applied.column = Some(PAID);
            applied.currency = p.currency.clone();
            applied.bookings = vec![(p.prosumer.clone(), -i128::from(p.amount))];
            st.payouts.batch.insert(payout.clone(), Arc::new(after));
        }
        ProsumerRegistered { prosumer } => {
            st.prosumers.batch.insert(prosumer.clone(), ());
            st.registered.insert(prosumer.clone(), seq);
        }
        ContributionRecorded { work, authors } => {
            let authors = sorted(authors);
            assert!(!authors.is_empty());
            let w = Work { kind: WorkKind::Contribution, author_weight: total(&authors), authors, components: vec![],
                           component_weight: 0, upstream_bps: 0, retracted: false, version: 0 };
            st.put_work(work, w, Some(seq));
        }
        OutputComposed { work, components, authors, upstream_bps } => {
            let components = sorted(components);
            let authors = sorted(authors);
            let w = Work { kind: WorkKind::Output, author_weight: total(&authors), authors,
                           component_weight: total(&components), components, upstream_bps: *upstream_bps,
                           retracted: false, version: 0 };
            for (comp, _) in &w.components {
                st.edges.push((comp.clone(), work.clone()));
            }
            st.put_work(work, w, Some(seq));
        }
        PolicySet { fee_bps } => st.head.fee_bps = *fee_bps,
        WorkRetracted { work } | WorkReinstated { work } | WorkReassigned { work, .. } => {
            let closure = dependents_closure(st, c, work)?;
            let mut top = (*closure[0].1).clone();
            match &ev.data {
                WorkRetracted { .. } => top.retracted = true,
                WorkReinstated { .. } => top.retracted = false,
                WorkReassigned { authors, .. } => {
                    top.authors = sorted(authors);
                    top.author_weight = total(&top.authors);
                }
                _ => unreachable!(),
            }
            invalidate(st, closure, work, top);
        }
        PoolOpened { pool, currency, method } => {
            st.pools.batch.insert(pool.clone(), Arc::new(PoolRecord {
                pool: pool.clone(), currency: currency.clone(), method: *method, funded: 0, closed: false, seq }));
        }
        PoolFunded { pool, subscriber, amount } => {
            let p = st.pool(c, pool)?.expect("checked");
            assert!(!p.closed && p.funded + amount <= MAX_AMOUNT_MINOR);
            let mut after = (*p).clone();
            after.funded += amount;
            st.pools.batch.insert(pool.clone(), Arc::new(after));
            *st.funding.entry((pool.clone(), subscriber.clone())).or_insert(0) += amount;
        }
        UsageRecorded { pool, subscriber, uses } => {
            let p = st.pool(c, pool)?.expect("checked");
            assert!(!p.closed);
            for (w, n) in uses {
                *st.usage.entry((pool.clone(), subscriber.clone(), w.clone())).or_insert(0) += n;
            }
        }
        PoolClosed { pool } => {
            if close.is_none() {
                if !st.pending_funding.is_empty() || !st.pending_usage.is_empty() {
                    st.needs.settle = true;
                    return Err(Miss);
                }
                let p = st.pool(c, pool)?.expect("checked");
                *close = Some(PoolClose::new(st, p));
            }
            let record = close_pool(st, c, close.as_mut().unwrap(), seq)?;
            *close = None;
            let pool_work = record.work.clone();
            applied.column = Some(EARNED);
            applied.currency = record.currency.clone();
            if let Some((Some(s), true)) = st.vectors.batch.get(&(pool_work, 0)).cloned() {
                applied.bookings = allocate(record.amount, &s).into_iter().map(|(r, u)| (r, i128::from(u))).collect();
            }
        }
    }
    if !applied.bookings.is_empty() {
        st.book(applied.column.unwrap(), &applied.currency, &ev.month, &applied.bookings);
    }
    st.head.seq = seq;
    Ok(applied)
}

/// `PlatformFold._close`, resumable: members, then the works' vectors a chunk
/// at a time, then the changes.
fn close_pool(st: &mut PlatformState, c: &mut Caches, close: &mut PoolClose, seq: u64) -> Result<Arc<ValueRecord>, Miss> {
    if close.splits.is_none() {
        close.members(st)?;
        let splits = close.splitter.take().unwrap().finish();
        assert_eq!(splits.amount, close.pool.funded, "the pool's rows disagree with its total");
        close.order = splits.used_works();
        close.stage = Some(Stage2::new(splits.clone(), close.pool.method));
        close.splits = Some(splits);
    }
    while close.next < close.order.len() {
        let end = (close.next + POOL_VECTORS_CHUNK).min(close.order.len());
        let chunk: Vec<String> = close.order[close.next..end].to_vec();
        let vectors = vectors_of(st, c, &chunk)?;
        let stage = close.stage.as_mut().unwrap();
        for (w, v) in chunk.iter().zip(&vectors) {
            stage.add(w, v);
        }
        close.next = end;
    }
    let splits = close.splits.as_ref().unwrap();
    let booked_works = splits.works(close.pool.method);
    let mut largest: Vec<(String, u64)> = booked_works.iter().filter(|(_, u)| *u > 0).cloned().collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    largest.truncate(POOL_VECTORS_KEPT);
    let largest: Vec<String> = largest.into_iter().map(|(w, _)| w).collect();
    let kept = vectors_of(st, c, &largest)?;
    // Every read is done: the changes.
    let (booked, alternative) = close.stage.take().unwrap().finish(st.head.fee_bps);
    let pool = &close.pool;
    let work = format!("{POOL_WORK_PREFIX}{}", pool.pool);
    if let Some(s) = booked.shares.clone() {
        st.store_vector((work.clone(), 0), Arc::new(s), b"{}".to_vec());
    }
    st.pool_explanations.insert(pool.pool.clone(), pool_explanation_json(booked.method, &booked.works, alternative.method,
                                                                         &alternative.works, &alternative.allocation,
                                                                         &largest, &kept));
    let mut after = (**pool).clone();
    after.closed = true;
    st.pools.batch.insert(pool.pool.clone(), Arc::new(after));
    let record = Arc::new(ValueRecord { value: pool.pool.clone(), work, amount: splits.amount, currency: pool.currency.clone(),
                                        fee_bps: 0, vector_version: 0, reversed: 0, seq });
    st.values.batch.insert(pool.pool.clone(), record.clone());
    Ok(record)
}

fn write_units(out: &mut Vec<u8>, units: &[(String, u64)]) {
    out.push(b'{');
    for (i, (k, u)) in units.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(k, out);
        out.push(b':');
        out.extend_from_slice(u.to_string().as_bytes());
    }
    out.push(b'}');
}

/// orjson.dumps of the explanation `_close` stores with a pool.
fn pool_explanation_json(method: PoolMethod, works: &[(String, u64)], other: PoolMethod, other_works: &[(String, u64)],
                         other_allocation: &[(String, u64)], largest: &[String], kept: &[Arc<ShareVector>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"method\":");
    json::write_str(method.name(), &mut out);
    out.extend_from_slice(b",\"works\":");
    write_units(&mut out, works);
    out.extend_from_slice(b",\"alternative\":{\"method\":");
    json::write_str(other.name(), &mut out);
    out.extend_from_slice(b",\"works\":");
    write_units(&mut out, other_works);
    out.extend_from_slice(b",\"allocation\":");
    write_units(&mut out, other_allocation);
    out.extend_from_slice(b"},\"vectors\":{");
    for (i, (w, v)) in largest.iter().zip(kept).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(w, &mut out);
        out.push(b':');
        out.extend_from_slice(&v.to_json());
    }
    out.extend_from_slice(b"}}");
    out
}
