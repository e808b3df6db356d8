//! Largest-remainder allocation and reversal bookings (reference: `attribution/allocation.py`).
//!
//! OWNER: helper R2.
