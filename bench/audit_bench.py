#!/usr/bin/env python3
"""Auditor toolkit benchmark: tree roots, proofs, checkpoints, export and audit.

    .venv/bin/python bench/audit_bench.py                     # 1 000 000-leaf tree, 1 000 000-event audit
    .venv/bin/python bench/audit_bench.py --events 200000     # a smaller real ledger
    .venv/bin/python bench/audit_bench.py --quick             # 100 000 / 20 000 smoke run

Two parts, each said plainly in the output:

1. **Tree** (synthetic, `--tree-events`, default 1 000 000 leaves) on a fresh
   SQLite file and a fresh PostgreSQL database: the leaf hashes are
   SHA-256 of 0x00 || "event-i" written to `peerledger_event_ids`, and the
   nodes that `projections.merkle.Frontier` reports written to
   `peerledger_merkle_nodes`, exactly as the append path writes them (no
   events: the tree never reads them).  Measured, in process, on an open
   store: the root at the head (first call and median), inclusion and
   consistency proofs of random seqs/sizes per second (`StoredTree`), and the
   tree part of a checkpoint (root + Ed25519 signature).  The frontier's
   cost per leaf (hashing only) and the node insert rate are reported too.
2. **Real ledger** (`--events`, default 1 000 000): `generate(seed, n,
   "bench")` + `write_jsonl`, then as subprocesses, wall clock:
   `peerledger ingest` (SQLite), `checkpoint` at the head (digest from the
   live read models) and at half the head (digest by replaying the log),
   `export`, and `audit --previous` (signature, root, rules replay and
   balances digest at the head, consistency with the half-way checkpoint).

Prints a markdown table and writes it with the machine, the date, the git
revision and the load average to bench/results/audit.{md,json}
(audit-quick.* for --quick).  Run it alone: it keeps both cores busy for
several minutes, and its numbers mean little on a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform as platform_mod
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.signing import sign_checkpoint
from ledger.audit.tree import StoredTree
from ledger.demo.generate import generate, write_jsonl
from ledger.storage.store import MERKLE_STORED_LEVEL_MIN, Store
from projections.merkle import Frontier

TREE_PLATFORM = "tree"
PLATFORM = "bench"
DEFAULT_TREE_EVENTS = 1_000_000
DEFAULT_EVENTS = 1_000_000
QUICK_TREE_EVENTS = 100_000
QUICK_EVENTS = 20_000
INSERT_CHUNK_ROWS = 50_000
ROOT_SAMPLES = 200
PROOF_SAMPLES = 2_000
CHECKPOINT_SAMPLES = 50
SUBPROCESS_TIMEOUT_S = 3 * 3600


def leaf_hashes(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield hashlib.sha256(b"\x00" + f"event-{i}".encode()).digest()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    import psycopg

    from ledger.storage.store import DbUrl

    base = os.environ.get("PEERLEDGER_BENCH_PG") or os.environ.get(
        "PEERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    params = DbUrl.parse(base).pg
    assert params is not None
    name = f"peerledger_bench_{secrets.token_hex(6)}"
    with psycopg.connect(autocommit=True, **params) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_tree(store: Store, n: int) -> dict[str, float]:
    """The synthetic log's leaves and nodes, chunk by chunk, as the writer stores them."""
    frontier = Frontier()
    hashing_s = insert_s = nodes_s = 0.0
    rows = nodes_written = 0
    leaves = leaf_hashes(n)
    while rows < n:
        chunk = [next(leaves) for _ in range(min(INSERT_CHUNK_ROWS, n - rows))]
        t = time.perf_counter()
        nodes = [(TREE_PLATFORM, level, idx, h) for leaf in chunk for level, idx, h in frontier.append(leaf)
                 if level >= MERKLE_STORED_LEVEL_MIN]
        hashing_s += time.perf_counter() - t
        t = time.perf_counter()
        with store.transaction(commit=True) as c:
            c.executemany(store.dialect.sql("INSERT INTO peerledger_event_ids VALUES (?, ?, ?, ?, ?, ?)"), [
                (TREE_PLATFORM, f"e{rows + i}", rows + i + 1, leaf, b"", "2026-01-01T00:00:00.000Z")
                for i, leaf in enumerate(chunk)])
            t_nodes = time.perf_counter()
            c.executemany(store.dialect.sql("INSERT INTO peerledger_merkle_nodes VALUES (?, ?, ?, ?)"), nodes)
            nodes_s += time.perf_counter() - t_nodes
        insert_s += time.perf_counter() - t
        rows += len(chunk)
        nodes_written += len(nodes)
    return {"leaves": n, "nodes": nodes_written, "frontier_s": hashing_s, "insert_s": insert_s, "nodes_s": nodes_s}


def timed(fn: Any, samples: list[Any]) -> list[float]:
    out = []
    for s in samples:
        t = time.perf_counter()
        fn(s)
        out.append(time.perf_counter() - t)
    return out


def tree_part(url: str, backend: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Store(url) as store:
        w = write_tree(store, n)
        rows.append({"part": "tree", "backend": backend, "measurement": "frontier hashing (in memory)",
                     "n": n, "seconds": w["frontier_s"], "rate": n / w["frontier_s"], "unit": "leaves/s",
                     "note": f"{w['nodes']:,} nodes for {n:,} leaves"})
        rows.append({"part": "tree", "backend": backend, "measurement": "leaf + node rows insert",
                     "n": n, "seconds": w["insert_s"], "rate": n / w["insert_s"], "unit": "leaves/s",
                     "note": f"{n + w['nodes']:,} rows, executemany, {INSERT_CHUNK_ROWS:,} leaves per transaction"})
        rows.append({"part": "tree", "backend": backend, "measurement": "of which node rows (the tree's write cost)",
                     "n": n, "seconds": w["nodes_s"], "rate": n / w["nodes_s"], "unit": "leaves/s",
                     "note": f"{w['nodes_s'] / n * 1e6:.1f} µs per event, besides ~{w['frontier_s'] / n * 1e6:.1f} µs "
                             "of hashing"})
        tree = StoredTree(store, TREE_PLATFORM)
        t = time.perf_counter()
        root = tree.root(n)
        first_ms = (time.perf_counter() - t) * 1000
        head_ms = [x * 1000 for x in timed(lambda _: tree.root(n), range(ROOT_SAMPLES))]
        any_ms = [x * 1000 for x in timed(tree.root, [rng.randint(1, n) for _ in range(ROOT_SAMPLES)])]
        rows.append({"part": "tree", "backend": backend, "measurement": f"root at size {n:,}", "n": n,
                     "first_ms": first_ms, "median_ms": statistics.median(head_ms),
                     "max_ms": max(head_ms), "note": f"root {root.hex()[:16]}…"})
        rows.append({"part": "tree", "backend": backend, "measurement": "root at a random size ≤ n", "n": n,
                     "median_ms": statistics.median(any_ms), "max_ms": max(any_ms), "note": ""})
        inc = timed(lambda seq: tree.inclusion(seq, n), [rng.randint(1, n) for _ in range(PROOF_SAMPLES)])
        rows.append({"part": "tree", "backend": backend, "measurement": "inclusion proof (random seq, size n)",
                     "n": n, "rate": len(inc) / sum(inc), "unit": "proofs/s",
                     "median_ms": statistics.median(inc) * 1000, "note": ""})
        con = timed(lambda m: tree.consistency(m, n), [rng.randint(1, n) for _ in range(PROOF_SAMPLES)])
        rows.append({"part": "tree", "backend": backend, "measurement": "consistency proof (random m → n)",
                     "n": n, "rate": len(con) / sum(con), "unit": "proofs/s",
                     "median_ms": statistics.median(con) * 1000, "note": ""})
        key = Ed25519PrivateKey.generate()
        cp = timed(lambda _: sign_checkpoint(key, TREE_PLATFORM, n, tree.root(n), "0" * 64,
                                             "2026-11-26T10:00:00.000Z"), range(CHECKPOINT_SAMPLES))
        rows.append({"part": "tree", "backend": backend, "measurement": "checkpoint, tree part (root + sign)",
                     "n": n, "median_ms": statistics.median(cp) * 1000, "max_ms": max(cp) * 1000,
                     "note": "balances digest not included: see the real ledger's checkpoint rows"})
    return rows


def cli(*args: str, key: Path | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    if key is not None:
        env["PEERLEDGER_SIGNING_KEY"] = str(key)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True, env=env,
                       timeout=SUBPROCESS_TIMEOUT_S, cwd=ROOT)
    elapsed = time.perf_counter() - t
    if r.returncode not in (0, 3):
        raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return elapsed, r


def ledger_part(work: Path, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    events, db, key, export = work / "events.jsonl", f"sqlite:///{work / 'ledger.db'}", work / "key.pem", work / "export.jsonl"

    def row(measurement: str, seconds: float, count: int | None, note: str = "") -> None:
        rows.append({"part": "ledger", "backend": "sqlite", "measurement": measurement, "n": count,
                     "seconds": seconds, "rate": count / seconds if count else None,
                     "unit": "events/s" if count else "", "note": note})

    t = time.perf_counter()
    write_jsonl(events, generate(1, n, PLATFORM))
    row("generate + write_jsonl (not the ledger)", time.perf_counter() - t, n,
        f"{events.stat().st_size / 1e6:.0f} MB")
    s, r = cli("ingest", str(events), "--json", "--db", db)
    summary = json.loads(r.stdout)
    accepted = summary["accepted"]
    row("peerledger ingest (CLI, with the tree)", s, n, f"{accepted:,} accepted, {summary['rejected']:,} rejected")
    cli("keys", "init", "--key-file", str(key))
    s, r = cli("checkpoint", "--platform", PLATFORM, "--json", "--db", db, key=key)
    (work / "cp.json").write_text(r.stdout)
    row("checkpoint at the head (CLI; digest from the live views)", s, None, f"size {accepted:,}")
    half = accepted // 2
    s, r = cli("checkpoint", "--platform", PLATFORM, "--size", str(half), "--json", "--db", db, key=key)
    (work / "cp-half.json").write_text(r.stdout)
    row("checkpoint at half the head (CLI; digest by replay)", s, half, f"size {half:,}")
    s, _ = cli("export", "--platform", PLATFORM, "--output", str(export), "--db", db)
    row("export (CLI)", s, accepted, f"{export.stat().st_size / 1e6:.0f} MB")
    _, r = cli("keys", "public", "--key-file", str(key))
    (work / "public.pem").write_text(r.stdout)
    s, r = cli("audit", "--log", str(export), "--checkpoint", str(work / "cp.json"), "--public-key",
               str(work / "public.pem"), "--previous", str(work / "cp-half.json"), "--json")
    report = json.loads(r.stdout)
    if not report["ok"]:
        raise RuntimeError(f"audit failed: {report}")
    row("audit --previous (CLI; no database)", s, accepted,
        f"{len(report['checks'])} checks passed: root, rules replay, digest, consistency")
    return rows


NOTES = """- tree rows: a synthetic log (leaf hashes and nodes written as the append path writes them, no events);
  timed in process on an open store; `median ms` is per call, `rate` is calls / total time.
- checkpoint, tree part: root at the head + Ed25519 signature; the balances digest comes from the real ledger
  (ledger rows: from the live read models at the head, by replay at an older size).
- ledger rows: wall clock of `python -m ledger.cli …` subprocesses (interpreter start-up included) on one
  SQLite ledger filled by `peerledger ingest` from `generate(1, n, "bench")`; `audit` reads only the export."""


def fmt(x: Any, digits: int = 2) -> str:
    if x is None or x == "":
        return ""
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| part | backend | measurement | n | seconds | rate | median ms | note |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        rate = f"{fmt(r.get('rate'), 0)} {r.get('unit', '')}".strip() if r.get("rate") else ""
        median = fmt(r.get("median_ms"), 3)
        if r.get("first_ms") is not None:
            median += f" (first {fmt(r['first_ms'], 2)})"
        lines.append(f"| {r['part']} | {r['backend']} | {r['measurement']} | {fmt(r.get('n'))} | "
                     f"{fmt(r.get('seconds'))} | {rate} | {median} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree-events", type=int, default=DEFAULT_TREE_EVENTS)
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_TREE_EVENTS:,} leaves, {QUICK_EVENTS:,} events")
    p.add_argument("--no-postgres", action="store_true", help="tree part on SQLite only")
    args = p.parse_args()
    tree_n, n = (QUICK_TREE_EVENTS, QUICK_EVENTS) if args.quick else (args.tree_events, args.events)
    started = time.time()
    load_start = os.getloadavg()
    rng = random.Random(9162)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peerledger-audit-bench-") as tmp:
        work = Path(tmp)
        rows += tree_part(f"sqlite:///{work / 'tree.db'}", "sqlite", tree_n, rng)
        if not args.no_postgres:
            with pg_database() as url:
                rows += tree_part(url, "postgresql", tree_n, rng)
        rows += ledger_part(work, n)
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "took_s": round(time.time() - started, 1),
        "command": "python bench/audit_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"nproc {os.cpu_count()}, {platform_mod.platform()}",
        "python": platform_mod.python_version(),
        "git_rev": rev,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "tree_events": tree_n,
        "events": n,
    }
    md = table(rows)
    print(md)
    print(f"\ntook {meta['took_s']} s; load average at start {load_start}, at end {meta['load_average_end']}")
    out = ROOT / "bench" / "results" / ("audit-quick" if args.quick else "audit")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "table_markdown": md}, indent=2) + "\n")
    header = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    out.with_suffix(".md").write_text(f"# peerledger auditor toolkit benchmark\n\n{header}\n\n{md}\n\n{NOTES}\n")
    print(f"wrote {out.relative_to(ROOT)}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
