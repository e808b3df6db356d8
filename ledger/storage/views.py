"""The read models: queries of the state tables the writer keeps.

The writer (`ledger.ingest.ingestor`) writes each batch's balances,
statements and values with the batch's events, in one transaction
(`ledger.storage.state`), so these queries always answer for one seq of the
log: the platform's head at the last commit (`views_seq`).  `--as-of`
queries replay the log instead (`ledger.storage.replay`).
"""

from __future__ import annotations

from typing import Any

import orjson

from attribution.shares import ShareVector, from_json_obj
from ledger.storage.store import Store
from projections.explain import explain_pool, explain_value
from projections.state import POOL_WORK_PREFIX


def views_seq(store: Store, platform: str) -> int:
    """The seq the read models of `platform` reflect: its head at the last commit."""
    rows = store.query("SELECT seq FROM peerledger_heads WHERE platform = ?", (platform,))
    return int(rows[0][0]) if rows else 0


def _int(x: Any) -> int:
    return int(x)


def read_balances(store: Store, platform: str, currency: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT account, currency, earned, reversed, paid, balance FROM peerledger_balances "
        "WHERE platform = ?" + (" AND currency = ?" if currency else "")
    )
    rows = store.query(sql, (platform, currency) if currency else (platform,))
    out = [
        {"account": a, "currency": cur, "earned": _int(e), "reversed": _int(r),
         "paid": _int(pd), "balance": _int(b)}
        for a, cur, e, r, pd, b in rows
    ]
    # Code point order, whatever the database's collation says.
    out.sort(key=lambda row: (row["account"], row["currency"]))
    return out


def read_statement(store: Store, platform: str, prosumer: str, period: str | None) -> list[dict[str, Any]]:
    sql = (
        "SELECT period, currency, earned, reversed, paid FROM peerledger_statements "
        "WHERE platform = ? AND account = ?" + (" AND period = ?" if period else "")
    )
    rows = store.query(sql, (platform, prosumer, period) if period else (platform, prosumer))
    out = []
    for month, cur, e, r, pd in rows:
        e, r, pd = _int(e), _int(r), _int(pd)
        out.append({"period": month, "currency": cur, "earned": e, "reversed": r,
                    "paid": pd, "net": e + r - pd})
    out.sort(key=lambda row: (row["period"], row["currency"]))
    return out


def read_explain(store: Store, platform: str, value: str) -> dict[str, Any] | None:
    """A value's explanation (`projections.explain`), or a closed pool's
    (EVENTS.md §7); None when `platform` has no such value."""
    found = _read_value(store, platform, value)
    return found[0] if found is not None else None


def read_closed_pool(store: Store, platform: str, pool: str) -> tuple[dict[str, Any], ShareVector | None,
                                                                      dict[str, Any]] | None:
    """A closed pool's explanation (EVENTS.md §7), its S (None when X = 0) and
    everything stored with it at the close (`PlatformFold._close`: also the
    vectors of its largest works); None when it is not a closed pool."""
    found = _read_value(store, platform, pool)
    if found is None or found[2] is None:
        return None
    return found[0], found[1], found[2]


def _read_value(store: Store, platform: str, value: str) -> tuple[dict[str, Any], ShareVector | None,
                                                                   dict[str, Any] | None] | None:
    """(explanation, S, the stored pool blob or None for a sale)."""
    rows = store.query(
        "SELECT v.work, v.vector_version, v.fee_bps, v.amount, v.currency, v.reversed, v.seq, "
        "w.vector, w.explanation FROM peerledger_values v LEFT JOIN peerledger_vectors w "
        "ON w.platform = v.platform AND w.work = v.work AND w.version = v.vector_version "
        "WHERE v.platform = ? AND v.value = ?",
        (platform, value),
    )
    if not rows:
        return None
    work, _version, fee_bps, amount, currency, reversed_minor, seq, vector, explanation = rows[0]
    shares = from_json_obj(orjson.loads(bytes(vector))) if vector is not None else None
    if work.startswith(POOL_WORK_PREFIX):
        (pool,) = store.query("SELECT explanation FROM peerledger_pools WHERE platform = ? AND pool = ?",
                              (platform, value))
        stored = orjson.loads(bytes(pool[0]))
        return explain_pool(value, int(amount), currency, int(reversed_minor), shares, stored), shares, stored
    assert shares is not None and explanation is not None, f"value {value!r} has no stored vector"
    return explain_value(
        value, work, int(amount), currency, int(fee_bps), int(reversed_minor), int(seq),
        shares, orjson.loads(bytes(explanation)),
    ), shares, None


def value_seq(store: Store, platform: str, value: str) -> int:
    """The seq that realized `value` (a pool's: its close); 0 for none."""
    rows = store.query("SELECT seq FROM peerledger_values WHERE platform = ? AND value = ?", (platform, value))
    return int(rows[0][0]) if rows else 0


def recorded_digests(store: Store, platform: str) -> dict[int, str]:
    return {int(s): d for s, d in store.query(
        "SELECT seq, digest FROM peerledger_digests WHERE platform = ?", (platform,))}
