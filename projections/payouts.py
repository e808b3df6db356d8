"""Payout runs: paying every prosumer whose balance reached a minimum.

A run is a pure function of one platform's balances at one position of its
log and of the run's options.  It plans one ``payout.issued`` per prosumer
whose balance in the run's currency is at least ``min_balance_minor``,
paying the whole balance; smaller (and negative) balances carry forward to a
later run.  The system accounts (``@platform``, ``@unattributed``) are never
paid: they are not prosumers.

What identifies a run, and why ingesting it twice pays once
------------------------------------------------------------
A run pays the balances as they stood after the event at ``seq`` (the log's
head when the run was planned), in ``currency``.  Each payout's id, used as
both the event id and the payout id, is derived from exactly that:

    payout:<currency>:<seq>:<prosumer>            e.g. payout:USD:42:alice

or, when that would be longer than the 128 characters ids may have,
``payout-h:<currency>:<seq>:<SHA-256 of the prosumer id, hex>`` (the two
forms differ in their first word, so they never collide).  The event's
``at`` is the run's too: by default the ``at`` of the event at ``seq``.  So
planning the same run again prints the same bytes, and ingesting it twice
makes every event a ``duplicate`` the second time.  Two plans of the same
head with different options pay each prosumer under the same id and amount:
the second is a duplicate, or with another ``at`` or reference a
``conflict``, never a second payment.  Plans of different heads have
different ids; each asks for a whole balance that an earlier run's payout
has since lowered, so the ledger's own rule (a payout may not exceed the
balance, ``insufficient_balance``) keeps any mix of plans, in any order,
from paying a prosumer more than they earned.

Worked example: balances in USD of alice 1 500, bob 99, carol 0, dave −20,
@platform 300 at seq 42, minimum 100: one event, ``payout:USD:42:alice`` of
1 500; bob's 99 carries forward; nobody else is paid.

An amount is at most 2^63 − 1 minor units (EVENTS.md section 1): a larger
balance is paid that much and the rest carries forward to the next run.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from projections.balances import canonical_json

# EVENTS.md section 1: ids are at most 128 characters; amounts 1 .. 2^63 - 1.
ID_MAX_CHARS = 128
AMOUNT_MAX_MINOR = 2**63 - 1
PAYOUT_ID_PREFIX = "payout"
HASHED_PAYOUT_ID_PREFIX = "payout-h"
# System accounts start with "@", which prosumer ids cannot.
SYSTEM_ACCOUNT_PREFIX = "@"
CSV_HEADER = ("prosumer", "amount", "currency", "payout", "reference")


@dataclass(frozen=True, slots=True)
class PayoutRun:
    """What a run pays, and what identifies it (see the module docstring)."""

    platform: str
    currency: str
    seq: int  # the log position whose balances the run pays
    at: str | None  # every event's `at`; None only for an empty log (nothing to pay)
    min_balance_minor: int  # >= 1
    reference: str | None = None  # copied into every event (free text, <= 200 characters)


@dataclass(frozen=True, slots=True)
class PayoutPlan:
    """A planned run: its ``payout.issued`` events in prosumer id order, and
    how many prosumers with a positive balance below the minimum carry it forward."""

    run: PayoutRun
    events: tuple[dict[str, Any], ...]
    carried_forward: int

    @property
    def total_minor(self) -> int:
        return sum(e["data"]["amount"] for e in self.events)


def payout_id(currency: str, seq: int, prosumer: str) -> str:
    """The id of the payout a run at ``seq`` makes to ``prosumer`` in ``currency``.

    >>> payout_id("USD", 42, "alice")
    'payout:USD:42:alice'
    >>> payout_id("USD", 42, "p" * 128)[:20], len(payout_id("USD", 42, "p" * 128))
    ('payout-h:USD:42:59c6', 80)
    """
    assert type(seq) is int and seq >= 1
    plain = f"{PAYOUT_ID_PREFIX}:{currency}:{seq}:{prosumer}"
    if len(plain) <= ID_MAX_CHARS:
        return plain
    digest = hashlib.sha256(prosumer.encode("utf-8")).hexdigest()
    hashed = f"{HASHED_PAYOUT_ID_PREFIX}:{currency}:{seq}:{digest}"
    assert len(hashed) <= ID_MAX_CHARS
    return hashed


def plan_payouts(run: PayoutRun, balances: Iterable[Mapping[str, Any]]) -> PayoutPlan:
    """The run's events, from EVENTS.md section 5 balance rows (any currencies;
    only ``run.currency`` is paid).  Pure: the same run and rows give the same
    events, byte for byte once serialised."""
    assert type(run.min_balance_minor) is int and 1 <= run.min_balance_minor <= AMOUNT_MAX_MINOR
    assert type(run.seq) is int and run.seq >= 0
    payable: list[tuple[str, int]] = []
    carried = 0
    for row in balances:
        account, balance = row["account"], row["balance"]
        if row["currency"] != run.currency or account.startswith(SYSTEM_ACCOUNT_PREFIX):
            continue
        if balance >= run.min_balance_minor:
            payable.append((account, balance))
        elif balance > 0:
            carried += 1
    payable.sort()  # prosumer id order, whatever order the rows came in
    assert run.at is not None or not payable, "a run that pays needs its `at`"
    events = []
    for prosumer, balance in payable:
        amount = min(balance, AMOUNT_MAX_MINOR)
        pid = payout_id(run.currency, run.seq, prosumer)
        data: dict[str, Any] = {"payout": pid, "prosumer": prosumer, "amount": amount, "currency": run.currency}
        if run.reference is not None:
            data["reference"] = run.reference
        events.append({"v": 1, "id": pid, "platform": run.platform, "type": "payout.issued", "at": run.at,
                       "data": data})
    plan = PayoutPlan(run, tuple(events), carried)
    # Every balance at or over the minimum is paid, all of it (up to the amount limit).
    assert plan.total_minor == sum(min(b, AMOUNT_MAX_MINOR) for _, b in payable)
    return plan


def plan_jsonl(plan: PayoutPlan) -> bytes:
    """The plan as JSON Lines for ``peerledger ingest``: each event's canonical
    bytes (EVENTS.md section 5) and a newline, so equal runs give equal bytes."""
    return b"".join(canonical_json(event) + b"\n" for event in plan.events)


def plan_csv(plan: PayoutPlan) -> str:
    """The plan for a payment provider: a header and one row per payout
    (RFC 4180: CRLF line ends, fields quoted where needed); ``amount`` in
    minor units, ``reference`` empty when the run has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for event in plan.events:
        d = event["data"]
        writer.writerow((d["prosumer"], d["amount"], d["currency"], d["payout"], d.get("reference", "")))
    return out.getvalue()


__all__ = [
    "CSV_HEADER",
    "PayoutPlan",
    "PayoutRun",
    "payout_id",
    "plan_csv",
    "plan_jsonl",
    "plan_payouts",
]
