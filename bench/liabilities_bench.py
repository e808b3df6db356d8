#!/usr/bin/env python3
"""Liabilities trees (AUDIT.md §5) at 100 000 and 1 000 000 prosumers.

    .venv/bin/python bench/liabilities_bench.py                    # SQLite and PostgreSQL, 100k and 1M
    .venv/bin/python bench/liabilities_bench.py --quick            # 10 000 and 100 000, SQLite
    .venv/bin/python bench/liabilities_bench.py --backends sqlite

Synthetic balances, said plainly: a fresh ledger database whose read models
hold N prosumer rows of one currency (balances drawn from a fixed seed, one
in ten negative, one in twenty zero) and three system rows, with the
platform's head at seq 1 — no events, because what is measured reads the
balances only (the replay path for older sizes is the replay's own cost,
measured in `audit_bench.py`).  Each (backend, N) runs in a fresh process,
which reports its own peak resident memory:

* **build + keep**: `balance_snapshot`, `build()` and `record_checkpoint`
  with the trees' blocks and nodes, what `peerledger checkpoint` adds to a
  checkpoint (the streamed digest included);
* **proof**: random prosumers' proofs from the kept trees (what `prove
  balance` and the HTTP proof cost), the median, and a proof's size as JSON;
* **check + export**: the kept leaves rebuilt against the signed tree, then
  every leaf as JSON Lines to /dev/null (`peerledger liabilities`);
* **kept bytes per prosumer**: the blocks' compressed leaves and the nodes.

Writes bench/results/liabilities.{md,json} (liabilities-quick.* for --quick).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as platform_mod
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ledger.audit.liabilities import StoredTrees, balance_snapshot, new_seed  # noqa: E402
from ledger.audit.tree import create_audit_tables, newest_checkpoint, record_checkpoint  # noqa: E402
from ledger.storage.store import Store  # noqa: E402
from projections.balances import canonical_json  # noqa: E402

PLATFORM = "bench"
SIZE = 1
ROWS_PER_INSERT = 10_000
PROOFS = 50


def fill(store: Store, prosumers: int) -> None:
    rng = random.Random(prosumers)
    with store.write_transaction() as c:
        c.execute(store.dialect.sql("INSERT INTO peerledger_heads (platform, seq, fee_bps, tree_edge) "
                                    "VALUES (?, ?, ?, ?)"), (PLATFORM, SIZE, 0, b""))
    rows: list[tuple[Any, ...]] = []
    for i in range(prosumers + 3):
        account = f"p{i:07d}" if i < prosumers else ("@platform", "@unattributed", "@fee")[i - prosumers]
        roll = rng.randrange(20)
        earned = 0 if roll == 0 else rng.randrange(1, 10_000_000)
        paid = earned + rng.randrange(1, 1000) if roll == 1 or roll == 2 else rng.randrange(0, earned + 1)
        rows.append((PLATFORM, account, "EUR", earned, 0, paid, earned - paid))
        if len(rows) >= ROWS_PER_INSERT or i == prosumers + 2:
            with store.write_transaction() as c:
                c.executemany(store.dialect.sql(
                    "INSERT INTO peerledger_balances (platform, account, currency, earned, reversed, paid, balance) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)"), rows)
            rows = []


def child(url: str, prosumers: int) -> dict[str, Any]:
    """One (backend, N) in this process: fill, then time each part."""
    with Store(url) as store:
        t = time.perf_counter()
        fill(store, prosumers)
        fill_s = time.perf_counter() - t
        seed = new_seed()
        create_audit_tables(store)
        t = time.perf_counter()
        with balance_snapshot(store, PLATFORM, SIZE, seed) as snapshot:
            trees = {c: s.as_json() for c, s in snapshot.build().items()}
            checkpoint = {"platform": PLATFORM, "size": SIZE, "root": "0" * 64, "balances_digest": snapshot.digest,
                          "issued_at": "2026-12-06T00:00:00Z", "key_id": "0" * 16, "liabilities": trees,
                          "signature": "A" * 88}  # the shape and size of a signed one; nothing here checks it
            record_checkpoint(store, checkpoint, seed, snapshot.keep)
        build_s = time.perf_counter() - t
        rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        found = newest_checkpoint(store, PLATFORM, SIZE)  # (stored_trees wants a log: this ledger has no events)
        assert found is not None and found.salt_seed == seed
        kept = StoredTrees(store, found.checkpoint_id, found.checkpoint, seed)
        timings = []
        rng = random.Random(1)
        for _ in range(PROOFS):
            t = time.perf_counter()
            proofs = kept.proofs(f"p{rng.randrange(prosumers):07d}")
            timings.append(time.perf_counter() - t)
        proof_bytes = len(canonical_json({"checkpoint": checkpoint, "proofs": proofs}))
        t = time.perf_counter()
        kept.check("EUR")
        with open(os.devnull, "wb") as sink:
            for line in kept.lines("EUR"):
                sink.write(line + b"\n")
        export_s = time.perf_counter() - t
        # The blocks' bytes as the database counts them (LENGTH of a blob is
        # its bytes on both), and ~60 bytes a node row (hash, sum, key).
        stored_bytes = int(store.query("SELECT SUM(LENGTH(leaves)) FROM peerledger_liability_blocks")[0][0]) + 60 * int(
            store.query("SELECT COUNT(*) FROM peerledger_liability_nodes")[0][0])
        proof_s = statistics.median(timings)
    return {"prosumers": prosumers, "fill_s": round(fill_s, 2), "build_s": round(build_s, 2),
            "proof_ms": round(proof_s * 1000, 2), "stored_bytes_per_prosumer": round(stored_bytes / prosumers, 1), "export_s": round(export_s, 2), "proof_bytes": proof_bytes,
            "path_length": len(proofs[0]["path"]), "accounts": trees["EUR"]["accounts"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "rss_after_build_mib": rss_build}


def run_one(backend: str, prosumers: int, tmp: Path) -> dict[str, Any]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'l{prosumers}.db'}"
        return _spawn(url, prosumers) | {"backend": "sqlite"}
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import fresh_pg_database

    with fresh_pg_database() as url:
        return _spawn(url, prosumers) | {"backend": "postgresql"}


def _spawn(url: str, prosumers: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, __file__, "--child", url, str(prosumers)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    backends = ["sqlite"] if args.quick else args.backends.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="peerledger-liabilities-") as tmp:
        for backend in backends:
            for n in sizes:
                results.append(run_one(backend, n, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    lines = ["| backend | prosumers | build + keep (checkpoint part) | one proof, median of 50 | check + export | "
             "proof bytes | path | kept bytes per prosumer | peak RSS |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['prosumers']:,} | {r['build_s']} s | {r['proof_ms']} ms | "
                     f"{r['export_s']} s | {r['proof_bytes']:,} | {r['path_length']} | "
                     f"{r['stored_bytes_per_prosumer']} | {r['peak_rss_mib']} MiB |")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    head = (f"liabilities_bench.py, {datetime.date.today()}, {os.cpu_count()} cores, "
            f"{platform_mod.python_version()}, git {rev}, load {os.getloadavg()[0]:.1f}")
    table = "\n".join([head, "", *lines])
    print(table)
    name = "liabilities-quick" if args.quick else "liabilities"
    out = ROOT / "bench" / "results"
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(json.dumps({"header": head, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
