"""A crash at any instant loses no acknowledged event and duplicates none,
and the stored state always equals a rebuild from the log; writers of one
database (SQLite or PostgreSQL) never give up on each other and end with
the log one writer makes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.audit.verify import verify
from ledger.demo.generate import generate, generate_many, write_jsonl
from ledger.storage.store import Store
from ledger.storage.views import read_balances
from projections.balances import balances_digest

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def ingest_cmd(db: str, *files: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", "ingest", *files, "--json", "--db", db]


def log_of(db: str, platform: str) -> list[bytes]:
    with Store(db) as store:
        return [e.state for e in store.read_log(platform)]


def digest_of(db: str, platform: str) -> str:
    with Store(db) as store:
        return balances_digest(read_balances(store, platform))


def reference(tmp_path: Path, stream: Path) -> dict[str, object]:
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    r = subprocess.run(ingest_cmd(url, str(stream)), capture_output=True, text=True, env=BASE_ENV, timeout=600)
    assert r.returncode in (0, 3), r.stderr
    return {"url": url, "summary": json.loads(r.stdout)}


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "stream.jsonl"
    with open(path, "wb") as f:
        write_jsonl(f, generate(11, 12_000, "crash", bad_fraction_ppm=3000))
    return path


@pytest.mark.slow
def test_kill_9_during_ingest_then_ingest_again_gives_the_same_ledger(db_url: str, stream: Path, tmp_path: Path):
    ref = reference(tmp_path, stream)
    rng = random.Random(5)
    total = len(log_of(ref["url"], "crash"))
    # Several random points, each later in the log than the last: the process
    # is killed as soon as the log has grown past the point (mid-batch, or
    # between a commit and the next, wherever it happens to be).
    # One point per quarter of the log (minus its last batch), at least a
    # batch apart, so each kill lands while events are still being appended.
    quarter = (total - 1500) // 4
    kill_points = [rng.randrange(i * quarter + 200, (i + 1) * quarter - 200) for i in range(4)]
    kills = 0
    with Store(db_url) as watcher:
        for point in kill_points:
            proc = subprocess.Popen(ingest_cmd(db_url, str(stream)), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=BASE_ENV)
            deadline = time.monotonic() + 120
            while proc.poll() is None and watcher.head("crash") < point and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            assert watcher.head("crash") < total, "the ingest finished before it could be killed"
            # The state committed with the last batch before the kill is the
            # state its log implies, row for row.
            report = verify(watcher, "crash")
            assert report.ok, report.difference
    assert kills == len(kill_points)
    final = subprocess.run(ingest_cmd(db_url, str(stream)), capture_output=True, text=True, env=BASE_ENV, timeout=600)
    assert final.returncode in (0, 3), final.stderr
    summary = json.loads(final.stdout)
    # Everything accepted before a kill is now a duplicate, the rest accepted.
    assert summary["accepted"] + summary["duplicate"] == ref["summary"]["accepted"] + ref["summary"]["duplicate"]
    assert log_of(db_url, "crash") == log_of(ref["url"], "crash")  # nothing lost, nothing doubled, same order
    assert digest_of(db_url, "crash") == digest_of(ref["url"], "crash")
    with Store(db_url) as store:
        assert verify(store, "crash").ok


@pytest.mark.slow
def test_three_ingest_processes_with_overlapping_input_make_the_log_of_one(db_url: str, tmp_path: Path):
    both = tmp_path / "both.jsonl"
    with open(both, "wb") as f:
        write_jsonl(f, generate_many(3, 9_000, ["alpha", "beta"]))
    only_beta = tmp_path / "beta-and-gamma.jsonl"
    lines = both.read_bytes().splitlines()
    with open(only_beta, "wb") as f:
        f.write(b"\n".join(line for line in lines if b'"platform":"beta"' in line) + b"\n")
        write_jsonl(f, generate(4, 3_000, "gamma"))
    ref = f"sqlite:///{tmp_path / 'one.db'}"
    for path in (both, only_beta):
        subprocess.run(ingest_cmd(ref, str(path)), check=False, capture_output=True, env=BASE_ENV, timeout=600)

    procs = [subprocess.Popen(ingest_cmd(db_url, str(p)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=BASE_ENV)
             for p in (both, only_beta, both)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode in (0, 3) for p in procs), [r[1][-2000:] for r in results]
    summaries = [json.loads(out) for out, _ in results]
    for platform in ("alpha", "beta", "gamma"):
        assert log_of(db_url, platform) == log_of(ref, platform), platform
        assert digest_of(db_url, platform) == digest_of(ref, platform)
        with Store(db_url) as store:
            report = verify(store, platform)
            assert report.ok, report.difference
    # Each event was accepted exactly once across the three processes.
    total_lines = len(lines) * 2 + len(only_beta.read_bytes().splitlines())
    assert sum(s["accepted"] for s in summaries) == sum(len(log_of(ref, p)) for p in ("alpha", "beta", "gamma"))
    assert sum(s["accepted"] + s["duplicate"] + s["rejected"] for s in summaries) == total_lines


@pytest.mark.slow
def test_an_ingest_process_and_a_server_writing_one_platform_both_finish_each_event_once(
        db_url: str, tmp_path: Path):
    """`peerledger ingest` of a stream while `serve` takes the same stream as
    POSTs, on one database: both finish (neither gives up on the other), every
    event is accepted once, and the ledger is the one a single writer makes."""
    from http_helpers import make_token, running_server

    # All valid: an event one writer rejected could be accepted later, when
    # the other offers it again on a ledger that has moved on.
    lines = [json.dumps(e).encode() for e in generate(21, 6_000, "shared", bad_fraction_ppm=0)]
    path = tmp_path / "shared.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ref = reference(tmp_path, path)
    token = make_token(db_url, "ingest", "shared")
    with running_server(db_url, tmp_path) as server, server.client(token) as client:
        ingest = subprocess.Popen(ingest_cmd(db_url, str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=BASE_ENV)
        posted = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for i in range(0, len(lines), 500):
            r = client.post("/v1/platforms/shared/events", content=b"\n".join(lines[i:i + 500]),
                            headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 200, r.text
            for k in posted:
                posted[k] += r.json()[k]
        out, errors = ingest.communicate(timeout=600)
        assert ingest.returncode in (0, 3), errors[-2000:]
    by_cli = json.loads(out)
    assert by_cli["accepted"] + posted["accepted"] == ref["summary"]["accepted"]  # each event once
    assert log_of(db_url, "shared") == log_of(ref["url"], "shared")
    assert digest_of(db_url, "shared") == digest_of(ref["url"], "shared")
    with Store(db_url) as store:
        report = verify(store, "shared")
        assert report.ok, report.difference
