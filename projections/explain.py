"""Why a value was split the way it was: shares, allocation and paths."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from attribution import (
    UNATTRIBUTED,
    WorkGraph,
    allocate,
    fraction_str,
    parse_decimal,
    ratio_str,
)
from attribution.graph import CONTRIBUTION
from attribution.shares import BPS_PER_UNIT, ShareVector

# Paths and per-work summaries kept per explained work: "bounded: the largest
# paths and a per-work summary, never an unbounded path list".
EXPLAIN_MAX_PATHS = 10
EXPLAIN_MAX_WORKS = 50


def work_explanation(graph: WorkGraph, work: str) -> dict[str, Any]:
    """How flow(work, 1) reaches its recipients, bounded, JSON-ready.

    Computed when a work is first sold at a given graph state and stored
    with its share vector, so later retractions never rewrite history.
    """
    ex = graph.explain_exact(work, max_paths=EXPLAIN_MAX_PATHS, max_works=EXPLAIN_MAX_WORKS)
    g = ex.denominator
    return {
        "paths": [[list(path), recipient, ratio_str(share, g)] for path, recipient, share in ex.paths],
        "works": {w: ratio_str(s, g) for w, s in ex.works.items()},
        "truncated_paths": ex.truncated_paths,
        "total_works": ex.total_works,
        "routes": work_routes(graph, work),
    }


def work_routes(graph: WorkGraph, work: str) -> dict[str, dict[str, str]]:
    """For each recipient of flow(work, 1), how its share splits by *paying
    work*: the work itself (its own authors; all of a contribution) or one
    of its direct components (whatever flows on below a component counts
    at that component).  Recipients and paying works in code point order.

    Each recipient's split is given as exact integer *weights* (lower-case
    hex, like stored share vectors): its share through paying work p is
    weight(p) / Σ weights.  A recipient reached through one paying work
    has the weight 1; otherwise the weights are in lowest terms.

    Kept with the explanation so the dashboard's flows (sold work → paying
    work → recipient) follow the log without the graph as it was then.

    Cost: the vectors of the direct components (usually known: sold before,
    or a contribution's authors), then one multiply per (recipient, paying
    work) over one common denominator: no Fraction arithmetic.
    """
    w = graph.work(work)
    assert w is not None
    weights: dict[str, dict[str, int]] = {}
    if w.retracted:
        weights[UNATTRIBUTED] = {work: 1}
    elif w.kind == CONTRIBUTION or w.upstream_bps == 0:
        weights = {author: {work: 1} for author, _ in w.authors}
    else:
        # Over Q = 10 000 · A · K · L (L the lcm of the components' vector
        # denominators): an author's (1 − u)·a/A is (10 000 − ub)·a·K·L, and
        # u·k/K · n/D through component c is ub·k·A·(L/D)·n.
        ub = w.upstream_bps
        known = graph.vectors([c for c, _ in w.components])
        vectors = [(c, k, known[c]) for c, k in w.components]
        lcm_den = math.lcm(*(v.denominator for _, _, v in vectors))
        for author, a in w.authors:
            if ub < BPS_PER_UNIT:
                weights.setdefault(author, {})[work] = (BPS_PER_UNIT - ub) * a * w.component_weight * lcm_den
        for c, k, v in vectors:
            scale = ub * k * max(w.author_weight, 1) * (lcm_den // v.denominator)
            for recipient, n in v.numerators.items():
                routes = weights.setdefault(recipient, {})
                routes[c] = routes.get(c, 0) + scale * n
    out: dict[str, dict[str, str]] = {}
    for recipient in sorted(weights):
        routes = weights[recipient]
        if len(routes) == 1:
            out[recipient] = {next(iter(routes)): "1"}
            continue
        common = math.gcd(*routes.values())
        out[recipient] = {paying: _hex(n // common) for paying, n in sorted(routes.items())}
    return out


def _hex(n: int) -> str:
    return format(n, "x")


def explain_value(
    value: str, work: str, amount_minor: int, currency: str, fee_bps: int,
    reversed_minor: int, seq: int, vector: ShareVector, explanation: dict[str, Any],
) -> dict[str, Any]:
    """The explanation of one value (CLI `explain --json`, HTTP)."""
    shares = vector.with_fee(fee_bps)
    allocation = allocate(amount_minor, shares)
    after_fee = Fraction(10_000 - fee_bps, 10_000)

    def scaled(s: str) -> str:
        n, _, den = s.partition("/")
        return fraction_str(Fraction(parse_decimal(n), parse_decimal(den)) * after_fee)

    return {
        "value": value,
        "work": work,
        "amount": amount_minor,
        "currency": currency,
        "fee_bps": fee_bps,
        "seq": seq,
        "shares": {r: fraction_str(shares.share(r)) for r in shares.recipients()},
        "allocation": {r: allocation[r] for r in shares.recipients()},
        "reversed": reversed_minor,
        "paths": [
            {"works": path, "recipient": recipient, "share": scaled(share)}
            for path, recipient, share in explanation["paths"]
        ],
        "paths_truncated": explanation["truncated_paths"],
        "works_reached": explanation["total_works"],
        "work_inflows": {w: scaled(s) for w, s in explanation["works"].items()},
    }


def explain_pool(
    value: str, amount_minor: int, currency: str, reversed_minor: int, shares: ShareVector | None,
    pool: dict[str, Any],
) -> dict[str, Any]:
    """The explanation of a closed pool, EVENTS.md §7: S and alloc(X, S) as
    booked at the close (before any refund), the refunds so far, and `pool`:
    the method, stage 1 (`works`) and what the other method would have
    allocated (`alternative`, never booked).  Maps in code point order."""
    allocation = allocate(amount_minor, shares) if shares is not None else {}
    recipients = shares.recipients() if shares is not None else []
    alternative = pool["alternative"]
    return {
        "value": value,
        "amount": amount_minor,
        "currency": currency,
        "shares": {r: fraction_str(shares.share(r)) for r in recipients} if shares is not None else {},
        "allocation": {r: allocation[r] for r in recipients},
        "reversed": reversed_minor,
        "pool": {
            "method": pool["method"],
            "works": dict(sorted(pool["works"].items())),
            "alternative": {
                "method": alternative["method"],
                "works": dict(sorted(alternative["works"].items())),
                "allocation": dict(sorted(alternative["allocation"].items())),
            },
        },
    }
