//! Works and how value flows through them: the twin of `attribution/graph.py`
//! (the propagation, the vector, the explanation) and of `projections/explain.py`
//! (the stored explanation with its routes).
//!
//! Pure functions over a *gathered* sub-DAG: a map holding the queried work and
//! every work its value can reach (gathering rows from storage is the engine's
//! job), and `leaves`, works whose vector is known (their mass is spread by it).
//! The propagation is the reference's: an iterative DFS gives a topological
//! order, levels are longest distances from the top, G is the balanced product
//! of the per-level lcms of the works' local denominators, and mass is pushed
//! as exact integers over G (every division exact). See the reference's module
//! doc for why.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::rc::Rc;
use std::sync::Arc;

use num_integer::Integer;
use num_traits::{One, Zero};

use crate::json;
use crate::num::{self, Nat};
use crate::shares::{ShareVector, BPS_PER_UNIT, UNATTRIBUTED};

/// Best-first search budgets (`attribution.graph.EXPLAIN_MAX_QUEUE_PUSHES`, `EXPLAIN_MAX_PATH_STEPS`).
pub const EXPLAIN_MAX_QUEUE_PUSHES: usize = 100_000;
pub const EXPLAIN_MAX_PATH_STEPS: usize = 1_000_000;
/// Paths and works kept per stored explanation (`projections.explain`).
pub const EXPLAIN_MAX_PATHS: usize = 10;
pub const EXPLAIN_MAX_WORKS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Contribution,
    Output,
}

impl WorkKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkKind::Contribution => "contribution",
            WorkKind::Output => "output",
        }
    }
}

/// One work as the graph keeps it (`attribution.graph.Work`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub kind: WorkKind,
    pub authors: Vec<(String, u32)>,
    pub author_weight: u64,
    pub components: Vec<(String, u32)>,
    pub component_weight: u64,
    pub upstream_bps: u32,
    pub retracted: bool,
    pub version: u64,
}

impl Work {
    pub fn passes_on(&self) -> bool {
        !self.retracted && self.kind == WorkKind::Output && self.upstream_bps > 0
    }
}

pub type Works = HashMap<String, Arc<Work>>;
pub type Leaves = HashMap<String, Arc<ShareVector>>;

fn lowest(num: u128, den: u128) -> (u128, u128) {
    let g = num.gcd(&den);
    (num / g, den / g)
}

fn children<'a>(node: &str, top: &str, works: &'a Works, leaves: &Leaves) -> &'a [(String, u32)] {
    let w = &works[node];
    if !w.passes_on() || (node != top && leaves.contains_key(node)) {
        return &[];
    }
    &w.components
}

fn local_denominator(node: &str, top: &str, works: &Works, leaves: &Leaves) -> Nat {
    let w = &works[node];
    if w.retracted {
        return Nat::one();
    }
    if node != top {
        if let Some(leaf) = leaves.get(node) {
            return leaf.denominator.clone();
        }
    }
    if w.kind == WorkKind::Contribution {
        return Nat::from(w.author_weight);
    }
    let ub = u128::from(w.upstream_bps);
    let unit = u128::from(BPS_PER_UNIT);
    let mut q: u128 = 1;
    if ub > 0 {
        let whole = unit * u128::from(w.component_weight);
        q = whole / whole.gcd(&ub);
    }
    if ub < unit {
        let whole = unit * u128::from(w.author_weight);
        q = q.lcm(&(whole / whole.gcd(&(unit - ub))));
    }
    Nat::from(q)
}

/// Works reachable from `top` with positive flow, parents first (reverse post-order).
fn topological_order<'a>(top: &'a str, works: &'a Works, leaves: &Leaves) -> Vec<&'a str> {
    let mut post: Vec<&str> = Vec::new();
    let mut visited: HashSet<&str> = HashSet::default();
    let top_key = works.get_key_value(top).expect("the top work is gathered").0.as_str();
    visited.insert(top_key);
    let mut stack: Vec<(&str, usize)> = vec![(top_key, 0)];
    while let Some(&mut (node, ref mut next)) = stack.last_mut() {
        let kids = children(node, top, works, leaves);
        let mut pushed = None;
        while *next < kids.len() {
            let child = kids[*next].0.as_str();
            *next += 1;
            if !visited.contains(child) {
                let key = works.get_key_value(child).expect("a component is gathered").0.as_str();
                visited.insert(key);
                pushed = Some(key);
                break;
            }
        }
        match pushed {
            Some(child) => stack.push((child, 0)),
            None => {
                stack.pop();
                post.push(node);
            }
        }
    }
    post.reverse();
    post
}

/// The result of pushing flow(top, 1) through a gathered sub-DAG: shares are
/// integers over `g`.
pub struct Propagation {
    pub g: Nat,
    /// Work -> mass that entered it (only with `keep_masses`).
    pub masses: Vec<(String, Nat)>,
    pub received: Vec<(String, Nat)>,
}

/// `attribution.graph._propagate`.
pub fn propagate(top: &str, works: &Works, leaves: &Leaves, keep_masses: bool) -> Propagation {
    let order = topological_order(top, works, leaves);
    let mut level: HashMap<&str, usize> = HashMap::default();
    level.insert(order[0], 0);
    for &node in &order {
        let below = level[node] + 1;
        for (child, _) in children(node, top, works, leaves) {
            let entry = level.entry(child.as_str()).or_insert(0);
            if *entry < below {
                *entry = below;
            }
        }
    }
    let depth = level.values().copied().max().unwrap_or(0);
    let mut level_lcm: Vec<Nat> = vec![Nat::one(); depth + 1];
    for &node in &order {
        let lv = level[node];
        let q = local_denominator(node, top, works, leaves);
        if !q.is_one() {
            level_lcm[lv] = level_lcm[lv].lcm(&q);
        }
    }
    let g = num::product(level_lcm);
    let mut mass: HashMap<&str, Nat> = HashMap::default();
    mass.insert(order[0], g.clone());
    let mut kept: Vec<(String, Nat)> = Vec::new();
    let mut received: HashMap<String, Nat> = HashMap::default();
    let add = |map: &mut HashMap<String, Nat>, key: &str, x: Nat| match map.get_mut(key) {
        Some(v) => *v += x,
        None => {
            map.insert(key.to_owned(), x);
        }
    };
    let unit = u128::from(BPS_PER_UNIT);
    for &node in &order {
        let m = mass.remove(node).expect("mass reaches every work of the order");
        if keep_masses {
            kept.push((node.to_owned(), m.clone()));
        }
        let w = &works[node];
        if w.retracted {
            add(&mut received, UNATTRIBUTED, m);
            continue;
        }
        if node != top {
            if let Some(leaf) = leaves.get(node) {
                let (scale, rest) = m.div_rem(&leaf.denominator);
                assert!(rest.is_zero(), "leaf mass not divisible");
                for (r, n) in &leaf.numerators {
                    add(&mut received, r, &scale * n);
                }
                continue;
            }
        }
        if w.kind == WorkKind::Contribution {
            for (p, a) in &w.authors {
                let (num, den) = lowest(u128::from(*a), u128::from(w.author_weight));
                add(&mut received, p, &m * Nat::from(num) / Nat::from(den));
            }
            continue;
        }
        let ub = u128::from(w.upstream_bps);
        if ub < unit {
            for (p, a) in &w.authors {
                let (num, den) = lowest((unit - ub) * u128::from(*a), unit * u128::from(w.author_weight));
                add(&mut received, p, &m * Nat::from(num) / Nat::from(den));
            }
        }
        if ub > 0 {
            for (c, k) in &w.components {
                let (num, den) = lowest(ub * u128::from(*k), unit * u128::from(w.component_weight));
                let share = &m * Nat::from(num) / Nat::from(den);
                match mass.get_mut(c.as_str()) {
                    Some(v) => *v += share,
                    None => {
                        mass.insert(c.as_str(), share);
                    }
                }
            }
        }
    }
    assert!(mass.is_empty(), "propagation left mass behind");
    Propagation { g, masses: kept, received: received.into_iter().collect() }
}

/// flow(top, 1), reduced (`WorkGraph.vector` over a gathered sub-DAG).
pub fn vector(top: &str, works: &Works, leaves: &Leaves) -> ShareVector {
    let p = propagate(top, works, leaves, false);
    ShareVector::in_lowest_terms(p.g, p.received)
}

/// A node of a partial path: a work and the path above it.
struct Link {
    work: String,
    parent: Option<Rc<Link>>,
}

struct Item {
    share: Nat,
    seq: usize,
    recipient: Option<String>,
    link: Rc<Link>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    /// The max-heap pops the largest share first, equal shares in push order
    /// (the reference's heap of (−share, seq)).
    fn cmp(&self, other: &Self) -> Ordering {
        self.share.cmp(&other.share).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// (share over g, recipient, component) steps from a work reached with `share`
/// (`attribution.graph._path_steps`).
fn path_steps(w: &Work, share: &Nat) -> Vec<(Nat, Option<String>, Option<String>)> {
    if w.retracted {
        return vec![(share.clone(), Some(UNATTRIBUTED.to_owned()), None)];
    }
    if w.kind == WorkKind::Contribution {
        return w.authors.iter()
            .map(|(p, a)| (share * Nat::from(*a) / Nat::from(w.author_weight), Some(p.clone()), None))
            .collect();
    }
    let unit = u64::from(BPS_PER_UNIT);
    let ub = u64::from(w.upstream_bps);
    let mut steps = Vec::new();
    if ub < unit {
        let den = Nat::from(unit) * Nat::from(w.author_weight);
        for (p, a) in &w.authors {
            steps.push((share * Nat::from(unit - ub) * Nat::from(*a) / &den, Some(p.clone()), None));
        }
    }
    if ub > 0 {
        let den = Nat::from(unit) * Nat::from(w.component_weight);
        for (c, k) in &w.components {
            steps.push((share * Nat::from(ub) * Nat::from(*k) / &den, None, Some(c.clone())));
        }
    }
    steps
}

/// A path of value: the works from the top down, the recipient, the share over g.
pub type PathShare = (Vec<String>, String, Nat);

/// `attribution.graph._largest_paths`: the `max_paths` largest paths, and
/// whether there are more (or the budget ran out).
fn largest_paths(top: &str, works: &Works, max_paths: usize, g: &Nat) -> (Vec<PathShare>, bool) {
    if max_paths == 0 {
        return (Vec::new(), true);
    }
    let mut queue: BinaryHeap<Item> = BinaryHeap::new();
    let mut pushes = 0usize;
    let mut steps_total = 0usize;
    let mut found: Vec<PathShare> = Vec::new();
    let mut truncated = false;
    queue.push(Item { share: g.clone(), seq: pushes, recipient: None, link: Rc::new(Link { work: top.to_owned(), parent: None }) });
    pushes += 1;
    while let Some(item) = queue.pop() {
        if found.len() >= max_paths && item.share < found[max_paths - 1].2 {
            truncated = true;
            break;
        }
        if let Some(recipient) = item.recipient {
            let mut path = Vec::new();
            let mut node = Some(&item.link);
            while let Some(l) = node {
                path.push(l.work.clone());
                node = l.parent.as_ref();
            }
            steps_total += path.len();
            if steps_total > EXPLAIN_MAX_PATH_STEPS {
                truncated = true;
                break;
            }
            path.reverse();
            found.push((path, recipient, item.share));
            continue;
        }
        let items = path_steps(&works[item.link.work.as_str()], &item.share);
        if pushes + items.len() > EXPLAIN_MAX_QUEUE_PUSHES {
            truncated = true;
            break;
        }
        for (share, recipient, child) in items {
            let link = match child {
                None => item.link.clone(),
                Some(c) => Rc::new(Link { work: c, parent: Some(item.link.clone()) }),
            };
            queue.push(Item { share, seq: pushes, recipient, link });
            pushes += 1;
        }
    }
    found.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes())).then_with(|| a.0.cmp(&b.0)));
    if found.len() > max_paths {
        truncated = true;
        found.truncate(max_paths);
    }
    (found, truncated)
}

/// `WorkGraph.explain_exact` over a sub-DAG gathered without leaves.
pub struct ExactExplanation {
    pub g: Nat,
    pub paths: Vec<PathShare>,
    pub works: Vec<(String, Nat)>,
    pub truncated_paths: bool,
    pub total_works: usize,
    /// flow(top, 1) reduced: the same propagation gives it.
    pub vector: ShareVector,
}

pub fn explain_exact(top: &str, works: &Works, max_paths: usize, max_works: usize) -> ExactExplanation {
    let p = propagate(top, works, &Leaves::default(), true);
    let vector = ShareVector::in_lowest_terms(p.g.clone(), p.received);
    let (paths, truncated_paths) = largest_paths(top, works, max_paths, &p.g);
    let total_works = p.masses.len();
    let mut masses = p.masses;
    masses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    masses.truncate(max_works);
    ExactExplanation { g: p.g, paths, works: masses, truncated_paths, total_works, vector }
}

/// `projections.explain.work_routes`: for each recipient of flow(top, 1), its
/// share split by paying work (the work itself, or one of its direct
/// components), as exact integer weights in lowest terms (hex), recipients and
/// paying works in code point order. `component_vectors` are V(c) of the
/// top's components (reduced), in the order of `top.components`.
pub fn routes(top_id: &str, top: &Work, component_vectors: &[Arc<ShareVector>]) -> Vec<(String, Vec<(String, String)>)> {
    let mut weights: HashMap<String, HashMap<String, Nat>> = HashMap::default();
    if top.retracted {
        weights.entry(UNATTRIBUTED.to_owned()).or_default().insert(top_id.to_owned(), Nat::one());
    } else if top.kind == WorkKind::Contribution || top.upstream_bps == 0 {
        for (a, _) in &top.authors {
            weights.entry(a.clone()).or_default().insert(top_id.to_owned(), Nat::one());
        }
    } else {
        assert_eq!(component_vectors.len(), top.components.len());
        let unit = u64::from(BPS_PER_UNIT);
        let ub = u64::from(top.upstream_bps);
        let mut lcm_den = Nat::one();
        for v in component_vectors {
            lcm_den = lcm_den.lcm(&v.denominator);
        }
        for (author, a) in &top.authors {
            if ub < unit {
                let w = Nat::from(unit - ub) * Nat::from(*a) * Nat::from(top.component_weight) * &lcm_den;
                weights.entry(author.clone()).or_default().insert(top_id.to_owned(), w);
            }
        }
        for ((c, k), v) in top.components.iter().zip(component_vectors) {
            let scale = Nat::from(ub) * Nat::from(*k) * Nat::from(top.author_weight.max(1)) * (&lcm_den / &v.denominator);
            for (recipient, n) in &v.numerators {
                let routes = weights.entry(recipient.clone()).or_default();
                let add = &scale * n;
                match routes.get_mut(c) {
                    Some(x) => *x += add,
                    None => {
                        routes.insert(c.clone(), add);
                    }
                }
            }
        }
    }
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::with_capacity(weights.len());
    for (recipient, routes) in weights {
        let mut routes: Vec<(String, Nat)> = routes.into_iter().collect();
        routes.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let texts = if routes.len() == 1 {
            vec![(routes.pop().unwrap().0, "1".to_owned())]
        } else {
            let mut common = Nat::zero();
            for (_, n) in &routes {
                common = common.gcd(n);
            }
            routes.into_iter().map(|(p, n)| (p, num::hex(&(n / &common)))).collect()
        };
        out.push((recipient, texts));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

/// `orjson.dumps(work_explanation(graph, work))`, byte for byte.
pub fn explanation_json(ex: &ExactExplanation, routes: &[(String, Vec<(String, String)>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"paths\":[");
    for (i, (path, recipient, share)) in ex.paths.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"[[");
        for (j, w) in path.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::write_str(w, &mut out);
        }
        out.extend_from_slice(b"],");
        json::write_str(recipient, &mut out);
        out.push(b',');
        json::write_str(&num::ratio_str(share, &ex.g), &mut out);
        out.push(b']');
    }
    out.extend_from_slice(b"],\"works\":{");
    for (i, (w, m)) in ex.works.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(w, &mut out);
        out.push(b':');
        json::write_str(&num::ratio_str(m, &ex.g), &mut out);
    }
    out.extend_from_slice(b"},\"truncated_paths\":");
    out.extend_from_slice(if ex.truncated_paths { b"true" } else { b"false" });
    out.extend_from_slice(b",\"total_works\":");
    out.extend_from_slice(ex.total_works.to_string().as_bytes());
    out.extend_from_slice(b",\"routes\":{");
    for (i, (recipient, by_work)) in routes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(recipient, &mut out);
        out.extend_from_slice(b":{");
        for (j, (paying, weight)) in by_work.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json::write_str(paying, &mut out);
            out.push(b':');
            json::write_str(weight, &mut out);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(authors: &[(&str, u32)]) -> Arc<Work> {
        let authors: Vec<(String, u32)> = authors.iter().map(|(a, w)| (a.to_string(), *w)).collect();
        Arc::new(Work { kind: WorkKind::Contribution, author_weight: authors.iter().map(|a| u64::from(a.1)).sum(),
                        authors, components: vec![], component_weight: 0, upstream_bps: 0, retracted: false, version: 0 })
    }

    #[test]
    fn the_worked_example() {
        let mut works = Works::default();
        works.insert("c1".into(), contribution(&[("alice", 1)]));
        works.insert("c2".into(), contribution(&[("bob", 2), ("carol", 1)]));
        works.insert("o1".into(), Arc::new(Work {
            kind: WorkKind::Output, authors: vec![("carol".into(), 1)], author_weight: 1,
            components: vec![("c1".into(), 1), ("c2".into(), 1)], component_weight: 2, upstream_bps: 4000,
            retracted: false, version: 0 }));
        let v = vector("o1", &works, &Leaves::default());
        let n: Vec<(String, u64)> = v.numerators.iter().map(|(r, n)| (r.clone(), n.try_into().unwrap())).collect();
        assert_eq!((v.denominator.clone(), n), (Nat::from(15u8), vec![("alice".into(), 3), ("bob".into(), 2), ("carol".into(), 10)]));
        let ex = explain_exact("o1", &works, 10, 50);
        let texts: Vec<(Vec<String>, String, String)> = ex.paths.iter().map(|(p, r, s)| (p.clone(), r.clone(), num::ratio_str(s, &ex.g))).collect();
        assert_eq!(texts[0], (vec!["o1".to_string()], "carol".to_string(), "3/5".to_string()));
        assert_eq!(texts[1], (vec!["o1".to_string(), "c1".to_string()], "alice".to_string(), "1/5".to_string()));
    }
}
