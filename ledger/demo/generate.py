"""Realistic, deterministic event streams for peerledger (EVENTS.md v1).

``generate(seed, events, platform)`` yields ``events`` event objects of one
platform, shaped like a peer-production platform's history:

* a ``policy.set`` first (fee 1500 bps), one or two fee changes later on;
* prosumers registered over time (about 4 % of the events; some with a name,
  some of the names non-ASCII), each before they first author anything;
* contributions (microchunks: design, photo, sample, paragraph, patch; some
  with a ``content_hash``) by 1-3 authors, reused with a skewed, Zipf-like
  popularity (preferential attachment: a few contributions are reused a lot);
* outputs of 2-8 components (weights 1-5); about a quarter also remix earlier
  outputs, so the recombination graph gets several levels deep; most outputs
  have 1-2 authors and ``upstream_bps`` 3000-9000, a few have no authors and
  ``upstream_bps`` 10 000;
* sales (``value.realized``) mostly on outputs, some directly on
  contributions, in USD, EUR and JPY, skewed amounts of 1-50 000 minor units;
* refunds (``value.reversed``), partial or full, never more than what is left;
* a takedown (``work.retracted`` of a popular contribution, later
  ``work.reinstated``), plus a few more disputes on long streams, and a couple
  of ``work.reassigned``;
* payouts that can never exceed a balance (see ``_Gen._payout``), about one in
  forty returned by the bank a little later (``payout.returned``);
* a subscription pool a month (EVENTS.md §7; from the first event of a month,
  once there are works to use): opened at the month's first event, closed at
  the next month's (so it books in that month), in USD.  Subscribers pay
  499, 999 or 1499 cents a month, the first time they show up in it, and
  their usage (``usage.recorded`` of 1-3 works by the works' popularity,
  1-3 plays each, up to 20 for the heaviest) is heavy-tailed: a listener's
  activity is drawn once from a Pareto law, so most subscribers play a
  little and a few play a lot; a few pay and never play.  The platform
  splits its pools ``pro_rata`` in the first half of the stream and
  ``user_centric`` in the second (as platforms that switched did), and every
  closed pool's explanation shows what the other method would have paid.

Every event is acceptable when the stream is ingested in order, unless
``bad_fraction_ppm`` > 0: then about that many events per million are
deliberately bad (duplicate, conflict, unknown_reference, invalid,
invalid_state, over_reversal, already_exists, insufficient_balance) and are
interleaved with the good ones.  Bad events use their own id namespaces
(event ids ``x000001``..., created ids ``xv...``, ``xo...``, ``xpay...``) so they
never take an id that a later good event uses, and they do not touch the
generator's bookkeeping.

Determinism: everything comes from ``random.Random(seed)`` (the bad events
from a second generator seeded from ``seed``), never from the global RNG.

Timestamps: ``at`` is RFC 3339 UTC with seconds and strictly increases through
the stream; the mean step is chosen so that the stream spans about nine months
whatever its length (about two minutes per event for 200 000 events), so
statements have several monthly periods.  The only events whose ``at`` does
not increase are the deliberately bad exact resends (duplicates), which are by
definition byte-for-byte copies of an earlier event.

Pure stdlib + orjson.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import math
import os
import random
import re
from collections import deque
from datetime import date, datetime, timezone
from typing import IO, Any, Iterable, Iterator, Sequence

import orjson

__all__ = ["generate", "generate_many", "write_jsonl", "SPAN_SECONDS", "BAD_KINDS"]

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PLATFORM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

#: the target time span of a stream, whatever its number of events
SPAN_SECONDS = 270 * 86400

#: the kinds of deliberately bad events (bad_fraction_ppm > 0)
BAD_KINDS = (
    "duplicate",
    "conflict",
    "unknown_reference",
    "invalid",
    "invalid_state",
    "over_reversal",
    "already_exists",
    "insufficient_balance",
)

CONTRIBUTION_KINDS = ("design", "photo", "sample", "paragraph", "patch")
OUTPUT_KINDS = ("album", "article", "zine", "game-level", "video", "app", "font")
SOURCES = ("sale",) * 7 + ("subscription",) * 2 + ("tip",)
REVERSAL_REASONS = ("refund", "refund", "refund", "chargeback", "partial refund")
PAYOUT_REFS = ("wire", "sepa", "paypal", "ach")
# Payouts that bounce (EVENTS.md §8): about one in forty, reported by the bank
# a few days of events later, with the reason codes banks send (ISO 20022).
BOUNCE_PPM = 25_000
BOUNCE_DELAY_EVENTS_MAX = 200
BOUNCE_REASONS = ("AC04 closed account", "AC01 incorrect account number", "MD07 end customer deceased",
                  "AG01 transaction forbidden", "RR04 regulatory reason")
TAKEDOWN_REASONS = ("takedown", "copyright dispute", "DMCA notice", "license dispute")
FIRST_NAMES = (
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
    "Zoë", "李", "José", "Björk", "Ørjan", "Łukasz", "Chloé", "Dvořák", "Søren", "Müller",
    "Ngọc", "محمد", "山田 太郎", "Ольга", "Αθηνά", "Siobhán", "Renée", "Nuño", "김민준", "Ayşe",
)
LAST_NAMES = ("", "", "", " Smith", " García", " Nakamura", " O'Brien", " Nguyễn", " Kowalski",
              " Weiß", " da Silva", " Öztürk", " 王")

FEE_START = 1500
FEE_LATER = (1200, 1000, 1250, 1800, 900)

# Subscription pools: opened once this many contributions exist; prices in
# cents; a listener's activity weight is capped, and from HEAVY_LISTENER_WEIGHT
# on they play each work up to HEAVY_PLAYS_MAX times a day (others PLAYS_MAX).
POOL_MIN_WORKS = 20
PRICES = (499, 499, 999, 999, 999, 1499)
LISTENER_WEIGHT_MAX = 200
HEAVY_LISTENER_WEIGHT = 10
PLAYS_MAX, HEAVY_PLAYS_MAX = 3, 20


def _choice(rng: random.Random, seq: Sequence[Any]) -> Any:
    """rng.choice, a little faster (one float draw)."""
    return seq[int(rng.random() * len(seq))]


def _derive_seed(seed: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{salt}".encode()).digest()[:8], "big")


class _Gen:
    """The bookkeeping of one platform's stream (only good events touch it)."""

    def __init__(self, seed: int, events: int, platform: str, start: str, bad_fraction_ppm: int):
        if not isinstance(events, int) or events < 0:
            raise ValueError("events must be a non-negative integer")
        if not isinstance(platform, str) or not PLATFORM_RE.match(platform):
            raise ValueError(f"invalid platform id {platform!r}")
        if not isinstance(bad_fraction_ppm, int) or not 0 <= bad_fraction_ppm <= 1_000_000:
            raise ValueError("bad_fraction_ppm must be an integer 0..1000000")
        self.rng = random.Random(seed)
        self.bad_rng = random.Random(_derive_seed(seed, "bad"))
        # Bounces draw from their own generator, so the rest of the stream
        # draws what it drew before they existed.
        self.bounce_rng = random.Random(_derive_seed(seed, "bounce"))
        self.n = events
        self.platform = platform
        self.ppm = bad_fraction_ppm

        dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        self.t = int(dt.timestamp())  # seconds since the epoch, UTC
        self.mean_step = max(1, SPAN_SECONDS // max(1, events))
        self._day_cache: dict[int, str] = {}

        # --- counters for ids
        self.n_event = 0
        self.n_bad = 0
        self.n_value = 0
        self.n_payout = 0
        # --- prosumers
        self.prosumers: list[str] = []
        self.active: list[str] = []  # one entry per authorship (preferential attachment)
        # --- works
        self.contribs: list[str] = []
        self.outputs: list[str] = []
        self.pop_c: list[str] = []  # one entry per creation / use / sale
        self.pop_o: list[str] = []
        self.authors: dict[str, dict[str, int]] = {}  # work -> current authors
        self.past_authors: dict[str, set[str]] = {}  # work -> authors before a reassignment
        self.components: dict[str, dict[str, int]] = {}  # output -> components
        self.upstream: dict[str, int] = {}
        self.depth: dict[str, int] = {}  # output -> 1 + max depth of its components (contribution: 0)
        self.max_depth = 0
        self.retracted: set[str] = set()
        # --- values: id -> [work, amount, currency, reversed, payee or None, partially_reversed]
        self.values: dict[str, list[Any]] = {}
        self.value_ids: list[str] = []
        self.partial: list[str] = []  # partially reversed values
        self.fee = FEE_START
        # --- payouts: conservative lower bound of what a prosumer can be paid, per currency
        self.payable: dict[tuple[str, str], int] = {}
        self.pay_candidates: list[tuple[str, str]] = []

        # --- subscription pools: the month's pool (None: none open), its month,
        # who paid into it; every subscriber, and a listener list where each
        # subscriber appears as often as their (heavy-tailed) activity says
        self.pool: str | None = None
        self.pool_month = ""
        self.pool_paid: set[str] = set()
        self.subscribers: dict[str, int] = {}  # subscriber -> activity weight
        self.listeners: list[str] = []
        # (type, data) of events a slot decided for the next slots: made (id, at) when emitted
        self.pending: deque[tuple[str, dict]] = deque()

        # --- bad events
        self.recent: deque[bytes] = deque(maxlen=64)

        # --- rare events, scheduled by position in the stream: heap of (pos, seq, kind, arg)
        self.schedule: list[tuple[int, int, str, Any]] = []
        self._sched_seq = 0
        self.i = 0
        self._plan_rare_events()

    # ------------------------------------------------------------------ helpers
    def _at(self) -> str:
        days, secs = divmod(self.t, 86400)
        d = self._day_cache.get(days)
        if d is None:
            d = date.fromordinal(719163 + days).isoformat()  # 719163 = date(1970, 1, 1).toordinal()
            self._day_cache[days] = d
        h, rem = divmod(secs, 3600)
        m, s = divmod(rem, 60)
        return f"{d}T{h:02d}:{m:02d}:{s:02d}Z"

    def _tick(self) -> None:
        self.t += 1 + int(self.rng.random() * (2 * self.mean_step - 1))

    def _event(self, type_: str, data: dict) -> dict:
        self.n_event += 1
        return {"v": 1, "id": f"e{self.n_event:06d}", "platform": self.platform,
                "type": type_, "at": self._at(), "data": data}

    def _sched(self, pos: int, kind: str, arg: Any = None) -> None:
        self._sched_seq += 1
        heapq.heappush(self.schedule, (pos, self._sched_seq, kind, arg))

    def _plan_rare_events(self) -> None:
        n, rng = self.n, self.rng
        # one or two fee changes
        fees = list(FEE_LATER)
        rng.shuffle(fees)
        self._sched(int(n * 0.35), "fee", fees[0])
        if n >= 1000:
            self._sched(int(n * 0.70), "fee", fees[1])
        # the takedown of a popular contribution, reinstated later
        self._sched(int(n * 0.40), "takedown", int(n * 0.60))
        # a few more disputes on long streams (some never resolved)
        for _ in range(n // 40_000):
            pos = int(n * (0.1 + 0.8 * rng.random()))
            later = pos + int(n * (0.02 + 0.15 * rng.random())) if rng.random() < 0.6 else None
            self._sched(pos, "dispute", later)
        # a couple of reassignments
        for _ in range(2 + n // 100_000):
            self._sched(int(n * (0.2 + 0.7 * rng.random())), "reassign")

    def _pick_prosumer(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.4 and self.active:
            return _choice(rng, self.active)
        if r < 0.7:
            p = self.prosumers
            return p[len(p) - 1 - int(rng.random() * min(len(p), 200))]
        return _choice(rng, self.prosumers)

    def _pick_authors(self, k: int, weights_max: int) -> dict[str, int]:
        rng = self.rng
        k = min(k, len(self.prosumers))
        authors: dict[str, int] = {}
        for _ in range(4 * k):
            if len(authors) >= k:
                break
            p = self._pick_prosumer()
            if p not in authors:
                authors[p] = 1 + int(rng.random() * weights_max)
        if len(authors) == 1:
            for p in authors:
                authors[p] = 1
        self.active.extend(authors)
        return authors

    def _pick_contribution(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.65:
            return _choice(rng, self.pop_c)
        c = self.contribs
        if r < 0.8:
            return c[len(c) - 1 - int(rng.random() * min(len(c), 500))]
        return _choice(rng, c)

    def _pick_output(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            return _choice(rng, self.pop_o)
        o = self.outputs
        return o[len(o) - 1 - int(rng.random() * min(len(o), 300))]

    def _amount(self, currency: str) -> int:
        rng = self.rng
        if currency == "JPY":
            a = int(math.exp(rng.gauss(7.3, 1.1)))  # median ~1500 yen
            if a > 100:
                a = a // 10 * 10
        else:
            a = int(math.exp(rng.gauss(6.6, 1.3)))  # median ~7.35 (in dollars/euros)
            if a > 200 and rng.random() < 0.5:
                a = a // 100 * 100 + 99  # price-like: 4.99, 12.99
        return 1 if a < 1 else 50_000 if a > 50_000 else a

    def _recipients(self, work: str) -> set[str]:
        """Every prosumer that a value on ``work`` may have reached (a superset:
        retractions are ignored and past authors of reassigned works included)."""
        out: set[str] = set()
        seen = {work}
        stack = [work]
        authors, past, comps = self.authors, self.past_authors, self.components
        while stack:
            w = stack.pop()
            out.update(authors[w])
            if w in past:
                out.update(past[w])
            cs = comps.get(w)
            if cs:
                for c in cs:
                    if c not in seen:
                        seen.add(c)
                        stack.append(c)
        return out

    # ------------------------------------------------------------------ good events
    def _policy(self, fee: int) -> dict:
        self.fee = fee
        return self._event("policy.set", {"platform_fee_bps": fee})

    def _register(self) -> dict:
        rng = self.rng
        pid = f"p{len(self.prosumers) + 1:05d}"
        self.prosumers.append(pid)
        data: dict[str, Any] = {"prosumer": pid}
        if rng.random() < 0.7:
            data["name"] = _choice(rng, FIRST_NAMES) + _choice(rng, LAST_NAMES)
        return self._event("prosumer.registered", data)

    def _contribution(self) -> dict:
        rng = self.rng
        r = rng.random()
        k = 1 if r < 0.65 else 2 if r < 0.9 else 3
        wid = f"c{len(self.contribs) + 1:06d}"
        authors = self._pick_authors(k, 3)
        data: dict[str, Any] = {"work": wid, "authors": authors}
        if rng.random() < 0.9:
            data["kind"] = _choice(rng, CONTRIBUTION_KINDS)
        if rng.random() < 0.4:
            data["content_hash"] = f"sha256:{rng.getrandbits(256):064x}"
        self.contribs.append(wid)
        self.pop_c.append(wid)
        self.authors[wid] = authors
        return self._event("contribution.recorded", data)

    def _output(self) -> dict:
        rng = self.rng
        wid = f"o{len(self.outputs) + 1:06d}"
        k = 2 + int(rng.random() * 7)  # 2..8 components
        comps: dict[str, int] = {}
        depth = 1
        n_remix = 0
        if self.outputs and rng.random() < 0.27:
            n_remix = 1 if rng.random() < 0.8 else 2
            for _ in range(n_remix):
                o = self._pick_output()
                if o not in comps:
                    comps[o] = 1 + int(rng.random() * 5)
                    d = self.depth[o] + 1
                    if d > depth:
                        depth = d
        for _ in range(3 * k):
            if len(comps) >= k:
                break
            c = self._pick_contribution()
            if c not in comps:
                comps[c] = 1 + int(rng.random() * 5)
        for c in comps:
            (self.pop_o if c in self.components else self.pop_c).append(c)
        r = rng.random()
        if r < 0.05:
            authors: dict[str, int] = {}
            upstream = 10_000
        else:
            authors = self._pick_authors(1 if r < 0.75 else 2, 3)
            upstream = 3000 + 100 * int(rng.random() * 61)
        data: dict[str, Any] = {"work": wid, "components": comps}
        if authors or rng.random() < 0.5:  # an empty author set is sometimes written out
            data["authors"] = authors
        if upstream != 10_000 or rng.random() < 0.5:  # 10 000 is the default
            data["upstream_bps"] = upstream
        if rng.random() < 0.8:
            data["kind"] = _choice(rng, OUTPUT_KINDS)
        self.outputs.append(wid)
        self.pop_o.append(wid)
        self.authors[wid] = authors
        self.components[wid] = comps
        self.upstream[wid] = upstream
        self.depth[wid] = depth
        if depth > self.max_depth:
            self.max_depth = depth
        return self._event("output.composed", data)

    def _value(self) -> dict:
        rng = self.rng
        if self.outputs and rng.random() < 0.75:
            work = _choice(rng, self.pop_o) if rng.random() < 0.7 else _choice(rng, self.outputs)
            self.pop_o.append(work)
        else:
            work = self._pick_contribution()
            self.pop_c.append(work)
        r = rng.random()
        currency = "USD" if r < 0.55 else "EUR" if r < 0.85 else "JPY"
        amount = self._amount(currency)
        self.n_value += 1
        vid = f"v{self.n_value:06d}"
        data: dict[str, Any] = {"value": vid, "work": work, "amount": amount, "currency": currency}
        if rng.random() < 0.9:
            data["source"] = _choice(rng, SOURCES)
        payee = None
        if work not in self.components and work not in self.retracted:
            authors = self.authors[work]
            if len(authors) == 1:
                # the sole author of a contribution sold directly gets the whole
                # (1 - fee) share: at least floor(A * (1 - fee)); one unit less to be safe
                (payee,) = authors
                key = (payee, currency)
                self.payable[key] = self.payable.get(key, 0) + amount * (10_000 - self.fee) // 10_000 - 1
                self.pay_candidates.append(key)
        self.values[vid] = [work, amount, currency, 0, payee, False]
        self.value_ids.append(vid)
        return self._event("value.realized", data)

    def _pick_reversible(self) -> str | None:
        rng, ids, values = self.rng, self.value_ids, self.values
        for _ in range(6):
            if not ids:
                return None
            i = len(ids) - 1 - int(rng.random() * min(len(ids), 3000))  # refunds come soon after sales
            vid = ids[i]
            v = values[vid]
            if v[3] < v[1]:
                return vid
            ids[i] = ids[-1]  # fully reversed: drop it from the pool
            ids.pop()
        return None

    def _reversal(self) -> dict | None:
        rng = self.rng
        vid = None
        partial = self.partial
        if partial and rng.random() < 0.3:  # the rest (or more) of an earlier partial refund
            i = int(rng.random() * len(partial))
            vid = partial[i]
            partial[i] = partial[-1]
            partial.pop()
            if self.values[vid][3] >= self.values[vid][1]:
                vid = None
        if vid is None:
            vid = self._pick_reversible()
        if vid is None:
            return None
        v = self.values[vid]
        remaining = v[1] - v[3]
        if remaining == 1 or rng.random() < 0.6:
            amount = remaining
        else:
            amount = 1 + int(rng.random() * (remaining - 1))  # partial: 1..remaining-1
        if v[3] == 0 and amount < remaining and not v[5]:
            # A partially reversed value nets alloc(A) - alloc(T) for each recipient, which
            # largest-remainder allocation (the Alabama paradox) can make -1: count it
            # against every prosumer it may have reached, in that currency.
            v[5] = True
            cur = v[2]
            payable = self.payable
            for p in self._recipients(v[0]):
                key = (p, cur)
                payable[key] = payable.get(key, 0) - 1
        v[3] += amount
        if v[3] < v[1]:
            partial.append(vid)
        if v[4] is not None:
            key = (v[4], v[2])
            self.payable[key] -= amount
        data: dict[str, Any] = {"value": vid, "amount": amount}
        if rng.random() < 0.8:
            data["reason"] = _choice(rng, REVERSAL_REASONS)
        return self._event("value.reversed", data)

    def _payout(self) -> dict | None:
        """Pay a prosumer at most a lower bound of their balance.

        The bound only counts contributions sold directly whose sole author the
        prosumer was (not retracted at the sale): floor(A * (10000 - fee) / 10000) - 1
        per sale, minus every reversal of those sales, minus one per partially
        reversed value that may have reached the prosumer, minus what was paid.
        Everything else the prosumer earned is >= 0 net, so the payout is safe.
        """
        rng, cands, payable = self.rng, self.pay_candidates, self.payable
        for _ in range(6):
            if not cands:
                return None
            i = int(rng.random() * len(cands))
            key = cands[i]
            bound = payable[key]
            if bound >= 1:
                amount = bound if rng.random() < 0.5 else max(1, bound - int(rng.random() * bound / 2))
                payable[key] = bound - amount
                self.n_payout += 1
                data: dict[str, Any] = {"payout": f"pay{self.n_payout:05d}", "prosumer": key[0],
                                        "amount": amount, "currency": key[1]}
                if rng.random() < 0.7:
                    data["reference"] = f"{_choice(rng, PAYOUT_REFS)} {self.n_payout}"
                bounce = self.bounce_rng
                if bounce.random() * 1_000_000 < BOUNCE_PPM:
                    self._sched(self.i + 1 + int(bounce.random() * BOUNCE_DELAY_EVENTS_MAX), "bounce", data["payout"])
                return self._event("payout.issued", data)
            cands[i] = cands[-1]
            cands.pop()
        return None

    def _retract(self, work: str, reason: str) -> dict:
        self.retracted.add(work)
        data: dict[str, Any] = {"work": work}
        if self.rng.random() < 0.9:
            data["reason"] = reason
        return self._event("work.retracted", data)

    def _reinstate(self, work: str) -> dict:
        self.retracted.discard(work)
        data: dict[str, Any] = {"work": work}
        if self.rng.random() < 0.7:
            data["reason"] = self.rng.choice(("dispute resolved", "license verified", "counter-notice"))
        return self._event("work.reinstated", data)

    def _most_popular_contribution(self) -> str | None:
        rng = self.rng
        if not self.pop_c:
            return None
        counts: dict[str, int] = {}
        for _ in range(400):
            c = _choice(rng, self.pop_c)
            counts[c] = counts.get(c, 0) + 1
        for c, _n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if c not in self.retracted:
                return c
        return None

    def _reassign(self) -> dict | None:
        rng = self.rng
        if not self.contribs or not self.prosumers:
            return None
        if self.outputs and rng.random() < 0.3:
            work = _choice(rng, self.pop_o)
        else:
            work = _choice(rng, self.pop_c)
        authors = self._pick_authors(1 if rng.random() < 0.6 else 2, 3)
        old = self.authors[work]
        if old:
            self.past_authors.setdefault(work, set()).update(old)
        self.authors[work] = authors
        return self._event("work.reassigned", {"work": work, "authors": authors})

    # ------------------------------------------------------------------ pools
    def _pool_month(self) -> dict | None:
        """At a month's first event: close last month's pool, then (next
        slot) open this month's.  None when nothing is due."""
        month = self._at()[:7]
        if month == self.pool_month or len(self.contribs) < POOL_MIN_WORKS:
            return None
        if self.pool is not None:
            pool, self.pool = self.pool, None
            return self._event("pool.closed", {"pool": pool})
        self.pool_month = month
        self.pool = f"subs-{month}"
        self.pool_paid = set()
        method = "pro_rata" if self.i < self.n // 2 else "user_centric"
        return self._event("pool.opened", {"pool": self.pool, "currency": "USD", "method": method,
                                           "name": f"subscriptions {month}"})

    def _pool_use(self) -> dict | None:
        """A subscriber's day of use (a new subscriber one time in seven):
        their subscription first if they have not paid this month."""
        rng = self.rng
        if self.pool is None:
            return None
        if not self.subscribers or rng.random() < 0.15:
            sid = f"s{len(self.subscribers) + 1:06d}"
            # Pareto(1.2) activity: most listen a little, a few a lot.
            weight = self.subscribers[sid] = min(LISTENER_WEIGHT_MAX, int(rng.paretovariate(1.2)))
            self.listeners.extend([sid] * weight)
        else:
            sid = _choice(rng, self.listeners)
        plays = HEAVY_PLAYS_MAX if self.subscribers[sid] >= HEAVY_LISTENER_WEIGHT else PLAYS_MAX
        uses: dict[str, int] = {}
        for _ in range(1 + int(rng.random() * 3)):
            work = self._pick_output() if self.outputs and rng.random() < 0.6 else self._pick_contribution()
            uses[work] = 1 + int(rng.random() * plays)
        use = {"pool": self.pool, "subscriber": sid, "uses": uses}
        if sid in self.pool_paid:
            return self._event("usage.recorded", use)
        self.pool_paid.add(sid)
        if rng.random() >= 0.05:  # one in twenty pays and does not play (this time)
            self.pending.append(("usage.recorded", use))
        price = PRICES[int(rng.random() * len(PRICES))]
        return self._event("pool.funded", {"pool": self.pool, "subscriber": sid, "amount": price})

    def _rare(self, kind: str, arg: Any) -> dict | None | bool:
        """A scheduled event; None: not possible yet (retry later); False: drop it."""
        if kind == "fee":
            return self._policy(arg) if arg != self.fee else False
        if kind == "takedown":
            c = self._most_popular_contribution()
            if c is None:
                return None
            self._sched(max(arg, self.i + 1), "reinstate", c)
            return self._retract(c, _choice(self.rng, TAKEDOWN_REASONS))
        if kind == "dispute":
            if not self.contribs:
                return None
            pool = self.pop_o if self.outputs and self.rng.random() < 0.4 else self.pop_c
            w = _choice(self.rng, pool)
            if w in self.retracted:
                return False
            if arg is not None:
                self._sched(max(arg, self.i + 1), "reinstate", w)
            return self._retract(w, _choice(self.rng, TAKEDOWN_REASONS))
        if kind == "reinstate":
            return self._reinstate(arg) if arg in self.retracted else False
        if kind == "reassign":
            return self._reassign()
        if kind == "bounce":
            # The amount is owed again; the payable bound ignores it (it stays a lower bound).
            return self._event("payout.returned", {"payout": arg, "reason": _choice(self.bounce_rng, BOUNCE_REASONS)})
        raise AssertionError(kind)

    def _regular(self, i: int) -> dict:
        rng = self.rng
        if len(self.prosumers) < 5 or (i < 40 and len(self.prosumers) < 10 and rng.random() < 0.5):
            return self._register()
        if len(self.contribs) < 3:
            return self._contribution()
        ev: dict | None = self._pool_month()
        if ev is not None:
            return ev
        r = rng.random() * 99.0
        if r < 4.0:
            return self._register()
        if r < 29.0:
            return self._contribution()
        if r < 44.0:
            return self._output()
        if r < 89.0:
            return self._value()
        if r < 94.0:
            ev = self._pool_use()
        elif r < 96.0:
            ev = self._reversal()
        else:
            ev = self._payout()
        return ev if ev is not None else self._value()

    # ------------------------------------------------------------------ bad events
    def _bad(self) -> dict | None:
        """A deliberately bad event; reads the bookkeeping, never changes it."""
        rng = self.bad_rng
        if not self.prosumers:
            return None
        kind = BAD_KINDS[int(rng.random() * len(BAD_KINDS))]
        self.n_bad += 1
        nb = self.n_bad
        eid = f"x{nb:06d}"

        def ev(type_: str, data: dict) -> dict:
            return {"v": 1, "id": eid, "platform": self.platform, "type": type_, "at": self._at(), "data": data}

        if kind in ("duplicate", "conflict") and self.recent:
            old = orjson.loads(self.recent[int(rng.random() * len(self.recent))])
            if kind == "duplicate":
                return old  # an exact resend (its `at` is the original one)
            old["at"] = self._at()
            if "amount" in old["data"]:
                old["data"]["amount"] += 1
            return old
        if kind == "unknown_reference" and self.contribs:
            if rng.random() < 0.5:
                return ev("value.realized", {"value": f"xv{nb:06d}", "work": f"zz{nb:06d}",
                                             "amount": 100, "currency": "USD"})
            return ev("output.composed", {"work": f"xo{nb:06d}",
                                          "components": {_choice(rng, self.contribs): 1, f"zz{nb:06d}": 1},
                                          "upstream_bps": 10_000})
        if kind == "invalid" and self.contribs:
            return ev("value.realized", {"value": f"xv{nb:06d}", "work": _choice(rng, self.contribs),
                                         "amount": float(1 + int(rng.random() * 100)), "currency": "EUR"})
        if kind == "invalid_state" and self.contribs:
            if self.retracted:
                return ev("work.retracted", {"work": min(self.retracted)})
            for _ in range(10):
                w = _choice(rng, self.contribs)
                if w not in self.retracted:
                    return ev("work.reinstated", {"work": w})
        if kind == "over_reversal" and self.values:
            vid = f"v{1 + int(rng.random() * self.n_value):06d}"
            v = self.values[vid]
            return ev("value.reversed", {"value": vid, "amount": max(1, v[1] - v[3] + 1)})
        if kind == "insufficient_balance":
            return ev("payout.issued", {"payout": f"xpay{nb:05d}", "prosumer": _choice(rng, self.prosumers),
                                        "amount": 10**15, "currency": "USD"})
        # already_exists (also the fallback when the chosen kind is not possible yet)
        return ev("prosumer.registered", {"prosumer": _choice(rng, self.prosumers), "name": "again"})

    # ------------------------------------------------------------------ the stream
    def run(self) -> Iterator[dict]:
        n = self.n
        if n <= 0:
            return
        bad_p = self.ppm / 1_000_000
        bad_rng = self.bad_rng
        recent = self.recent
        schedule = self.schedule
        for i in range(n):
            self.i = i
            if i:
                self._tick()
            if bad_p and i >= 10 and bad_rng.random() < bad_p:
                bad = self._bad()
                if bad is not None:
                    yield bad
                    continue
            if i == 0:
                ev = self._policy(FEE_START)
            elif self.pending:
                ev = self._event(*self.pending.popleft())
            else:
                ev = None
                while schedule and schedule[0][0] <= i:
                    pos, _seq, kind, arg = schedule[0]
                    got = self._rare(kind, arg)
                    if got is None:  # not possible yet: keep it for later
                        break
                    heapq.heappop(schedule)
                    if got is not False:
                        ev = got
                        break
                if ev is None:
                    ev = self._regular(i)
            if bad_p and not (i % 29):
                recent.append(orjson.dumps(ev))
            yield ev


def generate(seed: int, events: int, platform: str = "demo", *, start: str = "2026-01-01T00:00:00Z",
             bad_fraction_ppm: int = 0) -> Iterator[dict]:
    """Yield ``events`` events of one platform, deterministically for ``seed``."""
    return _Gen(seed, events, platform, start, bad_fraction_ppm).run()


def generate_many(seed: int, events: int, platforms: Sequence[str], *, start: str = "2026-01-01T00:00:00Z",
                  bad_fraction_ppm: int = 0) -> Iterator[dict]:
    """Interleave the streams of several platforms, ``events`` in total (split evenly).

    Each platform gets its own stream (seeded from ``seed`` and its id) over the same
    time span; they are merged by ``at`` (ties: in the order of ``platforms``), so each
    platform's own stream keeps its order.
    """
    platforms = list(platforms)
    if not platforms:
        return iter(())
    if len(set(platforms)) != len(platforms):
        raise ValueError("platforms must be distinct")
    k = len(platforms)
    streams = [
        generate(_derive_seed(seed, p), events // k + (1 if i < events % k else 0), p,
                 start=start, bad_fraction_ppm=bad_fraction_ppm)
        for i, p in enumerate(platforms)
    ]
    if k == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda e: e["at"])


def write_jsonl(path_or_stream: str | os.PathLike | IO, events: Iterable[dict]) -> int:
    """Write one compact JSON object per line (orjson, UTF-8); return the count.

    ``path_or_stream``: a path (the file is created or truncated), a binary stream
    or a text stream.
    """
    if isinstance(path_or_stream, (str, bytes, os.PathLike)):
        with open(path_or_stream, "wb") as f:
            return _write(f.write, events)
    stream = path_or_stream
    if isinstance(stream, io.TextIOBase) or hasattr(stream, "encoding"):
        return _write(lambda b: stream.write(b.decode("utf-8")), events)
    return _write(stream.write, events)


def _write(write: Any, events: Iterable[dict]) -> int:
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    n = 0
    buf: list[bytes] = []
    for ev in events:
        buf.append(dumps(ev, option=opt))
        n += 1
        if len(buf) >= 4096:
            write(b"".join(buf))
            buf.clear()
    if buf:
        write(b"".join(buf))
    return n
