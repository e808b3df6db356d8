#!/usr/bin/env python3
"""Chunked ingest benchmark: does the ingest rate hold as the log grows?

    .venv/bin/python bench/chunked_bench.py                      # 1 000 000 events in 10 chunks, both backends
    .venv/bin/python bench/chunked_bench.py --events 200000 --chunk 50000 --backends sqlite
    .venv/bin/python bench/chunked_bench.py --code before=/work/base --code after=.   # two checkouts, one run

One generated stream (`generate(seed, N, "bench")`, the scale bench's, cached
by `scale_bench.cached_stream`) is cut into chunks of `--chunk` events; each
chunk is ingested by a fresh `python -m ledger.cli ingest CHUNK --json`
process into the same ledger (a fresh SQLite file or PostgreSQL database per
code, engine and backend), and its wall clock, events/s and peak resident
memory (process tree) recorded.  Beside them, in the same run, the floor:
raw `sqlite3` inserts of the same lines (`executemany` into a WAL table with
the event id as primary key, 1000 lines a transaction, synchronous FULL), in
a fresh process, per chunk as the log grows.

Each `--code NAME=DIR` runs the ingest with DIR first on PYTHONPATH (DIR a
checkout of peerledger: `git worktree add /tmp/before <rev>`); each
`--engine` (native, python) sets PEERLEDGER_ENGINE for it (a checkout older
than the native engine ignores it: give it `--engine python` alone, or it is
measured once).

Results: a markdown table per backend (a row per chunk, a column per code
and engine, and the raw floor), the whole run's rate and its ratio to raw,
the last chunk over the first, written to bench/results/NAME.{md,json}
(`--output-name`, default `chunked`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingest_bench import DEFAULT_PG, PgServer, loadavg, machine_info, save_report  # noqa: E402
from scale_bench import DEFAULT_CACHE, TreeSampler, cached_stream  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_EVENTS = 1_000_000
DEFAULT_CHUNK = 100_000
RAW_BATCH = 1000
COMMAND_TIMEOUT_S = 3 * 3600
MIB = 2**20
# Issue 18's targets.
TARGET_SQLITE_EVENTS_PER_S = 25_000
TARGET_POSTGRES_EVENTS_PER_S = 15_000
TARGET_RAW_RATIO = 0.3
TARGET_LAST_OVER_FIRST = 0.8


def cut(stream: Path, chunk: int, directory: Path) -> list[Path]:
    """The stream's lines in files of `chunk` lines each."""
    paths: list[Path] = []
    with stream.open("rb") as src:
        out = None
        for i, line in enumerate(src):
            if i % chunk == 0:
                if out is not None:
                    out.close()
                paths.append(directory / f"chunk-{len(paths):03d}.jsonl")
                out = paths[-1].open("wb")
            assert out is not None
            out.write(line)
        if out is not None:
            out.close()
    return paths


RAW_WORKER = r"""
import sqlite3, sys, time, orjson
path, db = sys.argv[1], sys.argv[2]
rows = [(orjson.loads(line)["id"], line) for line in open(path, "rb")]
conn = sqlite3.connect(db, isolation_level=None)
assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, line BLOB)")
t0 = time.perf_counter()
for i in range(0, len(rows), %d):
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (id, line) VALUES (?, ?)", rows[i:i + %d])
    conn.execute("COMMIT")
print(time.perf_counter() - t0)
""" % (RAW_BATCH, RAW_BATCH)


def run_raw(chunks: list[Path], directory: Path) -> list[dict[str, Any]]:
    """Raw inserts of each chunk's lines into one growing table, a fresh process per chunk."""
    db = directory / "raw.db"
    out = []
    for path in chunks:
        lines = sum(1 for _ in path.open("rb"))
        done = subprocess.run([sys.executable, "-c", RAW_WORKER, str(path), str(db)], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S, check=True)
        seconds = float(done.stdout.strip())
        out.append({"events": lines, "seconds": seconds, "events_per_s": lines / seconds})
    return out


def run_ingest(code: Path, engine: str, url: str, chunks: list[Path], cwd: Path) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code)
    env["PEERLEDGER_ENGINE"] = engine
    env.pop("PEERLEDGER_DB", None)
    out = []
    for i, path in enumerate(chunks):
        lines = sum(1 for _ in path.open("rb"))
        cmd = [sys.executable, "-m", "ledger.cli", "ingest", str(path), "--json", "--db", url]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with TreeSampler(proc.pid) as sampler:
            stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT_S)
        seconds = time.perf_counter() - started
        peak = sampler.peak_bytes
        if proc.returncode not in (0, 3):
            raise SystemExit(f"ingest of chunk {i} failed ({proc.returncode}): {stderr[-2000:]}")
        summary = json.loads(stdout)
        out.append({"events": lines, "seconds": seconds, "events_per_s": lines / seconds,
                    "peak_rss_mib": peak / MIB, "accepted": summary["accepted"], "rejected": summary["rejected"],
                    "load": loadavg()})
        print(f"  {engine} chunk {i}: {lines / seconds:,.0f} events/s, {peak / MIB:.0f} MiB", flush=True)
    return out


def summary(column: list[dict[str, Any]], raw: list[dict[str, Any]]) -> dict[str, Any]:
    events = sum(c["events"] for c in column)
    seconds = sum(c["seconds"] for c in column)
    raw_rate = sum(r["events"] for r in raw) / sum(r["seconds"] for r in raw)
    rates = [c["events_per_s"] for c in column]
    return {"events_per_s": events / seconds, "ratio_to_raw": events / seconds / raw_rate,
            "min_chunk_events_per_s": min(rates), "last_over_first": rates[-1] / rates[0],
            "peak_rss_mib": max(c["peak_rss_mib"] for c in column)}


def markdown(backend: str, columns: dict[str, list[dict[str, Any]]], raw: list[dict[str, Any]]) -> str:
    names = list(columns)
    out = [f"### {backend}", "", "| chunk (events in the log before it) | " + " | ".join(names)
           + " | raw sqlite3 inserts |", "|---|" + "---:|" * (len(names) + 1)]
    before = 0
    for i, r in enumerate(raw):
        cells = [f"{columns[n][i]['events_per_s']:,.0f} ({columns[n][i]['peak_rss_mib']:.0f} MiB)" for n in names]
        out.append(f"| {i + 1} ({before:,}) | " + " | ".join(cells) + f" | {r['events_per_s']:,.0f} |")
        before += r["events"]
    for label, key, fmt in (("whole run, events/s", "events_per_s", "{:,.0f}"),
                            ("whole run ÷ raw", "ratio_to_raw", "{:.3f}"),
                            ("slowest chunk, events/s", "min_chunk_events_per_s", "{:,.0f}"),
                            ("last chunk ÷ first", "last_over_first", "{:.2f}"),
                            ("peak RSS, MiB", "peak_rss_mib", "{:.0f}")):
        cells = [fmt.format(summary(columns[n], raw)[key]) for n in names]
        out.append(f"| **{label}** | " + " | ".join(cells) + " | |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--engine", action="append", choices=("native", "python"),
                    help="engines to measure (default: native and python)")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout to measure (default: this one, as 'this')")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--pg", default=DEFAULT_PG)
    ap.add_argument("--output-name", default="chunked")
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    engines = args.engine or ["native", "python"]
    codes = [tuple(c.split("=", 1)) for c in args.code] or [("this", str(ROOT))]
    backends = args.backends.split(",")
    started = datetime.datetime.now(datetime.timezone.utc)
    stream = cached_stream(args.cache, args.seed, args.events)
    print(f"stream: {stream.events:,} events, {stream.bytes / 1e6:.0f} MB ({stream.path})", flush=True)
    doc: dict[str, Any] = {"machine": machine_info(), "label": args.label, "events": args.events,
                           "chunk": args.chunk, "started": started.isoformat(), "load_before": loadavg(),
                           "results": {}}
    pg = PgServer(args.pg) if "postgresql" in backends else None
    text = [f"# peerledger chunked ingest: {args.events:,} events in chunks of {args.chunk:,}", "",
            f"- date: {started:%Y-%m-%d %H:%M} UTC; label: {args.label or '—'}",
            f"- machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu']}, load before {doc['load_before']}",
            f"- git rev: {doc['machine']['git_rev']}", ""]
    with tempfile.TemporaryDirectory(prefix="peerledger-chunked-") as tmp:
        directory = Path(tmp)
        chunks = cut(stream.path, args.chunk, directory)
        print("raw sqlite3 inserts …", flush=True)
        raw = run_raw(chunks, directory)
        doc["results"]["raw"] = raw
        for backend in backends:
            columns: dict[str, list[dict[str, Any]]] = {}
            for name, code in codes:
                for engine in engines:
                    label = f"{name} {engine}"
                    print(f"{backend}: {label}", flush=True)
                    if backend == "sqlite":
                        url = f"sqlite:///{directory / f'{name}-{engine}.db'}"
                        columns[label] = run_ingest(Path(code), engine, url, chunks, directory)
                    else:
                        assert pg is not None
                        db = pg.create()
                        try:
                            columns[label] = run_ingest(Path(code), engine, pg.url(db), chunks, directory)
                        finally:
                            pg.drop(db)
            doc["results"][backend] = {n: {"chunks": c, "summary": summary(c, raw)} for n, c in columns.items()}
            text.append(markdown(backend, columns, raw))
            save_report(RESULTS, args.output_name, "\n".join(text), doc)
    if pg is not None:
        pg.close()
    text.append(f"Targets (issue 18): SQLite ≥ {TARGET_SQLITE_EVENTS_PER_S:,}/s every chunk and ≥ {TARGET_RAW_RATIO} × "
                f"raw over the run; PostgreSQL ≥ {TARGET_POSTGRES_EVENTS_PER_S:,}/s every chunk; last chunk ≥ "
                f"{TARGET_LAST_OVER_FIRST} × the first.")
    save_report(RESULTS, args.output_name, "\n".join(text), doc)
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
