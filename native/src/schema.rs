//! The shape check of EVENTS.md §1–2, §7 and §8: raw bytes to a typed event.
//!
//! OWNER: helper R1. Contract (the Python reference is `ledger.contract.schema.parse_event`):
//! `parse_event(payload: &[u8]) -> Result<Parsed, Invalid>` accepts exactly the payloads
//! the reference accepts (one trailing "\n" or "\r\n" stripped; 1 MiB limit without the
//! terminator; depth limit; strict types; patterns; `at` RFC 3339 with a real calendar
//! date, no leap seconds, UTC years 0001–9999; every rule the reference checks), and
//! gives the canonical bytes the reference gives. It does not produce messages: for an
//! invalid payload the shell asks the reference for its message. `Invalid` carries the
//! envelope's `id` and `platform` when they are strings matching their patterns
//! (`Envelope.event_id` / `platform_id` of the reference), for filing the reject.
