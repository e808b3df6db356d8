#!/usr/bin/env python3
"""Pool benchmark: a usage pool at scale (EVENTS.md §7), ingested and closed
under both methods, on SQLite and PostgreSQL.

    .venv/bin/python bench/pool_bench.py --quick      # 10 000 subscribers, 100 000 usage events (~2 min)
    .venv/bin/python bench/pool_bench.py              # 100 000 subscribers, 1 000 000 usage events
    .venv/bin/python bench/pool_bench.py --backends sqlite --output-name pool-sqlite

The platform (generated once per size and seed, cached like the scale
bench's streams): 20 000 prosumers (2 000 with `--quick`) and 200 000 works
(20 000), nine in ten contributions by one or two authors, one in ten an
output of 2-4 earlier contributions passing 5000 bps upstream; fee 1000 bps.

The pool month: subscribers `s0000001`… each pay a subscription (499, 999 or
1499 cents, 40/45/15 %) into two pools opened side by side, `P` (`pro_rata`)
and `U` (`user_centric`), and their usage, pre-aggregated per subscriber and
day, is recorded into both: each `usage.recorded` names 1-8 works (mean
about 3) of a Zipf-like popularity (weight 1/rank^0.9; ranks shuffled over
contributions and outputs) with counts of 1-5 plays, 1-50 for the heaviest
listeners.  Activity is heavy-tailed, as in streaming data: a subscriber's
active days follow a Pareto law (alpha 1.2), 1 to 30 days, scaled so that the
events add up to the requested number; 3 % pay and use nothing.  So each
pool gets `--usage-events` usage events (the same ones), and the log the
twice that, plus the subscriptions.

Measured, each a fresh `python -m ledger.cli` process on a fresh SQLite file
or PostgreSQL database (wall clock, and the peak resident memory of its
process tree from /proc, `scale_bench.TreeSampler`):

1. `ingest` of the platform (works and prosumers);
2. `ingest` of the pool month: the **usage ingest rate** (events/s over every
   event of the file: openings, subscriptions and usage);
3. `ingest` of one `pool.closed` of `P`, then of `U`: the **close time** (the
   CLI's start-up included: its own row says what that is) and peak memory;
4. `explain --value P --json` and of `U`: wall clock and output size.

Each close is checked: its explanation's allocation and alternative both
sum to the pool's funding.  Results go to bench/results/NAME.{md,json}
(`pool`, `pool-quick` with `--quick`), with the machine, the git revision and
the load average before each step; the machine is shared: run one benchmark
at a time.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import hashlib
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingest_bench import DEFAULT_PG, PgServer, loadavg, machine_info, save_report
from scale_bench import CLI_RUNS, Databases, _mib, _s, cli, median_wall

PLATFORM = "poolbench"
BACKENDS = ("sqlite", "postgresql")
RESULTS = ROOT / "bench" / "results"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "peerledger-pool-bench"

# The pool, and a tenth of it for --quick.
FULL = {"subscribers": 100_000, "usage_events": 1_000_000, "works": 200_000, "prosumers": 20_000}
QUICK = {"subscribers": 10_000, "usage_events": 100_000, "works": 20_000, "prosumers": 2_000}

FEE_BPS = 1000
OUTPUT_EVERY = 10  # one work in ten is an output
OUTPUT_UPSTREAM_BPS = 5000
PRICES_CENTS = (499, 999, 1499)
PRICE_WEIGHTS = (40, 45, 15)
IDLE_PERCENT = 3  # pay and use nothing
DAYS = 30  # the pool's month: November 2026, one usage event per subscriber and active day at most
ACTIVITY_ALPHA = 1.2  # Pareto: most subscribers play a little, a few a lot
POPULARITY_EXPONENT = 0.9  # a work of rank r is used in proportion to 1 / r^0.9
HEAVY_DAYS = 20  # subscribers active this many days play each work up to HEAVY_PLAYS_MAX times
PLAYS_MAX, HEAVY_PLAYS_MAX = 5, 50
WORKS_PER_EVENT_MAX = 8
POOLS = (("P", "pro_rata"), ("U", "user_centric"))
SETUP_AT = "2026-10-01T00:00:00Z"
CLOSE_AT = "2026-11-30T23:59:59Z"


def event(n: itertools.count, type_: str, at: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 1, "id": f"b{next(n):08d}", "platform": PLATFORM, "type": type_, "at": at,
                         "data": data}) + b"\n"


# -- the streams --------------------------------------------------------------------------


def platform_stream(rng: random.Random, size: dict[str, int], ids: itertools.count) -> Iterator[bytes]:
    """The fee, the prosumers, then the works (contributions, and every tenth an output)."""
    yield event(ids, "policy.set", SETUP_AT, {"platform_fee_bps": FEE_BPS})
    prosumers = [f"p{i:06d}" for i in range(1, size["prosumers"] + 1)]
    for p in prosumers:
        yield event(ids, "prosumer.registered", SETUP_AT, {"prosumer": p})
    contributions: list[str] = []
    for i in range(1, size["works"] + 1):
        if i % OUTPUT_EVERY == 0 and len(contributions) >= 4:
            components = {c: 1 + int(rng.random() * 3) for c in rng.sample(contributions, 2 + int(rng.random() * 3))}
            yield event(ids, "output.composed", SETUP_AT, {
                "work": f"w{i:07d}", "components": components, "authors": {rng.choice(prosumers): 1},
                "upstream_bps": OUTPUT_UPSTREAM_BPS})
            continue
        authors = {p: 1 + int(rng.random() * 3) for p in rng.sample(prosumers, 1 if rng.random() < 0.7 else 2)}
        yield event(ids, "contribution.recorded", SETUP_AT, {"work": f"w{i:07d}", "authors": authors})
        contributions.append(f"w{i:07d}")


def active_days(rng: random.Random, subscribers: int, usage_events: int) -> list[int]:
    """Days of use per subscriber (0 for the idle), heavy-tailed, adding up to `usage_events`."""
    weights = [0.0 if rng.random() * 100 < IDLE_PERCENT else rng.paretovariate(ACTIVITY_ALPHA)
               for _ in range(subscribers)]
    active = sum(1 for w in weights if w)
    if not active <= usage_events <= DAYS * active:
        raise SystemExit(f"{usage_events} usage events do not fit {active} active subscribers × {DAYS} days")

    def days(scale: float) -> list[int]:
        return [min(DAYS, 1 + int(w * scale)) if w else 0 for w in weights]

    low, high = 0.0, 1.0
    while sum(days(high)) < usage_events:
        high *= 2
    for _ in range(60):  # bisect the scale; then trim the excess from the most active
        mid = (low + high) / 2
        low, high = (mid, high) if sum(days(mid)) < usage_events else (low, mid)
    out = days(high)
    excess = sum(out) - usage_events
    for i in sorted(range(subscribers), key=lambda i: -out[i]):
        if excess <= 0:
            break
        cut = min(excess, out[i] - 1)
        out[i] -= cut
        excess -= cut
    return out


def month_stream(rng: random.Random, size: dict[str, int], ids: itertools.count) -> Iterator[bytes]:
    """Both pools opened, every subscriber's subscription paid into both,
    then each day's usage, recorded into both."""
    subscribers = [f"s{i:07d}" for i in range(1, size["subscribers"] + 1)]
    for pool, method in POOLS:
        yield event(ids, "pool.opened", "2026-11-01T00:00:00Z", {"pool": pool, "currency": "USD", "method": method,
                                                                  "name": f"November 2026, {method}"})
    for s in subscribers:
        price = rng.choices(PRICES_CENTS, PRICE_WEIGHTS)[0]
        for pool, _ in POOLS:
            yield event(ids, "pool.funded", "2026-11-01T00:00:00Z", {"pool": pool, "subscriber": s, "amount": price})
    works = size["works"]
    ranked = [f"w{i:07d}" for i in range(1, works + 1)]
    rng.shuffle(ranked)  # popularity is not creation order
    cumulative = list(itertools.accumulate(1 / (r + 1) ** POPULARITY_EXPONENT for r in range(works)))
    total = cumulative[-1]
    days_of = active_days(rng, len(subscribers), size["usage_events"])
    calendars = [sorted(rng.sample(range(1, DAYS + 1), d)) if d else [] for d in days_of]
    for day in range(1, DAYS + 1):
        at = f"2026-11-{day:02d}T23:00:00Z"
        for s, calendar, d in zip(subscribers, calendars, days_of):
            if not calendar or calendar[0] != day:
                continue
            calendar.pop(0)
            plays = HEAVY_PLAYS_MAX if d >= HEAVY_DAYS else PLAYS_MAX
            k = min(WORKS_PER_EVENT_MAX, 1 + int(rng.expovariate(0.5)))
            uses: dict[str, int] = {}
            while len(uses) < k:
                work = ranked[bisect.bisect_left(cumulative, rng.random() * total)]
                uses[work] = 1 + int(rng.random() * plays)
            for pool, _ in POOLS:
                yield event(ids, "usage.recorded", at, {"pool": pool, "subscriber": s, "uses": uses})


def streams(cache: Path, seed: int, size: dict[str, int]) -> dict[str, Path]:
    """The platform, the month and each close, as JSON Lines files in `cache`
    (named after the size, seed and this script's source: a changed
    generator writes new files)."""
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    tag = f"seed{seed}-{size['subscribers']}-{size['usage_events']}-{size['works']}-{source}"
    paths = {"platform": cache / f"platform-{tag}.jsonl", "month": cache / f"month-{tag}.jsonl",
             **{f"close {pool}": cache / f"close-{pool}-{tag}.jsonl" for pool, _ in POOLS}}
    if all(p.exists() for p in paths.values()):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ids = itertools.count(1)
    for name, lines in (("platform", platform_stream(rng, size, ids)), ("month", month_stream(rng, size, ids))):
        started = time.perf_counter()
        part = paths[name].with_suffix(".part")
        with open(part, "wb") as f:
            while chunk := list(itertools.islice(lines, 4096)):
                f.write(b"".join(chunk))
        part.rename(paths[name])
        print(f"  generated {paths[name].name} in {time.perf_counter() - started:.0f} s", flush=True)
    for pool, _ in POOLS:
        paths[f"close {pool}"].write_bytes(event(ids, "pool.closed", CLOSE_AT, {"pool": pool}))
    return paths


def lines_of(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# -- one backend --------------------------------------------------------------------------


def measure(paths: dict[str, Path], dbs: Databases) -> dict[str, Any]:
    col: dict[str, Any] = {"backend": dbs.backend, "load_before": loadavg(), "steps": {}}
    started = time.perf_counter()
    db = dbs.fresh("pools")

    def step(name: str, *args: str) -> dict[str, Any]:
        load = loadavg()
        print(f"  [{time.perf_counter() - started:7.1f} s] {name} (load {load})", flush=True)
        run = cli(*args, "--db", db)
        col["steps"][name] = {**run.as_json(), "load_before": load}
        return {"run": run, **col["steps"][name]}

    for name in ("platform", "month"):
        events = lines_of(paths[name])
        done = step(f"ingest {name}", "ingest", str(paths[name]), "--json")
        summary = json.loads(done["run"].stdout)
        if summary["accepted"] != events:
            raise SystemExit(f"ingest of {paths[name]}: accepted {summary['accepted']} of {events}: {summary}")
        col["steps"][f"ingest {name}"].update(events=events, events_per_s=round(events / done["seconds"]))
    for pool, method in POOLS:
        step(f"close {pool}", "ingest", str(paths[f"close {pool}"]), "--json")
        done = step(f"explain {pool}", "explain", "--platform", PLATFORM, "--value", pool, "--json")
        ex = json.loads(done["run"].stdout)
        col["steps"][f"explain {pool}"]["bytes"] = len(done["run"].stdout)
        x = ex["amount"]
        assert ex["pool"]["method"] == method and x > 0
        assert sum(ex["allocation"].values()) == sum(ex["pool"]["alternative"]["allocation"].values()) == x
        col[pool] = {"amount": x, "recipients": len(ex["allocation"]), "works": len(ex["pool"]["works"]),
                     "alternative_works": len(ex["pool"]["alternative"]["works"])}
    col["cli_startup"] = median_wall([sys.executable, "-c", "import ledger.cli.main"])
    col["db_bytes"] = dbs.size_bytes(db)
    dbs.discard(db)
    col["seconds"] = round(time.perf_counter() - started, 1)
    col["load_after"] = loadavg()
    return col


# -- the table ----------------------------------------------------------------------------


def _n(x: int) -> str:
    return f"{x:,}".replace(",", " ")


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("load average before (1, 5, 15 min)", lambda c: c["load_before"]),
    ("platform ingest (prosumers, works): wall", lambda c: _s(c["steps"]["ingest platform"]["seconds"])),
    ("platform ingest: peak RSS", lambda c: _mib(c["steps"]["ingest platform"]["peak_rss_bytes"])),
    ("pool month ingest: events", lambda c: _n(c["steps"]["ingest month"]["events"])),
    ("pool month ingest: wall", lambda c: _s(c["steps"]["ingest month"]["seconds"])),
    ("**pool month ingest: events/s**", lambda c: _n(c["steps"]["ingest month"]["events_per_s"])),
    ("pool month ingest: peak RSS", lambda c: _mib(c["steps"]["ingest month"]["peak_rss_bytes"])),
    ("load average before the closes", lambda c: c["steps"]["close P"]["load_before"]),
    ("**close P (pro_rata): wall**", lambda c: _s(c["steps"]["close P"]["seconds"])),
    ("**close P: peak RSS**", lambda c: _mib(c["steps"]["close P"]["peak_rss_bytes"])),
    ("**close U (user_centric): wall**", lambda c: _s(c["steps"]["close U"]["seconds"])),
    ("**close U: peak RSS**", lambda c: _mib(c["steps"]["close U"]["peak_rss_bytes"])),
    ("pool X (each), works used, recipients", lambda c: f"{_n(c['P']['amount'])}; {_n(c['P']['works'])}; "
                                                        f"{_n(c['P']['recipients'])}"),
    ("`explain --value P --json`: wall, bytes", lambda c: f"{_s(c['steps']['explain P']['seconds'])}, "
                                                          f"{_n(c['steps']['explain P']['bytes'])}"),
    ("`explain --value U --json`: wall, peak RSS", lambda c: f"{_s(c['steps']['explain U']['seconds'])}, "
                                                             f"{_mib(c['steps']['explain U']['peak_rss_bytes'])}"),
    (f"CLI start-up (`import ledger.cli.main`), median of {CLI_RUNS}", lambda c: _s(c["cli_startup"]["median_s"])),
    ("database size", lambda c: _mib(c["db_bytes"])),
    ("column took", lambda c: _s(c["seconds"])),
]


def write_results(doc: dict[str, Any], name: str) -> str:
    columns = doc["columns"]
    names = ["SQLite" if c["backend"] == "sqlite" else "PostgreSQL" for c in columns]
    table = "\n".join([
        "| measurement | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(columns),
        *(f"| {label} | " + " | ".join(cell(c) for c in columns) + " |" for label, cell in ROWS)])
    machine, size = doc["machine"], doc["size"]
    md = [
        f"# peerledger pool benchmark: {doc['label']}",
        "",
        f"- date: {doc['date']} (took {_s(doc['seconds'])})",
        f"- command: `{doc['command']}`",
        f"- machine: nproc {machine['nproc']}, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        f"- Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL {machine.get('postgresql', '—')}",
        f"- git rev: {machine['git_rev']}",
        f"- pool: {_n(size['subscribers'])} subscribers, {_n(size['usage_events'])} usage events per pool "
        f"(per subscriber and day, 1-8 works each) over {_n(size['works'])} works by {_n(size['prosumers'])} "
        f"prosumers; two pools over the same usage, `P` pro_rata and `U` user_centric",
        "",
        table,
        "",
        "- every row is a fresh `python -m ledger.cli` process, wall clock from its start to its exit "
        "(start-up included: its own row); RSS: the process tree's peak, sampled from /proc every 50 ms.",
        "- the month's events/s are over every event of its file: two openings, the subscriptions paid "
        "into both pools and the usage recorded into both.",
        "- a close ingests one `pool.closed`: both methods' stage 1 from the pool's rows, streamed in "
        "subscriber order, stage 2 over every work used, its explanation written with it.",
        "",
    ]
    save_report(RESULTS, name, "\n".join(md), doc)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the pool; results to pool-quick.*")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgresql")
    ap.add_argument("--label", default="", help="recorded with the results")
    ap.add_argument("--output-name", help="results go to bench/results/NAME.{md,json}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where streams are kept ({DEFAULT_CACHE})")
    ap.add_argument("--pg", default=DEFAULT_PG, help="a PostgreSQL URL whose server gets the fresh databases")
    ap.add_argument("--keep", action="store_true", help="keep the SQLite files and PostgreSQL databases")
    args = ap.parse_args()
    backends = args.backends.split(",")
    if not set(backends) <= set(BACKENDS):
        ap.error(f"backends are {', '.join(BACKENDS)}")
    size = QUICK if args.quick else FULL
    name = args.output_name or ("pool-quick" if args.quick else "pool")
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "label": args.label or "(no label)",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join(["python bench/pool_bench.py", *sys.argv[1:]]),
        "machine": machine_info(), "seed": args.seed, "size": size, "columns": [],
    }
    print(f"# pool benchmark: {size}, {backends}, load {loadavg()}", flush=True)
    paths = streams(args.cache, args.seed, size)
    doc["streams"] = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in paths.items()}
    work = Path(tempfile.mkdtemp(prefix="peerledger-pool-"))
    pg = PgServer(args.pg) if "postgresql" in backends else None
    if pg is not None:
        doc["machine"]["postgresql"] = pg.version
    try:
        for backend in backends:
            print(f"{backend}:", flush=True)
            dbs = Databases(backend, work, pg if backend == "postgresql" else None, args.keep)
            doc["columns"].append(measure(paths, dbs))
            doc["seconds"] = round(time.perf_counter() - started, 1)
            table = write_results(doc, name)
    finally:
        if pg is not None:
            pg.close(keep=args.keep)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table)
    print(f"\nwrote {RESULTS / (name + '.md')} and {RESULTS / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
