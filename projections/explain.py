"""Why a value was split the way it was: shares, allocation and paths."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from attribution import UNATTRIBUTED, WorkGraph, allocate, fraction_str, parse_decimal, ratio_str
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
    at that component).  Exact fractions, summing to 1 per recipient,
    recipients and paying works in code point order.

    Kept with the explanation so the dashboard's flows (sold work → paying
    work → recipient) follow the log without the graph as it was then.
    """
    w = graph.work(work)
    assert w is not None
    by_recipient: dict[str, dict[str, Fraction]] = {}

    def add(recipient: str, paying: str, share: Fraction) -> None:
        routes = by_recipient.setdefault(recipient, {})
        routes[paying] = routes.get(paying, Fraction(0)) + share

    if w.retracted:
        add(UNATTRIBUTED, work, Fraction(1))
    elif w.kind == CONTRIBUTION:
        for author, _ in w.authors:
            add(author, work, Fraction(1))
    else:
        upstream = Fraction(w.upstream_bps, BPS_PER_UNIT)
        if upstream < 1:
            for author, weight in w.authors:
                add(author, work, (1 - upstream) * Fraction(weight, w.author_weight))
        if upstream > 0:
            for component, weight in w.components:
                reaching = upstream * Fraction(weight, w.component_weight)
                vector = graph.vector(component)
                for recipient, numerator in vector.numerators.items():
                    add(recipient, component, reaching * Fraction(numerator, vector.denominator))
    out: dict[str, dict[str, str]] = {}
    for recipient in sorted(by_recipient):
        routes = by_recipient[recipient]
        total = sum(routes.values())
        out[recipient] = {paying: fraction_str(share / total) for paying, share in sorted(routes.items()) if share}
    return out


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
