"""Webhooks: booking documents (EVENTS.md §9) pushed to the operators' endpoints.

Two layers, one module each:

* `ledger.webhooks.endpoints` — the operator's tables outside the log: the
  endpoints (URL, event types, signing secrets, cursor, disabled or not), every
  delivery attempt, the pending retries and the dead letters; validation of
  what an operator may register;
* `ledger.webhooks.delivery` — the deliverer (`peerledger deliver`, a child of
  `peerledger serve`): one asyncio task per endpoint, each POSTing the
  platform's documents in seq order, signed by the Standard Webhooks scheme,
  retrying on Svix's schedule.

See docs/bookings.md, "Webhooks".
"""
