//! The Python face: `projections._native`. Thin and typed: data in, data out.
use pyo3::prelude::*;

mod attribution;
mod engine;
mod schema;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::return_freed_memory_promptly();
    schema::register(m)?;
    attribution::register(m)?;
    engine::register(m)?;
    Ok(())
}
