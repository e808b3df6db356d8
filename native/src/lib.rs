//! The native core of peerledger (see README.md).
//!
//! A pure engine: data in, data out. It owns no I/O, no clock and no globals: the
//! Python shell reads the rows the engine asks for, hands them over, and writes
//! the rows it gives back. The pure-Python core (`ledger.contract`,
//! `projections`, `attribution`) is the executable reference it must agree with,
//! byte for byte (the differential tests).
//!
//! Layers, bottom up (each module depends only on those above it in this list):
//! - `num`: exact naturals with a machine-integer fast path;
//! - `json`: a strict JSON reader (duplicate keys, depth, raw numbers) and the
//!   canonical writer of EVENTS.md §5;
//! - `schema`: the shape check of EVENTS.md §1–2, §7 and §8 into typed events;
//! - `shares`, `allocation`, `graph`, `pools`, `merkle`: attribution and the tree,
//!   pure and exact (EVENTS.md §3, §7; AUDIT.md §1);
//! - `engine`: a platform's state (rows, a batch's changes, bounded caches), the
//!   rules of §4, §7 and §8, the fold, and the batch protocol;
//! - `py`: the Python face (feature `python`).

pub mod allocation;
pub mod engine;
pub mod graph;
pub mod json;
pub mod merkle;
pub mod num;
pub mod pools;
pub mod schema;
pub mod shares;

#[cfg(feature = "python")]
mod py;

/// The engine allocates many small strings per event (ids, keys): mimalloc
/// keeps that cheap and out of the allocator locks the writer thread takes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
