//! Works, the mass propagation of flow(w, 1), explanations and routes (reference:
//! `attribution/graph.py`, `projections/explain.py`).
//!
//! OWNER: helper R2. Pure functions over a gathered sub-DAG; gathering rows from
//! storage is the engine's job (`engine`).
