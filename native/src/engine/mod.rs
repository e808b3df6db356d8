//! The engine: a platform's state, the rules, the fold and the batch protocol.
//!
//! OWNER: the lead.
