"""The 3000-deep remix chain the engines and their memory are tested on:
prosumers p0…p{depth}, the contribution w0 by p0, and outputs w1…w{depth},
each composed of the one below it, by its own prosumer, passing
`upstream_bps` on (5001 bps gives the sold top a vector of depth + 1
accounts over a 12 904-digit denominator at depth 3000)."""

from __future__ import annotations

from typing import Any

import orjson

PLATFORM = "deep"


def chain_event(n: int, type_: str, data: dict[str, Any]) -> bytes:
    """Event `e{n}` of the chain's platform, as a line."""
    return orjson.dumps({"v": 1, "id": f"e{n}", "platform": PLATFORM, "type": type_, "at": "2026-10-01T00:00:00Z",
                         "data": data})


def remix_chain_lines(depth: int, upstream_bps: int) -> list[bytes]:
    """The chain's events e0…e{2·depth + 1}; the next free id is e{len(lines)}."""
    lines = [chain_event(i, "prosumer.registered", {"prosumer": f"p{i}"}) for i in range(depth + 1)]
    lines.append(chain_event(len(lines), "contribution.recorded", {"work": "w0", "authors": {"p0": 1}}))
    for i in range(1, depth + 1):
        lines.append(chain_event(len(lines), "output.composed", {"work": f"w{i}", "components": {f"w{i - 1}": 1},
                                                                  "authors": {f"p{i}": 1},
                                                                  "upstream_bps": upstream_bps}))
    return lines
