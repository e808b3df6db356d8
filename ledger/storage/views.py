"""Read models in the database, written with their tracking record.

The fold (`projections.fold.PlatformFold`) holds the exact figures; the
projector (`ledger.ingest.projector`) writes the rows its events touched, as absolute
values, and records the platform's position with eventsourcing's tracking
recorder (application name `views:<platform>`, notification id = seq) in the
same transaction.  Because rows and position commit together, a read model
is never half-applied, and a restarted projector resumes from the tracked
seq: nothing is applied twice.  Queries read these tables; `--as-of`
queries and `verify` replay the log instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Iterable

import orjson
from eventsourcing.persistence import IntegrityError

from attribution.shares import from_json_obj, to_json_obj
from ledger.storage.store import Dialect, Store
from projections.balances import balance_rows, balances_digest
from projections.explain import explain_value, work_explanation
from projections.fold import Applied, PlatformFold

# A balances digest is recorded whenever a flush crosses a multiple of this
# seq; `verify` compares its replay with every recorded one.
DIGEST_EVERY_SEQ = 10_000
# Read models are written at least every this many events: rows of hot
# accounts are written once per flush instead of once per event, and the
# touched-key sets (the flush's memory) stay bounded.
VIEWS_FLUSH_EVENTS = 20_000


def tracking_name(platform: str) -> str:
    return f"views:{platform}"


def views_ddl(d: Dialect) -> list[str]:
    n = d.big_int
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_balances (platform TEXT NOT NULL, "
        f"account TEXT NOT NULL, currency TEXT NOT NULL, earned {n} NOT NULL, "
        f"reversed {n} NOT NULL, paid {n} NOT NULL, balance {n} NOT NULL, "
        "PRIMARY KEY (platform, account, currency))",
        "CREATE TABLE IF NOT EXISTS peerledger_statements (platform TEXT NOT NULL, "
        "account TEXT NOT NULL, period TEXT NOT NULL, currency TEXT NOT NULL, "
        f"earned {n} NOT NULL, reversed {n} NOT NULL, paid {n} NOT NULL, "
        "PRIMARY KEY (platform, account, period, currency))",
        "CREATE TABLE IF NOT EXISTS peerledger_values (platform TEXT NOT NULL, "
        "value TEXT NOT NULL, work TEXT NOT NULL, vector_version BIGINT NOT NULL, "
        "fee_bps INTEGER NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL, "
        "reversed BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (platform, value))",
        "CREATE TABLE IF NOT EXISTS peerledger_vectors (platform TEXT NOT NULL, "
        f"work TEXT NOT NULL, version BIGINT NOT NULL, vector {d.blob} NOT NULL, "
        f"explanation {d.blob} NOT NULL, PRIMARY KEY (platform, work, version))",
        "CREATE TABLE IF NOT EXISTS peerledger_digests (platform TEXT NOT NULL, "
        "seq BIGINT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (platform, seq))",
    ]


# Bump when the statements change: existing databases then run them once more.
VIEWS_SCHEMA_VERSION = 1


def create_views(store: Store) -> None:
    store.ensure_schema("views", VIEWS_SCHEMA_VERSION, views_ddl(store.dialect))


def _money(d: Dialect, value: int) -> Any:
    return str(value) if d.big_int == "TEXT" else value


def _conflict_update(keys: str, columns: Iterable[str]) -> str:
    return f" ON CONFLICT ({keys}) DO UPDATE SET " + ", ".join(
        f"{c} = excluded.{c}" for c in columns
    )


UPSERT_BALANCE = (
    "INSERT INTO peerledger_balances VALUES (?, ?, ?, ?, ?, ?, ?)"
    + _conflict_update("platform, account, currency", ("earned", "reversed", "paid", "balance"))
)
UPSERT_STATEMENT = (
    "INSERT INTO peerledger_statements VALUES (?, ?, ?, ?, ?, ?, ?)"
    + _conflict_update("platform, account, period, currency", ("earned", "reversed", "paid"))
)
UPSERT_VALUE = (
    "INSERT INTO peerledger_values VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    + _conflict_update("platform, value", ("reversed",))
)
INSERT_VECTOR = (
    "INSERT INTO peerledger_vectors VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (platform, work, version) DO NOTHING"
)
UPSERT_DIGEST = (
    "INSERT INTO peerledger_digests VALUES (?, ?, ?)"
    + _conflict_update("platform, seq", ("digest",))
)


@dataclass
class Touched:
    """What changed in one platform's read models since they were last written."""

    balances: set[tuple[str, str]] = field(default_factory=set)
    statements: set[tuple[str, str, str]] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    # (work, version) -> (vector blob, explanation blob), captured when the
    # first sale at that version is applied (the graph may move on later).
    vectors: dict[tuple[str, int], tuple[bytes, bytes]] = field(default_factory=dict)


class ViewWriter:
    """Keeps one platform's read models up to date with its fold.

    `note` records what each applied event touched; `flush` writes those rows
    (absolute figures from the fold) and the tracking record in one
    transaction, so the read models are always those of one seq.
    """

    flush_every_events = VIEWS_FLUSH_EVENTS

    def __init__(self, fold: PlatformFold, stored_vectors: set[tuple[str, int]], tracked_seq: int) -> None:
        self.fold = fold
        self.stored_vectors = stored_vectors
        self.tracked_seq = tracked_seq
        self.touched = Touched()

    @property
    def pending_events(self) -> int:
        return self.fold.seq - self.tracked_seq

    def note(self, applied: Applied) -> None:
        t = self.touched
        if applied.bookings:
            # zip/repeat build the keys in C: this runs for every booking.
            currency, month = repeat(applied.currency), repeat(applied.month)
            t.balances.update(zip(applied.bookings, currency))
            t.statements.update(zip(applied.bookings, month, currency))
        value = applied.value
        if value is not None:
            t.values.add(value.value)
            key = (value.work, value.vector_version)
            if key not in self.stored_vectors and key not in t.vectors:
                t.vectors[key] = (
                    orjson.dumps(to_json_obj(self.fold.graph.vector(value.work))),
                    orjson.dumps(work_explanation(self.fold.graph, value.work)),
                )

    def flush(self, store: Store) -> None:
        """Write the touched rows and the fold's seq as the tracking record."""
        if self.pending_events <= 0:
            return
        # Projectors of one platform write one at a time: two flushes
        # upserting overlapping rows in different orders would deadlock.
        with store.platform_locks([self.fold.platform], purpose="views"):
            self._flush_locked(store)

    def _flush_locked(self, store: Store) -> None:
        # Another projector may have written the views past our seq
        # meanwhile: ours are then older, and theirs include our events.
        tracked_now = store.tracked_seq(tracking_name(self.fold.platform))
        if tracked_now >= self.fold.seq:
            self._reset(tracked_now)
            return
        try:
            with store.transaction(commit=True) as c:
                self._write(c, store.dialect, store)
        except IntegrityError:
            # Lost the race to a projector at the same or a later seq: the
            # tracking insert refused to go backwards and rolled our rows back.
            tracked_now = store.tracked_seq(tracking_name(self.fold.platform))
            if tracked_now < self.fold.seq:
                raise  # not that race: keep our pending rows, fail loudly
            self._reset(tracked_now)
            return
        self._reset(self.fold.seq)

    def _reset(self, tracked_seq: int) -> None:
        self.stored_vectors.update(self.touched.vectors)
        self.touched = Touched()
        self.tracked_seq = tracked_seq

    def _write(self, c: Any, d: Dialect, store: Store) -> None:
        fold, t, p = self.fold, self.touched, self.fold.platform
        c.executemany(d.sql(UPSERT_BALANCE), [
            (p, a, cur, *(_money(d, x) for x in (f.earned, f.reversed, f.paid, f.balance)))
            for a, cur in sorted(t.balances)
            for f in (fold.balances[(a, cur)],)
        ])
        c.executemany(d.sql(UPSERT_STATEMENT), [
            (p, a, month, cur, *(_money(d, x) for x in (f.earned, f.reversed, f.paid)))
            for a, month, cur in sorted(t.statements)
            for f in (fold.statements[(a, month, cur)],)
        ])
        c.executemany(d.sql(UPSERT_VALUE), [
            (p, v.value, v.work, v.vector_version, v.fee_bps, v.amount_minor, v.currency,
             v.reversed_minor, v.seq)
            for name in sorted(t.values)
            for v in (fold.values[name],)
        ])
        if t.vectors:
            c.executemany(d.sql(INSERT_VECTOR), [
                (p, work, version, vector, explanation)
                for (work, version), (vector, explanation) in sorted(t.vectors.items())
            ])
        if fold.seq // DIGEST_EVERY_SEQ != self.tracked_seq // DIGEST_EVERY_SEQ:
            digest = balances_digest(balance_rows(fold.balances))
            c.execute(d.sql(UPSERT_DIGEST), (p, fold.seq, digest))
        store.insert_tracking(c, tracking_name(p), fold.seq)


def stored_vector_keys(store: Store, platform: str) -> set[tuple[str, int]]:
    return {
        (work, int(version))
        for work, version in store.query(
            "SELECT work, version FROM peerledger_vectors WHERE platform = ?", (platform,)
        )
    }


# -- queries ---------------------------------------------------------------


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
    rows = store.query(
        "SELECT v.work, v.vector_version, v.fee_bps, v.amount, v.currency, v.reversed, v.seq, "
        "w.vector, w.explanation FROM peerledger_values v JOIN peerledger_vectors w "
        "ON w.platform = v.platform AND w.work = v.work AND w.version = v.vector_version "
        "WHERE v.platform = ? AND v.value = ?",
        (platform, value),
    )
    if not rows:
        return None
    work, _version, fee_bps, amount, currency, reversed_minor, seq, vector, explanation = rows[0]
    return explain_value(
        value, work, int(amount), currency, int(fee_bps), int(reversed_minor), int(seq),
        from_json_obj(orjson.loads(bytes(vector))), orjson.loads(bytes(explanation)),
    )


def recorded_digests(store: Store, platform: str) -> dict[int, str]:
    return {int(s): d for s, d in store.query(
        "SELECT seq, digest FROM peerledger_digests WHERE platform = ?", (platform,))}
