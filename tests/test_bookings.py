"""Booking documents (EVENTS.md §9), as the spec says them, through the real
CLI and the real HTTP server on both backends.

The worked example (examples/worked.jsonl) books, at seq 8, the 1001 USD sale
of o1: @platform 100 (the 10 % fee), carol 601, alice 180, bob 120 (o1 passes
40 % upstream to c1 and c2); at seq 9 the 500 USD refund takes back half of
each (−50, −300, −90, −60, signed, in `reversed`); at seq 13 carol is paid 400
(`paid` +400).  A registration books nothing: `"bookings": []`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES
from http_helpers import make_token, running_server

from ledger.bookings.documents import PAGE_DOCUMENTS, read_documents
from ledger.demo.generate import generate, write_jsonl
from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
WORKED = EXAMPLES / "worked.jsonl"
POOLS = EXAMPLES / "pools.jsonl"


def run(*args: str, db: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          env={**BASE_ENV, **(env or {})}, timeout=300)


def documents(db: str, platform: str = "demo", *more: str) -> list[dict[str, Any]]:
    r = run("bookings", "--platform", platform, *more, db=db)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def ingested(db: str, path: Path | str, env: dict[str, str] | None = None) -> None:
    assert run("ingest", str(path), db=db, env=env).returncode in (0, 3)


def sums(docs: list[dict[str, Any]], upto_seq: int) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"earned": 0, "reversed": 0, "paid": 0})
    for d in docs:
        if d["seq"] <= upto_seq:
            for b in d["bookings"]:
                out[(b["account"], b["currency"])][b["column"]] += b["amount"]
    return out


def columns(balances: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    return {(r["account"], r["currency"]): {c: r[c] for c in ("earned", "reversed", "paid")} for r in balances}


def figures(store: Store, platform: str, seq: int) -> dict[tuple[str, str], dict[str, int]]:
    return columns(balances_as_of(store, platform, seq))


@pytest.fixture
def worked(db_url: str) -> str:
    ingested(db_url, WORKED)
    return db_url


def test_one_document_per_accepted_event_in_seq_order(worked: str):
    docs = documents(worked)
    with Store(worked) as store:
        head = store.head("demo")
        events = [json.loads(e.state) for e in store.read_log("demo")]
    assert [d["seq"] for d in docs] == list(range(1, head + 1))
    assert [(d["id"], d["type"], d["at"]) for d in docs] == [(e["id"], e["type"], e["at"]) for e in events]
    assert {d["platform"] for d in docs} == {"demo"}


def test_a_sale_books_earned_per_recipient_in_account_order(worked: str):
    sale = documents(worked)[7]
    assert (sale["seq"], sale["id"], sale["type"]) == (8, "e8", "value.realized")
    assert [(b["account"], b["column"], b["amount"], b["currency"]) for b in sale["bookings"]] == [
        ("@platform", "earned", 100, "USD"), ("alice", "earned", 180, "USD"),
        ("bob", "earned", 120, "USD"), ("carol", "earned", 601, "USD")]


def test_a_reversal_books_reversed_signed(worked: str):
    refund = documents(worked)[8]
    assert refund["at"] == "2026-11-02T08:00:00+01:00"  # the event's own `at`, as it was sent
    assert [(b["account"], b["column"], b["amount"]) for b in refund["bookings"]] == [
        ("@platform", "reversed", -50), ("alice", "reversed", -90), ("bob", "reversed", -60),
        ("carol", "reversed", -300)]


def test_a_payout_books_paid_and_its_return_books_it_back(db_url: str, tmp_path: Path):
    events = [json.loads(line) for line in WORKED.read_text().splitlines() if line.strip()]
    events.append({"v": 1, "id": "r1", "platform": "demo", "type": "payout.returned", "at": "2026-12-01T00:00:00Z",
                   "data": {"payout": "p1", "reason": "AC04"}})
    write_jsonl(tmp_path / "w.jsonl", events)
    ingested(db_url, tmp_path / "w.jsonl")
    docs = documents(db_url)
    paid = [(d["type"], b["account"], b["column"], b["amount"]) for d in docs for b in d["bookings"]
            if b["column"] == "paid"]
    assert paid == [("payout.issued", "carol", "paid", 400), ("payout.returned", "carol", "paid", -400)]


def test_an_event_that_books_nothing_has_an_empty_list(worked: str):
    docs = documents(worked)
    assert [d["bookings"] for d in docs if d["type"] in ("policy.set", "prosumer.registered",
                                                          "contribution.recorded", "output.composed")] == [[]] * 7


def test_zero_unit_bookings_are_entries(db_url: str, tmp_path: Path):
    write_jsonl(tmp_path / "z.jsonl", [
        {"v": 1, "id": f"r{p}", "platform": "z", "type": "prosumer.registered", "at": "2026-10-01T00:00:00Z",
         "data": {"prosumer": p}} for p in ("a", "b", "c")] + [
        {"v": 1, "id": "w", "platform": "z", "type": "contribution.recorded", "at": "2026-10-01T00:00:00Z",
         "data": {"work": "w", "authors": {"a": 1, "b": 1, "c": 1}}},
        {"v": 1, "id": "s", "platform": "z", "type": "value.realized", "at": "2026-10-01T00:00:00Z",
         "data": {"value": "v", "work": "w", "amount": 1, "currency": "USD"}}])
    ingested(db_url, tmp_path / "z.jsonl")
    sale = documents(db_url, "z")[-1]
    assert [(b["account"], b["amount"]) for b in sale["bookings"]] == [("a", 1), ("b", 0), ("c", 0)]


def test_a_pool_close_books_its_allocations_as_earned(db_url: str):
    ingested(db_url, POOLS)
    with Store(db_url) as store:
        platform = store.platforms()[0]
    docs = documents(db_url, platform)
    closes = [d for d in docs if d["type"] == "pool.closed"]
    assert closes and all(b["column"] == "earned" for d in closes for b in d["bookings"])
    expected = json.loads((EXAMPLES / "pools.expected.json").read_text())["balances"]
    assert sums(docs, docs[-1]["seq"]) == columns(expected)  # the spec's balances, to the minor unit


def test_the_documents_add_up_to_the_balances_at_every_n(db_url: str, tmp_path: Path):
    """A generated stream with every event type, returned payouts added: at
    several n, the sums of documents ≤ n are the balances after n events."""
    events = list(generate(5, 3000))
    issued = [e for e in events if e["type"] == "payout.issued"][:3]
    events += [{"v": 1, "id": f"ret{i}", "platform": "demo", "type": "payout.returned", "at": events[-1]["at"],
                "data": {"payout": e["data"]["payout"]}} for i, e in enumerate(issued)]
    write_jsonl(tmp_path / "g.jsonl", events)
    ingested(db_url, tmp_path / "g.jsonl")
    docs = documents(db_url)
    assert {d["type"] for d in docs} >= {"value.realized", "value.reversed", "payout.issued", "payout.returned",
                                         "pool.closed"}
    with Store(db_url) as store:
        head = store.head("demo")
        for n in (1, 12, 500, 1777, 2400, head):
            assert sums(docs, n) == figures(store, "demo", n), n


def test_both_engines_give_the_same_bytes(sqlite_url: str, tmp_path: Path):
    write_jsonl(tmp_path / "g.jsonl", generate(6, 1500))
    python_db = f"sqlite:///{tmp_path / 'python.db'}"
    ingested(sqlite_url, tmp_path / "g.jsonl")
    ingested(python_db, tmp_path / "g.jsonl", env={"PEERLEDGER_ENGINE": "python"})
    native = run("bookings", "--platform", "demo", db=sqlite_url).stdout
    reference = run("bookings", "--platform", "demo", db=python_db).stdout
    assert native == reference and native.count(b"\n") == 1500


def test_each_line_is_the_documents_canonical_bytes(worked: str):
    r = run("bookings", "--platform", "demo", db=worked)
    for line in r.stdout.splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False).encode()


def test_from_seq_starts_there(worked: str):
    assert [d["seq"] for d in documents(worked, "demo", "--from-seq", "12")] == [12, 13]  # the head is 13


def test_a_platform_without_events_is_not_found_unless_followed(worked: str):
    r = run("bookings", "--platform", "nobody", db=worked)
    assert r.returncode == 4 and b"no events" in r.stderr


def test_follow_writes_each_document_once_it_is_committed(sqlite_url: str, tmp_path: Path):
    lines = [line for line in WORKED.read_text().splitlines() if line.strip()]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:8]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[8:]) + "\n")
    ingested(sqlite_url, tmp_path / "a.jsonl")
    follower = subprocess.Popen([sys.executable, "-m", "ledger.cli", "bookings", "--platform", "demo", "--follow",
                                 "--db", sqlite_url], stdout=subprocess.PIPE, env=BASE_ENV)
    try:
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline())["seq"] for _ in range(8)]
        assert first == list(range(1, 9))
        ingested(sqlite_url, tmp_path / "b.jsonl")
        later = [json.loads(follower.stdout.readline())["seq"] for _ in range(5)]
        assert later == list(range(9, 14))  # the worked example's head is 13
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0


def test_a_closed_pipe_ends_the_command_quietly(sqlite_url: str, tmp_path: Path):
    write_jsonl(tmp_path / "g.jsonl", generate(5, 3000))
    ingested(sqlite_url, tmp_path / "g.jsonl")
    r = subprocess.run(f"{sys.executable} -m ledger.cli bookings --platform demo --db {sqlite_url} | head -n 2",
                       shell=True, capture_output=True, env=BASE_ENV, timeout=120)
    assert r.stdout.count(b"\n") == 2 and b"Traceback" not in r.stderr


def test_a_page_is_bounded_and_follows_on(worked: str):
    with Store(worked) as store:
        pages = [read_documents(store, "demo", after, 4) for after in (0, 4, 8, 12, 13)]
        with pytest.raises(AssertionError):
            read_documents(store, "demo", 0, PAGE_DOCUMENTS + 1)
    assert [[d.seq for d in page] for page in pages] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13], []]


def test_http_bookings_pages_for_readers_only(sqlite_url: str, tmp_path: Path):
    ingested(sqlite_url, WORKED)
    tokens = {role: make_token(sqlite_url, role, "demo") for role in ("operator", "auditor", "ingest")}
    cli = run("bookings", "--platform", "demo", db=sqlite_url).stdout
    with running_server(sqlite_url, tmp_path) as server:
        for role in ("operator", "auditor"):
            with server.client(tokens[role]) as c:
                body, start = b"", 1
                while True:
                    r = c.get("/v1/platforms/demo/bookings", params={"from_seq": start, "limit": 6})
                    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
                    if not r.content:
                        break
                    body, start = body + r.content, int(r.headers["x-ledger-next-seq"])
                assert body == cli and start == 14
        with server.client(tokens["operator"]) as c:
            assert c.get("/v1/platforms/demo/bookings", params={"from_seq": 15}).status_code == 404
            assert c.get("/v1/platforms/demo/bookings", params={"limit": PAGE_DOCUMENTS + 1}).status_code == 400
        with server.client(tokens["ingest"]) as c:
            assert c.get("/v1/platforms/demo/bookings").status_code == 403
        with server.client(tokens["auditor"]) as c:
            assert c.get("/v1/platforms/other/bookings").status_code == 404
