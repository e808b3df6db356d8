#!/usr/bin/env python3
"""Scale benchmark: what a ledger of N events costs to fill, to grow by one
event, to serve, to verify, to store and to query, on SQLite and PostgreSQL.

    .venv/bin/python bench/scale_bench.py --quick     # 10 000 events, both backends (~1 min)
    .venv/bin/python bench/scale_bench.py             # 100 000 and 1 000 000 events
    .venv/bin/python bench/scale_bench.py --big       # and 5 000 000
    .venv/bin/python bench/scale_bench.py --sizes 200000 --backends sqlite \\
        --label "after: scale-state at abc1234" --output-name scale-after --baseline bench/results/scale-before.json

For each N and backend, on a fresh SQLite file or a fresh PostgreSQL database
(`peerledger_bench_<random>`, dropped at the end of its row unless `--keep`),
every command a fresh `python -m ledger.cli` process, as a user runs them:

1. **ingest**: `ingest STREAM --json` of a generated, all-valid platform
   stream (`ledger.demo.generate.generate(seed, N, "bench")`: prosumers,
   contributions, remixes, sales, refunds, payouts), written once per N and
   seed to a cache file and reused;
2. **database bytes per event**: SQLite: the file after a WAL checkpoint
   (plus what is left of the WAL); PostgreSQL: `pg_database_size`;
3. **one more event**: `ingest` of one valid `prosumer.registered` into the
   N-event ledger, and the same event into an empty ledger, the reference
   the issue's target is measured against;
4. **queries (CLI)**: `balances`, `statement` of the prosumer who earned
   most, `explain` of the last value realized in the first half of the
   stream, each `--json`, median of `CLI_RUNS`; beside them the CLI's bare
   start-up (`python -c "import ledger.cli.main"`), which every CLI row pays;
5. **serve**: `serve` started, the time until `/readyz` answers 200 and the
   resident memory of its process tree then; the same three reads over HTTP
   (an operator token from `tokens create`), median of `HTTP_REQUESTS`; then
   SIGTERM to its process group, and how many of its processes are left
   `ORPHAN_GRACE_S` later; then a second `serve`, killed with SIGKILL alone
   (its children get no signal, as when the OOM killer or an operator's
   `kill -9` ends it), and how many of its processes are left;
6. **verify**: `verify --platform bench`, the full rebuild from the log.

Wall clock is measured around each subprocess; resident memory is the sum
of the RSS of the process and all its descendants, sampled from /proc every
`SAMPLE_INTERVAL_MS` (`proctree.py`), the peak over the samples.  Processes
left after `serve` stopped are killed by pid once counted.

Prints a markdown table (one column per backend and N) and writes it, with
the machine, the date, the git revision, the `--label` and the load average
before each column, to bench/results/NAME.md and NAME.json (NAME:
`--output-name`, default `scale`, `scale-quick` for `--quick`), after every
column, so a long run that fails keeps what it measured.  The machine is
shared: run one benchmark at a time and read the load averages.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import proctree
from ingest_bench import DEFAULT_PG, PgServer, child_env, loadavg, machine_info, save_report

from ledger.demo import generate as generate_module

PLATFORM = "bench"
DEFAULT_SIZES = (100_000, 1_000_000)
BIG_SIZE = 5_000_000
QUICK_SIZE = 10_000
BACKENDS = ("sqlite", "postgresql")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "peerledger-scale-bench"
RESULTS = ROOT / "bench" / "results"
LEDGER_CLI = [sys.executable, "-m", "ledger.cli"]

SAMPLE_INTERVAL_MS = 50  # resident memory of a process tree
READY_POLL_INTERVAL_MS = 50  # GET /readyz while serve starts
CLI_RUNS = 3  # each CLI query, and the bare start-up
HTTP_REQUESTS = 20  # each HTTP query
COMMAND_TIMEOUT_S = 3 * 3600
READY_TIMEOUT_S = 3600
READY_REQUEST_TIMEOUT_S = 2
HTTP_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120  # serve, from the signal to its exit
ORPHAN_GRACE_S = 5  # from serve's exit to counting the processes it left

# One more event: valid in any ledger, empty or not; after every event of a
# generated stream (they span about nine months from 2026-01-01).
EXTRA_EVENT = {"v": 1, "id": "scale-bench-extra", "platform": PLATFORM, "type": "prosumer.registered",
               "at": "2027-01-01T00:00:00Z", "data": {"prosumer": "scale-bench-extra"}}

# Issue 13's targets.
TARGET_ONE_MORE_OVER_EMPTY_S = 1.0
TARGET_PEAK_RSS_MIB = 300
TARGET_INGEST_SPEEDUP = 1.5  # over the baseline run's events/s (--baseline)

MIB = 2**20


# -- the stream ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stream:
    path: Path
    events: int
    bytes: int
    value: str  # the last value realized in the stream's first half: `explain`'s subject
    generate_s: float


def cached_stream(cache: Path, seed: int, n: int) -> Stream:
    """The stream of `n` events for `seed`, generated into `cache` the first
    time and read from there after.  Its name carries a hash of the
    generator's source: a changed generator writes a new file."""
    source_hash = hashlib.sha256(Path(generate_module.__file__).read_bytes()).hexdigest()[:12]
    path = cache / f"{PLATFORM}-seed{seed}-{n}-{source_hash}.jsonl"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return Stream(path=path, **json.loads(meta.read_text()))
    cache.mkdir(parents=True, exist_ok=True)
    picked: dict[str, str] = {}

    def watch(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for i, event in enumerate(events):
            if i < n // 2 and event["type"] == "value.realized":
                picked["value"] = event["data"]["value"]
            yield event

    part = path.with_suffix(".part")
    started = time.perf_counter()
    written = generate_module.write_jsonl(part, watch(generate_module.generate(seed, n, PLATFORM)))
    generate_s = time.perf_counter() - started
    if written != n or "value" not in picked:
        raise SystemExit(f"generate({seed}, {n}) wrote {written} events, value {picked.get('value')}")
    part.rename(path)
    fields = {"events": n, "bytes": path.stat().st_size, "value": picked["value"], "generate_s": generate_s}
    meta.write_text(json.dumps(fields) + "\n")
    return Stream(path=path, **fields)


# -- measuring processes ----------------------------------------------------------------


class TreeSampler:
    """The summed resident memory of a process and its descendants, read
    from /proc every SAMPLE_INTERVAL_MS in a thread while in the `with`
    block: the peak, and every process seen in the tree (by pid and start
    time, so processes it left behind can be found after it ended)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_bytes = 0
        self.seen: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> list[proctree.Proc]:
        procs = proctree.tree(self.pid)
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, sum(p.rss_bytes for p in procs))
            self.seen.update(p.identity for p in procs)
        return procs

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_MS / 1000):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclasses.dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    stdout: str

    def as_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "peak_rss_bytes": self.peak_rss_bytes}


def measured(cmd: list[str]) -> Measured:
    """Run `cmd` to its end: its wall clock and its process tree's peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    with TreeSampler(proc.pid) as sampler:
        try:
            stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise SystemExit(f"{' '.join(cmd)}: no end after {COMMAND_TIMEOUT_S} s") from None
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})\n--- stdout ---\n{stdout[-4000:]}\n"
                         f"--- stderr ---\n{stderr[-4000:]}")
    return Measured(seconds, sampler.peak_bytes, stdout)


def cli(*args: str) -> Measured:
    """`python -m ledger.cli ARGS`, measured."""
    return measured([*LEDGER_CLI, *args])


def median_wall(cmd: list[str]) -> dict[str, Any]:
    """`cmd` run CLI_RUNS times: the median wall clock and every run's."""
    seconds = [measured(cmd).seconds for _ in range(CLI_RUNS)]
    return {"median_s": statistics.median(seconds), "runs_s": [round(s, 4) for s in seconds]}


def ingest(path: Path, db: str, expected: int) -> Measured:
    run = cli("ingest", str(path), "--json", "--db", db)
    summary = json.loads(run.stdout)
    if summary["accepted"] != expected:
        raise SystemExit(f"ingest of {path} into {db}: accepted {summary['accepted']} of {expected}: {summary}")
    return run


# -- serve ------------------------------------------------------------------------------


@dataclasses.dataclass
class Serving:
    process: subprocess.Popen[bytes]
    sampler: TreeSampler
    url: str
    ready_s: float
    ready_rss_bytes: int
    ready_processes: int


@contextlib.contextmanager
def serving(db: str, log_path: Path) -> Iterator[Serving]:
    """`serve` on a free loopback port, in a process group of its own, from
    its start until `/readyz` answers 200; on the way out (normally after
    `stop`) whatever is left of its group is killed."""
    port = proctree.free_port()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*LEDGER_CLI, "serve", "--db", db, "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with TreeSampler(process.pid) as sampler:
            while not _ready(url):
                if process.poll() is not None:
                    raise SystemExit(f"serve exited ({process.returncode}) before ready:\n{log_path.read_text()}")
                if time.perf_counter() - started > READY_TIMEOUT_S:
                    raise SystemExit(f"serve not ready after {READY_TIMEOUT_S} s:\n{log_path.read_text()}")
                time.sleep(READY_POLL_INTERVAL_MS / 1000)
            ready_s = time.perf_counter() - started
            procs = sampler.sample()
            yield Serving(process, sampler, url, ready_s, sum(p.rss_bytes for p in procs), len(procs))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=READY_REQUEST_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def stop(server: Serving, *, kill_alone: bool) -> dict[str, Any]:
    """Stop `serve`: SIGTERM to its process group (an orderly stop), or
    SIGKILL to the serve process alone.  Then wait up to ORPHAN_GRACE_S for
    every process its tree ever had to end, and report (and kill, by pid)
    those that did not."""
    server.sampler.sample()
    if kill_alone:
        how = "SIGKILL to the serve process alone"
        os.kill(server.process.pid, signal.SIGKILL)
    else:
        how = "SIGTERM to its process group"
        os.killpg(server.process.pid, signal.SIGTERM)
    started = time.perf_counter()
    try:
        server.process.wait(STOP_TIMEOUT_S)
        stopped_s: float | None = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        stopped_s = None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    deadline = time.perf_counter() + ORPHAN_GRACE_S
    while (left := proctree.alive(server.sampler.seen)) and time.perf_counter() < deadline:
        time.sleep(READY_POLL_INTERVAL_MS / 1000)
    report = {"how": how, "stopped_s": stopped_s, "left": len(left),
              "left_rss_bytes": sum(p.rss_bytes for p in left),
              "left_commands": [proctree.command_line(p.pid)[:200] for p in left]}
    for proc in left:
        os.kill(proc.pid, signal.SIGKILL)
    return report


def http_reads(server: Serving, token: str, paths: dict[str, str]) -> dict[str, Any]:
    """Each of `paths` GET HTTP_REQUESTS times on one keep-alive connection."""
    out = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=HTTP_TIMEOUT_S) as client:
        for name, path in paths.items():
            seconds = []
            for _ in range(HTTP_REQUESTS):
                started = time.perf_counter()
                response = client.get(path)
                seconds.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"GET {path}: {response.status_code} {response.text[:500]}")
            out[name] = {"median_s": statistics.median(seconds), "max_s": max(seconds)}
    return out


# -- one column: N events on one backend ------------------------------------------------


class Databases:
    """Fresh, empty ledgers of one backend: SQLite files in `work`, or
    databases on the PostgreSQL server; `size` of one, `discard` it."""

    def __init__(self, backend: str, work: Path, pg: PgServer | None, keep: bool) -> None:
        self.backend, self.work, self.pg, self.keep = backend, work, pg, keep

    def fresh(self, name: str) -> str:
        if self.pg is None:
            return f"sqlite:///{self.work / name}.db"
        return self.pg.url(self.pg.create())

    def size_bytes(self, url: str) -> int:
        if self.pg is None:
            path = url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            wal = Path(path + "-wal")
            return Path(path).stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return int(self.pg.admin.execute("SELECT pg_database_size(%s)", (self._name(url),)).fetchone()[0])

    def discard(self, url: str) -> None:
        if self.pg is not None and not self.keep:
            self.pg.drop(self._name(url))

    @staticmethod
    def _name(url: str) -> str:
        return url.rsplit("/", 1)[1]


def measure_column(stream: Stream, dbs: Databases, extra: Path) -> dict[str, Any]:
    n = stream.events
    col: dict[str, Any] = {"backend": dbs.backend, "events": n, "load_before": loadavg()}
    started = time.perf_counter()

    def step(what: str) -> None:
        print(f"  [{time.perf_counter() - started:7.1f} s] {what}", flush=True)

    db = dbs.fresh(f"ledger-{n}")
    step(f"ingest of {n:,} events into {db}")
    run = ingest(stream.path, db, n)
    col["ingest"] = {**run.as_json(), "events_per_s": round(n / run.seconds)}
    col["db_bytes"] = dbs.size_bytes(db)
    col["db_bytes_per_event"] = round(col["db_bytes"] / n, 1)

    step("one more event into the ledger")
    col["one_more"] = ingest(extra, db, 1).as_json()
    step("one event into an empty ledger")
    empty = dbs.fresh(f"empty-{n}")
    col["one_into_empty"] = ingest(extra, empty, 1).as_json()
    dbs.discard(empty)

    step(f"CLI start-up and queries, median of {CLI_RUNS}")
    col["cli_startup"] = median_wall([sys.executable, "-c", "import ledger.cli.main"])
    balances = json.loads(cli("balances", "--platform", PLATFORM, "--json", "--db", db).stdout)
    prosumer = max((row for row in balances if not row["account"].startswith("@")),
                   key=lambda row: row["earned"])["account"]
    col["prosumer"], col["value"] = prosumer, stream.value
    queries = {
        "balances": ("balances", "--platform", PLATFORM),
        "statement": ("statement", "--platform", PLATFORM, "--prosumer", prosumer),
        "explain": ("explain", "--platform", PLATFORM, "--value", stream.value),
    }
    col["cli"] = {name: median_wall([*LEDGER_CLI, *args, "--json", "--db", db]) for name, args in queries.items()}

    token = json.loads(cli("tokens", "create", "--platform", PLATFORM, "--role", "operator",
                                "--label", "scale bench", "--json", "--db", db).stdout)["token"]
    step("serve: start, reads over HTTP, SIGTERM to its group")
    base = f"/v1/platforms/{PLATFORM}"
    with serving(db, dbs.work / f"serve-{dbs.backend}-{n}.log") as server:
        col["serve"] = {"ready_s": round(server.ready_s, 3), "ready_rss_bytes": server.ready_rss_bytes,
                        "ready_processes": server.ready_processes,
                        "peak_rss_bytes_until_ready": server.sampler.peak_bytes}
        col["http"] = http_reads(server, token, {"balances": f"{base}/balances",
                                                 "statement": f"{base}/prosumers/{prosumer}/statement",
                                                 "explain": f"{base}/values/{stream.value}/explain"})
        col["serve"]["stop"] = stop(server, kill_alone=False)
    step("serve again: start, SIGKILL to serve alone")
    with serving(db, dbs.work / f"serve-kill-{dbs.backend}-{n}.log") as server:
        col["serve_killed"] = {"ready_s": round(server.ready_s, 3), "stop": stop(server, kill_alone=True)}

    step("verify")
    run = cli("verify", "--platform", PLATFORM, "--db", db)
    col["verify"] = {**run.as_json(), "output": run.stdout.strip()[:500]}
    dbs.discard(db)
    col["seconds"] = round(time.perf_counter() - started, 1)
    col["load_after"] = loadavg()
    step(f"done, load average {col['load_after']}")
    return col


# -- the table --------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB".replace(",", " ")


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:,.1f} s".replace(",", " ")


def _left(stopped: dict[str, Any]) -> str:
    stopped_in = "did not stop" if stopped["stopped_s"] is None else f"stopped in {_s(stopped['stopped_s'])}"
    left = "none left" if not stopped["left"] else f"**{stopped['left']} left ({_mib(stopped['left_rss_bytes'])})**"
    return f"{stopped_in}; {left}"


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("load average before (1, 5, 15 min)", lambda c: c["load_before"]),
    ("ingest: wall", lambda c: _s(c["ingest"]["seconds"])),
    ("ingest: events/s", lambda c: f"{c['ingest']['events_per_s']:,}".replace(",", " ")),
    ("ingest: peak RSS (process tree)", lambda c: _mib(c["ingest"]["peak_rss_bytes"])),
    ("one more event into the N-event ledger: wall", lambda c: _s(c["one_more"]["seconds"])),
    ("one more event into the N-event ledger: peak RSS", lambda c: _mib(c["one_more"]["peak_rss_bytes"])),
    ("one event into an empty ledger: wall", lambda c: _s(c["one_into_empty"]["seconds"])),
    ("one event into an empty ledger: peak RSS", lambda c: _mib(c["one_into_empty"]["peak_rss_bytes"])),
    ("serve: start to `/readyz` 200", lambda c: _s(c["serve"]["ready_s"])),
    ("serve: RSS when ready (process tree; processes)",
     lambda c: f"{_mib(c['serve']['ready_rss_bytes'])} ({c['serve']['ready_processes']})"),
    ("serve: peak RSS until ready", lambda c: _mib(c["serve"]["peak_rss_bytes_until_ready"])),
    (f"serve: SIGTERM to its process group; processes left {ORPHAN_GRACE_S} s later",
     lambda c: _left(c["serve"]["stop"])),
    (f"serve (restarted: ready in …): SIGKILL to serve alone; processes left {ORPHAN_GRACE_S} s later",
     lambda c: f"ready in {_s(c['serve_killed']['ready_s'])}; {_left(c['serve_killed']['stop'])}"),
    ("verify: wall", lambda c: _s(c["verify"]["seconds"])),
    ("verify: peak RSS", lambda c: _mib(c["verify"]["peak_rss_bytes"])),
    ("database bytes per event", lambda c: f"{c['db_bytes_per_event']:,.0f}".replace(",", " ")),
    (f"CLI start-up (`import ledger.cli.main`), median of {CLI_RUNS}", lambda c: _s(c["cli_startup"]["median_s"])),
    (f"`balances --json` (CLI), median of {CLI_RUNS}", lambda c: _s(c["cli"]["balances"]["median_s"])),
    (f"`statement --json` (CLI), median of {CLI_RUNS}", lambda c: _s(c["cli"]["statement"]["median_s"])),
    (f"`explain --json` (CLI), median of {CLI_RUNS}", lambda c: _s(c["cli"]["explain"]["median_s"])),
    (f"GET balances (HTTP), median of {HTTP_REQUESTS}", lambda c: _s(c["http"]["balances"]["median_s"])),
    (f"GET statement (HTTP), median of {HTTP_REQUESTS}", lambda c: _s(c["http"]["statement"]["median_s"])),
    (f"GET explain (HTTP), median of {HTTP_REQUESTS}", lambda c: _s(c["http"]["explain"]["median_s"])),
    ("column took", lambda c: _s(c["seconds"])),
]

NOTES = [
    ("every row but the HTTP ones is a fresh `python -m ledger.cli` process, wall clock from its start to "
     "its exit: interpreter start-up and imports included (the CLI start-up row is what they cost alone)."),
    (f"RSS: the sum of the resident sizes of the process and all its descendants (ingest projects in a "
     f"second process from 4 MiB of input; serve runs a writer and a projector), sampled from /proc every "
     f"{SAMPLE_INTERVAL_MS} ms; the peak over the samples. The PostgreSQL server's own memory is not in it."),
    ("one more event: a `prosumer.registered` ingested by a fresh `ingest` process into the N-event ledger; "
     "the empty-ledger row ingests the same event into a fresh, empty database: the reference of issue 13's "
     "target (within 1 s of it)."),
    ("queries: `statement` of the prosumer who earned most (largest `earned` in `balances`), `explain` of the "
     "last value realized in the stream's first half. HTTP: one keep-alive connection, an operator token."),
    (f"serve: the first start is stopped with SIGTERM to its process group; the second, started again on the "
     f"same ledger, with SIGKILL to the serve process alone (its children get no signal). \"left\" counts the "
     f"processes its tree had that still ran {ORPHAN_GRACE_S} s after serve's exit (then killed by pid)."),
    ("database bytes per event: SQLite: the file after `PRAGMA wal_checkpoint(TRUNCATE)`, plus any WAL left; "
     "PostgreSQL: `pg_database_size` of the fresh database; both right after the ingest of the N events."),
    ("the stream: `generate(seed, N, \"bench\")`, all events acceptable, generated once per N into the cache "
     "(its generation time is in the JSON, in no row)."),
]


def targets(columns: list[dict[str, Any]], baseline: dict[str, Any] | None) -> list[str]:
    """Issue 13's targets, column by column: met or not met."""
    by_key = {(c["backend"], c["events"]): c for c in (baseline or {}).get("columns", [])}
    lines = []
    for c in columns:
        extra_s = c["one_more"]["seconds"] - c["one_into_empty"]["seconds"]
        checks = [
            (f"one more event within {TARGET_ONE_MORE_OVER_EMPTY_S:g} s of an empty ledger's (+{_s(extra_s)})",
             extra_s <= TARGET_ONE_MORE_OVER_EMPTY_S),
            (f"ingest peak RSS < {TARGET_PEAK_RSS_MIB} MiB", c["ingest"]["peak_rss_bytes"] < TARGET_PEAK_RSS_MIB * MIB),
            (f"one more event peak RSS < {TARGET_PEAK_RSS_MIB} MiB",
             c["one_more"]["peak_rss_bytes"] < TARGET_PEAK_RSS_MIB * MIB),
        ]
        before = by_key.get((c["backend"], c["events"]))
        if before is not None:
            speedup = c["ingest"]["events_per_s"] / before["ingest"]["events_per_s"]
            checks.append((f"ingest ≥ {TARGET_INGEST_SPEEDUP:g}× the baseline's events/s ({speedup:.2f}×)",
                           speedup >= TARGET_INGEST_SPEEDUP))
            ratio = c["verify"]["seconds"] / before["verify"]["seconds"]
            checks.append((f"verify no slower than the baseline's ({ratio:.2f}× its time)", ratio <= 1))
        lines += [f"{_column_name(c)}: {text}: {'met' if ok else '**not met**'}" for text, ok in checks]
    return lines


def _column_name(c: dict[str, Any]) -> str:
    return f"{'SQLite' if c['backend'] == 'sqlite' else 'PostgreSQL'} {c['events']:,}".replace(",", " ")


def markdown_table(columns: list[dict[str, Any]]) -> str:
    lines = ["| measurement | " + " | ".join(_column_name(c) for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(c) for c in columns) + " |" for label, cell in ROWS]
    return "\n".join(lines)


def write_results(doc: dict[str, Any], baseline: dict[str, Any] | None, name: str) -> str:
    """NAME.md and NAME.json in bench/results; returns the table."""
    machine = doc["machine"]
    table = markdown_table(doc["columns"])
    md = [
        f"# peerledger scale benchmark: {doc['label']}",
        "",
        f"- date: {doc['date']} (took {_s(doc['seconds'])})",
        f"- command: `{doc['command']}`",
        f"- machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        f"- Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL {machine.get('postgresql', '—')}",
        f"- git rev: {machine['git_rev']}",
        "",
        table,
        "",
        "Targets (issue 13):",
        "",
        *(f"- {line}" for line in targets(doc["columns"], baseline)),
        "",
        *(f"- {note}" for note in NOTES),
        "",
    ]
    save_report(RESULTS, name, "\n".join(md), doc)
    return table


# -- the run ----------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",")]
    if not all(s > 0 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _backends(text: str) -> list[str]:
    chosen = text.split(",")
    if not set(chosen) <= set(BACKENDS):
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKENDS)}")
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"N = {QUICK_SIZE:,} only; results to scale-quick.*")
    ap.add_argument("--big", action="store_true", help=f"also N = {BIG_SIZE:,}")
    ap.add_argument("--sizes", type=_sizes, help="comma-separated event counts (overrides --quick and --big)")
    ap.add_argument("--backends", type=_backends, default=list(BACKENDS), help="comma-separated: sqlite,postgresql")
    ap.add_argument("--label", default="", help='recorded with the results, e.g. "before: main at e896f68"')
    ap.add_argument("--output-name", help="results go to bench/results/NAME.{md,json} (default scale, "
                                          "scale-quick with --quick)")
    ap.add_argument("--baseline", type=Path, help="a former run's JSON: adds the targets relative to it")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where streams are kept (default {DEFAULT_CACHE})")
    ap.add_argument("--pg", default=DEFAULT_PG, help="a PostgreSQL URL whose server gets the fresh databases")
    ap.add_argument("--keep", action="store_true", help="keep the SQLite files, logs and PostgreSQL databases")
    args = ap.parse_args()
    sizes = args.sizes or ([QUICK_SIZE] if args.quick else [*DEFAULT_SIZES, *([BIG_SIZE] if args.big else [])])
    name = args.output_name or ("scale-quick" if args.quick else "scale")
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None

    started = time.perf_counter()
    doc: dict[str, Any] = {
        "label": args.label or "(no label)",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join(["python bench/scale_bench.py", *sys.argv[1:]]),
        "machine": machine_info(), "seed": args.seed, "sizes": sizes, "backends": args.backends,
        "streams": {}, "columns": [],
    }
    machine = doc["machine"]
    print(f"# peerledger scale benchmark: {doc['label']}; N = {sizes}, {args.backends}", flush=True)
    print(f"machine: {machine['nproc']} cores, {machine['cpu']}, git {machine['git_rev']}, load {loadavg()}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="peerledger-scale-"))
    extra = work / "extra.jsonl"
    extra.write_bytes(orjson.dumps(EXTRA_EVENT) + b"\n")
    pg = PgServer(args.pg) if "postgresql" in args.backends else None
    if pg is not None:
        machine["postgresql"] = pg.version
    try:
        for n in sizes:
            stream = cached_stream(args.cache, args.seed, n)
            doc["streams"][str(n)] = {"path": str(stream.path), "bytes": stream.bytes,
                                      "generate_s": round(stream.generate_s, 1), "value": stream.value}
            for backend in args.backends:
                print(f"{backend}, {n:,} events ({stream.bytes / MIB:,.0f} MiB stream), load {loadavg()}:",
                      flush=True)
                dbs = Databases(backend, work, pg if backend == "postgresql" else None, args.keep)
                doc["columns"].append(measure_column(stream, dbs, extra))
                doc["seconds"] = round(time.perf_counter() - started, 1)
                table = write_results(doc, baseline, name)
    finally:
        if pg is not None:
            pg.close(keep=args.keep)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table)
    print()
    print("\n".join(targets(doc["columns"], baseline)))
    print(f"\nwrote {RESULTS / (name + '.md')} and {RESULTS / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
