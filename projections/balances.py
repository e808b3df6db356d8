"""Balances JSON and its digest (EVENTS.md §5)."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping

from projections.state import Figures


def balance_rows(
    balances: Mapping[tuple[str, str], Figures], currency: str | None = None
) -> list[dict[str, object]]:
    """One object per (account, currency) with any booking, sorted by account
    then currency in code point order (Python's str order is code point order).
    """
    return [balance_row(account, cur, f) for (account, cur), f in sorted(balances.items())
            if currency is None or cur == currency]


def balance_row(account: str, currency: str, f: Figures) -> dict[str, object]:
    """The balances array's object for one (account, currency)."""
    return {
        "account": account,
        "currency": currency,
        "earned": f.earned,
        "reversed": f.reversed,
        "paid": f.paid,
        "balance": f.balance,
    }


def canonical_json(obj: object) -> bytes:
    """EVENTS.md §5 serialisation: keys sorted, no whitespace, non-ASCII raw.

    The standard library is used on purpose: balances may exceed 64 bits
    (orjson refuses such integers) and this is the form auditors reproduce.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def balances_digest(rows: Iterable[Mapping[str, object]]) -> str:
    """SHA-256 (lower-case hex) of the balances array's canonical JSON.

    The array is hashed an element at a time (canonical JSON of an array is
    `[`, its elements' canonical JSON joined by `,`, `]`): a digest of a
    million accounts streamed from the database never holds them all.
    """
    h = hashlib.sha256(b"[")
    separator = b""
    for row in rows:
        h.update(separator)
        h.update(canonical_json(row))
        separator = b","
    h.update(b"]")
    return h.hexdigest()
