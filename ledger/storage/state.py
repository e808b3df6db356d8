"""The ledger's state in tables: what the fold reads, written with the events.

Every row a decision needs, and every read model, lives in one table per
kind, keyed by platform first:

| table | a row per | written when |
|---|---|---|
| `peerledger_heads` | platform: its seq, fee in force, Merkle tree edge | every batch |
| `peerledger_prosumers` | registered prosumer | `prosumer.registered` |
| `peerledger_works` | work: kind, authors, components, upstream, retracted, vector version | created, retracted, reinstated, reassigned, or below one of those |
| `peerledger_dependents` | (component, output listing it): the graph's reverse edges | `output.composed` |
| `peerledger_values` | realized value: work, vector version, fee, amount, reversed | realized, reversed |
| `peerledger_vectors` | (work, vector version) sold: its exact share vector and explanation | the first sale at that graph state |
| `peerledger_payouts` | payout: prosumer, amount, currency, seq issued, seq returned | `payout.issued`, `payout.returned` |
| `peerledger_bookings` | seq of an event that booked: its column, currency and entries | `value.realized`, `value.reversed`, `payout.*`, `pool.closed` |
| `peerledger_balances` | (account, currency): earned, reversed, paid, balance | a booking |
| `peerledger_statements` | (account, UTC month, currency) | a booking |
| `peerledger_digests` | (platform, seq): the balances digest | a batch crossing a multiple of 100 000 seqs |
| `peerledger_pools` | usage pool: currency, method, total funded, closed, its explanation | `pool.opened`, `pool.funded`, `pool.closed` |
| `peerledger_pool_funding` | (pool, subscriber): total funded | `pool.funded` |
| `peerledger_pool_usage` | (pool, subscriber, work): total uses | `usage.recorded` |

`SqlState` reads them for `projections.state.PlatformState` (one query per
table and chunk of keys) and `write` writes a batch's `Changes` inside the
append transaction (`ledger.storage.store.Store.append`): one statement per
table, one row per touched key.  So the read models are those of the log's
head at every commit, and a writer needs nothing but these rows to go on.

Money columns are exact: NUMERIC on PostgreSQL, decimal TEXT on SQLite (a
sum of amounts up to 2^63 − 1 may exceed 64 bits; SQLite would turn it
into a float), never floats.  SQLite therefore cannot add in SQL: figures are
read, added in Python and written whole (the platform's lock keeps anyone
else from changing them in between).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from attribution import ShareVector, Work, from_json_obj, to_json_obj
from attribution.graph import VectorKey
from ledger.storage.dialect import POSTGRES, Dialect
from projections.balances import balance_row, balances_digest
from projections.merkle import Frontier
from projections.state import (
    BalanceKey,
    Changes,
    Figures,
    Head,
    PayoutRecord,
    PoolRecord,
    StatementKey,
    ValueRecord,
)

# Rows of a pool's funding or usage read per query when it closes.
POOL_PAGE_ROWS = 10_000
# Keys per query: SQLite binds at most 32 766 parameters per statement, and
# a long IN list costs the planner more than a second round trip does.
KEYS_PER_QUERY_MAX = 900


def state_ddl(d: Dialect) -> list[str]:
    n, b, k = d.big_int, d.blob, d.clustered
    c = ' COLLATE "C"' if d is POSTGRES else ""
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_heads (platform TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
        f"fee_bps INTEGER NOT NULL, tree_edge {b} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS peerledger_prosumers (platform TEXT NOT NULL, prosumer TEXT NOT NULL, "
        "seq BIGINT NOT NULL, PRIMARY KEY (platform, prosumer))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_works (platform TEXT NOT NULL, work TEXT NOT NULL, "
        "kind TEXT NOT NULL, authors TEXT NOT NULL, components TEXT NOT NULL, upstream_bps INTEGER NOT NULL, "
        "retracted BOOLEAN NOT NULL, version BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (platform, work))",
        "CREATE TABLE IF NOT EXISTS peerledger_dependents (platform TEXT NOT NULL, work TEXT NOT NULL, "
        "dependent TEXT NOT NULL, PRIMARY KEY (platform, work, dependent))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_payouts (platform TEXT NOT NULL, payout TEXT NOT NULL, "
        "prosumer TEXT NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL, seq BIGINT NOT NULL, "
        "returned_seq BIGINT NOT NULL, PRIMARY KEY (platform, payout))" + k,
        # What each event booked (EVENTS.md §9): the booking documents are the
        # log's events with these rows; an event that booked nothing has none.
        "CREATE TABLE IF NOT EXISTS peerledger_bookings (platform TEXT NOT NULL, seq BIGINT NOT NULL, "
        "col TEXT NOT NULL, currency TEXT NOT NULL, entries TEXT NOT NULL, PRIMARY KEY (platform, seq))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_balances (platform TEXT NOT NULL, "
        f"account TEXT NOT NULL, currency TEXT NOT NULL, earned {n} NOT NULL, "
        f"reversed {n} NOT NULL, paid {n} NOT NULL, balance {n} NOT NULL, "
        "PRIMARY KEY (platform, account, currency))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_statements (platform TEXT NOT NULL, "
        "account TEXT NOT NULL, period TEXT NOT NULL, currency TEXT NOT NULL, "
        f"earned {n} NOT NULL, reversed {n} NOT NULL, paid {n} NOT NULL, "
        "PRIMARY KEY (platform, account, period, currency))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_values (platform TEXT NOT NULL, "
        "value TEXT NOT NULL, work TEXT NOT NULL, vector_version BIGINT NOT NULL, "
        "fee_bps INTEGER NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL, "
        "reversed BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (platform, value))" + k,
        "CREATE TABLE IF NOT EXISTS peerledger_vectors (platform TEXT NOT NULL, "
        f"work TEXT NOT NULL, version BIGINT NOT NULL, vector {b} NOT NULL, "
        f"explanation {b} NOT NULL, PRIMARY KEY (platform, work, version))",
        "CREATE TABLE IF NOT EXISTS peerledger_digests (platform TEXT NOT NULL, "
        "seq BIGINT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (platform, seq))" + k,
        # One row per process that wrote (a few dozen bytes each): see Store.append.
        "CREATE TABLE IF NOT EXISTS peerledger_writes (writer TEXT PRIMARY KEY, token TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS peerledger_pools (platform TEXT NOT NULL, pool TEXT NOT NULL, "
        "currency TEXT NOT NULL, method TEXT NOT NULL, funded BIGINT NOT NULL, closed BOOLEAN NOT NULL, "
        f"seq BIGINT NOT NULL, explanation {b}, PRIMARY KEY (platform, pool))",
        # A pool's rows are read in subscriber order at its close: byte order
        # (ids are ASCII), which PostgreSQL's index gives only in the C collation.
        f"CREATE TABLE IF NOT EXISTS peerledger_pool_funding (platform TEXT NOT NULL, pool TEXT NOT NULL, "
        f"subscriber TEXT{c} NOT NULL, funded BIGINT NOT NULL, PRIMARY KEY (platform, pool, subscriber))" + k,
        f"CREATE TABLE IF NOT EXISTS peerledger_pool_usage (platform TEXT NOT NULL, pool TEXT NOT NULL, "
        f"subscriber TEXT{c} NOT NULL, work TEXT{c} NOT NULL, uses BIGINT NOT NULL, "
        "PRIMARY KEY (platform, pool, subscriber, work))" + k,
    ]


# State tables whose columns changed since an older schema version: an
# older database drops them before the state is built from its log again
# (`Store._ensure_state_schema`, `ledger.storage.upgrade`).
RESHAPED_TABLES = ("peerledger_payouts",)


@dataclass(frozen=True)
class Table:
    """A state table: the columns that identify a row (after `platform`),
    every column, and which hold money (exact ints, as decimal text on
    SQLite): what `verify` compares and an upgrade clears."""

    keys: tuple[str, ...]
    columns: tuple[str, ...]
    money: frozenset[str] = frozenset()


_MONEY = frozenset({"earned", "reversed", "paid", "balance"})
STATE_TABLES: dict[str, Table] = {
    "peerledger_heads": Table((), ("seq", "fee_bps", "tree_edge")),
    "peerledger_prosumers": Table(("prosumer",), ("prosumer", "seq")),
    "peerledger_works": Table(("work",), ("work", "kind", "authors", "components", "upstream_bps", "retracted",
                                          "version", "seq")),
    "peerledger_dependents": Table(("work", "dependent"), ("work", "dependent")),
    "peerledger_payouts": Table(("payout",), ("payout", "prosumer", "amount", "currency", "seq", "returned_seq")),
    "peerledger_bookings": Table(("seq",), ("seq", "col", "currency", "entries")),
    "peerledger_values": Table(("value",), ("value", "work", "vector_version", "fee_bps", "amount", "currency",
                                            "reversed", "seq")),
    "peerledger_vectors": Table(("work", "version"), ("work", "version", "vector", "explanation")),
    "peerledger_balances": Table(("account", "currency"), ("account", "currency", "earned", "reversed", "paid",
                                                           "balance"), _MONEY),
    "peerledger_statements": Table(("account", "period", "currency"), ("account", "period", "currency", "earned",
                                                                        "reversed", "paid"), _MONEY),
    "peerledger_digests": Table(("seq",), ("seq", "digest")),
    "peerledger_pools": Table(("pool",), ("pool", "currency", "method", "funded", "closed", "seq", "explanation")),
    "peerledger_pool_funding": Table(("pool", "subscriber"), ("pool", "subscriber", "funded")),
    "peerledger_pool_usage": Table(("pool", "subscriber", "work"), ("pool", "subscriber", "work", "uses")),
}


def _money(d: Dialect, value: int) -> Any:
    return str(value) if d.big_int == "TEXT" else value


def _weights_text(pairs: tuple[tuple[str, int], ...]) -> str:
    return orjson.dumps(pairs).decode()


def _work_row(kind: str, authors: str, components: str, upstream_bps: int, retracted: Any, version: int) -> Work:
    author_pairs = tuple((p, int(a)) for p, a in orjson.loads(authors))
    component_pairs = tuple((c, int(k)) for c, k in orjson.loads(components))
    return Work(kind, author_pairs, sum(a for _, a in author_pairs), component_pairs,
                sum(k for _, k in component_pairs), int(upstream_bps), bool(retracted), int(version))


def _qualified(columns: str, alias: str = "t") -> str:
    """"a, b" as "t.a, t.b": a column list for a query that joins."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


# The columns of a work as the engines take them.
WORK_COLUMNS = "work, kind, authors, components, upstream_bps, retracted, version"
# Works one read below a walk's level may bring (`SqlState.works_below`):
# what a round may add to a batch's memory (about 100 bytes a row).
WORKS_BELOW_ROWS_MAX = 5_000
# A work passes value on to its components (`attribution.graph.Work.passes_on`).
_PASSES_ON = "{t}.kind = 'output' AND NOT {t}.retracted AND {t}.upstream_bps > 0"
_WORKS_BELOW = {
    # SQLite: components is JSON text, walked by json_each; the walk carries
    # ids only, so that every step looks a work up by its key (CROSS JOIN
    # keeps the planner to that order), and the LIMIT of a recursive CTE
    # stops the recursion itself.
    "sqlite": f"""
WITH RECURSIVE below (work) AS (
  SELECT j.value ->> 0
  FROM peerledger_works s CROSS JOIN json_each(s.components) j
  WHERE s.platform = ? AND s.work IN (SELECT value FROM json_each(?)) AND {_PASSES_ON.format(t="s")}
  UNION
  SELECT j.value ->> 0
  FROM below b CROSS JOIN peerledger_works s ON s.platform = ? AND s.work = b.work CROSS JOIN json_each(s.components) j
  WHERE {_PASSES_ON.format(t="s")}
  LIMIT ?
)
SELECT {_qualified(WORK_COLUMNS)}
FROM below b CROSS JOIN peerledger_works t ON t.platform = ? AND t.work = b.work""",
    # PostgreSQL: each step a lookup by key, fenced by LIMIT 1 in a LATERAL
    # subquery (left to itself, the planner hashes the whole works table
    # for every walk: a cost that grows with the ledger); the recursive CTE
    # is evaluated only as far as the outer LIMIT pulls.
    "postgresql": f"""
WITH RECURSIVE below (work) AS (
  SELECT j ->> 0
  FROM peerledger_works s CROSS JOIN LATERAL jsonb_array_elements(s.components::jsonb) j
  WHERE s.platform = %s AND s.work = ANY(%s) AND {_PASSES_ON.format(t="s")}
  UNION
  SELECT j ->> 0
  FROM below b
  CROSS JOIN LATERAL (SELECT s.components FROM peerledger_works s
                      WHERE s.platform = %s AND s.work = b.work AND {_PASSES_ON.format(t="s")} LIMIT 1) s
  CROSS JOIN LATERAL jsonb_array_elements(s.components::jsonb) j
)
SELECT {_qualified(WORK_COLUMNS)}
FROM (SELECT work FROM below LIMIT %s) b
CROSS JOIN LATERAL (SELECT {WORK_COLUMNS} FROM peerledger_works t
                    WHERE t.platform = %s AND t.work = b.work LIMIT 1) t""",
}


def _chunks(keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(keys), KEYS_PER_QUERY_MAX):
        yield keys[start:start + KEYS_PER_QUERY_MAX]


class SqlState:
    """`projections.state.StateSource` over the ledger's tables, through a
    `Store`'s read transactions (the caller holds the platform's lock)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dialect: Dialect = store.dialect

    # -- key lookups: one query per chunk ------------------------------------

    def select(self, table: str, columns: str, key_columns: tuple[str, ...], platform: str,
                keys: Collection[Any]) -> list[tuple[Any, ...]]:
        """Rows of `table` whose key columns are one of `keys` (each a value,
        or a tuple for several key columns)."""
        rows: list[tuple[Any, ...]] = []
        keys = list(keys)
        width = len(key_columns)
        for chunk in _chunks(keys):
            if self.dialect is POSTGRES:
                if width == 1:
                    sql = (f"SELECT {columns} FROM {table} WHERE platform = %s AND {key_columns[0]} = ANY(%s)")
                    params: list[Any] = [platform, list(chunk)]
                else:
                    # One array per key column, zipped back into rows by unnest;
                    # each key a lookup by the primary key (LATERAL … LIMIT 1):
                    # joined plainly, the planner hashes the platform's whole
                    # table (all its balances, say) for every batch.
                    names = ", ".join(f"k{i}" for i in range(width))
                    arrays = ", ".join("%s::text[]" for _ in range(width))
                    on = " AND ".join(f"t.{c}::text = k.k{i}" for i, c in enumerate(key_columns))
                    sql = (f"SELECT {_qualified(columns)} "
                           f"FROM unnest({arrays}) AS k({names}) CROSS JOIN LATERAL "
                           f"(SELECT {columns} FROM {table} t WHERE t.platform = %s AND {on} LIMIT 1) t")
                    params = [[str(key[i]) for key in chunk] for i in range(width)] + [platform]
                rows.extend(self.store.query(sql, params))
                continue
            if width == 1:
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {columns} FROM {table} WHERE platform = ? AND {key_columns[0]} IN ({marks})"
                rows.extend(self.store.query(sql, (platform, *chunk)))
            else:
                values = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(chunk))
                names = ", ".join(f"k{i}" for i in range(width))
                on = " AND ".join(f"t.{c} = k.k{i}" for i, c in enumerate(key_columns))
                sql = (f"WITH k ({names}) AS (VALUES {values}) "
                       f"SELECT {_qualified(columns)} "
                       f"FROM k JOIN {table} t ON t.platform = ? AND {on}")
                rows.extend(self.store.query(sql, [x for key in chunk for x in key] + [platform]))
        return rows

    def works_below(self, platform: str, works: Collection[str],
                    rows_max: int = WORKS_BELOW_ROWS_MAX) -> list[tuple[Any, ...]]:
        """The rows (`WORK_COLUMNS`) of the works below `works` through
        which value flows: components of outputs that pass value on, down to
        the contributions, in one query instead of one per level of the
        sub-DAG; at most `rows_max` of them (the caller asks again for what
        it still lacks).  `works` themselves are not among them unless one
        lies below another."""
        if self.dialect is POSTGRES:
            return self.store.query(_WORKS_BELOW["postgresql"], (platform, list(works), platform, rows_max, platform))
        return self.store.query(_WORKS_BELOW["sqlite"],
                                (platform, orjson.dumps(list(works)).decode(), platform, rows_max, platform))

    def head(self, platform: str) -> Head | None:
        return self.heads([platform]).get(platform)

    def heads(self, platforms: Collection[str]) -> dict[str, Head]:
        """Each platform's head, in one query (a batch's platforms, under their locks)."""
        return {p: Head(seq, fee, Frontier.restore(seq, edge)) for p, (seq, fee, edge) in self.head_rows(platforms).items()}

    def head_rows(self, platforms: Collection[str]) -> dict[str, tuple[int, int, bytes]]:
        """Each platform's head row (seq, fee_bps, tree edge), in one query."""
        if not platforms:
            return {}
        if self.dialect is POSTGRES:
            rows = self.store.query("SELECT platform, seq, fee_bps, tree_edge FROM peerledger_heads "
                                    "WHERE platform = ANY(%s)", (list(platforms),))
        else:
            marks = ", ".join("?" * len(platforms))
            rows = self.store.query("SELECT platform, seq, fee_bps, tree_edge FROM peerledger_heads "
                                    f"WHERE platform IN ({marks})", tuple(platforms))
        return {p: (int(seq), int(fee), bytes(edge)) for p, seq, fee, edge in rows}

    def prosumers(self, platform: str, ids: Collection[str]) -> set[str]:
        return {r[0] for r in self.select("peerledger_prosumers", "prosumer", ("prosumer",), platform, ids)}

    def works(self, platform: str, ids: Collection[str]) -> dict[str, Work]:
        rows = self.select("peerledger_works", WORK_COLUMNS, ("work",), platform, ids)
        return {w: _work_row(*rest) for w, *rest in rows}

    def dependents(self, platform: str, ids: Collection[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for work, dependent in self.select("peerledger_dependents", "work, dependent", ("work",), platform, ids):
            found.setdefault(work, []).append(dependent)
        for deps in found.values():
            deps.sort()  # the walk's order never depends on the database's
        return found

    def values(self, platform: str, ids: Collection[str]) -> dict[str, ValueRecord]:
        rows = self.select("peerledger_values",
                            "value, work, amount, currency, fee_bps, vector_version, reversed, seq",
                            ("value",), platform, ids)
        return {v: ValueRecord(v, w, int(a), cur, int(fee), int(ver), int(rev), int(s))
                for v, w, a, cur, fee, ver, rev, s in rows}

    def payouts(self, platform: str, ids: Collection[str]) -> dict[str, PayoutRecord]:
        rows = self.select("peerledger_payouts", "payout, prosumer, amount, currency, seq, returned_seq",
                           ("payout",), platform, ids)
        return {p: PayoutRecord(p, who, int(a), cur, int(s), int(r)) for p, who, a, cur, s, r in rows}

    def vectors(self, platform: str, keys: Collection[VectorKey]) -> dict[VectorKey, ShareVector]:
        rows = self.select("peerledger_vectors", "work, version, vector", ("work", "version"), platform, keys)
        return {(w, int(ver)): from_json_obj(orjson.loads(bytes(blob))) for w, ver, blob in rows}

    def balances(self, platform: str, keys: Collection[BalanceKey]) -> dict[BalanceKey, Figures]:
        rows = self.select("peerledger_balances", "account, currency, earned, reversed, paid",
                            ("account", "currency"), platform, keys)
        return {(a, c): Figures(int(e), int(r), int(p)) for a, c, e, r, p in rows}

    def statements(self, platform: str, keys: Collection[StatementKey]) -> dict[StatementKey, Figures]:
        rows = self.select("peerledger_statements", "account, period, currency, earned, reversed, paid",
                            ("account", "period", "currency"), platform, keys)
        return {(a, m, c): Figures(int(e), int(r), int(p)) for a, m, c, e, r, p in rows}

    def pools(self, platform: str, ids: Collection[str]) -> dict[str, PoolRecord]:
        rows = self.select("peerledger_pools", "pool, currency, method, funded, closed, seq", ("pool",), platform, ids)
        return {p: PoolRecord(p, cur, method, int(funded), bool(closed), int(seq))
                for p, cur, method, funded, closed, seq in rows}

    def pool_members(self, platform: str, pool: str) -> Iterator[tuple[str, int, list[tuple[str, int]]]]:
        """(subscriber, funded, [(work, uses)]) in subscriber order: the
        funding and the usage rows, each read a page at a time (keyset
        pagination on their primary keys) and merged."""
        funding = self._pages("SELECT subscriber, funded FROM peerledger_pool_funding WHERE platform = ? AND "
                              "pool = ?", ("subscriber",), (platform, pool))
        usage = self._pages("SELECT subscriber, work, uses FROM peerledger_pool_usage WHERE platform = ? AND "
                            "pool = ?", ("subscriber", "work"), (platform, pool))
        funded_row = next(funding, None)
        used_row = next(usage, None)
        while funded_row is not None or used_row is not None:
            subscriber = min(r[0] for r in (funded_row, used_row) if r is not None)
            funded = 0
            if funded_row is not None and funded_row[0] == subscriber:
                funded = int(funded_row[1])
                funded_row = next(funding, None)
            uses: list[tuple[str, int]] = []
            while used_row is not None and used_row[0] == subscriber:
                uses.append((used_row[1], int(used_row[2])))
                used_row = next(usage, None)
            yield subscriber, funded, uses

    def _pages(self, select: str, keys: tuple[str, ...], params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        order = ", ".join(keys)
        after: tuple[Any, ...] | None = None
        while True:
            if after is None:
                rows = self.store.query(f"{select} ORDER BY {order} LIMIT ?", (*params, POOL_PAGE_ROWS))
            else:
                marks = ", ".join("?" * len(keys))
                rows = self.store.query(f"{select} AND ({order}) > ({marks}) ORDER BY {order} LIMIT ?",
                                        (*params, *after, POOL_PAGE_ROWS))
            if not rows:
                return
            yield from rows
            after = tuple(rows[-1][:len(keys)])

    def all_balances(self, platform: str) -> Iterator[tuple[BalanceKey, Figures]]:
        for a, c, e, r, p in self.store.query(
                "SELECT account, currency, earned, reversed, paid FROM peerledger_balances WHERE platform = ?",
                (platform,)):
            yield (a, c), Figures(int(e), int(r), int(p))


# -- writing a batch's rows, inside the append transaction ----------------------


@dataclass(frozen=True)
class TableWrite:
    """How one state table is written: its columns (platform first), the key
    a row is merged on, each column's PostgreSQL type (the arrays of the
    one statement per table), and what a row whose key exists does: nothing
    (`None`: a plain insert; a second row of a key fails the transaction,
    which is how two writers that skipped the platform's lock are caught),
    or the SET clause of an upsert."""

    table: str
    columns: tuple[str, ...]
    pg_types: tuple[str, ...]
    keys: tuple[str, ...]
    on_conflict: str | None = None
    money: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        assert len(self.columns) == len(self.pg_types) and self.columns[0] == "platform"
        assert set(self.keys) <= set(self.columns) and set(self.money) <= set(self.columns)


def _set(*columns: str) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


def _add(table: str, column: str) -> str:
    return f"{column} = {table}.{column} + excluded.{column}"


# In the order they are written (heads first: a batch's head is its claim).
# Funding and usage add up in SQL: a pool's rows are many and only its close
# reads them, so the writer never reads them first.  Both stay below 2^63: a
# pool's total funding is capped there (§7), and a subscriber's uses of one
# work would need billions of events to reach it.
TABLE_WRITES: tuple[TableWrite, ...] = (
    TableWrite("peerledger_heads", ("platform", "seq", "fee_bps", "tree_edge"), ("text", "bigint", "integer", "bytea"),
               ("platform",), _set("seq", "fee_bps", "tree_edge")),
    TableWrite("peerledger_prosumers", ("platform", "prosumer", "seq"), ("text", "text", "bigint"),
               ("platform", "prosumer")),
    TableWrite("peerledger_works", ("platform", "work", "kind", "authors", "components", "upstream_bps", "retracted",
                                    "version", "seq"),
               ("text", "text", "text", "text", "text", "integer", "boolean", "bigint", "bigint"),
               ("platform", "work"), _set("authors", "retracted", "version")),
    TableWrite("peerledger_dependents", ("platform", "work", "dependent"), ("text", "text", "text"),
               ("platform", "work", "dependent")),
    TableWrite("peerledger_payouts", ("platform", "payout", "prosumer", "amount", "currency", "seq", "returned_seq"),
               ("text", "text", "text", "bigint", "text", "bigint", "bigint"), ("platform", "payout"),
               _set("returned_seq")),
    TableWrite("peerledger_bookings", ("platform", "seq", "col", "currency", "entries"),
               ("text", "bigint", "text", "text", "text"), ("platform", "seq")),
    TableWrite("peerledger_values", ("platform", "value", "work", "vector_version", "fee_bps", "amount", "currency",
                                     "reversed", "seq"),
               ("text", "text", "text", "bigint", "integer", "bigint", "text", "bigint", "bigint"),
               ("platform", "value"), _set("reversed")),
    TableWrite("peerledger_vectors", ("platform", "work", "version", "vector", "explanation"),
               ("text", "text", "bigint", "bytea", "bytea"), ("platform", "work", "version")),
    TableWrite("peerledger_balances", ("platform", "account", "currency", "earned", "reversed", "paid", "balance"),
               ("text", "text", "text", "numeric", "numeric", "numeric", "numeric"), ("platform", "account", "currency"),
               _set("earned", "reversed", "paid", "balance"), _MONEY),
    TableWrite("peerledger_statements", ("platform", "account", "period", "currency", "earned", "reversed", "paid"),
               ("text", "text", "text", "text", "numeric", "numeric", "numeric"),
               ("platform", "account", "period", "currency"), _set("earned", "reversed", "paid"),
               frozenset({"earned", "reversed", "paid"})),
    TableWrite("peerledger_pools", ("platform", "pool", "currency", "method", "funded", "closed", "seq", "explanation"),
               ("text", "text", "text", "text", "bigint", "boolean", "bigint", "bytea"), ("platform", "pool"),
               "funded = excluded.funded, closed = excluded.closed, "
               "explanation = COALESCE(excluded.explanation, peerledger_pools.explanation)"),
    TableWrite("peerledger_pool_funding", ("platform", "pool", "subscriber", "funded"), ("text", "text", "text", "bigint"),
               ("platform", "pool", "subscriber"), _add("peerledger_pool_funding", "funded")),
    TableWrite("peerledger_pool_usage", ("platform", "pool", "subscriber", "work", "uses"),
               ("text", "text", "text", "text", "bigint"), ("platform", "pool", "subscriber", "work"),
               _add("peerledger_pool_usage", "uses")),
)
WRITES_BY_TABLE = {t.table: t for t in TABLE_WRITES}


@dataclass
class StateRows:
    """A batch's rows of the state tables, every platform's together, as
    written: each row a tuple in its `TableWrite`'s column order, platform
    first, one row per key (a batch's changes to a row are merged into it).
    Both engines give these (the reference through `rows_of`), so the
    differential tests compare them as they are.  `digests` names the
    (platform, seq) whose balances digest the batch records: those that
    crossed a multiple of `DIGEST_EVERY_SEQ`."""

    tables: dict[str, list[tuple[Any, ...]]]
    digests: list[tuple[str, int]]

    def __post_init__(self) -> None:
        assert set(self.tables) <= set(WRITES_BY_TABLE), set(self.tables) - set(WRITES_BY_TABLE)

    @classmethod
    def merged(cls, parts: Sequence[StateRows]) -> StateRows:
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for part in parts:
            for table, rows in part.tables.items():
                tables.setdefault(table, []).extend(rows)
        return cls(tables, [d for part in parts for d in part.digests])

    def count(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


def rows_of(changes: Changes) -> StateRows:
    """The reference engine's changes of one platform as rows."""
    p = changes.platform
    head = changes.head
    t: dict[str, list[tuple[Any, ...]]] = {"peerledger_heads": [(p, head.seq, head.fee_bps, head.tree.edge())]}

    def put(table: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            t[table] = rows

    put("peerledger_prosumers", [(p, prosumer, seq) for prosumer, seq in changes.prosumers])
    put("peerledger_works", [(p, w, work.kind, _weights_text(work.authors), _weights_text(work.components),
                              work.upstream_bps, work.retracted, work.version, seq)
                             for w, (work, seq) in changes.works.items()])
    put("peerledger_dependents", [(p, w, dep) for w, dep in changes.dependents])
    put("peerledger_payouts", [(p, r.payout, r.prosumer, r.amount_minor, r.currency, r.seq, r.returned_seq)
                               for r in changes.payouts.values()])
    put("peerledger_bookings", [(p, *row) for row in changes.bookings])
    put("peerledger_values", [(p, v.value, v.work, v.vector_version, v.fee_bps, v.amount_minor, v.currency,
                               v.reversed_minor, v.seq) for v in changes.values.values()])
    put("peerledger_vectors", [(p, w, version, orjson.dumps(to_json_obj(vector)), orjson.dumps(explanation))
                               for w, version, vector, explanation in changes.vectors])
    put("peerledger_balances", [(p, a, cur, f.earned, f.reversed, f.paid, f.balance)
                                for (a, cur), f in changes.balances.items()])
    put("peerledger_statements", [(p, a, month, cur, f.earned, f.reversed, f.paid)
                                  for (a, month, cur), f in changes.statements.items()])
    put("peerledger_pools", [(p, pool.pool, pool.currency, pool.method, pool.funded_minor, pool.closed, pool.seq,
                              orjson.dumps(changes.pool_explanations[name])
                              if name in changes.pool_explanations else None)
                             for name, pool in changes.pools.items()])
    put("peerledger_pool_funding", [(p, pool, s, units) for (pool, s), units in changes.funding.items()])
    put("peerledger_pool_usage", [(p, pool, s, w, n) for (pool, s, w), n in changes.usage.items()])
    return StateRows(t, [(p, head.seq)] if changes.digest_due else [])


def _statement(d: Dialect, spec: TableWrite) -> str:
    """The one statement that writes a table's rows: executemany of an
    INSERT on SQLite (in process: no round trips to save), one INSERT … FROM
    unnest(arrays) on PostgreSQL (one round trip and one plan per table
    and batch, whatever the number of rows)."""
    columns = ", ".join(spec.columns)
    conflict = "" if spec.on_conflict is None else (
        f" ON CONFLICT ({', '.join(spec.keys)}) DO UPDATE SET {spec.on_conflict}")
    if d is POSTGRES:
        arrays = ", ".join(f"%s::{t}[]" for t in spec.pg_types)
        return f"INSERT INTO {spec.table} ({columns}) SELECT * FROM unnest({arrays}){conflict}"
    marks = ", ".join("?" * len(spec.columns))
    return f"INSERT INTO {spec.table} ({columns}) VALUES ({marks}){conflict}"


_STATEMENTS: dict[tuple[str, str], str] = {}


def write_rows(c: Any, d: Dialect, rows: StateRows) -> None:
    """Write a batch's state rows with cursor `c` (in the batch's transaction):
    one statement per table."""
    for spec in TABLE_WRITES:
        table_rows = rows.tables.get(spec.table)
        if not table_rows:
            continue
        key = (d.name, spec.table)
        statement = _STATEMENTS.get(key)
        if statement is None:
            statement = _STATEMENTS[key] = _statement(d, spec)
        if d is POSTGRES:
            c.execute(statement, [list(column) for column in zip(*table_rows)])
            continue
        try:
            # Money columns are TEXT on SQLite: an int bound to one is stored as
            # its decimal text by SQLite itself.  Only sums beyond 64 bits, which
            # sqlite3 cannot bind, are turned into text here.
            c.executemany(statement, table_rows)
        except OverflowError:
            if not spec.money:
                raise
            at = [i for i, name in enumerate(spec.columns) if name in spec.money]
            c.executemany(statement, [tuple(str(x) if i in at else x for i, x in enumerate(r)) for r in table_rows])
    for platform, seq in rows.digests:
        c.execute(_sql(d, UPSERT_DIGEST), (platform, seq, platform_digest(c, d, platform)))


# Balance rows a digest reads from the database at a time: a platform's
# digest covers all its accounts, and a writer's memory must not grow with them.
DIGEST_PAGE_ROWS = 10_000


def platform_digest(c: Any, d: Dialect, platform: str) -> str:
    """The balances digest of `platform` (EVENTS.md §5) from its rows in
    the table, streamed (`streamed_balances`)."""
    return balances_digest(balance_row(account, currency, f) for account, currency, f in streamed_balances(c, d, platform))


def streamed_balances(c: Any, d: Dialect, platform: str) -> Iterator[tuple[str, str, Figures]]:
    """`platform`'s balance rows as (account, currency, figures) in code point
    order (SQLite's BINARY collation is UTF-8 byte order, which is code point
    order; PostgreSQL's is asked for as "C"), DIGEST_PAGE_ROWS at a time, with
    cursor `c` of an open transaction: one statement, so one snapshot, and
    memory that does not grow with the platform's accounts."""
    order = ' COLLATE "C"' if d is POSTGRES else ""
    sql = _sql(d, "SELECT account, currency, earned, reversed, paid FROM peerledger_balances "
                  f"WHERE platform = ? ORDER BY account{order}, currency{order}")
    if d is POSTGRES:
        # A server-side cursor: psycopg's ordinary cursor fetches the whole result.
        with c.connection.cursor(name="peerledger_balances_stream") as server:
            server.execute(sql, (platform,))
            yield from _paged(server)
        return
    raw = c.sqlite_cursor  # eventsourcing's wrapper has no fetchmany
    raw.execute(sql, (platform,))
    yield from _paged(raw)


def _paged(cursor: Any) -> Iterator[tuple[str, str, Figures]]:
    while page := cursor.fetchmany(DIGEST_PAGE_ROWS):
        for r in page:
            account, currency, earned, reversed_, paid = r.values() if isinstance(r, dict) else r
            yield account, currency, Figures(int(earned), int(reversed_), int(paid))


def _sql(d: Dialect, statement: str) -> str:
    return d.sql(statement)


UPSERT_DIGEST = ("INSERT INTO peerledger_digests (platform, seq, digest) VALUES (?, ?, ?) "
                 "ON CONFLICT (platform, seq) DO UPDATE SET digest = excluded.digest")
