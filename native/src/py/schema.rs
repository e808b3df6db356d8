//! `projections._native.parse_events`: the shape check of a batch, for the
//! differential tests and the benches (the engine parses its own batches).
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::schema::parse_event;

/// (ok, canonical, leaf_hash, event_id, platform, type, month) of each payload.
type Row = (bool, Option<Py<PyBytes>>, Option<Py<PyBytes>>, Option<String>, Option<String>, Option<&'static str>, Option<String>);

#[pyfunction]
fn parse_events(py: Python<'_>, payloads: Vec<Vec<u8>>) -> Vec<Row> {
    let parsed: Vec<_> = py.detach(|| payloads.iter().map(|p| parse_event(p)).collect());
    parsed
        .into_iter()
        .map(|r| match r {
            Ok(p) => (
                true,
                Some(PyBytes::new(py, &p.canonical).unbind()),
                Some(PyBytes::new(py, &p.leaf_hash).unbind()),
                Some(p.event.id),
                Some(p.event.platform),
                Some(p.event.data.type_name()),
                Some(p.event.month),
            ),
            Err(e) => (false, None, None, e.event_id, e.platform, None, None),
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_events, m)?)?;
    Ok(())
}
