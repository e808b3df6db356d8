//! Splitting a usage pool, stage 1 and stage 2 (reference: `attribution/pools.py`).
//!
//! OWNER: helper R2.
