#!/usr/bin/env python3
"""HTTP benchmark: sustained POST ingest, and statement reads while it runs.

    .venv/bin/python bench/http_bench.py                 # SQLite, ~3 minutes
    .venv/bin/python bench/http_bench.py --quick         # a smaller ledger, short phases
    .venv/bin/python bench/http_bench.py --db postgresql://postgres@127.0.0.1:5432/bench_x

Loopback only, every loop bounded in time and count.  Steps:

1. set-up (not timed as HTTP): a ledger of `--prosumers` prosumers (default
   100 000), each with one contribution, and as many sales on random ones,
   ingested with `peerledger ingest`'s own path (`ledger.cli.ingest_paths`);
2. `peerledger serve` on 127.0.0.1 and a free port, as a subprocess;
3. **ingest alone**: `--writers` client threads POST pre-serialised JSON
   arrays of 1000 events (sales on existing works, a few registrations) for
   `--seconds` seconds; events/s = accepted events / wall time.  Each POST
   returns after its events are appended *and* projected (the service's
   freshness guarantee), so this is the rate of the whole pipeline;
4. **reads alone**: `GET /v1/platforms/bench/prosumers/{random}/statement`
   at `--rate` requests/s, open loop: requests are sent on a fixed schedule
   by a pool of threads, and each latency is measured from its *scheduled*
   time, so a stalled server cannot hide its stall (no coordinated omission);
5. **reads while ingest runs**: 3 and 4 at once.

Figures are printed and written to bench/results/http.json (with the machine,
the date and the git revision).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform as platform_mod
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.cli import ingest_paths  # noqa: E402
from ledger.generate import write_jsonl  # noqa: E402
from ledger.store import Store  # noqa: E402
from ledger.tokens import create_token, create_tokens_table  # noqa: E402
from ledger.views import create_views  # noqa: E402

PLATFORM = "bench"
POST_EVENTS = 1000
READ_THREADS = 16
READY_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 120
RESULTS = ROOT / "bench" / "results"
TARGET_EVENTS_PER_S = 20_000
TARGET_P99_MS = 20.0


def setup_events(prosumers: int, rng: random.Random) -> list[dict[str, Any]]:
    """Registrations, one contribution each, and one sale per prosumer on a random work."""
    at = "2026-11-01T00:00:00Z"
    events: list[dict[str, Any]] = [
        {"v": 1, "id": "fee", "platform": PLATFORM, "type": "policy.set", "at": at, "data": {"platform_fee_bps": 1000}}]
    for i in range(prosumers):
        events.append({"v": 1, "id": f"r{i}", "platform": PLATFORM, "type": "prosumer.registered", "at": at,
                       "data": {"prosumer": f"p{i}"}})
        events.append({"v": 1, "id": f"c{i}", "platform": PLATFORM, "type": "contribution.recorded", "at": at,
                       "data": {"work": f"w{i}", "authors": {f"p{i}": 1}}})
    for i in range(prosumers):
        events.append({"v": 1, "id": f"s{i}", "platform": PLATFORM, "type": "value.realized", "at": at,
                       "data": {"value": f"v{i}", "work": f"w{rng.randrange(prosumers)}",
                                "amount": rng.randrange(100, 10_000), "currency": "USD"}})
    return events


def post_body(prosumers: int, b: int, seed: int) -> bytes:
    """Batch `b`: a JSON array of POST_EVENTS events, sales on existing works and
    every 50th a registration; built on demand (a few ms), deterministic."""
    rng = random.Random(seed * 1_000_003 + b)
    events = []
    for i in range(POST_EVENTS):
        n = b * POST_EVENTS + i
        if n % 50 == 0:
            events.append({"v": 1, "id": f"hr{n}", "platform": PLATFORM, "type": "prosumer.registered",
                           "at": "2026-12-01T00:00:00Z", "data": {"prosumer": f"hp{n}"}})
        else:
            events.append({"v": 1, "id": f"hs{n}", "platform": PLATFORM, "type": "value.realized",
                           "at": "2026-12-01T00:00:00Z",
                           "data": {"value": f"hv{n}", "work": f"w{rng.randrange(prosumers)}",
                                    "amount": rng.randrange(100, 10_000), "currency": "USD"}})
    return orjson.dumps(events)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ingest:
    """Client threads posting batches `first`, `first + 1`, … until stopped."""

    def __init__(self, url: str, token: str, prosumers: int, first: int, writers: int, seed: int) -> None:
        self.url, self.token, self.prosumers, self.writers, self.seed = url, token, prosumers, writers, seed
        self.next_batch = first
        self.accepted = 0
        self.posts = 0
        self.post_seconds: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(writers)]

    def _take(self) -> bytes:
        with self.lock:
            self.next_batch += 1
            b = self.next_batch - 1
        return post_body(self.prosumers, b, self.seed)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "content-type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as c:
            while not self.stop.is_set():
                body = self._take()
                started = time.perf_counter()
                r = c.post(f"/v1/platforms/{PLATFORM}/events", content=body)
                elapsed = time.perf_counter() - started
                r.raise_for_status()
                with self.lock:
                    self.accepted += r.json()["accepted"]
                    self.posts += 1
                    self.post_seconds.append(elapsed)

    def run_for(self, seconds: float) -> dict[str, Any]:
        started = time.perf_counter()
        for t in self.threads:
            t.start()
        deadline = started + seconds
        while time.perf_counter() < deadline and any(t.is_alive() for t in self.threads):
            time.sleep(0.05)
        self.stop.set()
        for t in self.threads:
            t.join()  # each finishes its POST in flight: counted, and waited for
        wall = time.perf_counter() - started
        lat = sorted(self.post_seconds)
        return {"seconds": round(wall, 2), "posts": self.posts, "accepted_events": self.accepted,
                "events_per_s": round(self.accepted / wall), "writers": self.writers,
                "post_latency_ms": _percentiles(lat)}


def reads(url: str, token: str, prosumers: int, rate_per_s: int, seconds: float, seed: int) -> dict[str, Any]:
    """Open-loop statement reads; latency from each request's scheduled time."""
    rng = random.Random(seed)
    total = int(rate_per_s * seconds)
    names = [f"p{rng.randrange(prosumers)}" for _ in range(total)]
    local = threading.local()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                   timeout=REQUEST_TIMEOUT_S)
        return local.c

    def one(scheduled: float, name: str) -> None:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        r = client().get(f"/v1/platforms/{PLATFORM}/prosumers/{name}/statement")
        done = time.perf_counter()
        with lock:
            latencies.append(done - scheduled)
            if r.status_code != 200:
                errors[0] += 1

    started = time.perf_counter() + 0.2
    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        # Submitted in schedule order; a thread sleeps until its request's time.
        list(pool.map(lambda i: one(started + i / rate_per_s, names[i]), range(total)))
    wall = time.perf_counter() - started
    lat = sorted(latencies)
    return {"requests": total, "errors": errors[0], "target_rate_per_s": rate_per_s,
            "achieved_rate_per_s": round(total / wall, 1), "latency_ms": _percentiles(lat)}


def _percentiles(sorted_s: list[float]) -> dict[str, float]:
    if not sorted_s:
        return {}

    def at(q: float) -> float:
        return round(1000 * sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(1000 * sorted_s[-1], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in a temporary directory)")
    ap.add_argument("--prosumers", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each timed phase")
    ap.add_argument("--rate", type=int, default=200, help="statement reads per second")
    ap.add_argument("--writers", type=int, default=2, help="concurrent POSTing clients")
    ap.add_argument("--quick", action="store_true", help="10 000 prosumers, 8 s phases")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.prosumers, args.seconds = 10_000, 8.0
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="peerledger-http-bench-")
    db_url = args.db or f"sqlite:///{Path(tmp.name) / 'bench.db'}"

    # The machine may be shared: the load before and after says how much the figures can be trusted.
    load_before = os.getloadavg()
    print(f"set-up: {args.prosumers:,} prosumers into {db_url} …", flush=True)
    started = time.perf_counter()
    stream = Path(tmp.name) / "setup.jsonl"
    n_setup = write_jsonl(stream, setup_events(args.prosumers, rng))
    with Store(db_url) as store:
        create_views(store)
        create_tokens_table(store)
        summary = ingest_paths(store, [str(stream)], show_progress=False)
        writer_token, _ = create_token(store, "ingest", PLATFORM, "bench ingest")
        reader_token, _ = create_token(store, "auditor", PLATFORM, "bench reads")
    setup_s = time.perf_counter() - started
    print(f"  {n_setup:,} events ({summary['accepted']:,} accepted) in {setup_s:.1f} s", flush=True)

    port = free_port()
    log_path = Path(tmp.name) / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--db", db_url, "--port", str(port),
                                   "--log-level", "warning", "--no-access-log"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"server not ready:\n{log_path.read_text()}")
            time.sleep(0.2)

        print(f"ingest alone: {args.writers} clients POSTing {POST_EVENTS}-event JSON arrays for {args.seconds:.0f} s …",
              flush=True)
        ingest = Ingest(url, writer_token, args.prosumers, 0, args.writers, args.seed)
        results["ingest_alone"] = ingest.run_for(args.seconds)
        print(f"  {results['ingest_alone']}", flush=True)

        print(f"reads alone: {args.rate} statement GETs/s for {args.seconds:.0f} s …", flush=True)
        results["reads_alone"] = reads(url, reader_token, args.prosumers, args.rate, args.seconds, args.seed)
        print(f"  {results['reads_alone']}", flush=True)

        print("reads while ingest runs …", flush=True)
        ingest = Ingest(url, writer_token, args.prosumers, ingest.next_batch, args.writers, args.seed)
        ingest_thread_result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: ingest_thread_result.update(ingest.run_for(args.seconds + 1)))
        t.start()
        time.sleep(0.5)
        results["reads_during_ingest"] = reads(url, reader_token, args.prosumers, args.rate, args.seconds,
                                               args.seed + 1)
        t.join()
        results["ingest_during_reads"] = ingest_thread_result
        print(f"  reads {results['reads_during_ingest']}\n  ingest {results['ingest_during_reads']}", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        tmp.cleanup()

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "python": platform_mod.python_version(), "system": platform_mod.platform(),
                    "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "database": "sqlite (file)" if db_url.startswith("sqlite") else "postgresql",
        "prosumers": args.prosumers, "setup_events": n_setup, "setup_seconds": round(setup_s, 1),
        "phase_seconds": args.seconds, "post_events": POST_EVENTS,
        "targets": {"ingest_events_per_s": TARGET_EVENTS_PER_S, "statement_p99_ms": TARGET_P99_MS,
                    "statement_rate_per_s": args.rate},
        **results,
    }
    doc["met"] = {
        "ingest_events_per_s": results["ingest_alone"]["events_per_s"] >= TARGET_EVENTS_PER_S,
        "statement_p99_during_ingest": results["reads_during_ingest"]["latency_ms"]["p99"] <= TARGET_P99_MS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("http-quick.json" if args.quick else "http.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
