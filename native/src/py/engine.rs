//! `projections._native.Engine`: the batch protocol of `engine`, data in, data out.
//! Rows come in as the database returns them and go out as `StateRows` tuples.
use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::engine::state::*;
use crate::engine::{Cell, Engine as Core, Outcome};
use crate::graph::{Work, WorkKind};
use crate::json::{self, Value};
use crate::schema::PoolMethod;
use crate::shares::ShareVector;

#[pyclass(module = "projections._native")]
pub struct Engine {
    core: Core,
}

fn bad(what: &str) -> PyErr {
    PyValueError::new_err(format!("a stored row does not parse: {what}"))
}

/// `[["id",n],…]` as the works table keeps authors and components.
fn weights(text: &str) -> PyResult<Vec<(String, u32)>> {
    let v = json::parse(text.as_bytes()).map_err(|_| bad("weights"))?;
    let Value::Array(items) = v else { return Err(bad("weights")) };
    items.into_iter().map(|item| match item {
        Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
            (Value::String(k), Value::Number(Some(n))) if (1..=1_000_000).contains(n) => Ok((k.clone(), *n as u32)),
            _ => Err(bad("weights")),
        },
        _ => Err(bad("weights")),
    }).collect()
}

fn to_py<'py>(py: Python<'py>, cell: &Cell) -> PyResult<Bound<'py, PyAny>> {
    Ok(match cell {
        Cell::Str(s) => s.into_pyobject(py)?.into_any(),
        Cell::Int(n) => n.into_pyobject(py)?.into_any(),
        Cell::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Cell::Bytes(b) => PyBytes::new(py, b).into_any(),
        Cell::Null => py.None().into_bound(py),
    })
}

#[pymethods]
impl Engine {
    #[new]
    fn new(cache_budget_bytes: usize, tree_level_min: u32) -> Self {
        Engine { core: Core::new(cache_budget_bytes, tree_level_min) }
    }

    /// Parse a batch: [(platform, [event ids])] in platform order.
    fn begin(&mut self, py: Python<'_>, payloads: Vec<Vec<u8>>) -> Vec<(String, Vec<String>)> {
        let core = &mut self.core;
        py.detach(|| core.begin(&payloads))
    }

    fn invalid(&self) -> Vec<usize> {
        self.core.invalid()
    }

    /// heads: platform -> (seq, fee_bps, tree_edge) or None (no event yet); a
    /// platform left out continues from the handed-off batch. known: platform
    /// -> {event id: leaf hash}.
    fn start(&mut self, heads: HashMap<String, Option<(u64, u32, Vec<u8>)>>,
             known: HashMap<String, HashMap<String, Vec<u8>>>) -> PyResult<()> {
        let known = known.into_iter().map(|(p, ids)| {
            let ids = ids.into_iter().map(|(id, leaf)| {
                let leaf: [u8; 32] = leaf.try_into().map_err(|_| bad("leaf hash"))?;
                Ok((id, leaf))
            }).collect::<PyResult<rustc_hash::FxHashMap<_, _>>>()?;
            Ok((p, ids))
        }).collect::<PyResult<rustc_hash::FxHashMap<_, _>>>()?;
        self.core.start(heads.into_iter().collect(), known).map_err(PyValueError::new_err)
    }

    /// None when decided; else [(platform, {table: [keys]})] to read and provide.
    fn step<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let core = &mut self.core;
        let Some(requests) = py.detach(|| core.step()) else { return Ok(None) };
        let out = PyList::empty(py);
        for (platform, needs) in requests {
            let d = PyDict::new(py);
            let keys = |m: &std::collections::BTreeMap<String, ()>| m.keys().cloned().collect::<Vec<_>>();
            if !needs.prosumers.is_empty() { d.set_item("prosumers", keys(&needs.prosumers))?; }
            if !needs.works.is_empty() { d.set_item("works", keys(&needs.works))?; }
            if !needs.dependents.is_empty() { d.set_item("dependents", keys(&needs.dependents))?; }
            if !needs.values.is_empty() { d.set_item("values", keys(&needs.values))?; }
            if !needs.payouts.is_empty() { d.set_item("payouts", keys(&needs.payouts))?; }
            if !needs.pools.is_empty() { d.set_item("pools", keys(&needs.pools))?; }
            if !needs.vectors.is_empty() { d.set_item("vectors", needs.vectors.keys().cloned().collect::<Vec<_>>())?; }
            if !needs.balances.is_empty() { d.set_item("balances", needs.balances.keys().cloned().collect::<Vec<_>>())?; }
            if !needs.statements.is_empty() { d.set_item("statements", needs.statements.keys().cloned().collect::<Vec<_>>())?; }
            if let Some(pool) = needs.pool_members { d.set_item("pool_members", pool)?; }
            if needs.settle { d.set_item("settle", true)?; }
            if needs.works_below && !needs.works.is_empty() { d.set_item("works_below", true)?; }
            out.append((platform, d))?;
        }
        Ok(Some(out))
    }

    /// The rows read for `table` and `asked` (as `step` named them); for
    /// `pool_members`, a page of (subscriber, funded, [(work, uses)]) and `last`.
    #[pyo3(signature = (platform, table, asked, rows, last=false))]
    fn provide(&mut self, platform: &str, table: &str, asked: &Bound<'_, PyAny>, rows: &Bound<'_, PyAny>, last: bool) -> PyResult<()> {
        let st = self.core.state_mut(platform);
        match table {
            "prosumers" => {
                let rows: Vec<(String,)> = rows.extract()?;
                st.prosumers.provide(asked.extract()?, rows.into_iter().map(|(p,)| (p, ())).collect());
            }
            "works" => {
                let rows: Vec<(String, String, String, String, u32, bool, u64)> = rows.extract()?;
                let mut out = Vec::with_capacity(rows.len());
                for (w, kind, authors, components, upstream_bps, retracted, version) in rows {
                    let authors = weights(&authors)?;
                    let components = weights(&components)?;
                    let kind = match kind.as_str() { "contribution" => WorkKind::Contribution, "output" => WorkKind::Output, _ => return Err(bad("kind")) };
                    out.push((w, Arc::new(Work { kind, author_weight: authors.iter().map(|a| u64::from(a.1)).sum(), authors,
                                                  component_weight: components.iter().map(|a| u64::from(a.1)).sum(), components,
                                                  upstream_bps, retracted, version })));
                }
                st.works.provide(asked.extract()?, out);
            }
            "dependents" => {
                let rows: Vec<(String, String)> = rows.extract()?;
                let mut by: HashMap<String, Vec<String>> = HashMap::new();
                for (w, d) in rows {
                    by.entry(w).or_default().push(d);
                }
                st.dependents.provide(asked.extract()?, by.into_iter().map(|(w, d)| (w, Arc::new(d))).collect());
            }
            "values" => {
                let rows: Vec<(String, String, u64, String, u32, u64, u64, u64)> = rows.extract()?;
                st.values.provide(asked.extract()?, rows.into_iter().map(|(value, work, amount, currency, fee_bps, vector_version, reversed, seq)|
                    (value.clone(), Arc::new(ValueRecord { value, work, amount, currency, fee_bps, vector_version, reversed, seq }))).collect());
            }
            "payouts" => {
                let rows: Vec<(String, String, u64, String, u64, u64)> = rows.extract()?;
                st.payouts.provide(asked.extract()?, rows.into_iter().map(|(payout, prosumer, amount, currency, seq, returned_seq)|
                    (payout.clone(), Arc::new(PayoutRecord { payout, prosumer, amount, currency, seq, returned_seq }))).collect());
            }
            "pools" => {
                let rows: Vec<(String, String, String, u64, bool, u64)> = rows.extract()?;
                let mut out = Vec::with_capacity(rows.len());
                for (pool, currency, method, funded, closed, seq) in rows {
                    let method = PoolMethod::from_name(&method).ok_or_else(|| bad("pool method"))?;
                    out.push((pool.clone(), Arc::new(PoolRecord { pool, currency, method, funded, closed, seq })));
                }
                st.pools.provide(asked.extract()?, out);
            }
            "vectors" => {
                let rows: Vec<(String, u64, Vec<u8>)> = rows.extract()?;
                let mut out = Vec::with_capacity(rows.len());
                for (w, version, blob) in rows {
                    let v = ShareVector::from_json(&blob).map_err(|e| bad(&e))?;
                    out.push(((w, version), (Some(Arc::new(v)), true)));
                }
                st.vectors.provide(asked.extract()?, out);
            }
            "balances" => {
                let rows: Vec<(String, String, i128, i128, i128)> = rows.extract()?;
                st.balances.provide(asked.extract()?, rows.into_iter().map(|(a, c, e, r, p)|
                    ((a, c), Figures { earned: e, reversed: r, paid: p })).collect());
            }
            "statements" => {
                let rows: Vec<(String, String, String, i128, i128, i128)> = rows.extract()?;
                st.statements.provide(asked.extract()?, rows.into_iter().map(|(a, m, c, e, r, p)|
                    ((a, m, c), Figures { earned: e, reversed: r, paid: p })).collect());
            }
            "pool_members" => {
                let page: Vec<Member> = rows.extract()?;
                st.members_page = Some((page, last));
            }
            _ => return Err(PyValueError::new_err(format!("unknown table {table}"))),
        }
        Ok(())
    }

    /// {"outcomes": [(index, outcome, seq, code, message, platform, event id)],
    /// "events": [(platform, seq, type, canonical)], "id_records": [(platform,
    /// event id, seq, leaf hash, effect hash, `now`)], "tree_nodes", "tables",
    /// "digests"}. `now` is the ledger time the shell read for the batch.
    fn finish<'py>(&mut self, py: Python<'py>, now: &str) -> PyResult<Bound<'py, PyDict>> {
        let core = &mut self.core;
        let out = py.detach(|| core.finish());
        // Rows repeat a few strings (the platform, currencies, months, hot
        // accounts): one Python string each per batch.
        let mut strings: rustc_hash::FxHashMap<&str, Bound<'py, PyAny>> = Default::default();
        let d = PyDict::new(py);
        let outcomes = PyList::empty(py);
        for (i, o) in out.outcomes.iter().enumerate() {
            match o {
                None => {}
                Some((Outcome::Accepted(seq), p, id)) => outcomes.append((i, "accepted", Some(*seq), None::<&str>, None::<String>, p, id))?,
                Some((Outcome::Duplicate, p, id)) => outcomes.append((i, "duplicate", None::<u64>, None::<&str>, None::<String>, p, id))?,
                Some((Outcome::Rejected(r), p, id)) => outcomes.append((i, "rejected", None::<u64>, Some(r.code), Some(r.message.clone()), p, id))?,
            }
        }
        d.set_item("outcomes", outcomes)?;
        let events = PyList::empty(py);
        for (p, seq, t, canonical) in &out.events {
            events.append((p, seq, t, PyBytes::new(py, canonical)))?;
        }
        d.set_item("events", events)?;
        let ids = PyList::empty(py);
        let now = pyo3::types::PyString::new(py, now);
        for (p, id, seq, leaf, effect) in &out.id_records {
            ids.append((p, id, seq, PyBytes::new(py, leaf), PyBytes::new(py, effect), &now))?;
        }
        d.set_item("id_records", ids)?;
        let nodes = PyList::empty(py);
        for (p, level, idx, h) in &out.tree_nodes {
            nodes.append((p, level, idx, PyBytes::new(py, h)))?;
        }
        d.set_item("tree_nodes", nodes)?;
        let tables = PyDict::new(py);
        for (name, rows) in &out.tables {
            let list = PyList::empty(py);
            for row in rows {
                let mut cells: Vec<Bound<'py, PyAny>> = Vec::with_capacity(row.len());
                for c in row {
                    cells.push(match c {
                        Cell::Str(text) => match strings.get(text.as_str()) {
                            Some(o) => o.clone(),
                            None => {
                                let o = to_py(py, c)?;
                                strings.insert(text.as_str(), o.clone());
                                o
                            }
                        },
                        _ => to_py(py, c)?,
                    });
                }
                list.append(PyTuple::new(py, cells)?)?;
            }
            tables.set_item(name, list)?;
        }
        d.set_item("tables", tables)?;
        d.set_item("digests", out.digests.clone())?;
        Ok(d)
    }

    /// The decided batch goes to the database; the next may be decided on top of it.
    fn hand_off(&mut self, py: Python<'_>) {
        let core = &mut self.core;
        py.detach(|| core.hand_off());
    }

    /// The handed-off batch committed.
    fn confirm(&mut self, py: Python<'_>) {
        let core = &mut self.core;
        py.detach(|| core.confirm());
    }

    fn commit(&mut self, py: Python<'_>) {
        let core = &mut self.core;
        py.detach(|| core.commit());
    }

    fn rollback(&mut self) {
        self.core.rollback();
    }

    /// [(cache, (rows, entries, estimated bytes))], for tests and metrics.
    fn cache_stats(&self) -> Vec<(&'static str, (usize, usize, usize, usize))> {
        self.core.cache_stats()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    Ok(())
}
