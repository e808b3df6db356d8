"""The ledger-state rules of EVENTS.md §2 and §4, in the spec's order.

`check` is asked, on the write side and in log order, whether an event that
passed the schema (shape) and is neither a duplicate nor a conflict may be
appended to the log as it stands.  It reads the platform's current state
(`projections.state.PlatformState`, the one the fold changes); it never
changes it.  The order of the checks is normative: `already_exists`,
then `unknown_reference`, then the remaining codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from attribution.allocation import MAX_AMOUNT_MINOR
from projections.state import PlatformState

INVALID = "invalid"
CONFLICT = "conflict"
UNKNOWN_REFERENCE = "unknown_reference"
ALREADY_EXISTS = "already_exists"
INSUFFICIENT_BALANCE = "insufficient_balance"
OVER_REVERSAL = "over_reversal"
INVALID_STATE = "invalid_state"

REASON_CODES = (
    INVALID,
    CONFLICT,
    UNKNOWN_REFERENCE,
    ALREADY_EXISTS,
    INSUFFICIENT_BALANCE,
    OVER_REVERSAL,
    INVALID_STATE,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


# The id each creating event type creates: (field, namespace).  Works share
# one namespace: contributions and outputs (EVENTS.md §2); so do values and
# pools (a closed pool is a value, §7).
CREATES = {
    "prosumer.registered": ("prosumer", "prosumers"),
    "contribution.recorded": ("work", "works"),
    "output.composed": ("work", "works"),
    "value.realized": ("value", "values"),
    "pool.opened": ("pool", "values"),
    "payout.issued": ("payout", "payouts"),
}
# The events that name a pool which must exist (§7).
POOL_EVENTS = ("pool.funded", "usage.recorded", "pool.closed")


def _exists(state: PlatformState, namespace: str, name: str) -> bool:
    if namespace == "works":
        return state.graph.has(name)
    if namespace == "prosumers":
        return state.prosumer_exists(name)
    if namespace == "values":
        return state.value(name) is not None or state.pool(name) is not None
    return state.payout(name) is not None


def _first_unregistered(state: PlatformState, prosumers: Iterable[str]) -> str | None:
    for prosumer in prosumers:
        if not state.prosumer_exists(prosumer):
            return prosumer
    return None


def check(state: PlatformState, event: dict[str, Any]) -> Refusal | None:
    """None if the event may be appended now, else why not."""
    data = event["data"]
    kind = event["type"]
    graph = state.graph

    # 1. already_exists: the id the event creates is taken.
    created = CREATES.get(kind)
    if created is not None:
        name, namespace = created
        if _exists(state, namespace, data[name]):
            return Refusal(ALREADY_EXISTS, f"{name} {data[name]!r} exists already")

    # 2. unknown_reference: everything referred to must exist already.
    missing = _missing_reference(state, kind, data)
    if missing is not None:
        return Refusal(UNKNOWN_REFERENCE, missing)

    # 3. the remaining codes.
    if kind == "value.reversed":
        record = state.value(data["value"])
        if record is None:  # a pool, still open: not a value yet (§7), whatever the amount
            return Refusal(INVALID_STATE, f"pool {data['value']!r} is still open: close it before reversing")
        remaining_minor = record.amount_minor - record.reversed_minor
        if data["amount"] > remaining_minor:
            return Refusal(
                OVER_REVERSAL,
                f"value {record.value!r}: reversing {data['amount']} but only "
                f"{remaining_minor} of {record.amount_minor} remains",
            )
    elif kind == "payout.issued":
        balance_minor = state.balance(data["prosumer"], data["currency"]).balance
        if data["amount"] > balance_minor:
            return Refusal(
                INSUFFICIENT_BALANCE,
                f"payout of {data['amount']} {data['currency']} exceeds "
                f"{data['prosumer']!r}'s balance of {balance_minor}",
            )
    elif kind in POOL_EVENTS:
        pool = state.pool(data["pool"])
        assert pool is not None
        if pool.closed:
            return Refusal(INVALID_STATE, f"pool {pool.pool!r} is closed")
        if kind == "pool.funded" and pool.funded_minor + data["amount"] > MAX_AMOUNT_MINOR:
            return Refusal(INVALID_STATE, f"pool {pool.pool!r}: funding {data['amount']} would take its total "
                                          f"of {pool.funded_minor} past 2^63 - 1")
    elif kind == "payout.returned":
        payout = state.payout(data["payout"])
        assert payout is not None
        if payout.returned_seq:
            return Refusal(INVALID_STATE, f"payout {payout.payout!r} was returned already (at seq "
                                          f"{payout.returned_seq}): a payout is returned whole, once")
    elif kind == "work.retracted" and graph.is_retracted(data["work"]):
        return Refusal(INVALID_STATE, f"work {data['work']!r} is already retracted")
    elif kind == "work.reinstated" and not graph.is_retracted(data["work"]):
        return Refusal(INVALID_STATE, f"work {data['work']!r} is not retracted")
    elif kind == "work.reassigned" and not data["authors"]:
        # §2: empty authors only for an output that passes everything upstream.
        work = data["work"]
        if graph.kind(work) != "output" or graph.upstream_bps(work) != 10_000:
            return Refusal(
                INVALID,
                f"work {work!r}: empty authors are allowed only for an output "
                "whose upstream_bps is 10000",
            )
    return None


def _missing_reference(state: PlatformState, kind: str, data: dict[str, Any]) -> str | None:
    graph = state.graph
    if kind in ("contribution.recorded", "output.composed", "work.reassigned"):
        if kind == "work.reassigned" and not graph.has(data["work"]):
            return f"work {data['work']!r} does not exist"
        if kind == "output.composed":
            for component in data["components"]:
                if not graph.has(component):
                    return f"component work {component!r} does not exist"
        prosumer = _first_unregistered(state, data.get("authors", {}))
        if prosumer is not None:
            return f"author {prosumer!r} is not a registered prosumer"
    elif kind in ("value.realized", "work.retracted", "work.reinstated"):
        if not graph.has(data["work"]):
            return f"work {data['work']!r} does not exist"
    elif kind in POOL_EVENTS:
        if state.pool(data["pool"]) is None:
            return f"pool {data['pool']!r} does not exist"
        if kind == "usage.recorded":
            for work in sorted(data["uses"]):
                if not graph.has(work):
                    return f"work {work!r} in uses does not exist"
    elif kind == "value.reversed":
        if state.value(data["value"]) is None and state.pool(data["value"]) is None:
            return f"value {data['value']!r} does not exist"
    elif kind == "payout.issued":
        if not state.prosumer_exists(data["prosumer"]):
            return f"prosumer {data['prosumer']!r} is not registered"
    elif kind == "payout.returned":
        if state.payout(data["payout"]) is None:
            return f"payout {data['payout']!r} was never issued"
    return None
