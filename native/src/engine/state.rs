//! A platform's state as the engine sees it: the twin of `projections/state.py`.
//!
//! Reads go through the batch's own changes, then the rows the batch read
//! (`seen`: pinned for the batch), then the bounded caches shared by every
//! platform (committed rows only, keyed by the platform's generation), then the
//! database — which the engine cannot reach: a row it does not have is a
//! `Miss`, the key goes into `needs`, and the shell reads it and hands it over
//! before the engine tries again. Rows the database said do not exist are
//! remembered for the batch (`absent`).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::engine::cache::BoundedCache;
use crate::graph::Work;
use crate::merkle::Frontier;
use crate::schema::PoolMethod;
use crate::shares::ShareVector;

/// A row the engine does not have: the shell must read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss;

pub type Found<T> = Result<Option<T>, Miss>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub fee_bps: u32,
    pub tree: Frontier,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub earned: i128,
    pub reversed: i128,
    pub paid: i128,
}

impl Figures {
    pub fn balance(&self) -> i128 {
        self.earned + self.reversed - self.paid
    }

    pub fn plus(&self, d: &[i128; 3]) -> Figures {
        Figures { earned: self.earned + d[0], reversed: self.reversed + d[1], paid: self.paid + d[2] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRecord {
    pub value: String,
    pub work: String,
    pub amount: u64,
    pub currency: String,
    pub fee_bps: u32,
    pub vector_version: u64,
    pub reversed: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRecord {
    pub payout: String,
    pub prosumer: String,
    pub amount: u64,
    pub currency: String,
    pub seq: u64,
    pub returned_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub pool: String,
    pub currency: String,
    pub method: PoolMethod,
    pub funded: u64,
    pub closed: bool,
    pub seq: u64,
}

/// A closed pool's value and vector are kept under this work key ("@" cannot
/// start a work id): `projections.state.POOL_WORK_PREFIX`.
pub const POOL_WORK_PREFIX: &str = "@pool:";

pub type VectorKey = (String, u64);
pub type BalanceKey = (String, String);
pub type StatementKey = (String, String, String);

pub const EARNED: usize = 0;
pub const REVERSED: usize = 1;
pub const PAID: usize = 2;
pub const COLUMNS: [&str; 3] = ["earned", "reversed", "paid"];

/// The keys the shell must read, by table.
#[derive(Debug, Default)]
pub struct Needs {
    pub prosumers: BTreeMap<String, ()>,
    pub works: BTreeMap<String, ()>,
    pub dependents: BTreeMap<String, ()>,
    pub values: BTreeMap<String, ()>,
    pub payouts: BTreeMap<String, ()>,
    pub vectors: BTreeMap<VectorKey, ()>,
    pub balances: BTreeMap<BalanceKey, ()>,
    pub statements: BTreeMap<StatementKey, ()>,
    pub pools: BTreeMap<String, ()>,
    /// A page of the members of a pool being closed.
    pub pool_members: Option<String>,
    /// The works asked are where a walk down the graph goes on (`fold::gather`,
    /// read-ahead round 2): the shell may read the value-carrying sub-DAG
    /// below them in the same round, which saves a round trip (and a re-run
    /// of the event) per level.
    pub works_below: bool,
    /// The handed-off batch must commit before the engine goes on: a pool's
    /// close sums funding and usage rows, which must be read from a database
    /// that has that batch's (or, read partly before its commit, some of them
    /// would count twice).
    pub settle: bool,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.prosumers.is_empty() && self.works.is_empty() && self.dependents.is_empty() && self.values.is_empty()
            && self.payouts.is_empty() && self.vectors.is_empty() && self.balances.is_empty()
            && self.statements.is_empty() && self.pools.is_empty() && self.pool_members.is_none() && !self.settle
    }
}

/// (vector, stored): a vector of None says the table has none and none was computed.
pub type CachedVector = (Option<Arc<ShareVector>>, bool);

/// Bytes per cached row beside its text (`projections.state.ROW_OVERHEAD_BYTES`).
const ROW_OVERHEAD_BYTES: usize = 150;
/// Rows per cache are bounded too (`CACHE_MAX_ROWS`).
const CACHE_MAX_ROWS: usize = 2_000_000;

/// The bounded caches of one process, shared by all its platforms: committed
/// rows keyed by (generation, key). A platform whose cached rows may be stale
/// gets a new generation; its old rows age out unread.
pub struct Caches {
    pub prosumers: BoundedCache<String, ()>,
    pub works: BoundedCache<String, Arc<Work>>,
    pub values: BoundedCache<String, Arc<ValueRecord>>,
    pub vectors: BoundedCache<VectorKey, CachedVector>,
    pub fee_vectors: BoundedCache<(String, u64, u32), Arc<ShareVector>>,
    pub balances: BoundedCache<BalanceKey, Figures>,
    pub statements: BoundedCache<StatementKey, Figures>,
    pub pools: BoundedCache<String, Arc<PoolRecord>>,
    next_generation: u64,
}

impl Caches {
    /// Split of the budget by what a writer looks up most (`CACHE_SHARES`).
    pub fn new(budget_bytes: usize) -> Caches {
        let share = |f: f64| (budget_bytes as f64 * f) as usize;
        Caches {
            prosumers: BoundedCache::new(CACHE_MAX_ROWS, share(0.08)),
            works: BoundedCache::new(CACHE_MAX_ROWS, share(0.25)),
            values: BoundedCache::new(CACHE_MAX_ROWS, share(0.12)),
            vectors: BoundedCache::new(CACHE_MAX_ROWS, share(0.26)),
            fee_vectors: BoundedCache::new(CACHE_MAX_ROWS, share(0.08)),
            balances: BoundedCache::new(CACHE_MAX_ROWS, share(0.12)),
            statements: BoundedCache::new(CACHE_MAX_ROWS, share(0.08)),
            pools: BoundedCache::new(CACHE_MAX_ROWS, share(0.01)),
            next_generation: 1,
        }
    }

    pub fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

pub fn work_size(w: &Work) -> usize {
    ROW_OVERHEAD_BYTES + 48 * (w.authors.len() + w.components.len())
}

pub fn vector_size(v: &Option<Arc<ShareVector>>) -> (usize, usize) {
    match v {
        None => (1, ROW_OVERHEAD_BYTES),
        Some(v) => {
            let (e, b) = v.size();
            (e, b + ROW_OVERHEAD_BYTES)
        }
    }
}

/// One table's rows as the batch knows them: its own changes, those of the
/// batch before it whose transaction has not committed yet (`pending`: the
/// database does not have them, and the caches may have dropped them), the rows
/// it read, and the keys the database said it lacks.
pub struct Layer<K, V> {
    pub batch: HashMap<K, V>,
    pub pending: HashMap<K, V>,
    pub seen: HashMap<K, V>,
    pub absent: HashSet<K>,
    /// Keys of `seen` read from the database (not from the caches): they go
    /// into the caches at hand-off, so the next batch does not read them again.
    pub fresh: Vec<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Layer<K, V> {
    fn default() -> Self {
        Layer { batch: HashMap::default(), pending: HashMap::default(), seen: HashMap::default(), absent: HashSet::default(),
                fresh: Vec::new() }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Layer<K, V> {
    /// The row of `key`: the batch's, the pinned one, the cached one (pinned
    /// now), known absent, or a miss (the key goes into `need`).
    pub fn get<Q>(&mut self, key: &Q, cache: &mut BoundedCache<K, V>, generation: u64,
                  need: &mut BTreeMap<K, ()>) -> Found<V>
    where K: Borrow<Q> + Ord, Q: Hash + Eq + ToOwned<Owned = K> + ?Sized {
        if let Some(v) = self.batch.get(key).or_else(|| self.pending.get(key)).or_else(|| self.seen.get(key)) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = cache.get(generation, key) {
            self.seen.insert(key.to_owned(), v.clone());
            return Ok(Some(v));
        }
        if self.absent.contains(key) {
            return Ok(None);
        }
        need.insert(key.to_owned(), ());
        Err(Miss)
    }

    /// Whether the batch could answer without the database (for read-ahead).
    pub fn known<Q>(&mut self, key: &Q, cache: &mut BoundedCache<K, V>, generation: u64) -> bool
    where K: Borrow<Q>, Q: Hash + Eq + ToOwned<Owned = K> + ?Sized {
        if self.batch.contains_key(key) || self.pending.contains_key(key) || self.seen.contains_key(key)
            || self.absent.contains(key) {
            return true;
        }
        if let Some(v) = cache.get(generation, key) {
            self.seen.insert(key.to_owned(), v);
            return true;
        }
        false
    }

    /// Rows the shell read for `asked`: found ones pinned, the others absent.
    /// Rows not asked for (read ahead) are taken only where the layer knows
    /// nothing of the key: a row of the batch or of the one in flight is
    /// newer than the database's, and one seen or absent stays as it was read.
    pub fn provide(&mut self, asked: Vec<K>, rows: Vec<(K, V)>) {
        let asked_keys: HashSet<&K> = asked.iter().collect();
        let mut found: HashSet<K> = HashSet::default();
        for (k, v) in rows {
            if !asked_keys.contains(&k) && (self.batch.contains_key(&k) || self.pending.contains_key(&k)
                || self.seen.contains_key(&k) || self.absent.contains(&k)) {
                continue;
            }
            found.insert(k.clone());
            self.fresh.push(k.clone());
            self.seen.insert(k, v);
        }
        for k in asked {
            if !found.contains(&k) {
                self.absent.insert(k);
            }
        }
    }

    /// A row of the batch or the one before it (no cache, no database).
    pub fn own<Q>(&self, key: &Q) -> Option<&V>
    where K: Borrow<Q>, Q: Hash + Eq + ?Sized {
        self.batch.get(key).or_else(|| self.pending.get(key)).or_else(|| self.seen.get(key))
    }

    /// Forget the batch's reads and changes (not the pending ones).
    pub fn clear(&mut self) {
        self.batch.clear();
        self.seen.clear();
        self.absent.clear();
        self.fresh.clear();
    }

    /// Put the rows read from the database into `cache` (those the batch
    /// changed go in afterwards, from `batch`); `size` gives (entries, bytes).
    pub fn cache_reads(&mut self, cache: &mut BoundedCache<K, V>, generation: u64,
                       size: impl Fn(&K, &V) -> (usize, usize)) {
        for k in self.fresh.drain(..) {
            if self.batch.contains_key(&k) {
                continue;
            }
            if let Some(v) = self.seen.get(&k) {
                let (e, b) = size(&k, v);
                cache.put(generation, k, v.clone(), e, b);
            }
        }
    }

    /// The batch's changes become the pending ones (the previous pending must
    /// have been confirmed).
    pub fn hand_off(&mut self) {
        assert!(self.pending.is_empty(), "a batch is still pending");
        self.pending = std::mem::take(&mut self.batch);
    }
}

/// A platform's window: see the module doc.
pub struct PlatformState {
    pub platform: String,
    pub generation: u64,
    /// The committed head this process knows (None: not read yet, or unknown after a failed batch).
    pub committed: Option<Head>,
    pub head: Head,
    pub prosumers: Layer<String, ()>,
    /// Prosumers the batch registered: the seq that did.
    pub registered: BTreeMap<String, u64>,
    pub works: Layer<String, Arc<Work>>,
    /// Works the batch created: the seq that did.
    pub created_works: HashMap<String, u64>,
    pub edges: Vec<(String, String)>,
    pub pending_edges: Vec<(String, String)>,
    pub dependents: Layer<String, Arc<Vec<String>>>,
    pub values: Layer<String, Arc<ValueRecord>>,
    pub payouts: Layer<String, Arc<PayoutRecord>>,
    pub vectors: Layer<VectorKey, CachedVector>,
    /// Vectors the batch stores, with their explanation bytes.
    pub explained: BTreeMap<VectorKey, Vec<u8>>,
    pub balances: Layer<BalanceKey, Figures>,
    pub balance_delta: HashMap<BalanceKey, [i128; 3]>,
    pub statements: Layer<StatementKey, Figures>,
    pub statement_delta: HashMap<StatementKey, [i128; 3]>,
    pub bookings: Vec<(u64, &'static str, String, String)>,
    pub pools: Layer<String, Arc<PoolRecord>>,
    pub pool_explanations: HashMap<String, Vec<u8>>,
    pub funding: BTreeMap<(String, String), u64>,
    pub usage: BTreeMap<(String, String, String), u64>,
    pub pending_funding: BTreeMap<(String, String), u64>,
    pub pending_usage: BTreeMap<(String, String, String), u64>,
    pub needs: Needs,
    /// The page of a closing pool's members the shell handed over (and whether
    /// it was the last), for the close to take.
    pub members_page: Option<(Vec<Member>, bool)>,
}

/// A pool's member as stored: (subscriber, total funded, [(work, uses)]).
pub type Member = (String, u64, Vec<(String, u64)>);

impl PlatformState {
    pub fn new(platform: &str, generation: u64) -> PlatformState {
        PlatformState {
            platform: platform.to_owned(),
            generation,
            committed: None,
            head: Head::default(),
            prosumers: Layer::default(),
            registered: BTreeMap::new(),
            works: Layer::default(),
            created_works: HashMap::default(),
            edges: Vec::new(),
            pending_edges: Vec::new(),
            dependents: Layer::default(),
            values: Layer::default(),
            payouts: Layer::default(),
            vectors: Layer::default(),
            explained: BTreeMap::new(),
            balances: Layer::default(),
            balance_delta: HashMap::default(),
            statements: Layer::default(),
            statement_delta: HashMap::default(),
            bookings: Vec::new(),
            pools: Layer::default(),
            pool_explanations: HashMap::default(),
            funding: BTreeMap::new(),
            usage: BTreeMap::new(),
            pending_funding: BTreeMap::new(),
            pending_usage: BTreeMap::new(),
            needs: Needs::default(),
            members_page: None,
        }
    }

    /// Forget the batch (its changes and what it read).
    pub fn begin(&mut self) {
        self.prosumers.clear();
        self.registered.clear();
        self.works.clear();
        self.created_works.clear();
        self.edges.clear();
        self.dependents.clear();
        self.values.clear();
        self.payouts.clear();
        self.vectors.clear();
        self.explained.clear();
        self.balances.clear();
        self.balance_delta.clear();
        self.statements.clear();
        self.statement_delta.clear();
        self.bookings.clear();
        self.pools.clear();
        self.pool_explanations.clear();
        self.funding.clear();
        self.usage.clear();
        self.needs = Needs::default();
        self.members_page = None;
        if let Some(c) = &self.committed {
            self.head = c.clone();
        }
    }

    /// Start a batch at the committed head `head` (read under the platform's
    /// lock); another process moved it since: drop what is cached of it.
    pub fn sync(&mut self, head: Option<Head>, caches: &mut Caches) {
        let head = head.unwrap_or_default();
        if self.committed.as_ref().is_none_or(|c| c.seq != head.seq) {
            self.generation = caches.new_generation();
        }
        self.committed = Some(head);
        self.begin();
    }

    pub fn dirty(&self) -> bool {
        self.head.seq != self.committed.as_ref().map_or(0, |c| c.seq)
    }

    /// The rows the batch read from the database go into the caches: they are
    /// the committed ones (a row of the batch in flight is never read).
    pub fn keep_reads(&mut self, caches: &mut Caches) {
        let g = self.generation;
        self.prosumers.cache_reads(&mut caches.prosumers, g, |k, _| (1, ROW_OVERHEAD_BYTES + k.len()));
        self.works.cache_reads(&mut caches.works, g, |_, w| (1, work_size(w)));
        self.values.cache_reads(&mut caches.values, g, |_, _| (1, ROW_OVERHEAD_BYTES));
        self.vectors.cache_reads(&mut caches.vectors, g, |_, v| vector_size(&v.0));
        self.pools.cache_reads(&mut caches.pools, g, |_, _| (1, ROW_OVERHEAD_BYTES));
        self.balances.cache_reads(&mut caches.balances, g, |_, _| (1, ROW_OVERHEAD_BYTES));
        self.statements.cache_reads(&mut caches.statements, g, |_, _| (1, ROW_OVERHEAD_BYTES));
    }

    /// The batch is decided and on its way to the database: its rows become
    /// cached and pending (read before anything else until `confirm`), and the
    /// next batch may be decided on top of it.
    pub fn hand_off(&mut self, caches: &mut Caches, balances: Vec<(BalanceKey, Figures)>,
                    statements: Vec<(StatementKey, Figures)>) {
        let g = self.generation;
        self.keep_reads(caches);
        for k in self.prosumers.batch.keys() {
            caches.prosumers.put(g, k.clone(), (), 1, ROW_OVERHEAD_BYTES + k.len());
        }
        for (k, w) in &self.works.batch {
            caches.works.put(g, k.clone(), w.clone(), 1, work_size(w));
        }
        for (k, v) in &self.values.batch {
            caches.values.put(g, k.clone(), v.clone(), 1, ROW_OVERHEAD_BYTES);
        }
        for key in self.vectors.absent.drain() {
            if !self.vectors.batch.contains_key(&key) {
                caches.vectors.put(g, key, (None, false), 1, ROW_OVERHEAD_BYTES);
            }
        }
        for (k, v) in &self.vectors.batch {
            let (e, b) = vector_size(&v.0);
            caches.vectors.put(g, k.clone(), v.clone(), e, b);
        }
        for (k, p) in &self.pools.batch {
            caches.pools.put(g, k.clone(), p.clone(), 1, ROW_OVERHEAD_BYTES);
        }
        for (k, f) in balances {
            caches.balances.put(g, k.clone(), f, 1, ROW_OVERHEAD_BYTES);
            self.balances.batch.insert(k, f);
        }
        for (k, f) in statements {
            caches.statements.put(g, k.clone(), f, 1, ROW_OVERHEAD_BYTES);
            self.statements.batch.insert(k, f);
        }
        self.prosumers.hand_off();
        self.works.hand_off();
        self.values.hand_off();
        self.payouts.hand_off();
        self.vectors.hand_off();
        self.balances.hand_off();
        self.statements.hand_off();
        self.pools.hand_off();
        assert!(self.pending_edges.is_empty() && self.pending_funding.is_empty() && self.pending_usage.is_empty());
        self.pending_edges = std::mem::take(&mut self.edges);
        self.pending_funding = std::mem::take(&mut self.funding);
        self.pending_usage = std::mem::take(&mut self.usage);
        self.committed = Some(self.head.clone());
        self.begin();
    }

    /// The handed-off batch committed: the database has its rows.
    ///
    /// Its edges are not simply dropped: a dependents list this batch read
    /// from the database while they were in flight lacks them (the read ran
    /// before the commit), and `dependents_of` only made up for it by adding
    /// `pending_edges`.  Confirming can happen in the middle of a batch (a
    /// pool's close settles the flight first), so the edges go into the lists
    /// read so far; a list read after the commit has them already.
    pub fn confirm(&mut self) {
        for (component, dependent) in std::mem::take(&mut self.pending_edges) {
            if let Some(list) = self.dependents.seen.get_mut(&component) {
                if !list.contains(&dependent) {
                    Arc::make_mut(list).push(dependent);
                }
            } else if self.dependents.absent.remove(&component) {
                self.dependents.seen.insert(component, Arc::new(vec![dependent]));
            }
        }
        self.prosumers.pending.clear();
        self.works.pending.clear();
        self.values.pending.clear();
        self.payouts.pending.clear();
        self.vectors.pending.clear();
        self.balances.pending.clear();
        self.statements.pending.clear();
        self.pools.pending.clear();
        self.pending_edges.clear();
        self.pending_funding.clear();
        self.pending_usage.clear();
    }

    /// The batch (or the handed-off one before it) was not written: forget
    /// both and everything cached of the platform.
    pub fn rollback(&mut self, caches: &mut Caches) {
        self.confirm();
        self.committed = None;
        self.generation = caches.new_generation();
        self.head = Head::default();
        self.begin();
    }

    // -- reads ---------------------------------------------------------------

    pub fn prosumer(&mut self, caches: &mut Caches, id: &str) -> Result<bool, Miss> {
        Ok(self.prosumers.get(id, &mut caches.prosumers, self.generation, &mut self.needs.prosumers)?.is_some())
    }

    pub fn work(&mut self, caches: &mut Caches, id: &str) -> Found<Arc<Work>> {
        self.works.get(id, &mut caches.works, self.generation, &mut self.needs.works)
    }

    /// Every one of `ids`' rows, asking for all misses at once.
    pub fn works_of<'a>(&mut self, caches: &mut Caches, ids: impl IntoIterator<Item = &'a str>) -> Result<HashMap<String, Arc<Work>>, Miss> {
        let mut out = HashMap::default();
        let mut missed = false;
        for id in ids {
            match self.work(caches, id) {
                Ok(Some(w)) => {
                    out.insert(id.to_owned(), w);
                }
                Ok(None) => {}
                Err(Miss) => missed = true,
            }
        }
        if missed { Err(Miss) } else { Ok(out) }
    }

    pub fn value(&mut self, caches: &mut Caches, id: &str) -> Found<Arc<ValueRecord>> {
        self.values.get(id, &mut caches.values, self.generation, &mut self.needs.values)
    }

    pub fn pool(&mut self, caches: &mut Caches, id: &str) -> Found<Arc<PoolRecord>> {
        self.pools.get(id, &mut caches.pools, self.generation, &mut self.needs.pools)
    }

    pub fn payout(&mut self, id: &str) -> Found<Arc<PayoutRecord>> {
        // Payouts are not cached: one is read when issued and, rarely, returned.
        if let Some(v) = self.payouts.own(id) {
            return Ok(Some(v.clone()));
        }
        if self.payouts.absent.contains(id) {
            return Ok(None);
        }
        self.needs.payouts.insert(id.to_owned(), ());
        Err(Miss)
    }

    pub fn dependents_of(&mut self, id: &str) -> Result<Vec<String>, Miss> {
        let mut found: Vec<String> = match self.dependents.seen.get(id) {
            Some(v) => (**v).clone(),
            None if self.dependents.absent.contains(id) => Vec::new(),
            None => {
                self.needs.dependents.insert(id.to_owned(), ());
                return Err(Miss);
            }
        };
        found.extend(self.pending_edges.iter().chain(&self.edges).filter(|(c, _)| c == id).map(|(_, d)| d.clone()));
        Ok(found)
    }

    /// The stored or computed vector of `key`, None when it is known to be neither.
    pub fn vector(&mut self, caches: &mut Caches, key: &VectorKey) -> Found<Arc<ShareVector>> {
        Ok(self.vectors.get(key, &mut caches.vectors, self.generation, &mut self.needs.vectors)?.and_then(|(v, _)| v))
    }

    /// Whether the vectors table has (or this batch writes) the row of `key`.
    pub fn vector_stored(&mut self, caches: &mut Caches, key: &VectorKey) -> Result<bool, Miss> {
        if self.explained.contains_key(key) {
            return Ok(true);
        }
        Ok(self.vectors.get(key, &mut caches.vectors, self.generation, &mut self.needs.vectors)?.is_some_and(|(_, s)| s))
    }

    /// A vector the graph computed: kept in the cache at once (under this
    /// batch's generation: a failed batch drops it with the rest), not written.
    pub fn put_computed_vector(&mut self, caches: &mut Caches, key: VectorKey, vector: Arc<ShareVector>) {
        let v: CachedVector = (Some(vector), false);
        let (e, b) = vector_size(&v.0);
        self.vectors.absent.remove(&key);
        self.vectors.seen.insert(key.clone(), v.clone());
        caches.vectors.put(self.generation, key, v, e, b);
    }

    pub fn balance(&mut self, caches: &mut Caches, account: &str, currency: &str) -> Result<Figures, Miss> {
        let key = (account.to_owned(), currency.to_owned());
        let base = self.balances.get(&key, &mut caches.balances, self.generation, &mut self.needs.balances)?.unwrap_or_default();
        Ok(match self.balance_delta.get(&key) {
            Some(d) => base.plus(d),
            None => base,
        })
    }

    // -- the fold's changes --------------------------------------------------

    pub fn put_work(&mut self, id: &str, work: Work, created_seq: Option<u64>) {
        let key = id.to_owned();
        let version = work.version;
        let changed_version = self.works.own(id).is_none_or(|w| w.version != version);
        if let Some(seq) = created_seq {
            self.created_works.insert(key.clone(), seq);
        }
        if changed_version {
            // A new work, or a new version of one, has no stored vector yet.
            self.vectors.absent.insert((key.clone(), version));
        }
        self.works.batch.insert(key, Arc::new(work));
    }

    pub fn store_vector(&mut self, key: VectorKey, vector: Arc<ShareVector>, explanation: Vec<u8>) {
        self.vectors.absent.remove(&key);
        self.vectors.batch.insert(key.clone(), (Some(vector), true));
        self.explained.insert(key, explanation);
    }

    pub fn book(&mut self, column: usize, currency: &str, month: &str, bookings: &[(String, i128)]) {
        assert!(bookings.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()), "bookings in account order");
        let seq = self.head.seq + 1;
        let mut entries = String::with_capacity(2 + 24 * bookings.len());
        entries.push('[');
        for (i, (account, units)) in bookings.iter().enumerate() {
            if i > 0 {
                entries.push(',');
            }
            entries.push_str("[\"");
            entries.push_str(account); // ids and "@" accounts: nothing to escape
            entries.push_str("\",");
            entries.push_str(&units.to_string());
            entries.push(']');
        }
        entries.push(']');
        self.bookings.push((seq, COLUMNS[column], currency.to_owned(), entries));
        for (account, units) in bookings {
            let d = self.balance_delta.entry((account.clone(), currency.to_owned())).or_insert([0; 3]);
            d[column] += units;
            let s = self.statement_delta.entry((account.clone(), month.to_owned(), currency.to_owned())).or_insert([0; 3]);
            s[column] += units;
        }
    }
}
