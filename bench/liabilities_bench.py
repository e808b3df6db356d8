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

* **build**: `balance_snapshot` + `trees()`, what `peerledger checkpoint`
  adds to a checkpoint (the streamed digest included);
* **proof**: one prosumer's proof from a fresh snapshot (what `prove
  balance` and the HTTP proof cost), its size in bytes as JSON;
* **export**: every leaf as JSON Lines to /dev/null (`peerledger liabilities`).

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ledger.audit.liabilities import balance_snapshot, new_seed  # noqa: E402
from ledger.storage.store import Store  # noqa: E402
from projections.balances import canonical_json  # noqa: E402
from projections.liabilities import leaf_bytes  # noqa: E402

PLATFORM = "bench"
SIZE = 1
ROWS_PER_INSERT = 10_000


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
        t = time.perf_counter()
        with balance_snapshot(store, PLATFORM, SIZE, seed) as snapshot:
            trees = {c: s.as_json() for c, s in snapshot.trees().items()}
        build_s = time.perf_counter() - t
        rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        checkpoint = {"platform": PLATFORM, "size": SIZE, "liabilities": trees}
        t = time.perf_counter()
        with balance_snapshot(store, PLATFORM, SIZE, seed) as snapshot:
            proofs = snapshot.proofs(f"p{prosumers // 2:07d}", trees)
        proof_s = time.perf_counter() - t
        proof_bytes = len(canonical_json({"checkpoint": checkpoint, "proofs": proofs}))
        t = time.perf_counter()
        with balance_snapshot(store, PLATFORM, SIZE, seed) as snapshot, open(os.devnull, "wb") as sink:
            for leaf in snapshot.leaves("EUR"):
                sink.write(leaf_bytes(leaf) + b"\n")
        export_s = time.perf_counter() - t
    return {"prosumers": prosumers, "fill_s": round(fill_s, 2), "build_s": round(build_s, 2),
            "proof_s": round(proof_s, 2), "export_s": round(export_s, 2), "proof_bytes": proof_bytes,
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
    lines = ["| backend | prosumers | build (checkpoint part) | one proof | export | proof bytes | path | "
             "peak RSS |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['prosumers']:,} | {r['build_s']} s | {r['proof_s']} s | "
                     f"{r['export_s']} s | {r['proof_bytes']:,} | {r['path_length']} | {r['peak_rss_mib']} MiB |")
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
