#!/usr/bin/env python3
"""Booking documents out, beside ingest in the same run (issue 19).

    .venv/bin/python bench/deliver_bench.py [--events 50000] [--endpoints 1] [--backends sqlite,postgresql]

For each backend, on a fresh database:
* ingest: `peerledger ingest FILE` of a generated stream, wall clock;
* pull: `peerledger bookings --platform bench` to /dev/null, wall clock;
* deliver: `peerledger deliver` (one pass) to `--endpoints` endpoints on a
  loopback receiver that verifies every signature with `standardwebhooks` and
  answers 204, wall clock; documents/s counts deliveries (documents ×
  endpoints);
* publish: `peerledger publish --until-caught-up` to a 6-partition topic of
  librdkafka's mock cluster (in this process, as in the tests:
  tests/kafka_mock.py), wall clock;
* lag under sustained ingest: `publish` and `deliver --follow` run while a
  second stream (as long, platform `live`) is fed to `peerledger ingest -`
  at `--rate` events/s (a platform streaming steadily);
  every 0.25 s the bench reads the platform's head, the publisher's stored
  position and the endpoint's cursor.  Reported: the median and the largest
  lag in seqs while ingesting, and how long after the ingest ended each
  follower reached the head.

Prints a table and writes bench/results/deliver.{json,md}.  The receiver
runs in this process on its own threads, so it shares the two cores with
the deliverer: the figure is a floor for a remote receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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

sys.path.insert(0, str(ROOT / "tests"))  # the mock cluster, as the tests start it

from kafka_mock import MockKafka  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLATFORM = "bench"
LIVE = "live"  # the platform ingested while the followers run
SAMPLE_SECONDS = 0.25


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


def add_endpoints(db: str, platform: str, endpoints: int) -> tuple[Receiver, list[str]]:
    """`endpoints` endpoints of the platform, from seq 1, on one new receiver."""
    with Store(db) as store:
        secrets, made = [], []
        for _ in range(endpoints):
            endpoint, secret = eps.add_endpoint(store, platform, "http://127.0.0.1:9/x", from_seq=1)
            secrets.append(secret)
            made.append(endpoint.endpoint_id)
        receiver = Receiver(secrets)
        with store.write_transaction() as c:
            for index, endpoint_id in enumerate(made):
                c.execute(store.dialect.sql("UPDATE peerledger_webhook_endpoints SET url = ? WHERE endpoint_id = ?"),
                          (f"http://127.0.0.1:{receiver.port}/{index}", endpoint_id))
    return receiver, made


def measure(db: str, stream: Path, live: Path, endpoints: int, kafka: MockKafka, rate: int) -> dict[str, float]:
    ingest_s = cli("ingest", str(stream), db=db)
    with Store(db) as store:
        documents = store.head(PLATFORM)
    receiver, _ = add_endpoints(db, PLATFORM, endpoints)
    pull_s = cli("bookings", "--platform", PLATFORM, db=db)
    deliver_s = cli("deliver", db=db)
    deliveries = documents * endpoints
    assert receiver.ok == deliveries and receiver.bad == 0, (receiver.ok, receiver.bad, deliveries)
    receiver.server.shutdown()
    topic = kafka.create_topic(f"bench-{uuid.uuid4().hex[:8]}", 6)
    publish = ["publish", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic, "--no-check-crcs"]
    publish_s = cli(*publish, "--until-caught-up", db=db)
    return {"documents": documents, "endpoints": endpoints,
            "ingest_events_per_s": round(documents / ingest_s), "pull_documents_per_s": round(documents / pull_s),
            "deliver_documents_per_s": round(deliveries / deliver_s),
            "publish_documents_per_s": round(documents / publish_s),
            "ingest_s": round(ingest_s, 2), "pull_s": round(pull_s, 2), "deliver_s": round(deliver_s, 2),
            "publish_s": round(publish_s, 2), "rate_events_per_s": rate,
            **lag_under_ingest(db, live, publish, topic, rate)}


def feed(ingest: subprocess.Popen[bytes], lines: list[bytes], rate: int) -> None:
    """Write `lines` to the ingest's stdin at `rate` lines/s, then close it."""
    assert ingest.stdin is not None
    tick_s = 0.05
    per_tick = max(1, int(rate * tick_s))
    started = time.perf_counter()
    for index in range(0, len(lines), per_tick):
        ingest.stdin.write(b"".join(lines[index:index + per_tick]))
        ingest.stdin.flush()
        pause = started + (index + per_tick) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    ingest.stdin.close()


def lag_under_ingest(db: str, live: Path, publish: list[str], topic: str, rate: int) -> dict[str, float]:
    """The followers' lag while `live` is ingested (see the module doc)."""
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    receiver, (endpoint_id,) = add_endpoints(db, LIVE, 1)
    followers = [subprocess.Popen([sys.executable, "-m", "ledger.cli", *args, "--db", db], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for args in (publish, ["deliver", "--follow"])]
    ingest = subprocess.Popen([sys.executable, "-m", "ledger.cli", "ingest", "-", "--db", db], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    feeder = threading.Thread(target=feed, args=(ingest, live.read_bytes().splitlines(keepends=True), rate),
                              daemon=True)
    feeder.start()
    samples: list[tuple[int, int, int]] = []
    caught_up: dict[str, float] = {}
    ingest_ended = None
    try:
        with Store(db) as store:
            while True:
                time.sleep(SAMPLE_SECONDS)
                head = store.head(LIVE)
                rows = store.query("SELECT seq FROM peerledger_publish_positions WHERE topic = ? AND platform = ?",
                                   (topic, LIVE))
                published = int(rows[0][0]) if rows else 0
                cursor = int(store.query("SELECT cursor_seq FROM peerledger_webhook_endpoints WHERE endpoint_id = ?",
                                         (endpoint_id,))[0][0])
                if ingest_ended is None:
                    if head:  # the ingest has begun committing
                        samples.append((head, head - published, head - cursor))
                    if ingest.poll() is not None:
                        ingest_ended = time.perf_counter()
                        final = head = store.head(LIVE)
                    continue
                for name, at in (("publish", published), ("deliver", cursor)):
                    if at >= final and name not in caught_up:
                        caught_up[name] = time.perf_counter() - ingest_ended
                if len(caught_up) == 2 or time.perf_counter() - ingest_ended > 600:
                    break
    finally:
        for p in followers:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        receiver.server.shutdown()
    assert ingest.returncode in (0, 3)
    publish_lags = sorted(s[1] for s in samples)
    deliver_lags = sorted(s[2] for s in samples)
    return {"live_events": final,
            "publish_lag_p50_seqs": publish_lags[len(publish_lags) // 2], "publish_lag_max_seqs": publish_lags[-1],
            "deliver_lag_p50_seqs": deliver_lags[len(deliver_lags) // 2], "deliver_lag_max_seqs": deliver_lags[-1],
            "publish_caught_up_after_s": round(caught_up.get("publish", float("nan")), 2),
            "deliver_caught_up_after_s": round(caught_up.get("deliver", float("nan")), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--endpoints", type=int, default=1)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--rate", type=int, default=2000, help="events/s fed while the followers' lag is sampled")
    args = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    kafka = MockKafka()
    with tempfile.TemporaryDirectory() as tmp:
        stream, live = Path(tmp) / "stream.jsonl", Path(tmp) / "live.jsonl"
        write_jsonl(stream, generate(19, args.events, PLATFORM))
        write_jsonl(live, generate(23, args.events, LIVE))
        for backend in args.backends.split(","):
            if backend == "sqlite":
                rows[backend] = measure(f"sqlite:///{tmp}/bench.db", stream, live, args.endpoints, kafka, args.rate)
            else:
                server, url = pg_database()
                try:
                    rows[backend] = measure(url, stream, live, args.endpoints, kafka, args.rate)
                finally:
                    drop_pg(server, url)
            print(backend, json.dumps(rows[backend]), flush=True)
    kafka.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deliver.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# Booking documents out: {args.events} generated events, {args.endpoints} endpoint(s)", "",
             "| backend | documents | ingest events/s | pull documents/s | deliver documents/s "
             "| publish documents/s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {b} | {r['documents']} | {r['ingest_events_per_s']} | {r['pull_documents_per_s']} | "
              f"{r['deliver_documents_per_s']} | {r['publish_documents_per_s']} |" for b, r in rows.items()]
    lines += ["", f"Lag while {args.events} more events are ingested at {args.rate} events/s (platform "
              f"`{LIVE}`), sampled every {SAMPLE_SECONDS} s:", "",
              "| backend | publish lag p50 / max (seqs) | caught up after ingest (s) "
              "| deliver lag p50 / max (seqs) | caught up after ingest (s) |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {b} | {r['publish_lag_p50_seqs']} / {r['publish_lag_max_seqs']} | {r['publish_caught_up_after_s']} "
              f"| {r['deliver_lag_p50_seqs']} / {r['deliver_lag_max_seqs']} | {r['deliver_caught_up_after_s']} |"
              for b, r in rows.items()]
    (RESULTS / "deliver.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
