"""Booking documents (EVENTS.md §9): what one accepted event booked, for the
systems that follow the ledger.

A document is a pure function of the event and of the entries the fold kept
for it (`LedgerState.book`), so two ledgers that accepted the same events give
the same bytes.  Adding up the `amount`s of a platform's documents up to seq n
per (account, currency, column) gives its balances after n events: the fold
books exactly these entries into the figures (`projections.state`).
"""

from __future__ import annotations

import json
from typing import Any

from projections.balances import canonical_json

# The columns of §9, as the fold names them (projections.fold: EARNED, REVERSED, PAID).
COLUMNS = ("earned", "reversed", "paid")


def booking_document(platform: str, seq: int, event: dict[str, Any],
                     booked: tuple[str, str, str] | None) -> dict[str, Any]:
    """The §9 document of the event at `seq`; `booked` is its (column,
    currency, entries JSON) row, None for an event that booked nothing.

    The entries are stored in account order with 0-unit bookings kept, and an
    event books one currency, so their order is §9's (account, then currency)."""
    bookings: list[dict[str, Any]] = []
    if booked is not None:
        column, currency, entries = booked
        assert column in COLUMNS, f"seq {seq} booked into an unknown column {column!r}"
        bookings = [{"account": account, "currency": currency, "column": column, "amount": int(units)}
                    for account, units in json.loads(entries)]
        accounts = [b["account"] for b in bookings]
        assert accounts == sorted(accounts) and len(set(accounts)) == len(accounts), \
            f"seq {seq}'s entries are not one per account in account order"
    return {"platform": platform, "seq": seq, "id": event["id"], "type": event["type"], "at": event["at"],
            "bookings": bookings}


def document_bytes(document: dict[str, Any]) -> bytes:
    """The document's canonical bytes (EVENTS.md §5): what every face sends."""
    return canonical_json(document)
