"""The native engine against a store: which engine decides (`engine_choice`)
and the rows it asks for, read from a store and handed over.

The engine (`projections._native.Engine`, native/) does no I/O: while it
decides a batch, each `step` names the rows it lacks, per platform and
table; `decide_reading` reads them (one query per table and round, many keys
at once, through `ledger.storage.state.SqlState`) and `provide`s them, until
the batch is decided.  The writer (`ledger.ingest.native`) and the replay
(`ledger.storage.replay`) decide through it.

Cost per round trip: one query per table with missing rows; a batch of
1000 events usually needs two to four rounds (its rows, the vectors of what
it sells, the balances it changes), more when it sells works at new graph
states deep below (one more round per walk: `SqlState.works_below` reads the
whole sub-DAG below a level the engine lacks, up to 5 000 works) or closes a pool
(one round per page of 10 000 members or 2 000 works' vectors).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from ledger.storage.state import POOL_PAGE_ROWS, WORK_COLUMNS
from ledger.storage.store import Store

# Rounds of reads one batch may take before something is wrong: a sub-DAG
# 3000 works deep takes 3000 (one level each); a pool of 10^8 usage rows
# 10 000 pages.
ROUNDS_MAX = 1_000_000

ENGINE_ENV = "PEERLEDGER_ENGINE"

Members = dict[tuple[str, str], Iterator[tuple[str, int, list[tuple[str, int]]]]]


def engine_choice() -> str:
    """`PEERLEDGER_ENGINE`: "native" (the default wherever it is built) or "python"."""
    choice = os.environ.get(ENGINE_ENV, "")
    if choice not in ("", "native", "python"):
        raise ValueError(f"{ENGINE_ENV} must be native or python, got {choice!r}")
    if choice == "python":
        return "python"
    try:
        import projections._native  # noqa: F401
    except ImportError:
        if choice == "native":
            raise RuntimeError(f"{ENGINE_ENV}=native but the native core is not built (pip install ., or "
                               "scripts/build-native)") from None
        return "python"
    return "native"


def decide_reading(engine: Any, store: Store, settle: Callable[[], None] = lambda: None) -> None:
    """Step `engine` (started on a batch) until it is decided, reading from
    `store` what it asks for.  `settle` runs first when the engine says the
    batch in flight must commit before it reads (a pool's close)."""
    members: Members = {}
    for _round in range(ROUNDS_MAX):
        requests = engine.step()
        if requests is None:
            return
        for platform, wanted in requests:
            if wanted.pop("settle", False):
                settle()
            below = wanted.pop("works_below", False)
            _read(engine, store, platform, wanted, members, below)
    raise RuntimeError(f"a batch took more than {ROUNDS_MAX} rounds of reads")


def _read(engine: Any, store: Store, platform: str, wanted: dict[str, Any], members: Members, below: bool) -> None:
    state = store.state
    provide = engine.provide
    for table, keys in wanted.items():
        if table == "pool_members":
            stream = members.get((platform, keys))
            if stream is None:
                stream = members[(platform, keys)] = state.pool_members(platform, keys)
            page = list(itertools.islice(stream, POOL_PAGE_ROWS))
            provide(platform, table, [], page, len(page) < POOL_PAGE_ROWS)
            continue
        columns, key_columns, convert = READS[table]
        rows = state.select("peerledger_" + table, columns, key_columns, platform, keys)
        if table == "works" and below:
            rows += state.works_below(platform, keys)
        provide(platform, table, keys, convert(rows) if convert is not None else rows)


def _bools(index: int) -> Any:
    def convert(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [r[:index] + (bool(r[index]),) + r[index + 1:] for r in rows]
    return convert


def _money(first: int) -> Any:
    def convert(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [r[:first] + tuple(int(x) for x in r[first:]) for r in rows]
    return convert


def _blobs(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(w, int(v), bytes(b)) for w, v, b in rows]


# table -> (columns the engine takes, key columns, conversion of the database's values)
READS: dict[str, tuple[str, tuple[str, ...], Any]] = {
    "prosumers": ("prosumer", ("prosumer",), None),
    "works": (WORK_COLUMNS, ("work",), _bools(5)),
    "dependents": ("work, dependent", ("work",), None),
    "values": ("value, work, amount, currency, fee_bps, vector_version, reversed, seq", ("value",), None),
    "payouts": ("payout, prosumer, amount, currency, seq, returned_seq", ("payout",), None),
    "pools": ("pool, currency, method, funded, closed, seq", ("pool",), _bools(4)),
    "vectors": ("work, version, vector", ("work", "version"), _blobs),
    "balances": ("account, currency, earned, reversed, paid", ("account", "currency"), _money(2)),
    "statements": ("account, period, currency, earned, reversed, paid", ("account", "period", "currency"), _money(3)),
}
