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

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attribution import PLATFORM, UNATTRIBUTED
from ledger.ingest.projector import FlowFollower
from ledger.storage import flows as flow_tables
from ledger.storage.store import Store
from projections.flows import (
    FEE_NODE,
    PAYING,
    PAYING_RECIPIENT,
    RECIPIENT,
    SOLD,
    SOLD_PAYING,
)

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
    elif prefix == "p" and name == FEE_NODE:
        label, kind = "platform fee", "fee"
    elif prefix == "r" and name.startswith("@"):
        label, kind = name, "system"
    else:
        label, kind = name, {"s": "sold", "p": "work", "r": "prosumer"}[prefix]
    return {"id": node_id, "label": label, "column": _COLUMNS[prefix], "kind": kind, "amount": amount}


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
