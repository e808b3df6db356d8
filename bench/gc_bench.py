#!/usr/bin/env python3
"""What CPython's cyclic garbage collector costs the fold, and what
`ledger.ops.runtime.tune_gc` saves.

    .venv/bin/python bench/gc_bench.py                 # 200 000 events, 3 rounds (~2 minutes)
    .venv/bin/python bench/gc_bench.py --events 50000 --rounds 1

One realistic stream (`ledger.demo.generate.generate(seed, n, "bench")`) is
written to a temporary JSON Lines file.  Each measurement runs in a fresh
interpreter (this script with `--worker`) that parses the file (not timed),
sets the collector's thresholds, then times

* the fold: `PlatformFold.apply` over every event, as the writer and every
  replay of the log do, here a replay into a scratch SQLite database in
  batches (`ledger.storage.replay.Replay`, as `verify` runs it: the state's
  reads and writes included; wall clock and CPU time of the process);
* one balances digest at the end (`balance_rows` + `balances_digest` of
  every balance row): what the writer does every 10 000 events and
  `verify` at every recorded digest.

Settings alternate round by round (CPython's defaults, then the ledger's),
so a change in the machine's load hits both alike; the best round of each
is reported.  Results go to bench/results/gc.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_EVENTS = 200_000
# CPython's own thresholds, stated rather than read so the comparison does not
# depend on the interpreter this script runs in.
CPYTHON_DEFAULT = (700, 10, 10)


def worker(stream: str, thresholds: tuple[int, int, int]) -> dict[str, Any]:
    import gc

    import orjson

    from ledger.storage.replay import REPLAY_BATCH_EVENTS, Replay, scratch_store
    from projections.balances import balance_rows, balances_digest

    with open(stream, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f]
    entries = [(seq, orjson.loads(line), line) for seq, line in enumerate(lines, 1)]
    gc.collect()
    gc.set_threshold(*thresholds)
    with scratch_store() as scratch:
        replay = Replay(scratch, "bench")
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(entries), REPLAY_BATCH_EVENTS):
            replay.fold_batch(entries[start:start + REPLAY_BATCH_EVENTS])
        fold_wall, fold_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall = time.perf_counter()
        balances = replay.balances()
        balances_digest(balance_rows(balances))
        digest_wall = time.perf_counter() - wall
    return {"events": len(entries), "fold_s": fold_wall, "fold_cpu_s": fold_cpu, "digest_s": digest_wall,
            "balances": len(balances), "collections": [s["collections"] for s in gc.get_stats()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", nargs=2, metavar=("STREAM", "THRESHOLDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        stream, thresholds = args.worker
        print(json.dumps(worker(stream, tuple(int(x) for x in thresholds.split(",")))))  # type: ignore[arg-type]
        return 0

    from ingest_bench import loadavg, machine_info, save_report  # bench/ is this script's directory

    from ledger.demo.generate import generate, write_jsonl
    from ledger.ops.runtime import GC_THRESHOLDS

    settings = {"CPython default": CPYTHON_DEFAULT, "ledger.ops.runtime.tune_gc": GC_THRESHOLDS}
    started, load_start = time.time(), loadavg()
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="peerledger-gc-bench-") as tmp:
        stream = str(Path(tmp) / "stream.jsonl")
        write_jsonl(stream, generate(args.seed, args.events, "bench"))
        for round_no in range(args.rounds):
            for name, thresholds in settings.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", stream, ",".join(map(str, thresholds))],
                    capture_output=True, text=True, check=True, timeout=1800, cwd=ROOT)
                result = json.loads(out.stdout)
                print(f"round {round_no + 1} {name}: fold {result['fold_s']:.2f} s "
                      f"(cpu {result['fold_cpu_s']:.2f} s), digest {result['digest_s'] * 1000:.0f} ms", flush=True)
                if name not in best or result["fold_cpu_s"] < best[name]["fold_cpu_s"]:
                    best[name] = {**result, "thresholds": list(thresholds)}

    n = args.events
    lines = ["| GC thresholds | fold events/s (wall) | fold µs/event (CPU) | digest of all balances (ms) | "
             "collections (gen 0, 1, 2) |", "| --- | ---: | ---: | ---: | --- |"]
    for name, r in best.items():
        lines.append(f"| {name} {tuple(r['thresholds'])} | {n / r['fold_s']:,.0f} | "
                     f"{r['fold_cpu_s'] / n * 1e6:.1f} | {r['digest_s'] * 1000:.0f} | {r['collections']} |")
    default, tuned = best["CPython default"], best["ledger.ops.runtime.tune_gc"]
    machine = machine_info()
    md = [
        "# peerledger GC benchmark", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC "
        f"(took {time.time() - started:.0f} s)",
        f"- command: `python bench/gc_bench.py --events {n} --rounds {args.rounds}`",
        f"- machine: {json.dumps(machine)}",
        f"- stream: `generate({args.seed}, {n}, \"bench\")`; {default['balances']:,} balances at the end",
        "", *lines, "",
        f"The ledger's thresholds take {100 * (1 - tuned['fold_cpu_s'] / default['fold_cpu_s']):.0f} % off the "
        f"fold's CPU time; one digest of every balance took {default['digest_s'] * 1000:.0f} ms with CPython's "
        f"thresholds and {tuned['digest_s'] * 1000:.0f} ms with the ledger's (best of {args.rounds} rounds; "
        "settings alternate round by round).",
        f"- load average (1, 5, 15 min) at start {load_start}, at end {loadavg()}",
    ]
    save_report(Path(args.results), "gc", "\n".join(md) + "\n", {"events": n, "machine": machine, "best": best})
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
