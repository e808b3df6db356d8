"""Booking documents out (EVENTS.md §9): read what the ledger committed, a page
at a time (`documents`), published to Kafka exactly once (`ledger.kafka.publisher`)
and POSTed to signed webhooks (`ledger.webhooks`)."""
