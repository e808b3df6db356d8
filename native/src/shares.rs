//! Exact share vectors (the reference is `attribution/shares.py`).
//!
//! OWNER: helper R2.
