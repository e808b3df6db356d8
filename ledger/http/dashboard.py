"""What the dashboard shows: where the value went, who earned, what came in.

The flow picture of a (UTC month, currency) is read from the flow tables
(`ledger.storage.flows`), which the projector keeps (`ledger.ingest.projector`;
how a sale is routed is `projections.flows`): sold works → paying works →
recipients.  A request first brings the platform's flows to the log's head
(normally nothing to do: `serve`'s projector follows the log) and reads
them under the platform's flows lock, so the picture is exact at one seq.

The picture keeps the largest nodes of each column and folds the rest into
"other …" nodes (`sankey`): `TOP_SOLD`, `TOP_PAYING` and `TOP_RECIPIENTS`
nodes are read by rank, the links among them by key, and every link to or
from an "other" node is what the node totals leave over.  So a request
reads a few dozen rows, whatever the number of works sold in the period,
and every column still sums to the value realized.  Reversals are not
drawn: they are reported as the period's `reversed` total.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attribution import PLATFORM, UNATTRIBUTED, from_json_obj, other_method
from ledger.ingest.projector import FlowFollower
from ledger.storage import flows as flow_tables
from ledger.storage.queries import NotFound
from ledger.storage.store import Store
from ledger.storage.views import read_closed_pool, value_seq
from projections.flows import (
    FEE_NODE,
    OTHERS,
    PAYING,
    PAYING_RECIPIENT,
    RECIPIENT,
    SOLD,
    SOLD_PAYING,
    pool_links,
)
from projections.insights import gain_lose, methods_fairness
from projections.state import POOL_WORK_PREFIX

# Nodes kept per column before the rest is folded into "other …".
TOP_SOLD = 8
TOP_PAYING = 10
TOP_RECIPIENTS = 12


@dataclass
class Picture:
    """What the flow picture of one (period, currency) is drawn from, in
    integer minor units: the column total (the value realized), the kept
    nodes of each column with their totals, and the links among kept nodes."""

    realized: int = 0
    reversed: int = 0  # sum of value.reversed amounts booked in the period (positive)
    values: int = 0
    sold: dict[str, int] = field(default_factory=dict)
    paying: dict[str, int] = field(default_factory=dict)
    recipients: dict[str, int] = field(default_factory=dict)
    sold_paying: dict[tuple[str, str], int] = field(default_factory=dict)
    paying_recipient: dict[tuple[str, str], int] = field(default_factory=dict)


class FlowViews:
    """The flow pictures of a database's platforms, brought to the log's
    head on request."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.follower = FlowFollower(store)

    def flows(self, platform: str, period: str | None, currency: str | None) -> dict[str, Any]:
        """The flow picture of a period (default: the latest period with
        sales, in its currency with the most value), at the log's head."""
        with self.follower.at_head(platform) as seq:
            return flows_doc(self.store, platform, seq, period, currency)


def flows_doc(store: Store, platform: str, seq: int, period: str | None, currency: str | None) -> dict[str, Any]:
    rows = {(p, c): row for row in flow_tables.periods(store, platform) for p, c in (row[:2],)}
    available = [{"period": p, "currency": c, "realized": realized, "values": values}
                 for p, c, realized, _, values in rows.values()]
    candidates = [a for a in available if (period is None or a["period"] == period)
                  and (currency is None or a["currency"] == currency)]
    if period is None and candidates:
        latest = max(a["period"] for a in candidates)
        candidates = [a for a in candidates if a["period"] == latest]
    chosen = max(candidates, key=lambda a: (a["realized"], a["currency"]), default=None)
    if chosen is None:
        p, c, picture = period, currency, Picture()
    else:
        p, c = chosen["period"], chosen["currency"]
        picture = read_picture(store, platform, *rows[(p, c)])
    nodes, links = sankey(picture)
    return {
        "platform": platform, "seq": seq, "period": p, "currency": c,
        "realized": picture.realized, "reversed": picture.reversed, "values": picture.values,
        "nodes": nodes, "links": links, "available": available,
    }


def read_picture(store: Store, platform: str, period: str, currency: str, realized: int, reversed_minor: int,
                 values: int) -> Picture:
    """The picture of (period, currency) with those totals: the top nodes
    of each column and the links among them (five small queries)."""
    at = (store, platform, period, currency)
    sold = flow_tables.top_nodes(*at, SOLD, TOP_SOLD)
    paying = flow_tables.top_nodes(*at, PAYING, TOP_PAYING, always=(FEE_NODE,))
    recipients = flow_tables.top_nodes(*at, RECIPIENT, TOP_RECIPIENTS, always=(PLATFORM, UNATTRIBUTED))
    return Picture(
        realized=realized, reversed=reversed_minor, values=values, sold=sold, paying=paying, recipients=recipients,
        sold_paying=flow_tables.link_units(*at, SOLD_PAYING, sold, paying),
        paying_recipient=flow_tables.link_units(*at, PAYING_RECIPIENT, paying, recipients),
    )


def _gap(total: int, sources: Mapping[str, int], targets: Mapping[str, int],
         kept: Mapping[tuple[str, str], int], source_prefix: str, target_prefix: str) -> Counter[tuple[str, str]]:
    """The links of one gap between kept nodes and "other" nodes (`*`).

    Links among kept nodes are stored; a kept source's link to the other
    targets is its total less its links to kept targets (and likewise for a
    kept target); the others' link to each other is what the column total
    leaves.  Every stored link is positive, so a link is drawn iff it is."""
    links: Counter[tuple[str, str]] = Counter()
    for (source, target), units in kept.items():
        links[(f"{source_prefix}:{source}", f"{target_prefix}:{target}")] += units
    for source, units in sources.items():
        links[(f"{source_prefix}:{source}", f"{target_prefix}:*")] += units - sum(
            u for (s, _), u in kept.items() if s == source)
    for target, units in targets.items():
        links[(f"{source_prefix}:*", f"{target_prefix}:{target}")] += units - sum(
            u for (_, t), u in kept.items() if t == target)
    links[(f"{source_prefix}:*", f"{target_prefix}:*")] += total - sum(links.values())
    return Counter({link: units for link, units in links.items() if units})


def sankey(picture: Picture) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes (id, label, column, kind, amount) and links (source, target,
    amount) of the picture; columns 0 sold works, 1 paying works, 2 recipients."""
    left = _gap(picture.realized, picture.sold, picture.paying, picture.sold_paying, "s", "p")
    right = _gap(picture.realized, picture.paying, picture.recipients, picture.paying_recipient, "p", "r")
    amounts: Counter[str] = Counter()
    for (source, _), units in left.items():
        amounts[source] += units
    for (paying, target), units in right.items():
        amounts[paying] += units
        amounts[target] += units
    nodes = [_node(node_id, amounts[node_id]) for node_id in amounts]
    nodes.sort(key=lambda n: (n["column"], n["id"].endswith(":*"), -n["amount"], n["id"]))
    links = [{"source": s, "target": t, "amount": units} for (s, t), units in (*left.items(), *right.items())]
    links.sort(key=lambda link: (link["source"], -link["amount"], link["target"]))
    return nodes, links


_OTHER_LABELS = {"s": "other sold works", "p": "other works", "r": "other prosumers"}
_COLUMNS = {"s": 0, "p": 1, "r": 2}


def _node(node_id: str, amount: int) -> dict[str, Any]:
    prefix, name = node_id.split(":", 1)
    if name == "*":
        label, kind = _OTHER_LABELS[prefix], "other"
    elif name.startswith(POOL_WORK_PREFIX):  # a closed pool: sold as a whole, paying through its works
        pool = name[len(POOL_WORK_PREFIX):]
        label, kind = (f"pool {pool}", "pool") if prefix == "s" else (f"works of pool {pool}", "work")
    elif prefix == "p" and name == FEE_NODE:
        label, kind = "platform fee", "fee"
    elif prefix == "r" and name.startswith("@"):
        label, kind = name, "system"
    else:
        label, kind = name, {"s": "sold", "p": "work", "r": "prosumer"}[prefix]
    return {"id": node_id, "label": label, "column": _COLUMNS[prefix], "kind": kind, "amount": amount}


# -- a usage pool ---------------------------------------------------------------

# Rows of a pool's comparison tables (recipients, works), largest first.
POOL_ROWS = 20
# Pools listed for the dashboard's choice, newest first.
POOLS_LISTED = 100


def pools_doc(store: Store, platform: str, limit: int = POOLS_LISTED) -> dict[str, Any]:
    """The platform's usage pools, the newest opened first (one query)."""
    rows = store.query("SELECT pool, currency, method, funded, closed, seq FROM peerledger_pools WHERE platform = ? "
                       "ORDER BY seq DESC LIMIT ?", (platform, limit))
    return {"platform": platform, "pools": [
        {"pool": p, "currency": c, "method": m, "funded": int(f), "closed": bool(closed), "opened_seq": int(seq)}
        for p, c, m, f, closed, seq in rows]}


def pool_doc(store: Store, platform: str, pool: str) -> dict[str, Any]:
    """One usage pool as the dashboard shows it: an open pool's funding so
    far; a closed pool's flows (the pool → its largest works, stage 1 → its
    largest recipients, exact as booked: `projections.flows.pool_links`)
    and the two methods compared, recipient by recipient and work by work,
    with each method's fairness among the prosumers either reaches.

    Reads the pool's row and, once closed, its stored explanation (stage 1
    under both methods: O(works used) to parse) and nothing else: no graph,
    no log.  NotFound for a pool the platform never opened."""
    rows = store.query("SELECT currency, method, funded, closed, seq FROM peerledger_pools "
                       "WHERE platform = ? AND pool = ?", (platform, pool))
    if not rows:
        raise NotFound(f"no pool {pool!r} in platform {platform!r}")
    currency, method, funded, closed, opened_seq = rows[0]
    funders = store.query("SELECT COUNT(*) FROM peerledger_pool_funding WHERE platform = ? AND pool = ?",
                          (platform, pool))[0][0]
    doc: dict[str, Any] = {
        "platform": platform, "pool": pool, "currency": currency, "method": method, "other_method":
        other_method(method), "funded": int(funded), "funders": int(funders), "opened_seq": int(opened_seq),
        "closed": bool(closed), "closed_seq": None, "reversed": 0, "nodes": [], "links": [], "comparison": None,
    }
    found = read_closed_pool(store, platform, pool)
    if found is None:
        return doc
    ex, shares, stored = found
    works, alternative = ex["pool"]["works"], ex["pool"]["alternative"]
    doc.update(closed_seq=value_seq(store, platform, pool), reversed=ex["reversed"])
    if shares is not None:
        doc["nodes"], doc["links"] = sankey(_pool_picture(pool, ex, shares, stored))
    booked, other = ex["allocation"], alternative["allocation"]
    prosumers = sorted({a for a in (*booked, *other) if not a.startswith("@")})
    units = {method: [booked.get(p, 0) for p in prosumers], alternative["method"]: [other.get(p, 0) for p in prosumers]}
    doc["comparison"] = {
        **methods_fairness(units),
        "under_other_method": gain_lose(units[method], units[alternative["method"]]),
        "recipients": _largest(booked, other, "recipient"),
        "works_used": len(set(works) | set(alternative["works"])),
        "works": _largest(works, alternative["works"], "work"),
    }
    return doc


def _largest(booked: Mapping[str, int], other: Mapping[str, int], key: str) -> list[dict[str, Any]]:
    """The POOL_ROWS keys with the most units under either method, units under each
    (a partial sort: a pool may name 200 000 works)."""
    # The largest under either method are among each method's own largest
    # (ranked the same way: more units first, then by id).
    candidates = {n for units in (booked, other)
                  for n in heapq.nsmallest(POOL_ROWS, units, key=lambda n, units=units: (-units[n], n))}
    names = sorted(candidates, key=lambda n: (-max(booked.get(n, 0), other.get(n, 0)), n))[:POOL_ROWS]
    return [{key: n, "booked": booked.get(n, 0), "alternative": other.get(n, 0)} for n in names]


def _pool_picture(pool: str, ex: dict[str, Any], shares: Any, stored: dict[str, Any]) -> Picture:
    """A closed pool's flow picture: sold node the pool, paying nodes its
    largest works (those whose V(w) was stored at the close), recipients
    the largest prosumers and the system accounts."""
    x, allocation, works = ex["amount"], ex["allocation"], ex["pool"]["works"]
    vectors = {w: from_json_obj(v) for w, v in stored.get("vectors", {}).items()}
    prosumers = sorted((r for r in allocation if not r.startswith("@")), key=lambda r: (-allocation[r], r))
    recipients = [*prosumers[:TOP_RECIPIENTS], *(r for r in (PLATFORM, UNATTRIBUTED) if r in allocation)]
    links = pool_links(x, shares, allocation, works, vectors, recipients)
    through: Counter[str] = Counter()
    for (w, _), units in links.items():
        through[w] += units
    sold = POOL_WORK_PREFIX + pool
    paying = {w: through[w] for w in vectors if through[w]}
    return Picture(
        realized=x, reversed=ex["reversed"], values=1, sold={sold: x}, paying=paying,
        recipients={r: allocation[r] for r in recipients if allocation[r]},
        sold_paying={(sold, w): units for w, units in paying.items()},
        paying_recipient={(w, r): units for (w, r), units in links.items() if w != OTHERS and r != OTHERS},
    )


# -- the other panels ---------------------------------------------------------


def top_earners(store: Store, platform: str, period: str, currency: str, limit: int) -> list[dict[str, Any]]:
    """The prosumers who earned most in a period and currency (from the
    statements read model), with their period figures."""
    rows = store.query(
        "SELECT account, earned, reversed, paid FROM peerledger_statements "
        "WHERE platform = ? AND period = ? AND currency = ?",
        (platform, period, currency),
    )
    # Money is decimal TEXT on SQLite: rank in Python, exactly.
    figures = [(int(e), a, int(r), int(p)) for a, e, r, p in rows if not a.startswith("@")]
    figures.sort(key=lambda f: (-f[0], f[1]))
    return [{"prosumer": a, "earned": e, "reversed": r, "paid": p, "net": e + r - p}
            for e, a, r, p in figures[:limit]]


# Only this many of the newest events and rejects are looked at for the rate.
RATE_SCAN_MAX_ROWS = 200_000


def ingest_rate(store: Store, platform: str, since: str) -> dict[str, dict[str, int]]:
    """Accepted events and rejects per minute (ledger time, "YYYY-MM-DDTHH:MM")
    since the instant `since`, from the newest RATE_SCAN_MAX_ROWS of each."""
    head = store.head(platform)
    accepted = store.query(
        "SELECT substr(accepted_at, 1, 16), COUNT(*) FROM peerledger_event_ids "
        "WHERE platform = ? AND seq > ? AND accepted_at >= ? GROUP BY substr(accepted_at, 1, 16)",
        (platform, head - RATE_SCAN_MAX_ROWS, since),
    )
    newest = store.query("SELECT MAX(reject_id) FROM peerledger_rejects WHERE platform = ?", (platform,))
    rejected = store.query(
        "SELECT substr(received_at, 1, 16), COUNT(*) FROM peerledger_rejects "
        "WHERE platform = ? AND reject_id > ? AND received_at >= ? GROUP BY substr(received_at, 1, 16)",
        (platform, int(newest[0][0] or 0) - RATE_SCAN_MAX_ROWS, since),
    )
    return {"accepted": {m: int(n) for m, n in accepted}, "rejected": {m: int(n) for m, n in rejected}}
