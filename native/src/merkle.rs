//! The right edge of a platform's RFC 9162 tree (reference: `projections/merkle.py`).
//!
//! OWNER: helper R2.
