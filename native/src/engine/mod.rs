//! The engine: a batch of offered payloads in, outcomes and rows out.
//!
//! The twin of `ledger.ingest.ingestor.Ingestor._decide` with the reference
//! fold, minus the I/O. A batch goes through:
//!
//! 1. `begin`: every payload parsed and checked (`schema`); the shell learns
//!    the batch's platforms (to lock) and event ids (to look up);
//! 2. `start`: each platform's state starts at the committed head the shell
//!    read under its lock, with the batch's known ids (id → leaf hash);
//! 3. `step` until it says done: read-ahead rounds (every row the batch names,
//!    then the vectors of what it sells, then the level below sold works whose
//!    vector is not known), then the events in input order — duplicate or
//!    conflict by the known ids, the rules, the fold — and last the balances
//!    and statements the batch changed. Whenever a row is missing, `step`
//!    returns what to read; the shell reads it (`provide`) and steps again;
//! 4. `finish`: the outcomes, the events, id records and tree nodes to append,
//!    and the state rows (`ledger.storage.state.StateRows`);
//! 5. `commit` once the shell's transaction committed (the rows become cached)
//!    or `rollback` (the batch's platforms forget what they cached).

pub mod cache;
pub mod fold;
pub mod state;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use crate::graph::WorkKind;
use crate::merkle::Frontier;
use crate::schema::{parse_event, EventData, Parsed};
use fold::{PoolClose, Refusal, CONFLICT};
use state::*;

/// A balances digest is recorded whenever a batch crosses a multiple of this seq.
pub const DIGEST_EVERY_SEQ: u64 = 100_000;
/// Platforms whose state objects the engine keeps (their rows live in the caches).
pub const PLATFORM_STATES_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted(u64),
    Duplicate,
    Rejected(Refusal),
}

/// One cell of a row to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Str(String),
    Int(i128),
    Bool(bool),
    Bytes(Vec<u8>),
    Null,
}

pub type Row = Vec<Cell>;

/// What the shell appends for a decided batch.
#[derive(Default)]
pub struct Output {
    /// Per input index: the outcome, platform and event id; None for a payload
    /// the schema refused (the shell has its reject).
    pub outcomes: Vec<Option<(Outcome, String, String)>>,
    /// (platform, seq, type, canonical bytes).
    pub events: Vec<(String, u64, &'static str, Vec<u8>)>,
    /// (platform, event id, seq, leaf hash, effect hash).
    pub id_records: Vec<(String, String, u64, [u8; 32], [u8; 16])>,
    /// (platform, level, index, hash) of the stored tree nodes the batch completed.
    pub tree_nodes: Vec<(String, u32, u64, [u8; 32])>,
    /// Table -> rows, as `ledger.storage.state.TABLE_WRITES` writes them.
    pub tables: BTreeMap<&'static str, Vec<Row>>,
    /// (platform, seq) whose balances digest the batch records.
    pub digests: Vec<(String, u64)>,
}

/// What `step` asks the shell to read: (platform, needs).
pub type Requests = Vec<(String, Needs)>;

struct Batch {
    items: Vec<Option<Parsed>>,
    platforms: Vec<String>,
    known: HashMap<String, HashMap<String, [u8; 32]>>,
    outcomes: Vec<Option<Outcome>>,
    round: u8,
    next: usize,
    close: Option<PoolClose>,
    out: Output,
    finished: bool,
}

pub struct Engine {
    caches: Caches,
    states: HashMap<String, PlatformState>,
    /// Tree nodes below this level are not stored (`MERKLE_STORED_LEVEL_MIN`).
    tree_level_min: u32,
    batch: Option<Batch>,
    /// Balances and statements of the decided batch, for `hand_off` to cache.
    figures: HashMap<String, (Vec<(BalanceKey, Figures)>, Vec<(StatementKey, Figures)>)>,
    /// Per platform, the ids of the handed-off batch (and all before it) the
    /// database may not have yet.
    pending_ids: HashMap<String, HashMap<String, [u8; 32]>>,
}

impl Engine {
    pub fn new(cache_budget_bytes: usize, tree_level_min: u32) -> Engine {
        Engine { caches: Caches::new(cache_budget_bytes), states: HashMap::default(), tree_level_min, batch: None,
                 figures: HashMap::default(), pending_ids: HashMap::default() }
    }

    pub fn cache_stats(&self) -> Vec<(&'static str, (usize, usize, usize, usize))> {
        let c = &self.caches;
        vec![("prosumers", c.prosumers.stats()), ("works", c.works.stats()), ("values", c.values.stats()),
             ("vectors", c.vectors.stats()), ("fee_vectors", c.fee_vectors.stats()), ("balances", c.balances.stats()),
             ("statements", c.statements.stats()), ("pools", c.pools.stats())]
    }

    /// Parse a batch. Returns, per platform in sorted order, the ids to look up.
    pub fn begin(&mut self, payloads: &[Vec<u8>]) -> Vec<(String, Vec<String>)> {
        // A batch left behind never reached its decision (its locks were not
        // taken, or it failed and was rolled back): nothing of it stays.
        self.batch = None;
        let items: Vec<Option<Parsed>> = payloads.iter().map(|p| parse_event(p).ok()).collect();
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in items.iter().flatten() {
            ids.entry(p.event.platform.clone()).or_default().push(p.event.id.clone());
        }
        for list in ids.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        let n = items.len();
        self.batch = Some(Batch {
            items,
            platforms: ids.keys().cloned().collect(),
            known: HashMap::default(),
            outcomes: vec![None; n],
            round: 0,
            next: 0,
            close: None,
            out: Output::default(),
            finished: false,
        });
        ids.into_iter().collect()
    }

    /// Which payloads of the batch the schema refused.
    pub fn invalid(&self) -> Vec<usize> {
        let b = self.batch.as_ref().expect("begin first");
        b.items.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| i).collect()
    }

    /// Heads read under the platforms' locks (None: no event yet) and the known
    /// ids. A platform absent from `heads` continues from the head this engine
    /// handed off (the shell held its lock since, and the database may not
    /// have that batch yet).
    pub fn start(&mut self, heads: HashMap<String, Option<(u64, u32, Vec<u8>)>>,
                 mut known: HashMap<String, HashMap<String, [u8; 32]>>) -> Result<(), String> {
        let b = self.batch.as_mut().expect("begin first");
        if self.states.len() >= PLATFORM_STATES_MAX {
            self.states.clear();
        }
        for p in &b.platforms {
            let caches = &mut self.caches;
            let st = self.states.entry(p.clone()).or_insert_with(|| PlatformState::new(p, 0));
            if st.generation == 0 {
                st.generation = caches.new_generation();
            }
            match heads.get(p) {
                Some(row) => {
                    let head = match row.clone() {
                        None => None,
                        Some((seq, fee_bps, edge)) => Some(Head { seq, fee_bps, tree: Frontier::restore(seq, &edge)? }),
                    };
                    st.sync(head, caches);
                }
                None => {
                    if st.committed.is_none() {
                        return Err(format!("{p}: no head to continue from"));
                    }
                    st.begin();
                }
            }
            if let Some(ids) = self.pending_ids.get(p) {
                let k = known.entry(p.clone()).or_default();
                for (id, leaf) in ids {
                    k.entry(id.clone()).or_insert(*leaf);
                }
            }
        }
        b.known = known;
        Ok(())
    }

    /// Decide as far as the rows at hand allow; None when the batch is decided.
    pub fn step(&mut self) -> Option<Requests> {
        let b = self.batch.as_mut().expect("begin first");
        let caches = &mut self.caches;
        while b.round < 4 {
            prefetch(b, &mut self.states, caches);
            if let Some(r) = requests(&b.platforms, &mut self.states) {
                return Some(r);
            }
            b.round += 1;
        }
        while b.next < b.items.len() {
            let i = b.next;
            let Some(parsed) = &mut b.items[i] else {
                b.next += 1;
                continue;
            };
            let ev = &parsed.event;
            if !b.known.contains_key(&ev.platform) {
                b.known.insert(ev.platform.clone(), HashMap::default());
            }
            let known = b.known.get_mut(&ev.platform).unwrap();
            if let Some(leaf) = known.get(&ev.id) {
                b.outcomes[i] = Some(if *leaf == parsed.leaf_hash {
                    Outcome::Duplicate
                } else {
                    Outcome::Rejected(Refusal { code: CONFLICT, message: format!("event id '{}' was accepted before with different content", ev.id) })
                });
                b.next += 1;
                continue;
            }
            let st = self.states.get_mut(&ev.platform).expect("started");
            let seq = st.head.seq + 1;
            let decided = fold::check(st, caches, ev).and_then(|refusal| match refusal {
                Some(r) => Ok(Err(r)),
                None => fold::apply(st, caches, ev, seq, &mut b.close).map(Ok),
            });
            match decided {
                Err(Miss) => return requests(&b.platforms, &mut self.states),
                Ok(Err(refusal)) => b.outcomes[i] = Some(Outcome::Rejected(refusal)),
                Ok(Ok(applied)) => {
                    known.insert(ev.id.clone(), parsed.leaf_hash);
                    for (level, idx, h) in st.head.tree.append(parsed.leaf_hash) {
                        if level >= self.tree_level_min {
                            b.out.tree_nodes.push((ev.platform.clone(), level, idx, h));
                        }
                    }
                    // The canonical bytes go out with the event: nothing reads them again.
                    b.out.events.push((ev.platform.clone(), seq, ev.data.type_name(), std::mem::take(&mut parsed.canonical)));
                    b.out.id_records.push((ev.platform.clone(), ev.id.clone(), seq, parsed.leaf_hash, applied.effect_hash()));
                    b.outcomes[i] = Some(Outcome::Accepted(seq));
                }
            }
            b.next += 1;
        }
        if !b.finished {
            // The balances and statements the batch changed, read to be written whole.
            let mut missed = false;
            for p in &b.platforms {
                let st = self.states.get_mut(p).unwrap();
                let keys: Vec<BalanceKey> = st.balance_delta.keys().cloned().collect();
                for k in keys {
                    missed |= st.balances.get(&k, &mut caches.balances, st.generation, &mut st.needs.balances).is_err();
                }
                let keys: Vec<StatementKey> = st.statement_delta.keys().cloned().collect();
                for k in keys {
                    missed |= st.statements.get(&k, &mut caches.statements, st.generation, &mut st.needs.statements).is_err();
                }
            }
            if missed {
                return requests(&b.platforms, &mut self.states);
            }
            b.finished = true;
        }
        None
    }

    pub fn state_mut(&mut self, platform: &str) -> &mut PlatformState {
        self.states.get_mut(platform).expect("a platform of the batch")
    }

    /// The outcomes and the rows of the decided batch.
    pub fn finish(&mut self) -> Output {
        let b = self.batch.as_mut().expect("begin first");
        assert!(b.finished, "step until the batch is decided");
        let mut out = std::mem::take(&mut b.out);
        out.outcomes = std::mem::take(&mut b.outcomes).into_iter().zip(&b.items)
            .map(|(o, p)| o.map(|o| { let e = &p.as_ref().unwrap().event; (o, e.platform.clone(), e.id.clone()) }))
            .collect();
        self.figures.clear();
        for p in &b.platforms {
            let st = self.states.get_mut(p).unwrap();
            if st.dirty() {
                let figures = rows_of(st, &mut self.caches, &mut out);
                self.figures.insert(p.clone(), figures);
            }
        }
        out
    }

    /// The decided batch is on its way to the database: the next one may be
    /// decided on top of it (its rows pending until `confirm`).
    pub fn hand_off(&mut self) {
        let b = self.batch.take().expect("a decided batch");
        for p in &b.platforms {
            let st = self.states.get_mut(p).unwrap();
            let (balances, statements) = self.figures.remove(p).unwrap_or_default();
            if st.dirty() {
                st.hand_off(&mut self.caches, balances, statements);
            } else {
                st.keep_reads(&mut self.caches);
                st.begin();
            }
            // Ids the database does not know yet: duplicates of the next batch.
            let ids = b.known.get(p).cloned().unwrap_or_default();
            self.pending_ids.insert(p.clone(), ids);
        }
        self.figures.clear();
    }

    /// The handed-off batch's transaction committed.
    pub fn confirm(&mut self) {
        for st in self.states.values_mut() {
            st.confirm();
        }
        self.pending_ids.clear();
    }

    /// Decided and committed at once (no overlap).
    pub fn commit(&mut self) {
        self.hand_off();
        self.confirm();
    }

    /// The batch was not written (or was abandoned), nor the handed-off one
    /// before it if there is one: every platform of either forgets what it cached.
    pub fn rollback(&mut self) {
        let mut platforms: Vec<String> = self.pending_ids.keys().cloned().collect();
        if let Some(b) = self.batch.take() {
            platforms.extend(b.platforms);
        }
        for p in platforms {
            if let Some(st) = self.states.get_mut(&p) {
                st.rollback(&mut self.caches);
            }
        }
        self.pending_ids.clear();
        self.figures.clear();
    }
}

fn requests(platforms: &[String], states: &mut HashMap<String, PlatformState>) -> Option<Requests> {
    let mut out = Vec::new();
    for p in platforms {
        let st = states.get_mut(p).unwrap();
        if !st.needs.is_empty() {
            out.push((p.clone(), std::mem::take(&mut st.needs)));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn want<K: std::hash::Hash + Eq + Clone + Ord, V: Clone>(layer: &mut Layer<K, V>, cache: &mut cache::BoundedCache<K, V>,
                                                          generation: u64, key: &K, need: &mut BTreeMap<K, ()>) {
    if !layer.known(key, cache, generation) {
        need.insert(key.clone(), ());
    }
}

/// Read-ahead round `b.round` (`PlatformState.prefetch` and `keys_of`): ask for
/// every row the batch names that the caches miss, so deciding rarely waits.
fn prefetch(b: &Batch, states: &mut HashMap<String, PlatformState>, c: &mut Caches) {
    use EventData::*;
    for parsed in b.items.iter().flatten() {
        let ev = &parsed.event;
        let st = states.get_mut(&ev.platform).unwrap();
        let g = st.generation;
        let n = &mut st.needs;
        match (b.round, &ev.data) {
            (0, ValueRealized { value, work, .. }) => {
                want(&mut st.values, &mut c.values, g, value, &mut n.values);
                want(&mut st.pools, &mut c.pools, g, value, &mut n.pools);
                want(&mut st.works, &mut c.works, g, work, &mut n.works);
            }
            (0, ValueReversed { value, .. }) | (0, PoolOpened { pool: value, .. }) => {
                want(&mut st.values, &mut c.values, g, value, &mut n.values);
                want(&mut st.pools, &mut c.pools, g, value, &mut n.pools);
            }
            (0, PoolFunded { pool, .. }) | (0, PoolClosed { pool }) => {
                want(&mut st.pools, &mut c.pools, g, pool, &mut n.pools);
            }
            (0, UsageRecorded { pool, uses, .. }) => {
                want(&mut st.pools, &mut c.pools, g, pool, &mut n.pools);
                for (w, _) in uses {
                    want(&mut st.works, &mut c.works, g, w, &mut n.works);
                }
            }
            (0, PayoutIssued { payout, prosumer, currency, .. }) => {
                if st.payouts.own(payout.as_str()).is_none() && !st.payouts.absent.contains(payout) {
                    n.payouts.insert(payout.clone(), ());
                }
                want(&mut st.prosumers, &mut c.prosumers, g, prosumer, &mut n.prosumers);
                want(&mut st.balances, &mut c.balances, g, &(prosumer.clone(), currency.clone()), &mut n.balances);
            }
            (0, PayoutReturned { payout }) => {
                if st.payouts.own(payout.as_str()).is_none() && !st.payouts.absent.contains(payout) {
                    n.payouts.insert(payout.clone(), ());
                }
            }
            (0, ProsumerRegistered { prosumer }) => {
                want(&mut st.prosumers, &mut c.prosumers, g, prosumer, &mut n.prosumers);
            }
            (0, ContributionRecorded { work, authors }) | (0, OutputComposed { work, authors, .. })
            | (0, WorkReassigned { work, authors }) => {
                want(&mut st.works, &mut c.works, g, work, &mut n.works);
                for (p, _) in authors {
                    want(&mut st.prosumers, &mut c.prosumers, g, p, &mut n.prosumers);
                }
                if let OutputComposed { components, .. } = &ev.data {
                    for (w, _) in components {
                        want(&mut st.works, &mut c.works, g, w, &mut n.works);
                    }
                }
            }
            (0, WorkRetracted { work }) | (0, WorkReinstated { work }) => {
                want(&mut st.works, &mut c.works, g, work, &mut n.works);
            }
            // Round 1: the vectors of the works sold and of the values reversed.
            (1, ValueRealized { work, .. }) => {
                if let Some(w) = known_work(st, c, work) {
                    want(&mut st.vectors, &mut c.vectors, g, &(work.clone(), w.version), &mut st.needs.vectors);
                }
            }
            (1, ValueReversed { value, .. }) => {
                if let Some(v) = st.values.own(value.as_str()).cloned() {
                    want(&mut st.vectors, &mut c.vectors, g, &(v.work.clone(), v.vector_version), &mut st.needs.vectors);
                }
            }
            // Rounds 2 and 3: a sold output whose vector is not stored is
            // explained, which walks its whole sub-DAG: the works below it
            // (all levels: `works_below`), then its components' vectors.
            (2 | 3, ValueRealized { work, .. }) => {
                let Some(w) = known_work(st, c, work) else { continue };
                let key = (work.clone(), w.version);
                let unknown_vector = st.vectors.absent.contains(&key)
                    || st.vectors.own(&key).is_some_and(|v| v.0.is_none());
                if !unknown_vector || !w.passes_on() || w.kind != WorkKind::Output {
                    continue;
                }
                for (comp, _) in w.components.iter() {
                    if b.round == 2 {
                        want(&mut st.works, &mut c.works, g, comp, &mut st.needs.works);
                        st.needs.works_below = true;
                    } else if let Some(cw) = known_work(st, c, comp) {
                        want(&mut st.vectors, &mut c.vectors, g, &(comp.clone(), cw.version), &mut st.needs.vectors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn known_work(st: &mut PlatformState, c: &mut Caches, id: &str) -> Option<Arc<crate::graph::Work>> {
    let key = id.to_owned();
    if st.works.known(&key, &mut c.works, st.generation) {
        st.works.own(key.as_str()).cloned()
    } else {
        None
    }
}

fn weights_text(pairs: &[(String, u32)]) -> String {
    let mut s = String::from("[");
    for (i, (k, w)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("[\"");
        s.push_str(k);
        s.push_str("\",");
        s.push_str(&w.to_string());
        s.push(']');
    }
    s.push(']');
    s
}

fn push(out: &mut Output, table: &'static str, row: Row) {
    out.tables.entry(table).or_default().push(row);
}

/// A platform's changes as rows (`PlatformState.changes` then `rows_of`); the
/// absolute figures, for the caches.
fn rows_of(st: &mut PlatformState, c: &mut Caches, out: &mut Output) -> (Vec<(BalanceKey, Figures)>, Vec<(StatementKey, Figures)>) {
    use Cell::*;
    let p = st.platform.clone();
    let s = |x: &str| Str(x.to_owned());
    let i = |x: u64| Int(i128::from(x));
    push(out, "peerledger_heads", vec![s(&p), i(st.head.seq), i(u64::from(st.head.fee_bps)), Bytes(st.head.tree.edge())]);
    for (prosumer, seq) in &st.registered {
        push(out, "peerledger_prosumers", vec![s(&p), s(prosumer), i(*seq)]);
    }
    let mut works: Vec<(&String, &Arc<crate::graph::Work>)> = st.works.batch.iter().collect();
    works.sort_by(|a, b| a.0.cmp(b.0));
    for (id, w) in works {
        push(out, "peerledger_works", vec![s(&p), s(id), s(w.kind.name()), Str(weights_text(&w.authors)),
                                           Str(weights_text(&w.components)), i(u64::from(w.upstream_bps)),
                                           Bool(w.retracted), i(w.version), i(st.created_works.get(id).copied().unwrap_or(0))]);
    }
    for (comp, dep) in &st.edges {
        push(out, "peerledger_dependents", vec![s(&p), s(comp), s(dep)]);
    }
    let mut payouts: Vec<&Arc<PayoutRecord>> = st.payouts.batch.values().collect();
    payouts.sort_by(|a, b| a.payout.cmp(&b.payout));
    for r in payouts {
        push(out, "peerledger_payouts", vec![s(&p), s(&r.payout), s(&r.prosumer), i(r.amount), s(&r.currency), i(r.seq),
                                             i(r.returned_seq)]);
    }
    for (seq, col, cur, entries) in &st.bookings {
        push(out, "peerledger_bookings", vec![s(&p), i(*seq), s(col), s(cur), s(entries)]);
    }
    let mut values: Vec<&Arc<ValueRecord>> = st.values.batch.values().collect();
    values.sort_by(|a, b| a.value.cmp(&b.value));
    for v in values {
        push(out, "peerledger_values", vec![s(&p), s(&v.value), s(&v.work), i(v.vector_version), i(u64::from(v.fee_bps)),
                                            i(v.amount), s(&v.currency), i(v.reversed), i(v.seq)]);
    }
    for ((work, version), explanation) in &st.explained {
        let (vector, _) = &st.vectors.batch[&(work.clone(), *version)];
        push(out, "peerledger_vectors", vec![s(&p), s(work), i(*version), Bytes(vector.as_ref().unwrap().to_json()),
                                             Bytes(explanation.clone())]);
    }
    let mut balances = Vec::with_capacity(st.balance_delta.len());
    let mut deltas: Vec<(&BalanceKey, &[i128; 3])> = st.balance_delta.iter().collect();
    deltas.sort_unstable();
    for (key, d) in deltas {
        let base = st.balances.own(key).copied().unwrap_or_default();
        let f = base.plus(d);
        push(out, "peerledger_balances", vec![s(&p), s(&key.0), s(&key.1), Int(f.earned), Int(f.reversed), Int(f.paid),
                                              Int(f.balance())]);
        balances.push((key.clone(), f));
    }
    let mut statements = Vec::with_capacity(st.statement_delta.len());
    let mut deltas: Vec<(&StatementKey, &[i128; 3])> = st.statement_delta.iter().collect();
    deltas.sort_unstable();
    for (key, d) in deltas {
        let base = st.statements.own(key).copied().unwrap_or_default();
        let f = base.plus(d);
        push(out, "peerledger_statements", vec![s(&p), s(&key.0), s(&key.1), s(&key.2), Int(f.earned), Int(f.reversed),
                                                Int(f.paid)]);
        statements.push((key.clone(), f));
    }
    let mut pools: Vec<&Arc<PoolRecord>> = st.pools.batch.values().collect();
    pools.sort_by(|a, b| a.pool.cmp(&b.pool));
    for r in pools {
        let explanation = st.pool_explanations.get(&r.pool).map_or(Null, |e| Bytes(e.clone()));
        push(out, "peerledger_pools", vec![s(&p), s(&r.pool), s(&r.currency), s(r.method.name()), i(r.funded),
                                           Bool(r.closed), i(r.seq), explanation]);
    }
    for ((pool, sub), units) in &st.funding {
        push(out, "peerledger_pool_funding", vec![s(&p), s(pool), s(sub), i(*units)]);
    }
    for ((pool, sub, work), n) in &st.usage {
        push(out, "peerledger_pool_usage", vec![s(&p), s(pool), s(sub), s(work), i(*n)]);
    }
    let committed = st.committed.as_ref().map_or(0, |h| h.seq);
    if st.head.seq / DIGEST_EVERY_SEQ != committed / DIGEST_EVERY_SEQ {
        out.digests.push((p.clone(), st.head.seq));
    }
    let _ = c;
    (balances, statements)
}
