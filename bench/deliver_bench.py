#!/usr/bin/env python3
"""Booking documents out, beside ingest in the same run (issue 19).

    .venv/bin/python bench/deliver_bench.py [--events 50000] [--endpoints 1] [--backends sqlite,postgresql]

For each backend, on a fresh database:
* ingest: `peerledger ingest FILE` of a generated stream, wall clock;
* pull: `peerledger bookings --platform bench` to /dev/null, wall clock;
* deliver: `peerledger deliver` (one pass) to `--endpoints` endpoints on a
  loopback receiver that verifies every signature with `standardwebhooks` and
  answers 204, wall clock; documents/s counts deliveries (documents ×
  endpoints).

Prints a table and writes bench/results/deliver.{json,md}.  The receiver
runs in this process on its own threads, so it shares the two cores with
the deliverer: the figure is a floor for a remote receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.demo.generate import generate, write_jsonl  # noqa: E402
from ledger.storage.store import Store  # noqa: E402
from ledger.webhooks import endpoints as eps  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLATFORM = "bench"


class _Server(ThreadingHTTPServer):
    # A real receiver listens with a kernel-sized backlog; http.server's
    # default of 5 drops the SYNs of a deliverer's 16 parallel connects, each
    # then retried after 1 s.
    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """Counts verified POSTs; any signature that fails to verify is counted too."""

    def __init__(self, secrets: list[str]) -> None:
        from standardwebhooks.webhooks import Webhook

        self.ok = 0
        self.bad = 0
        lock = threading.Lock()
        hooks = [Webhook(s) for s in secrets]
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                index = int(self.path.rsplit("/", 1)[1])
                try:
                    hooks[index].verify(body, dict(self.headers.items()))
                    good = True
                except Exception:  # noqa: BLE001
                    good = False
                with lock:
                    if good:
                        receiver.ok += 1
                    else:
                        receiver.bad += 1
                self.send_response(204 if good else 400)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def cli(*args: str, db: str, stdout: object = subprocess.DEVNULL) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], env=env, stdout=stdout,
                       stderr=subprocess.PIPE, timeout=3600)
    elapsed = time.perf_counter() - started
    assert r.returncode in (0, 3), r.stderr.decode()[-2000:]
    return elapsed


def pg_database() -> tuple[str, str]:
    import psycopg

    server = os.environ.get("PEERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"peerledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return server, server.rsplit("/", 1)[0] + "/" + name


def drop_pg(server: str, url: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


def measure(db: str, stream: Path, endpoints: int) -> dict[str, float]:
    ingest_s = cli("ingest", str(stream), db=db)
    with Store(db) as store:
        documents = store.head(PLATFORM)
        secrets, made = [], []
        for _ in range(endpoints):
            endpoint, secret = eps.add_endpoint(store, PLATFORM, "http://127.0.0.1:9/x", from_seq=1)
            secrets.append(secret)
            made.append(endpoint.endpoint_id)
        receiver = Receiver(secrets)
        with store.write_transaction() as c:
            for index, endpoint_id in enumerate(made):
                c.execute(store.dialect.sql("UPDATE peerledger_webhook_endpoints SET url = ? WHERE endpoint_id = ?"),
                          (f"http://127.0.0.1:{receiver.port}/{index}", endpoint_id))
    pull_s = cli("bookings", "--platform", PLATFORM, db=db)
    deliver_s = cli("deliver", db=db)
    deliveries = documents * endpoints
    assert receiver.ok == deliveries and receiver.bad == 0, (receiver.ok, receiver.bad, deliveries)
    receiver.server.shutdown()
    return {"documents": documents, "endpoints": endpoints,
            "ingest_events_per_s": round(documents / ingest_s), "pull_documents_per_s": round(documents / pull_s),
            "deliver_documents_per_s": round(deliveries / deliver_s),
            "ingest_s": round(ingest_s, 2), "pull_s": round(pull_s, 2), "deliver_s": round(deliver_s, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--endpoints", type=int, default=1)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "stream.jsonl"
        write_jsonl(stream, generate(19, args.events, PLATFORM))
        for backend in args.backends.split(","):
            if backend == "sqlite":
                rows[backend] = measure(f"sqlite:///{tmp}/bench.db", stream, args.endpoints)
            else:
                server, url = pg_database()
                try:
                    rows[backend] = measure(url, stream, args.endpoints)
                finally:
                    drop_pg(server, url)
            print(backend, json.dumps(rows[backend]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deliver.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# Booking documents out: {args.events} generated events, {args.endpoints} endpoint(s)", "",
             "| backend | documents | ingest events/s | pull documents/s | deliver documents/s |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {b} | {r['documents']} | {r['ingest_events_per_s']} | {r['pull_documents_per_s']} | "
              f"{r['deliver_documents_per_s']} |" for b, r in rows.items()]
    (RESULTS / "deliver.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
