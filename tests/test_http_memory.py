"""Bounded memory per HTTP request: a real `peerledger serve`, its resident
memory read from /proc while hostile bodies are posted.

The figure is the growth of the server's peak resident memory over its
resident memory before the body: per process (front, writer, projector, and
multiprocessing's helper) the kernel's high-water mark (VmHWM, reset through
/proc/PID/clear_refs before each body), summed over the process tree.  A sum
of per-process peaks bounds the peak of the sum from above.

Before bodies were cut and counted while split, a 2 MiB array of a million
tiny items grew the server by over 100 MiB before its 413; each body here now
costs the server a few copies of its bytes and one item's objects at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from http_helpers import Server, make_token, running_server

from ledger.http.app import BODY_MAX_BYTES
from ledger.ingest.sources import EVENTS_PER_REQUEST_MAX

MIB = 1024 * 1024
# What one body of at most 3 MiB may add to the server's peak resident memory.
SMALL_BODY_GROWTH_MAX_BYTES = 64 * MIB
# What a body at the 16 MiB limit may add: the front holds it twice (read, then
# pickled for the writer), the writer twice (received, then masked for
# splitting) plus its items' slices, and one item's objects at a time.
LARGE_BODY_GROWTH_MAX_BYTES = 8 * BODY_MAX_BYTES

EVENT = b'{"v":1,"id":"ok","platform":"mem","type":"prosumer.registered","at":"2026-12-01T00:00:00Z",' \
        b'"data":{"prosumer":"ann"}}'


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _peak_growth(server: Server, post: httpx.Client, body: bytes, media: str) -> tuple[int, httpx.Response]:
    """(bytes the server's summed peak RSS grew over its RSS before, the answer)."""
    pids = _tree(server.process.pid)
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = sum(_status_kib(pid, "VmRSS") for pid in pids)
    r = post.post("/v1/platforms/mem/events", content=body, headers={"content-type": media})
    assert _tree(server.process.pid) == pids, "the server's processes changed (a helper died?)"
    peak = sum(_status_kib(pid, "VmHWM") for pid in pids)
    return (peak - before) * 1024, r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http_memory")
    db_url = f"sqlite:///{tmp / 'ledger.db'}"
    admin = make_token(db_url, "admin", None)
    with running_server(db_url, tmp) as srv:
        srv.tokens["admin"] = admin
        with srv.client(admin) as c:  # warm: the writer's first POST imports and folds
            assert c.post("/v1/platforms/mem/events", content=b"[" + EVENT + b"]",
                          headers={"content-type": "application/json"}).status_code == 200
        yield srv


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


SMALL_BODIES = {
    "json array, 1 048 576 tiny items (2 MiB)": (b"[" + b"0," * (MIB - 1) + b"0]", "application/json", 413),
    "ndjson, 1 048 576 lines of {} (3 MiB)": (b"{}\n" * MIB, "application/x-ndjson", 413),
    "json array, one element 1 048 576 deep (2 MiB)": (b"[" + EVENT + b"," + _nested(MIB) + b"]",
                                                        "application/json", 200),
    "ndjson, a line 500 000 deep (1 MiB)": (EVENT + b"\n" + _nested(500_000), "application/x-ndjson", 200),
    "json array, 3 elements 1 000 deep": (b"[" + b",".join([_nested(1000)] * 3) + b"]", "application/json", 200),
}


@pytest.mark.parametrize("name", list(SMALL_BODIES))
def test_a_hostile_body_of_a_few_mib_grows_the_server_by_less_than_64_mib(server: Server, name: str):
    body, media, status = SMALL_BODIES[name]
    with server.client(server.tokens["admin"]) as c:
        growth, r = _peak_growth(server, c, body, media)
    print(f"{name}: {len(body) / MIB:.1f} MiB body, answer {r.status_code}, "
          f"peak resident growth {growth / MIB:.1f} MiB")
    assert r.status_code == status, r.text[:300]
    if status == 413:
        assert str(EVENTS_PER_REQUEST_MAX) in r.json()["detail"]
    assert growth < SMALL_BODY_GROWTH_MAX_BYTES


LARGE_ITEMS = 15  # each just under 1 MiB: parsed one at a time, each rejected
LARGE_BODIES = {
    "json array, 15 elements of 349 000 empty objects": (
        b"[" + b",".join([b"[" + b",".join([b"{}"] * 349_000) + b"]"] * LARGE_ITEMS) + b"]", "application/json"),
    "ndjson, 15 lines of 349 000 empty objects": (
        b"\n".join([b"[" + b",".join([b"{}"] * 349_000) + b"]"] * LARGE_ITEMS), "application/x-ndjson"),
    "json array, 8 388 608 deep (16 MiB)": (_nested(BODY_MAX_BYTES // 2 - 1), "application/json"),
}


@pytest.mark.parametrize("name", list(LARGE_BODIES))
def test_a_hostile_body_at_the_16_mib_limit_costs_a_few_copies_of_itself(server: Server, name: str):
    body, media = LARGE_BODIES[name]
    assert len(body) <= BODY_MAX_BYTES
    with server.client(server.tokens["admin"]) as c:
        growth, r = _peak_growth(server, c, body, media)
    print(f"{name}: {len(body) / MIB:.1f} MiB body, answer {r.status_code}, "
          f"peak resident growth {growth / MIB:.1f} MiB")
    assert r.status_code == 200, r.text[:300]
    assert {x["code"] for x in r.json()["results"]} == {"invalid"}
    assert growth < LARGE_BODY_GROWTH_MAX_BYTES
