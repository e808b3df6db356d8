"""Replay a platform's log from the store alone: `--as-of` queries and `verify`.

`verify` rebuilds everything from the stored canonical bytes with a fresh
fold and compares, in this order, and stops at the first difference:

1. per seq: the stored event is well-formed, its id is new, the ledger rules
   allow it at that point (the write side decided the same), the leaf
   hash and effect hash recorded when it was appended equal the replay's,
   and every Merkle tree node the event completes equals the stored one
   (`ledger.audit.tree.TreeCheck`), as does the root at each signed checkpoint;
2. per recorded seq: the balances digest recorded by the live ledger;
3. at the end: the live read models (balances, statements, values, tracking)
   equal the rebuilt ones, row for row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ledger.audit.tree import TreeCheck
from ledger.contract import rules
from ledger.contract.schema import InvalidEvent, parse_event
from ledger.storage.store import LogGap, Store, leaf_hash
from ledger.storage.views import read_balances, recorded_digests, tracking_name
from projections.balances import balance_rows, balances_digest
from projections.fold import PlatformFold


@dataclass
class VerifyReport:
    platform: str
    ok: bool
    events: int
    digest: str
    difference: str | None = None
    digests_checked: int = 0


def verify(store: Store, platform: str) -> VerifyReport:
    try:
        return _verify(store, platform)
    except LogGap as gap:  # the log is read in seq order: everything before the gap was checked
        return VerifyReport(platform, False, gap.seq - 1, "", f"seq {gap.seq}: missing from the stored log "
                                                             "(event removed?)")


def _verify(store: Store, platform: str) -> VerifyReport:
    fold = PlatformFold(platform)
    seen_ids: set[str] = set()
    digests = recorded_digests(store, platform)
    checked = 0

    def fail(message: str) -> VerifyReport:
        return VerifyReport(platform, False, fold.seq, "", message, checked)

    ids: Iterator[tuple[str, int, bytes, bytes, str]] = store.id_records(platform)
    tree = TreeCheck(store, platform)
    for stored in store.read_log(platform):
        seq = stored.originator_version
        record = next(ids, None)
        try:
            parsed = parse_event(stored.state)
        except InvalidEvent as e:
            return fail(f"seq {seq}: stored event is not a valid v1 event: {e.message}")
        if parsed.canonical != stored.state:
            return fail(f"seq {seq}: stored bytes are not canonical")
        event = parsed.event
        if event["platform"] != platform or event["type"] != stored.topic:
            return fail(f"seq {seq}: platform or type differs from the log's")
        if event["id"] in seen_ids:
            return fail(f"seq {seq}: event id {event['id']!r} appears twice in the log")
        refusal = rules.check(fold, event)
        if refusal is not None:
            return fail(f"seq {seq}: the rules refuse this event on replay: {refusal.code}: {refusal.message}")
        applied = fold.apply(event, seq)
        seen_ids.add(event["id"])
        if record is None or record[1] != seq or record[0] != event["id"]:
            return fail(f"seq {seq}: id record missing or for another event")
        if record[2] != leaf_hash(stored.state):
            return fail(f"seq {seq}: leaf hash recorded at append differs from the stored bytes'")
        if problem := tree.leaf(seq, record[2]):
            return fail(problem)
        if record[3] != applied.effect_hash():
            return fail(f"seq {seq}: bookings differ from those recorded when the event was appended")
        if seq in digests:
            checked += 1
            replayed = balances_digest(balance_rows(fold.balances))
            if replayed != digests[seq]:
                return fail(f"seq {seq}: balances digest {replayed} differs from recorded {digests[seq]}")
    if next(ids, None) is not None:
        return fail(f"seq {fold.seq + 1}: id record without an event (event removed?)")
    if problem := tree.finish():
        return fail(problem)
    if max(digests, default=0) > fold.seq:
        return fail(f"seq {max(digests)}: a digest was recorded beyond the log's end ({fold.seq})")

    rows = balance_rows(fold.balances)
    digest = balances_digest(rows)
    tracked = store.tracked_seq(tracking_name(platform))
    if tracked != fold.seq:
        return fail(f"read models are at seq {tracked}, the log at {fold.seq}")
    live = read_balances(store, platform)
    if live != rows:
        first = next((f"{a} != {b}" for a, b in zip(live, rows) if a != b), f"{len(live)} rows != {len(rows)} rows")
        return fail(f"live balances differ from the replay: {first}")
    live_statements = {
        (a, m, c): (int(e), int(r), int(p))
        for a, m, c, e, r, p in store.query(
            "SELECT account, period, currency, earned, reversed, paid FROM peerledger_statements "
            "WHERE platform = ?", (platform,))
    }
    rebuilt_statements = {k: (f.earned, f.reversed, f.paid) for k, f in fold.statements.items()}
    if live_statements != rebuilt_statements:
        diff = sorted(set(live_statements.items()) ^ set(rebuilt_statements.items()))
        return fail(f"live statements differ from the replay at {diff[0][0]}")
    live_values = {
        v: (w, int(ver), int(fee), int(amt), cur, int(rev), int(s))
        for v, w, ver, fee, amt, cur, rev, s in store.query(
            "SELECT value, work, vector_version, fee_bps, amount, currency, reversed, seq "
            "FROM peerledger_values WHERE platform = ?", (platform,))
    }
    rebuilt_values = {
        v.value: (v.work, v.vector_version, v.fee_bps, v.amount_minor, v.currency, v.reversed_minor, v.seq)
        for v in fold.values.values()
    }
    if live_values != rebuilt_values:
        diff = sorted(set(live_values.items()) ^ set(rebuilt_values.items()))
        return fail(f"live value explanations differ from the replay at value {diff[0][0]!r}")
    return VerifyReport(platform, True, fold.seq, digest, None, checked)
