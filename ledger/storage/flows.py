"""The dashboard's flows in tables: a derived view that follows the log.

`ledger.ingest.projector` adds what each chunk of events contributes
(`projections.flows.FlowDeltas`) to these rows, in one transaction with
eventsourcing's tracking record `flows:<platform>` → the chunk's last seq,
and under the platform's flows lock (`lock_name`), so the rows are always
those of one seq and no event is counted twice or skipped:

| table | a row per | columns |
|---|---|---|
| `peerledger_flow_periods` | (platform, UTC month, currency) | realized, reversed (money), sales |
| `peerledger_flow_nodes` | … and column (`sold`, `paying`, `recipient`) and node | units (money) |
| `peerledger_flow_links` | … and gap (`sold_paying`, `paying_recipient`), source and target | units (money) |

Money is exact, as in the state tables (NUMERIC on PostgreSQL, decimal
TEXT on SQLite), so rows are read, added in Python and written whole.
Every figure here is a sum of positive parts (reversals are only counted
in `reversed`), never negative, which is what lets SQLite rank decimal
text exactly: by length, then text.

The dashboard (`ledger.http.dashboard`) reads one period's picture with a
few small queries (the top nodes of each column, the links among them)
whatever the number of works sold, and holds the lock while it reads, so
its queries see one seq.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ledger.storage.dialect import POSTGRES, Dialect
from ledger.storage.store import Store
from projections.flows import FlowDeltas

# Bump when the DDL changes: existing databases then run it once more.
FLOWS_SCHEMA_VERSION = 1


def flows_ddl(d: Dialect) -> list[str]:
    n = d.big_int
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_flow_periods (platform TEXT NOT NULL, period TEXT NOT NULL, "
        f"currency TEXT NOT NULL, realized {n} NOT NULL, reversed {n} NOT NULL, sales BIGINT NOT NULL, "
        "PRIMARY KEY (platform, period, currency))",
        "CREATE TABLE IF NOT EXISTS peerledger_flow_nodes (platform TEXT NOT NULL, period TEXT NOT NULL, "
        f"currency TEXT NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL, units {n} NOT NULL, "
        "PRIMARY KEY (platform, period, currency, kind, node))",
        "CREATE TABLE IF NOT EXISTS peerledger_flow_links (platform TEXT NOT NULL, period TEXT NOT NULL, "
        f"currency TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, "
        f"units {n} NOT NULL, PRIMARY KEY (platform, period, currency, kind, source, target))",
    ]


def ensure_flows_schema(store: Store) -> None:
    store.ensure_schema("flows", FLOWS_SCHEMA_VERSION, flows_ddl(store.dialect))


def tracking_name(platform: str) -> str:
    """The tracking record of the platform's flows: its value is the last seq counted."""
    return f"flows:{platform}"


def lock_name(platform: str) -> str:
    """The lock every writer (and reader) of the platform's flow rows holds
    (`Store.platform_locks(also=…)`); not the writers' append lock."""
    return f"peerledger:flows:{platform}"


UPSERT_PERIOD = ("INSERT INTO peerledger_flow_periods (platform, period, currency, realized, reversed, sales) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, period, currency) DO UPDATE SET "
                 "realized = excluded.realized, reversed = excluded.reversed, sales = excluded.sales")
UPSERT_NODE = ("INSERT INTO peerledger_flow_nodes (platform, period, currency, kind, node, units) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, period, currency, kind, node) DO UPDATE SET "
               "units = excluded.units")
UPSERT_LINK = ("INSERT INTO peerledger_flow_links (platform, period, currency, kind, source, target, units) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, period, currency, kind, source, target) "
               "DO UPDATE SET units = excluded.units")


def _money(d: Dialect, value: int) -> Any:
    return str(value) if d.big_int == "TEXT" else value


def add_deltas(store: Store, platform: str, deltas: FlowDeltas, seq: int) -> None:
    """Add `deltas` to the platform's rows and track `seq`, in one transaction.

    The caller holds the platform's flows lock: nobody else writes these
    rows between the read (one query per table and chunk of keys) and the
    write (one statement per table)."""
    d, state = store.dialect, store.state
    totals = {(p, c): (int(r), int(v), int(n)) for p, c, r, v, n in state.select(
        "peerledger_flow_periods", "period, currency, realized, reversed, sales", ("period", "currency"),
        platform, list(deltas.totals))}
    nodes = {(p, c, k, node): int(u) for p, c, k, node, u in state.select(
        "peerledger_flow_nodes", "period, currency, kind, node, units", ("period", "currency", "kind", "node"),
        platform, list(deltas.nodes))}
    links = {(p, c, k, s, t): int(u) for p, c, k, s, t, u in state.select(
        "peerledger_flow_links", "period, currency, kind, source, target, units",
        ("period", "currency", "kind", "source", "target"), platform, list(deltas.links))}
    with store.write_transaction() as c:
        if deltas.totals:
            rows = []
            for key, (realized, reversed_, sales) in sorted(deltas.totals.items()):
                old = totals.get(key, (0, 0, 0))
                rows.append((platform, *key, _money(d, old[0] + realized), _money(d, old[1] + reversed_),
                             old[2] + sales))
            c.executemany(d.sql(UPSERT_PERIOD), rows)
        if deltas.nodes:
            c.executemany(d.sql(UPSERT_NODE), [
                (platform, *key, _money(d, nodes.get(key, 0) + units)) for key, units in sorted(deltas.nodes.items())])
        if deltas.links:
            c.executemany(d.sql(UPSERT_LINK), [
                (platform, *key, _money(d, links.get(key, 0) + units)) for key, units in sorted(deltas.links.items())])
        store.insert_tracking(c, tracking_name(platform), seq)


# -- reading a period's picture ------------------------------------------------


def periods(store: Store, platform: str) -> list[tuple[str, str, int, int, int]]:
    """(period, currency, realized, reversed, sales) of every period with a
    sale or a reversal, in (period, currency) order.  A row per month and
    currency: a few hundred after years."""
    rows = store.query("SELECT period, currency, realized, reversed, sales FROM peerledger_flow_periods "
                       "WHERE platform = ?", (platform,))
    return sorted((p, c, int(r), int(v), int(n)) for p, c, r, v, n in rows)


def top_nodes(store: Store, platform: str, period: str, currency: str, kind: str, limit: int,
              always: Sequence[str] = ()) -> dict[str, int]:
    """node -> units of the `limit` largest nodes of a column (ties by node
    id in code point order) other than `always`, and of those of `always`
    that have units."""
    where = "platform = ? AND period = ? AND currency = ? AND kind = ?"
    at: tuple[Any, ...] = (platform, period, currency, kind)
    if store.dialect is POSTGRES:
        order = 'units DESC, node COLLATE "C"'
    else:  # decimal text without sign or leading zeros: longer is larger
        order = "length(units) DESC, units DESC, node"
    marks = ", ".join("?" * len(always))
    statement = (f"SELECT node, units FROM (SELECT node, units FROM peerledger_flow_nodes WHERE {where}"
                 + (f" AND node NOT IN ({marks})" if always else "") + f" ORDER BY {order} LIMIT ?) AS ranked")
    params: tuple[Any, ...] = (*at, *always, limit)
    if always:
        statement += f" UNION ALL SELECT node, units FROM peerledger_flow_nodes WHERE {where} AND node IN ({marks})"
        params += (*at, *always)
    return {node: int(units) for node, units in store.query(statement, params)}


def link_units(store: Store, platform: str, period: str, currency: str, kind: str, sources: Collection[str],
               targets: Collection[str]) -> dict[tuple[str, str], int]:
    """(source, target) -> units of the links of a gap between `sources` and `targets`."""
    if not sources or not targets:
        return {}
    rows = store.query(
        "SELECT source, target, units FROM peerledger_flow_links WHERE platform = ? AND period = ? "
        f"AND currency = ? AND kind = ? AND source IN ({', '.join('?' * len(sources))}) "
        f"AND target IN ({', '.join('?' * len(targets))})",
        (platform, period, currency, kind, *sources, *targets))
    return {(s, t): int(units) for s, t, units in rows}
