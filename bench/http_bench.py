#!/usr/bin/env python3
"""HTTP benchmark: sustained POST ingest, and statement reads while it runs.

    .venv/bin/python bench/http_bench.py                 # SQLite, ~3 minutes
    .venv/bin/python bench/http_bench.py --quick         # a smaller ledger, short phases
    .venv/bin/python bench/http_bench.py --selftest      # the read generator against an instant server
    .venv/bin/python bench/http_bench.py --db postgresql://postgres@127.0.0.1:5432/bench_x

Loopback only, every loop bounded in time and count.  Steps:

0. **generator self-test**: the read generator below against a trivial
   asyncio HTTP server in another process that answers at once; its
   latencies are the generator's own overhead (plus a loopback round trip),
   the floor under the client figures.  A run starts with it at `--rate`
   for 3 s; `--selftest` runs only it, at 200 and 1000 requests/s, 5 s each;
1. set-up (not timed as HTTP): a ledger of `--prosumers` prosumers (default
   100 000), each with one contribution, and as many sales on random ones,
   ingested with `peerledger ingest`'s own path (`ledger.cli.main.ingest_paths`);
2. `peerledger serve` on 127.0.0.1 and a free port, as a subprocess;
3. **ingest alone**: `--writers` client threads POST JSON arrays of 1000
   events, each built just before its POST (sales on existing works, a few registrations) for
   `--seconds` seconds; events/s = accepted events / wall time.  Each POST
   returns after its events are appended *and* projected (the service's
   freshness guarantee), so this is the rate of the whole pipeline.  The
   phase also reports where the CPU went: µs per accepted event in the
   server's processes (front, writer, projector) and in the client threads,
   from /proc and `os.times()`, beside the budget two cores hold at the
   target (2 × 50 µs at 20 000 events/s);
4. **reads alone**: `GET /v1/platforms/bench/prosumers/{random}/statement`
   at `--rate` requests/s, open loop (see `read_phase`): each request is sent
   at its scheduled time and its latency runs from that time, so a stalled
   server cannot hide its stall (no coordinated omission);
5. **reads while ingest runs**: 3 and 4 at once, the ingest started before
   the reads and stopped after them.

Why the read generator is built as it is: its first version, 16 httpx
threads in the process of the ingest clients, measured itself — p99 ~800 ms
with no ingest running while the server's own histogram said ≤ 50 ms, and
p99 546 ms against the instant server of step 0 at 200/s.  Threads share
one GIL, and one that gets it late for its slot adds the wait to the
latency.  So the reader runs in its own (spawned) process, on one asyncio
event loop, with at most `READ_CONNECTIONS` keep-alive HTTP/1.1 connections
and a hand-written GET and response parser (status line, headers,
Content-Length body; the statement route's responses carry a
Content-Length, so a chunked one is counted as an error, not parsed):
p99 1.6 ms against the same instant server.  The self-test
measures what it costs; each phase also reports the generator's dispatch
lag (how late it started requests) and its peak requests in flight, so a
result where the client was the limit shows it.

The ingest clients stay threads in this process: while they run, this
process does nothing else (it waits for the reader process), so they have
its GIL to themselves, as they would in a process of their own.  Measured
on `--quick`'s ledger, alternating 6 s runs: 8 070 events/s as threads,
8 340 in a spawned process (means of 4 runs each, every run within
6 900-9 300): no difference beyond the noise, so the simpler threads, whose
counters `stop()` reads directly, stay.

Each read phase also scrapes the server's own latency histogram of the
statement route from /metrics before and after, and prints its p50/p90/p99
as "≤ bucket bound" beside the client's figures.  The server's clock runs
from the ASGI call to the response's end: the difference to the client is
loopback, uvicorn's event loop queueing before the app sees the request,
and the generator's overhead (bounded by step 0).

Figures are printed and written to bench/results/http.json (with the machine,
the date and the git revision).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import datetime
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import platform as platform_mod
import random
import signal
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

import proctree  # noqa: E402 — bench/ is this script's directory

from ledger.demo.generate import write_jsonl  # noqa: E402
from ledger.http.tokens import create_token, create_tokens_table  # noqa: E402
from ledger.ingest.files import ingest_paths  # noqa: E402
from ledger.storage.store import Store  # noqa: E402

PLATFORM = "bench"
POST_EVENTS = 1000
READY_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 120
RESULTS = ROOT / "bench" / "results"
TARGET_EVENTS_PER_S = 20_000
TARGET_P99_MS = 20.0

# The read generator.  32 connections carry 200 requests/s as long as the
# server answers within 160 ms on average, far beyond the 20 ms target: past
# that, requests wait for a connection (counted in their latency) and
# `peak_in_flight` shows it.  Idle connections are reused in FIFO order, so
# at 200/s none idles for more than 32/200 s, well under uvicorn's 5 s
# keep-alive; one the server closed anyway is seen at EOF and replaced.
READ_CONNECTIONS = 32
READ_PREOPEN = 4  # connections opened before the first scheduled request
READ_TIMEOUT_S = 30.0  # one GET, waiting for a connection and connecting included
READ_SCHEDULE_DELAY_S = 0.2  # from the pre-opened connections to the first scheduled request
READ_REQUESTS_MAX = 1_000_000  # per phase: rate × seconds
RESPONSE_HEAD_MAX = 64 * 1024  # status line and headers
RESPONSE_BODY_MAX = 4 * 1024 * 1024
INGEST_LEAD_S = 0.5  # ingest runs this long before the reads that overlap it start

# The self-test: rates, length, and the instant server's answer: 1 KiB, more
# than a statement of the bench ledger (50-140 bytes), so the generator reads
# at least as much as in the real phases.
SELFTEST_RATES = (200, 1000)
SELFTEST_SECONDS = 5.0
CALIBRATION_SECONDS = 3.0  # the self-test at `--rate` at the start of every run
INSTANT_BODY = b'{"pad":"' + b"x" * 1000 + b'"}'
INSTANT_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(INSTANT_BODY)).encode() + b"\r\n\r\n" + INSTANT_BODY)


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


class Ingest:
    """Client threads posting batches `first`, `first + 1`, … from `start()` to `stop()`."""

    def __init__(self, url: str, token: str, prosumers: int, first: int, writers: int, seed: int) -> None:
        self.url, self.token, self.prosumers, self.writers, self.seed = url, token, prosumers, writers, seed
        self.next_batch = first
        self.accepted = 0
        self.posts = 0
        self.post_seconds: list[float] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(writers)]
        self.started = 0.0

    def _take(self) -> bytes:
        with self.lock:
            self.next_batch += 1
            b = self.next_batch - 1
        return post_body(self.prosumers, b, self.seed)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "content-type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as c:
            while not self.halt.is_set():
                body = self._take()
                started = time.perf_counter()
                r = c.post(f"/v1/platforms/{PLATFORM}/events", content=body)
                elapsed = time.perf_counter() - started
                r.raise_for_status()
                with self.lock:
                    self.accepted += r.json()["accepted"]
                    self.posts += 1
                    self.post_seconds.append(elapsed)

    def start(self) -> None:
        self.started = time.perf_counter()
        for t in self.threads:
            t.start()

    def stop(self) -> dict[str, Any]:
        """Stop posting; each client finishes its POST in flight, which is counted and waited for."""
        self.halt.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT_S)
        wall = time.perf_counter() - self.started
        lat = sorted(self.post_seconds)
        return {"seconds": round(wall, 2), "posts": self.posts, "accepted_events": self.accepted,
                "events_per_s": round(self.accepted / wall), "writers": self.writers,
                "post_latency_ms": _percentiles(lat)}

    def run_for(self, seconds: float) -> dict[str, Any]:
        self.start()
        deadline = self.started + seconds
        while time.perf_counter() < deadline and any(t.is_alive() for t in self.threads):
            time.sleep(0.05)
        return self.stop()


# -- where the CPU went ------------------------------------------------------------


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the server's processes (the
    `serve` process and its live descendants: the front, the writer, the
    projector; from /proc) and of this process (the POSTing client threads)."""
    usage = os.times()
    return {"server": sum(proc.cpu_s for proc in proctree.tree(server_pid)),
            "clients": usage.user + usage.system}


def cpu_per_event(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, Any]:
    """µs of CPU per accepted event, by side, beside what two cores hold at
    the target rate (every process of the run shares them)."""
    per = {side: round((after[side] - before[side]) * 1e6 / max(events, 1), 1) for side in before}
    per["total"] = round(sum(per.values()), 1)
    per["budget_at_target"] = round((os.cpu_count() or 1) * 1e6 / TARGET_EVENTS_PER_S, 1)
    return per


# -- the read generator (runs in a spawned process of its own) -------------------


@dataclasses.dataclass(frozen=True)
class ReadSpec:
    """One open-loop read phase: GET each of `paths` in turn, `rate` a second."""

    host: str
    port: int
    token: str
    paths: list[str]
    rate: float


class ProtocolError(Exception):
    """A response this minimal client does not read (no Content-Length, too large)."""


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _exchange(conn: Conn, request: bytes) -> tuple[int, bool]:
    """Send one request and read its whole response: (status, connection reusable)."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head[:-4].split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        status = int(status_line.split(" ", 2)[1])
        length = int(headers["content-length"])
    except (IndexError, ValueError, KeyError):
        raise ProtocolError(f"{status_line!r}, content-length {headers.get('content-length')!r}, "
                            f"transfer-encoding {headers.get('transfer-encoding')!r}") from None
    if not 0 <= length <= RESPONSE_BODY_MAX:
        raise ProtocolError(f"body of {length} bytes")
    await reader.readexactly(length)
    return status, headers.get("connection", "").lower() != "close"


class Pool:
    """At most `limit` keep-alive connections, each carrying one request at a
    time; a request finding none free waits for one, in arrival order."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(limit)
        self.idle: collections.deque[Conn] = collections.deque()
        self.opened = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def open(self) -> Conn:
        conn = await asyncio.open_connection(self.host, self.port, limit=RESPONSE_HEAD_MAX)
        self.opened += 1
        return conn

    async def get(self, request: bytes) -> int:
        """The status of one request, on an idle connection or a new one."""
        async with self.slots:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                conn = None
                while self.idle and conn is None:
                    conn = self.idle.popleft()
                    if conn[0].at_eof():  # closed by the server while idle
                        conn[1].close()
                        conn = None
                if conn is None:
                    conn = await self.open()
                try:
                    status, reusable = await _exchange(conn, request)
                except BaseException:  # a timeout's cancellation too: the connection is mid-response
                    conn[1].close()
                    raise
                if reusable:
                    self.idle.append(conn)
                else:
                    conn[1].close()
                return status
            finally:
                self.in_flight -= 1

    def close(self) -> None:
        while self.idle:
            self.idle.popleft()[1].close()


async def _read_phase(spec: ReadSpec) -> dict[str, Any]:
    requests = [(f"GET {p} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
                 f"Authorization: Bearer {spec.token}\r\nAccept: application/json\r\n\r\n").encode()
                for p in spec.paths]
    pool = Pool(spec.host, spec.port, READ_CONNECTIONS)
    for _ in range(READ_PREOPEN):
        pool.idle.append(await pool.open())
    latencies: list[float] = []
    lags: list[float] = []
    errors: collections.Counter[str] = collections.Counter()

    async def one(scheduled: float, request: bytes) -> None:
        lags.append(time.perf_counter() - scheduled)
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                status = await pool.get(request)
            if status != 200:
                errors[f"status {status}"] += 1
        except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            errors[type(e).__name__] += 1
        latencies.append(time.perf_counter() - scheduled)  # a failure's too: it may be a stall

    # Only the requests in flight are kept: gathering every task of the phase
    # at its end would stall the loop (milliseconds) under the last responses.
    pending: set[asyncio.Task[None]] = set()
    started = time.perf_counter() + READ_SCHEDULE_DELAY_S
    for i, request in enumerate(requests):
        scheduled = started + i / spec.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled, request))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)  # each bounded by READ_TIMEOUT_S
    wall = time.perf_counter() - started
    pool.close()
    return {"requests": len(requests), "errors": sum(errors.values()), "error_kinds": dict(errors),
            "target_rate_per_s": spec.rate, "achieved_rate_per_s": round(len(requests) / wall, 1),
            "latency_ms": _percentiles(sorted(latencies)),
            "dispatch_lag_ms": _percentiles(sorted(lags)),
            "connections_opened": pool.opened, "peak_in_flight": pool.peak_in_flight}


def read_phase(spec: ReadSpec) -> dict[str, Any]:
    """Open-loop reads, in the reader process: request i is started at
    start + i/rate whatever became of the earlier ones, and its latency runs
    from that time to its response's last byte, so waiting for a connection
    counts.  Every request's latency is kept, failed ones too (errors are
    also counted by kind); `dispatch_lag_ms` is how late the event loop
    started them, the generator's own share.

    The objects of the process so far (~46 000, mostly the imports) are
    frozen out of the garbage collector for the phase: a full collection
    over them took ~15 ms, a stall every request then in flight counted."""
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(_read_phase(spec))
    finally:
        gc.unfreeze()


def reads(pool: concurrent.futures.ProcessPoolExecutor, spec: ReadSpec) -> dict[str, Any]:
    """`read_phase(spec)` in the reader process; bounded like the phase itself."""
    if not 0 < len(spec.paths) <= READ_REQUESTS_MAX:
        raise SystemExit(f"a read phase of {len(spec.paths)} requests (1 to {READ_REQUESTS_MAX})")
    bound = READ_SCHEDULE_DELAY_S + len(spec.paths) / spec.rate + READ_TIMEOUT_S + READY_TIMEOUT_S
    return pool.submit(read_phase, spec).result(timeout=bound)


def statement_paths(prosumers: int, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"/v1/platforms/{PLATFORM}/prosumers/p{rng.randrange(prosumers)}/statement" for _ in range(n)]


def reader_pool() -> concurrent.futures.ProcessPoolExecutor:
    """One spawned process, reused by every read phase (started once, and
    sharing no GIL or inherited state with the ingest clients)."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


# -- the self-test: the generator against a server that answers at once ----------


async def _serve_instantly(port_to: multiprocessing.connection.Connection) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(INSTANT_RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port_to.send(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def serve_instantly(port_to: multiprocessing.connection.Connection) -> None:
    """The self-test's server (its own process, as the real one is): the
    same 1 KiB 200 to every request, keep-alive, until terminated."""
    asyncio.run(_serve_instantly(port_to))


def selftest(pool: concurrent.futures.ProcessPoolExecutor, rates: tuple[int, ...],
             seconds: float) -> list[dict[str, Any]]:
    """The generator's own latency at each rate, against the instant server."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve_instantly, args=(theirs,), daemon=True)
    server.start()
    try:
        if not ours.poll(READY_TIMEOUT_S):
            raise SystemExit("the self-test server did not start")
        port = int(ours.recv())
        return [reads(pool, ReadSpec("127.0.0.1", port, "selftest", ["/instant"] * int(rate * seconds), rate))
                for rate in rates]
    finally:
        server.terminate()
        server.join(10)


# -- the server's own view ----------------------------------------------------------


STATEMENT_ROUTE = "/v1/platforms/{platform}/prosumers/{prosumer}/statement"


def server_statement_buckets(url: str) -> dict[float, float]:
    """The service's own latency histogram of the statement route (cumulative
    counts by upper bound, from /metrics): what the server measured from
    request start to response end, without the client's queueing."""
    text = httpx.get(url + "/metrics", timeout=REQUEST_TIMEOUT_S).text
    buckets: dict[float, float] = {}
    prefix = "peerledger_http_request_duration_seconds_bucket{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'route="{STATEMENT_ROUTE}"' in line and 'method="GET"' in line:
            labels, value = line[len(prefix):].rsplit("} ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(value)
    return buckets


def server_percentiles(before: dict[float, float], after: dict[float, float]) -> dict[str, str]:
    """p50/p90/p99 of the requests between two scrapes, as "≤ bucket bound" in ms."""
    counts = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    out: dict[str, str] = {"requests": str(int(total))}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        bound = next((le for le, n in counts if total and n >= q * total), float("inf"))
        out[name] = f"<= {bound * 1000:g}"
    return out


def measured_reads(pool: concurrent.futures.ProcessPoolExecutor, url: str, spec: ReadSpec) -> dict[str, Any]:
    """A read phase, with the server's percentiles of the same requests beside the client's."""
    before = server_statement_buckets(url)
    result = reads(pool, spec)
    result["server_latency_ms"] = server_percentiles(before, server_statement_buckets(url))
    return result


def _percentiles(sorted_s: list[float]) -> dict[str, float]:
    if not sorted_s:
        return {}

    def at(q: float) -> float:
        return round(1000 * sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(1000 * sorted_s[-1], 2)}


def _selftest_line(r: dict[str, Any]) -> str:
    lat, lag = r["latency_ms"], r["dispatch_lag_ms"]
    return (f"  {r['target_rate_per_s']:>5} req/s: p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; "
            f"dispatch lag p99 {lag['p99']} ms; peak in flight {r['peak_in_flight']}; errors {r['errors']}")


# -- the run ------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in a temporary directory)")
    ap.add_argument("--prosumers", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each timed phase")
    ap.add_argument("--rate", type=int, default=200, help="statement reads per second")
    ap.add_argument("--writers", type=int, default=2, help="concurrent POSTing clients")
    ap.add_argument("--quick", action="store_true", help="10 000 prosumers, 8 s phases")
    ap.add_argument("--selftest", action="store_true",
                    help=f"only the read generator against an instant server, at {SELFTEST_RATES} requests/s")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.prosumers, args.seconds = 10_000, 8.0

    with reader_pool() as pool:
        if args.selftest:
            print(f"read generator against an instant server, {SELFTEST_SECONDS:g} s per rate:", flush=True)
            for r in selftest(pool, SELFTEST_RATES, SELFTEST_SECONDS):
                print(_selftest_line(r), flush=True)
            return 0
        return run(args, pool)


def run(args: argparse.Namespace, pool: concurrent.futures.ProcessPoolExecutor) -> int:
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="peerledger-http-bench-")
    db_url = args.db or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    n_reads = int(args.rate * args.seconds)

    # The machine may be shared: the load before and after says how much the figures can be trusted.
    load_before = os.getloadavg()
    print(f"read generator against an instant server, {args.rate}/s for {CALIBRATION_SECONDS:g} s …", flush=True)
    results: dict[str, Any] = {"generator_selftest": selftest(pool, (args.rate,), CALIBRATION_SECONDS)[0]}
    print(_selftest_line(results["generator_selftest"]), flush=True)

    print(f"set-up: {args.prosumers:,} prosumers into {db_url} …", flush=True)
    started = time.perf_counter()
    stream = Path(tmp.name) / "setup.jsonl"
    n_setup = write_jsonl(stream, setup_events(args.prosumers, rng))
    with Store(db_url) as store:
        create_tokens_table(store)
        summary = ingest_paths(store, [str(stream)], show_progress=False)
        writer_token, _ = create_token(store, "ingest", PLATFORM, "bench ingest")
        reader_token, _ = create_token(store, "auditor", PLATFORM, "bench reads")
    setup_s = time.perf_counter() - started
    print(f"  {n_setup:,} events ({summary['accepted']:,} accepted) in {setup_s:.1f} s", flush=True)

    port = proctree.free_port()
    log_path = Path(tmp.name) / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "ledger.cli", "serve", "--db", db_url, "--port", str(port),
                                   "--log-level", "warning", "--no-access-log"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
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

        print(f"ingest alone: {args.writers} clients POSTing {POST_EVENTS}-event JSON arrays "
              f"for {args.seconds:.0f} s …", flush=True)
        ingest = Ingest(url, writer_token, args.prosumers, 0, args.writers, args.seed)
        cpu_before = cpu_seconds(server.pid)
        results["ingest_alone"] = ingest.run_for(args.seconds)
        results["ingest_alone"]["cpu_us_per_event"] = cpu_per_event(
            cpu_before, cpu_seconds(server.pid), results["ingest_alone"]["accepted_events"])
        print(f"  {results['ingest_alone']}", flush=True)

        print(f"reads alone: {args.rate} statement GETs/s for {args.seconds:.0f} s …", flush=True)
        results["reads_alone"] = measured_reads(pool, url, ReadSpec(
            "127.0.0.1", port, reader_token, statement_paths(args.prosumers, n_reads, args.seed), args.rate))
        print(f"  {results['reads_alone']}", flush=True)

        print("reads while ingest runs …", flush=True)
        ingest = Ingest(url, writer_token, args.prosumers, ingest.next_batch, args.writers, args.seed)
        ingest.start()
        try:
            time.sleep(INGEST_LEAD_S)
            results["reads_during_ingest"] = measured_reads(pool, url, ReadSpec(
                "127.0.0.1", port, reader_token, statement_paths(args.prosumers, n_reads, args.seed + 1), args.rate))
        finally:
            results["ingest_during_reads"] = ingest.stop()
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
        "phase_seconds": args.seconds, "post_events": POST_EVENTS, "read_connections_max": READ_CONNECTIONS,
        "targets": {"ingest_events_per_s": TARGET_EVENTS_PER_S, "statement_p99_ms": TARGET_P99_MS,
                    "statement_rate_per_s": args.rate},
        **results,
    }
    during = results["reads_during_ingest"]
    doc["met"] = {
        "ingest_events_per_s": results["ingest_alone"]["events_per_s"] >= TARGET_EVENTS_PER_S,
        "statement_p99_during_ingest": during["errors"] == 0 and during["latency_ms"]["p99"] <= TARGET_P99_MS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("http-quick.json" if args.quick else "http.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
