"""Why a value was split the way it was: shares, allocation and paths."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from attribution import WorkGraph, allocate, fraction_str, parse_decimal, ratio_str
from attribution.shares import ShareVector

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
    }


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
