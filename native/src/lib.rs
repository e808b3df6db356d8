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

// mimalloc v3's option numbers (`mi_option_e` in its mimalloc.h; the crate
// names only the stable ones).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Have the allocator give freed pages back to the OS at once, and commit an
/// arena's pages only as they are used. By default mimalloc keeps freed pages
/// for a second and commits arenas eagerly: a sale at the top of a 3000-deep
/// chain (a 29 MB vector, built, serialised and handed over) then peaked at
/// 317 MiB, 224 MiB without the delay and 205 MiB without either; a 1M-event
/// ingest in one process 313 → 264 MiB, `verify` of it 328 → 293 MiB. Called
/// once, when the Python module loads (the process's allocator is the
/// process's, not the engine's: this is the one setting the module makes).
pub fn return_freed_memory_promptly() {
    // SAFETY: plain integer options of the allocator, which reads them when it
    // next purges or reserves; no pointer is passed.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 0);
        assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
    }
}
