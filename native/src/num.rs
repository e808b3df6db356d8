//! Exact naturals with a machine-integer fast path.
//!
//! OWNER: helper R2 (attribution). Shares are rationals whose denominators are usually
//! small (a few thousand) and sometimes thousands of digits long (a remix chain 3000
//! deep). `Nat` keeps small values in a u128 and promotes to a big integer only when an
//! operation would overflow, so the common sale costs no allocation. Never floats.
