"""Booking documents out (EVENTS.md §9): what the ledger committed, read a page
at a time (`documents`) for every face that gives them out."""
