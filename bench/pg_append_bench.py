#!/usr/bin/env python3
"""PostgreSQL append benchmark: is eventsourcing's events-table lock the cap of one database?

    scripts/ensure-postgres && .venv/bin/python bench/pg_append_bench.py
    .venv/bin/python bench/pg_append_bench.py --quick                 # 24 000 events per run, one round
    .venv/bin/python bench/pg_append_bench.py --processes 1 2 4 8 16 --rounds 3

The ledger's append transaction (`Store.append`) is driven by N concurrent
appender processes (default 1, 2, 4, 8), each on a platform of its own,
each appending pre-built batches of 1000 events: the events, their id
records and the Merkle nodes they complete (`AppendBatch`; no state rows,
nothing parsed or decided while the clock runs), into one fresh PostgreSQL
database per run, with two recorders:

* **application**: the recorder of the code before issue 13 (commit e896f68):
  eventsourcing's `PostgresApplicationRecorder` subclassed with the ledger's
  tables.  Every append takes `LOCK TABLE peerledger_events IN EXCLUSIVE MODE`
  (so that notification ids, one global sequence, are handed out in commit
  order), sends a NOTIFY and inserts with `RETURNING notification_id`; the
  lock is held to the commit.  The time each transaction waits for the lock
  is measured (the library's `_lock_table`, timed);
* **aggregate**: the recorder `ledger/storage/store.py` uses now,
  eventsourcing's `PostgresAggregateRecorder`: the same rows, no table lock,
  no notification ids (a platform's order is its seq).

A run's events are split evenly between its processes (default 96 000: 96
batches for one process, 12 each for eight).  The processes are spawned,
open the store and build their batches, then start together (a barrier);
a run's events/s is its events over the time from the start to the last
process's last commit.  Each transaction's latency is `Store.append`'s wall
clock (connection, lock wait, inserts, commit).  The machine's CPU use
during the run (/proc/stat, both cores, every user's processes) says whether
the cores, not the lock, were the limit.  Runs alternate between the two
recorders, N by N, for `--rounds` rounds; a row pools its rounds.

Results: a markdown table on stdout and in bench/results/pg_append.md, the
same numbers in bench/results/pg_append.json (`--quick`:
pg_append-quick.*), with the machine, the git revision and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingest_bench import PgServer, loadavg, machine_info, save_report  # noqa: E402 — bench/ is this script's directory

from ledger.ingest.sources import BATCH_MAX_EVENTS  # noqa: E402

MODES = ("application", "aggregate")
DEFAULT_PROCESSES = (1, 2, 4, 8)
DEFAULT_EVENTS = 96_000  # per run, split between its processes
QUICK_EVENTS = 24_000
DEFAULT_ROUNDS = 2
RUN_TIMEOUT_S = 1800
DEFAULT_PG = os.environ.get("PEERLEDGER_BENCH_PG") or os.environ.get(
    "PEERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ACCEPTED_AT = "2026-12-01T00:00:00.000Z"


# -- the two recorders -------------------------------------------------------------

# Seconds each transaction of this process waited for the table lock (application recorder).
LOCK_WAITS_S: list[float] = []


def application_recorder_class() -> type:
    """The ledger's PostgreSQL recorder as it was before issue 13: the
    application recorder, whose every append locks the events table."""
    from eventsourcing.postgres import PostgresApplicationRecorder
    from psycopg.sql import SQL

    from ledger.storage.dialect import POSTGRES
    from ledger.storage.store import ledger_ddl

    class LockingLedgerRecorder(PostgresApplicationRecorder):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sql_create_statements.extend(SQL(s) for s in ledger_ddl(POSTGRES))  # type: ignore[arg-type]

        def insert_event_rows(self, c: Any, rows: Any) -> None:
            from eventsourcing.persistence import StoredEvent

            # lock, NOTIFY, INSERT … RETURNING notification_id
            self._insert_stored_events(c, [StoredEvent(*row) for row in rows])

        def _lock_table(self, curs: Any) -> None:
            t = time.perf_counter()
            super()._lock_table(curs)
            LOCK_WAITS_S.append(time.perf_counter() - t)

    return LockingLedgerRecorder


@contextlib.contextmanager
def recorder(mode: str) -> Iterator[None]:
    """Stores opened inside use `mode`'s recorder on PostgreSQL."""
    import ledger.storage.store as store_module

    if mode == "aggregate":
        yield
        return
    current = store_module._postgres_recorder_class
    store_module._postgres_recorder_class = application_recorder_class
    try:
        yield
    finally:
        store_module._postgres_recorder_class = current


# -- an appender process -------------------------------------------------------------


def build_batches(platform: str, batches: int, seed: int) -> list[Any]:
    """`batches` AppendBatches of BATCH_MAX_EVENTS events of `platform`, seqs
    1, 2, …: a generated stream's first events in canonical form (repeated,
    with fresh ids in the id records), their id records and Merkle nodes."""
    import orjson

    from ledger.contract.schema import parse_event
    from ledger.demo.generate import generate
    from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, AppendBatch, leaf_hash
    from projections.merkle import Frontier

    template = [parse_event(orjson.dumps(e)) for e in generate(seed, BATCH_MAX_EVENTS, platform)]
    frontier = Frontier()
    out = []
    seq = 0
    for _ in range(batches):
        events, ids, nodes = [], [], []
        for parsed in template:
            seq += 1
            leaf = leaf_hash(parsed.canonical)
            events.append((platform, seq, parsed.event["type"], parsed.canonical))
            ids.append((platform, f"{parsed.id}.{seq}", seq, leaf, leaf, ACCEPTED_AT))
            nodes.extend((platform, level, idx, h) for level, idx, h in frontier.append(leaf)
                         if level >= MERKLE_STORED_LEVEL_MIN)
        out.append(AppendBatch(events=events, id_records=ids, merkle_nodes=nodes))
    return out


def appender(spec: dict[str, Any], barrier: Any, results: Any, finished: Any) -> None:
    """Build the batches, wait for the others, append them; put the timings
    on `results`, and keep the connections (their server processes) until
    the driver has read the server's CPU time (`finished`)."""
    import gc

    from ledger.ops.runtime import tune_gc
    from ledger.storage.store import Store

    tune_gc()  # as every ledger process
    with recorder(spec["mode"]), Store(spec["db"]) as store:
        batches = build_batches(spec["platform"], spec["batches"], spec["seed"])
        store.head(spec["platform"])  # the pool's connections are open before the clock starts
        gc.collect()
        barrier.wait()
        cpu_start = time.process_time()
        appends_s = []
        for batch in batches:
            t = time.perf_counter()
            store.append(batch)
            appends_s.append(time.perf_counter() - t)
        end, cpu_s = time.monotonic(), time.process_time() - cpu_start
        assert store.head(spec["platform"]) == spec["batches"] * BATCH_MAX_EVENTS
        results.put({"platform": spec["platform"], "end": end, "cpu_s": cpu_s, "appends_s": appends_s,
                     "lock_waits_s": list(LOCK_WAITS_S)})
        finished.wait()


# -- the driver -------------------------------------------------------------------------


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def postgres_cpu_s() -> float:
    """CPU seconds (user + system) of every `postgres` process of this machine
    that is running now: the server's backends, WAL writer, checkpointer …"""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
            if name == "postgres":
                total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def run(pg: PgServer, mode: str, processes: int, events: int, seed: int) -> dict[str, Any]:
    """One run: `processes` appenders, `events` in all, into a fresh database."""
    from ledger.storage.store import Store

    url = pg.url(pg.create())
    with recorder(mode), Store(url):
        pass  # the schema, created once before the appenders open the store
    per_process = events // processes // BATCH_MAX_EVENTS
    ctx = multiprocessing.get_context("spawn")
    barrier, finished = ctx.Barrier(processes + 1), ctx.Event()
    results = ctx.Queue()
    workers = [ctx.Process(target=appender, args=({"mode": mode, "db": url, "platform": f"p{i}",
                                                   "batches": per_process, "seed": seed + i},
                                                  barrier, results, finished))
               for i in range(processes)]
    for w in workers:
        w.start()
    barrier.wait(timeout=RUN_TIMEOUT_S)
    start, machine_start, server_start = time.monotonic(), cpu_times(), postgres_cpu_s()
    done = [results.get(timeout=RUN_TIMEOUT_S) for _ in workers]
    machine_end, server_end = cpu_times(), postgres_cpu_s()
    finished.set()
    for w in workers:
        w.join(timeout=RUN_TIMEOUT_S)
        if w.exitcode != 0:
            raise SystemExit(f"an appender ({mode}, {processes} processes) failed: exit {w.exitcode}")
    seconds = max(d["end"] for d in done) - start
    total = per_process * BATCH_MAX_EVENTS * processes
    return {
        "mode": mode, "processes": processes, "events": total, "seconds": seconds,
        "events_per_s": total / seconds,
        "cpu_busy": (machine_end[0] - machine_start[0]) / max(1, machine_end[1] - machine_start[1]),
        "appenders_cores": sum(d["cpu_s"] for d in done) / seconds,
        "postgres_cores": (server_end - server_start) / seconds,
        "appends_s": [s for d in done for s in d["appends_s"]],
        "lock_waits_s": [s for d in done for s in d["lock_waits_s"]],
    }


def percentile_ms(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One (recorder, N) row: its rounds' runs pooled."""
    appends = [s for r in runs for s in r["appends_s"]]
    waits = [s for r in runs for s in r["lock_waits_s"]]
    events, seconds = sum(r["events"] for r in runs), sum(r["seconds"] for r in runs)
    return {
        "recorder": runs[0]["mode"], "processes": runs[0]["processes"], "runs": len(runs),
        "events": events, "seconds": round(seconds, 3), "events_per_s": events / seconds,
        "events_per_s_each_run": [round(r["events_per_s"]) for r in runs],
        "transactions": len(appends),
        **{f"append_{q}_ms": percentile_ms(appends, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        "append_max_ms": 1000 * max(appends),
        **{f"lock_wait_{q}_ms": percentile_ms(waits, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        "lock_wait_share": sum(waits) / sum(appends) if waits else None,
        # While a transaction holds the table lock (from LOCK TABLE to COMMIT:
        # its latency less its wait) no other append of the database runs.
        "lock_held_mean_ms": 1000 * (sum(appends) - sum(waits)) / len(appends) if waits else None,
        "cpu_busy": statistics.mean(r["cpu_busy"] for r in runs),
        "appenders_cores": statistics.mean(r["appenders_cores"] for r in runs),
        "postgres_cores": statistics.mean(r["postgres_cores"] for r in runs),
    }


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}".replace(",", " ")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| recorder | N | events | events/s | each run | append p50 / p90 / p99 ms "
             "| lock wait p50 / p90 / p99 ms | waiting | lock held (mean) → cap | appenders CPU | PostgreSQL CPU "
             "| machine busy |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["lock_wait_p50_ms"] is None:
            lock = waiting = held = "—"
        else:
            lock = f"{fmt(r['lock_wait_p50_ms'])} / {fmt(r['lock_wait_p90_ms'])} / {fmt(r['lock_wait_p99_ms'])}"
            waiting = f"{100 * r['lock_wait_share']:.0f} %"
            held = (f"{fmt(r['lock_held_mean_ms'])} ms → "
                    f"{fmt(BATCH_MAX_EVENTS * 1000 / r['lock_held_mean_ms'], 0)} ev/s")
        lines.append(
            f"| {r['recorder']} | {r['processes']} | {fmt(r['events'], 0)} | **{fmt(r['events_per_s'], 0)}** | "
            f"{' / '.join(fmt(x, 0) for x in r['events_per_s_each_run'])} | "
            f"{fmt(r['append_p50_ms'])} / {fmt(r['append_p90_ms'])} / {fmt(r['append_p99_ms'])} | {lock} | "
            f"{waiting} | {held} | {fmt(r['appenders_cores'], 2)} cores | {fmt(r['postgres_cores'], 2)} cores | "
            f"{100 * r['cpu_busy']:.0f} % |")
    return "\n".join(lines)


def observations(rows: list[dict[str, Any]]) -> list[str]:
    """What the rows say, as ratios: throughput and p90 latency from the fewest to the most processes."""
    out = []
    for mode in MODES:
        mine = sorted((r for r in rows if r["recorder"] == mode), key=lambda r: r["processes"])
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        out.append(f"{mode}: from N={first['processes']} to N={last['processes']}, events/s × "
                   f"{last['events_per_s'] / first['events_per_s']:.2f}, append p90 × "
                   f"{last['append_p90_ms'] / first['append_p90_ms']:.1f}"
                   + (f"; at N={last['processes']} transactions spent {100 * last['lock_wait_share']:.0f} % "
                      "of their time waiting for the table lock" if last["lock_wait_share"] is not None else ""))
    by = {(r["recorder"], r["processes"]): r for r in rows}
    for n in sorted({r["processes"] for r in rows}):
        if ("application", n) in by and ("aggregate", n) in by:
            out.append(f"N={n}: aggregate ÷ application events/s = "
                       f"{by[('aggregate', n)]['events_per_s'] / by[('application', n)]['events_per_s']:.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, nargs="+", default=list(DEFAULT_PROCESSES),
                    help="concurrent appenders per run (default 1 2 4 8)")
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                    help="events per run, split between its processes (default 96 000)")
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="runs per (recorder, N), alternating")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_EVENTS} events per run, one round; results go to pg_append-quick.*")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg", default=DEFAULT_PG, help="a PostgreSQL URL whose server gets the fresh databases")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    events, rounds = (QUICK_EVENTS, 1) if args.quick else (args.events, args.rounds)
    for n in args.processes:
        if n < 1 or events // n < BATCH_MAX_EVENTS:
            ap.error(f"{events} events cannot give each of {n} processes a batch of {BATCH_MAX_EVENTS}")
    name = "pg_append-quick" if args.quick else "pg_append"

    started = datetime.datetime.now(datetime.UTC)
    machine = machine_info()
    load_start = loadavg()
    pg = PgServer(args.pg)
    machine["postgresql"] = pg.version
    print(f"# PostgreSQL append benchmark: {events} events per run, N = {args.processes}, {rounds} round(s)")
    print(f"machine: {machine['nproc']} cores, {machine['cpu']}, PostgreSQL {pg.version}, "
          f"git {machine['git_rev']}, load {load_start}", flush=True)
    runs: list[dict[str, Any]] = []
    try:
        for round_ in range(rounds):
            for n in args.processes:
                for mode in (MODES if (round_ + n) % 2 == 0 else MODES[::-1]):
                    r = run(pg, mode, n, events, args.seed)
                    runs.append(r)
                    print(f"  round {round_ + 1}, {mode:11}, N={n}: {fmt(r['events_per_s'], 0)} events/s, "
                          f"append p90 {fmt(percentile_ms(r['appends_s'], 0.9))} ms, "
                          f"CPU busy {100 * r['cpu_busy']:.0f} %, load {loadavg()}", flush=True)
    finally:
        pg.close()
    load_end = loadavg()
    rows = [row([r for r in runs if (r["mode"], r["processes"]) == (mode, n)])
            for mode in MODES for n in args.processes]
    text = table(rows)
    took = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    notes = [
        f"each run: a fresh database; N appender processes (spawned, one platform each) append "
        f"{events // BATCH_MAX_EVENTS} batches of {BATCH_MAX_EVENTS} events between them with `Store.append` "
        "(events, id records, Merkle nodes; no state rows); the clock runs from a barrier all of them passed, "
        "after building their batches and opening their connections, to the last commit.",
        "append: `Store.append`'s wall clock per transaction (a connection from the pool, BEGIN, the inserts, "
        "COMMIT); lock wait: the application recorder's `LOCK TABLE peerledger_events IN EXCLUSIVE MODE` "
        "alone; waiting: the share of all transactions' time spent waiting for that lock.",
        "lock held → cap: the mean time a transaction held the table lock (its latency less its wait: the "
        "inserts and the commit); no other append of the database can run meanwhile, so one database cannot "
        f"append more than {BATCH_MAX_EVENTS} events per that time, however many cores it has.",
        "appenders CPU: the appender processes' CPU time (the client side: psycopg, the rows' adaptation) per "
        "second of the run; PostgreSQL CPU: that of every `postgres` process of the machine (its backends, WAL "
        "writer …; other users' sessions of the same server included); machine busy: both cores, every "
        "process (/proc/stat). Near 100 % busy means the cores, not a lock, set the pace.",
        f"this machine has {machine['nproc']} cores, shared with other engineers' work: load average (1, 5, "
        f"15 min) at start {load_start}, at end {load_end}.",
        *observations(rows),
    ]
    command = " ".join(["python bench/pg_append_bench.py", *(sys.argv[1:] if argv is None else argv)])
    document = "\n".join([
        "# peerledger PostgreSQL append benchmark: the events-table lock", "",
        f"- date: {started:%Y-%m-%d %H:%M:%S} UTC (took {took:.0f} s)",
        f"- command: `{command}`",
        f"- machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']}, Python {machine['python']}, "
        f"PostgreSQL {pg.version}, eventsourcing {machine['eventsourcing']}, psycopg {machine['psycopg']}",
        f"- git rev: {machine['git_rev']}", "",
        text, "",
        *(f"- {n}" for n in notes), "",
    ])
    print()
    print(document)
    out = Path(args.results)
    save_report(out, name, document, {
        "date": f"{started:%Y-%m-%dT%H:%M:%SZ}", "command": command, "machine": machine,
        "events_per_run": events, "rounds": rounds, "load_average": {"start": load_start, "end": load_end},
        "rows": rows, "notes": notes,
    })
    print(f"wrote {out / name}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
