"""The queries the faces answer (CLI `--json` and the HTTP API), defined once:
each reads the store and returns the document of `ledger.contract.documents`.

A question about something that does not exist raises `NotFound`, which the
CLI turns into exit 4 and the HTTP API into 404: an unknown platform (its
log is empty), a state past the log's head, a prosumer who is neither
registered nor booked, a period in which nothing was booked.  Answering
these with the figures of an empty ledger, or of the head, would look
plausible and be wrong.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson

from ledger.contract.schema import (
    CURRENCY_PATTERN,
    MAX_TEXT,
    InvalidEvent,
    at_error,
    validate_event_obj,
)
from ledger.storage.replay import balances_as_of
from ledger.storage.store import EVENTS_TABLE, Store
from ledger.storage.views import (
    read_balances,
    read_explain,
    read_statement,
    value_seq,
    views_seq,
)
from projections.payouts import AMOUNT_MAX_MINOR, PayoutPlan, PayoutRun, plan_payouts


class NotFound(LookupError):
    """What a question names does not exist (CLI exit 4, HTTP 404); the
    message says what."""


def log_head(store: Store, platform: str) -> int:
    """The platform's head seq; NotFound for a platform without events."""
    head = store.head(platform)
    if head == 0:
        raise NotFound(f"platform {platform!r} has no events")
    return head


def as_of_seq(store: Store, platform: str, as_of: int | None, as_of_time: str | None) -> int | None:
    """The seq whose state a read is about: `--as-of SEQ`, or for
    `--as-of-time T` the seq after the last event the ledger accepted at or
    before T (already normalised by `ledger_instant`), or None for the head.
    NotFound for an unknown platform or a seq past the head."""
    head = log_head(store, platform)
    if as_of_time is not None:
        return seq_at_time(store, platform, as_of_time)
    if as_of is not None and as_of > head:
        raise NotFound(f"platform {platform!r} has {head} events: there is no state as of seq {as_of}")
    return as_of


def statement_doc(store: Store, platform: str, prosumer: str, period: str | None) -> dict[str, Any]:
    """A prosumer's figures by month (no months for one registered but never
    booked).  NotFound for an unknown platform, a prosumer neither registered
    nor booked, or a period in which the platform booked nothing."""
    log_head(store, platform)
    periods = read_statement(store, platform, prosumer, None)
    if not periods and not _registered(store, platform, prosumer):
        raise NotFound(f"no prosumer {prosumer!r} in platform {platform!r}: neither registered nor booked")
    if period is not None:
        if not store.query("SELECT 1 FROM peerledger_statements WHERE platform = ? AND period = ? LIMIT 1",
                           (platform, period)):
            raise NotFound(f"platform {platform!r} booked nothing in {period}")
        periods = [p for p in periods if p["period"] == period]
    return {"platform": platform, "prosumer": prosumer, "periods": periods}


def _registered(store: Store, platform: str, prosumer: str) -> bool:
    """Whether `prosumer` is registered in `platform` (its state row)."""
    return bool(store.state.prosumers(platform, (prosumer,)))


def balances_doc(store: Store, platform: str, currency: str | None, as_of: int | None) -> list[dict[str, Any]]:
    """The balances array: the live read models, or a replay up to `as_of`."""
    if as_of is not None:
        return balances_at(store, platform, as_of, currency)
    return read_balances(store, platform, currency)


def balances_at(store: Store, platform: str, seq: int, currency: str | None = None) -> list[dict[str, Any]]:
    """The balances after the first `seq` events: the live read models when
    they are exactly there, else a replay of the log up to `seq`."""
    if views_seq(store, platform) == seq:
        rows = read_balances(store, platform, currency)
        # The head only grows and commits with the rows: unchanged after the
        # read means the rows are those of `seq`.
        if views_seq(store, platform) == seq:
            return rows
    return balances_as_of(store, platform, seq, currency)


def payout_plan(store: Store, platform: str, currency: str, min_balance_minor: int,
                reference: str | None = None, at: str | None = None) -> PayoutPlan:
    """A payout run of `platform` at its log's head (`projections.payouts`):
    what `peerledger payouts plan` prints and the HTTP API returns.

    `at` defaults to the `at` of the event at the head, so planning again
    before anything is appended gives the same bytes.  Raises ValueError for
    an option the events could not carry.
    """
    problem = _payout_option_error(currency, min_balance_minor, reference, at)
    if problem is not None:
        raise ValueError(problem)
    seq = store.head(platform)
    if at is None and seq > 0:
        [head_event] = store.read_log(platform, after_seq=seq - 1, upto_seq=seq)
        at = orjson.loads(head_event.state)["at"]
    run = PayoutRun(platform, currency, seq, at, min_balance_minor, reference)
    plan = plan_payouts(run, balances_at(store, platform, seq, currency))
    for event in plan.events:
        try:
            validate_event_obj(event)
        except InvalidEvent as e:  # the options were checked: a bug, never a user's mistake
            raise AssertionError(f"planned an invalid payout event {event['id']!r}: {e.message}") from None
    return plan


_CURRENCY_RE = re.compile(CURRENCY_PATTERN[1:-1])


def _payout_option_error(currency: str, min_balance_minor: int, reference: str | None, at: str | None) -> str | None:
    if not _CURRENCY_RE.fullmatch(currency):
        return f"currency: must be three upper-case letters, got {currency!r}"
    if type(min_balance_minor) is not int or not 1 <= min_balance_minor <= AMOUNT_MAX_MINOR:
        return f"min balance: must be 1 to {AMOUNT_MAX_MINOR} minor units, got {min_balance_minor!r}"
    if reference is not None and len(reference) > MAX_TEXT:
        return f"reference: must be at most {MAX_TEXT} characters, got {len(reference)}"
    if at is not None and (problem := at_error(at)) is not None:
        return problem
    return None


def explain_doc(store: Store, platform: str, value: str, as_of: int | None) -> dict[str, Any] | None:
    """A value's explanation; with `as_of`, None unless it was realized by
    then, and its reversed total as of then (its split never changes)."""
    ex = read_explain(store, platform, value)
    if ex is not None and as_of is not None:
        realized_seq = value_seq(store, platform, value)  # a pool: its close
        ex = None if realized_seq > as_of else {**ex, "reversed": reversed_as_of(store, platform, value, as_of)}
    return ex


def ledger_instant(text: str) -> str:
    """An RFC 3339 date-time as the ledger writes `accepted_at` (UTC, milliseconds, `Z`).

    Truncating to milliseconds is exact for `accepted_at <= T`: the stored
    times have millisecond precision.  Raises ValueError.
    """
    if len(text) < 20 or text[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 date-time: {text!r} (e.g. 2026-11-26T10:00:00Z)")
    instant = datetime.fromisoformat(text.replace("z", "Z"))
    if instant.tzinfo is None:
        raise ValueError(f"an RFC 3339 date-time needs Z or an offset: {text!r}")
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seq_at_time(store: Store, platform: str, instant: str) -> int:
    """The seq of the state after the last event the ledger accepted at or before `instant`.

    The answer is a prefix of the log: the events before the first one
    accepted after `instant`.  (Acceptance times follow seq order in a
    platform; were the clock ever to step back, the prefix rule still names
    a state the ledger really had, never one with a later event in it.)
    """
    rows = store.query(
        "SELECT MIN(CASE WHEN accepted_at > ? THEN seq END), MAX(seq) FROM peerledger_event_ids "
        "WHERE platform = ?",
        (instant, platform),
    )
    first_after, head = rows[0]
    return int(first_after) - 1 if first_after is not None else int(head or 0)


def reversed_as_of(store: Store, platform: str, value: str, seq: int) -> int:
    """The total reversed of `value` by the events up to `seq` (the log's only
    record of reversals over time; only `value.reversed` events are parsed)."""
    total = 0
    for stored in store.read_log(platform, upto_seq=seq):
        if stored.topic == "value.reversed":
            data = orjson.loads(stored.state)["data"]
            if data["value"] == value:
                total += data["amount"]
    return total


def issued_payouts(store: Store, platform: str, reference: str | None = None) -> list[dict[str, Any]]:
    """The platform's accepted `payout.issued` events in seq order; with
    `reference`, only those whose `reference` equals it (a run, as a payout
    file pays it: `ledger.payments.files`).  Every one ever issued, returned
    or not: a file is the run as issued.

    The log is the only record of a payout's reference, so this reads the
    platform's `payout.issued` events (filtered by topic in the database).
    """
    rows = store.query(f"SELECT state FROM {EVENTS_TABLE} WHERE originator_id = ? AND topic = ? "
                       "ORDER BY originator_version", (platform, "payout.issued"))
    events = [orjson.loads(bytes(state)) for (state,) in rows]
    return [e for e in events if reference is None or e["data"].get("reference") == reference]


def payout_platforms(store: Store, payouts: Sequence[str]) -> dict[str, list[str]]:
    """payout id -> the platforms that issued a payout with that id (ids are
    unique per platform only)."""
    found: dict[str, list[str]] = {}
    for i in range(0, len(payouts), 500):
        chunk = list(payouts[i:i + 500])
        marks = ", ".join("?" * len(chunk))
        for platform, payout in store.query(f"SELECT platform, payout FROM peerledger_payouts WHERE payout IN "
                                            f"({marks}) ORDER BY platform", chunk):
            found.setdefault(payout, []).append(platform)
    return found
