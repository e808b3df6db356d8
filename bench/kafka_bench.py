#!/usr/bin/env python3
"""Kafka consume benchmark for peerledger: end to end into SQLite and PostgreSQL,
beside a bare kafka-python poll loop over the same topic, in the same run.

    scripts/ensure-postgres && .venv/bin/python bench/kafka_bench.py
    .venv/bin/python bench/kafka_bench.py --quick          # 20 000 events
    .venv/bin/python bench/kafka_bench.py --no-postgres

The cluster is librdkafka's mock (3 brokers, in this process, started as in
the tests: tests/kafka_mock.py), the topic has 6 partitions, and the
stream is `generate_many(seed, n, ["east", "north", "south"])` (default
100 000 events), published keyed by platform, gzip-compressed, with
librdkafka (murmur2 partitioner, so the platforms land on partitions 0, 2
and 5, as kafka-python's would put them).  The mock keeps at most 5 MiB per
partition; the script checks that every partition still starts at offset 0.

Each measurement runs in a fresh interpreter (this script with `--worker`),
and consumes the whole topic in a group of its own:

* bare poll: kafka-python `KafkaConsumer` with the ledger consumer's
  settings (group, max_poll_records 1000, fetch_max_bytes 16 MiB, CRC
  checks), a loop that polls and counts, nothing else; also without CRC
  checks (kafka-python computes CRC-32C in pure Python when the `crc32c`
  package is absent), to show that cost;
* ledger consume: `ledger.kafka.consumer.LedgerConsumer(...).run()`, the code behind
  `peerledger consume`, on a fresh SQLite file or PostgreSQL database (the
  store opened and its schema created before the clock starts), stopped by a
  watcher thread once every message is consumed; the clock stops when `run()`
  returns: offsets committed, group left, read models at the log's head.
  With the projector in its second process (the default) and in process
  (`--projector inline`);
* where the time goes, without Kafka, on the same events: the write side
  alone (`Ingestor` over the JSON Lines file, batches of 1000, no
  projector) and the read side alone (`Projector.catch_up()` over the log it
  wrote);
* producing: `peerledger produce` (kafka-python, gzip, acks=all,
  idempotent) of the same file to another topic, and the librdkafka
  producer that loaded the benchmark topic.

Results: a markdown table on stdout and in bench/results/kafka.md, the same
numbers in bench/results/kafka.json (a `--quick` run writes kafka-quick.*),
with the machine, the git revision and the load average at start and end:
the machine is shared, so look at the load before trusting a number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ingest_bench import DEFAULT_PG, PgServer, loadavg, machine_info, save_report  # noqa: E402 — bench/ is this script's directory

PLATFORMS = ["east", "north", "south"]
DEFAULT_EVENTS = 100_000
QUICK_EVENTS = 20_000
WORKER_TIMEOUT_SECONDS = 3600

# The targets for the consumer into SQLite.
TARGET_RATIO_TO_BARE_POLL = 0.5
TARGET_SQLITE_EVENTS_PER_S = 30_000


# -- workers: one measurement each, in a fresh interpreter; print one JSON line --


def worker_bare_poll(spec: dict[str, Any]) -> dict[str, Any]:
    from kafka import KafkaConsumer

    from ledger.ingest.sources import BATCH_MAX_BYTES, BATCH_MAX_EVENTS

    consumer = KafkaConsumer(
        bootstrap_servers=spec["bootstrap"], group_id=f"bare-{secrets.token_hex(4)}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=BATCH_MAX_EVENTS,
        fetch_max_bytes=BATCH_MAX_BYTES, check_crcs=spec["check_crcs"], metrics_enabled=False)
    started = time.perf_counter()
    consumer.subscribe([spec["topic"]])
    n = 0
    while n < spec["events"]:
        for records in consumer.poll(timeout_ms=500, max_records=BATCH_MAX_EVENTS).values():
            n += len(records)
    seconds = time.perf_counter() - started
    consumer.close(autocommit=False)
    return {"events": n, "seconds": seconds}


def worker_consume(spec: dict[str, Any]) -> dict[str, Any]:
    import threading

    from ledger.kafka.consumer import ConsumerSettings, LedgerConsumer
    from ledger.storage.store import Store
    from ledger.storage.views import read_balances
    from projections.balances import balances_digest

    with Store(spec["db"]) as store:
        consumer = LedgerConsumer(store, ConsumerSettings(
            spec["bootstrap"], spec["topic"], group_id=f"ledger-{secrets.token_hex(4)}",
            projector=spec["projector"]))

        def stop_when_all_consumed() -> None:
            while consumer.summary.consumed < spec["events"]:
                time.sleep(0.005)
            consumer.stop()

        threading.Thread(target=stop_when_all_consumed, daemon=True).start()
        started = time.perf_counter()
        summary = consumer.run()
        seconds = time.perf_counter() - started
        digests = {p: balances_digest(read_balances(store, p)) for p in PLATFORMS}
    return {"events": summary.accepted, "seconds": seconds, "summary": summary.as_json(), "digests": digests}


def worker_append(spec: dict[str, Any]) -> dict[str, Any]:
    from ledger.ingest.ingestor import ACCEPTED, Ingestor
    from ledger.ingest.sources import batches, read_lines
    from ledger.storage.store import Store

    accepted = 0
    with Store(spec["db"]) as store:
        ingestor = Ingestor(store)
        started = time.perf_counter()
        with open(spec["file"], "rb") as f:
            for batch in batches(read_lines(f, spec["file"])):
                accepted += sum(1 for o in ingestor.ingest(batch) if o.outcome == ACCEPTED)
        seconds = time.perf_counter() - started
    return {"events": accepted, "seconds": seconds}


def worker_project(spec: dict[str, Any]) -> dict[str, Any]:
    from ledger.ingest.projector import Projector
    from ledger.storage.store import Store
    from ledger.storage.views import read_balances
    from projections.balances import balances_digest

    with Store(spec["db"]) as store:
        projector = Projector(store)
        started = time.perf_counter()
        n = projector.catch_up()
        seconds = time.perf_counter() - started
        digests = {p: balances_digest(read_balances(store, p)) for p in PLATFORMS}
    return {"events": n, "seconds": seconds, "digests": digests}


def worker_produce(spec: dict[str, Any]) -> dict[str, Any]:
    from ledger.kafka.consumer import produce_files

    started = time.perf_counter()
    summary = produce_files([spec["file"]], spec["bootstrap"], spec["topic"])
    seconds = time.perf_counter() - started
    assert summary.failed == 0 and summary.sent == spec["events"], summary
    return {"events": summary.sent, "seconds": seconds}


WORKERS = {
    "bare_poll": worker_bare_poll,
    "consume": worker_consume,
    "append": worker_append,
    "project": worker_project,
    "produce": worker_produce,
}


# -- the driver -----------------------------------------------------------------


def run_worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec",
                           json.dumps(spec)], capture_output=True, text=True, cwd=ROOT,
                          timeout=WORKER_TIMEOUT_SECONDS, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed (exit {proc.returncode})\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def produce_with_librdkafka(bootstrap: str, topic: str, path: Path) -> dict[str, Any]:
    import orjson
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "compression.type": "gzip", "linger.ms": 20, "partitioner": "murmur2_random",
                         "queue.buffering.max.messages": 500_000})
    started = time.perf_counter()
    sent = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            producer.produce(topic, key=orjson.loads(line)["platform"].encode(), value=line)
            producer.poll(0)
            sent += 1
    if producer.flush(120):
        raise SystemExit("librdkafka could not deliver every message")
    return {"events": sent, "seconds": time.perf_counter() - started}


def check_topic_whole(bootstrap: str, topic: str, events: int) -> None:
    """The mock drops a partition's oldest batches past 5 MiB: make sure it did not."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    finally:
        consumer.close()
    if any(starts.values()) or sum(ends.values()) != events:
        raise SystemExit(f"the mock cluster did not keep the whole topic: starts {starts}, ends {ends}; "
                         "use fewer --events")


def _fmt(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


ROWS = [
    # key, label
    ("bare_poll", "bare kafka-python poll loop (no work; CRC checks on, as the consumer)"),
    ("bare_poll_no_crc", "bare kafka-python poll loop without CRC checks"),
    ("consume_sqlite", "peerledger consume → SQLite (projector process), end to end"),
    ("consume_sqlite_inline", "peerledger consume → SQLite (projector inline), end to end"),
    ("consume_pg", "peerledger consume → PostgreSQL (projector process), end to end"),
    ("append_sqlite", "write side alone: Ingestor → SQLite, no Kafka, no projector"),
    ("project_sqlite", "read side alone: Projector.catch_up() on that SQLite log"),
    ("produce_cli", "peerledger produce (kafka-python, gzip, acks=all, idempotent)"),
    ("produce_librdkafka", "librdkafka producer (gzip, acks=all, idempotent): loads the topic"),
]


def table(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    bare = results["bare_poll"]["events"] / results["bare_poll"]["seconds"]
    lines = ["| measurement | events | seconds | events/s | ÷ bare poll | target | met |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    rows = []
    for key, label in ROWS:
        r = results.get(key)
        if r is None:
            lines.append(f"| {label} | — | — | — | — | | skipped |")
            continue
        rate = r["events"] / r["seconds"]
        targets: list[tuple[str, bool]] = []
        if key == "consume_sqlite":
            targets = [(f"≥ {TARGET_RATIO_TO_BARE_POLL:.0%} of bare poll", rate / bare >= TARGET_RATIO_TO_BARE_POLL),
                       (f"≥ {_fmt(TARGET_SQLITE_EVENTS_PER_S)} ev/s", rate >= TARGET_SQLITE_EVENTS_PER_S)]
        lines.append(f"| {label} | {_fmt(r['events'])} | {r['seconds']:.2f} | {_fmt(rate)} | {rate / bare:.2f} | "
                     + " ; ".join(t for t, _ in targets) + " | "
                     + " ; ".join("met" if ok else "**not met**" for _, ok in targets) + " |")
        rows.append({"key": key, "label": label, "events": r["events"], "seconds": r["seconds"],
                     "events_per_s": rate, "ratio_to_bare_poll": rate / bare,
                     "targets": [{"target": t, "met": ok} for t, ok in targets]})
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the stream (default 100 000)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events; results in kafka-quick.*")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL row")
    ap.add_argument("--pg", default=DEFAULT_PG, help="server on which a fresh database is created")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        # The ledger's own processes run with these GC thresholds
        # (ledger/ops/runtime.py); the in-process measurements must too.
        from ledger.ops.runtime import tune_gc

        tune_gc()
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))))
        return 0

    from kafka_mock import MockKafka

    from ledger.demo.generate import generate_many, write_jsonl

    events = QUICK_EVENTS if args.quick else args.events
    name = "kafka-quick" if args.quick else "kafka"
    load_start = loadavg()
    started_at = datetime.datetime.now(datetime.UTC)
    machine = {**machine_info(), "kafka-python": version("kafka-python"),
               "confluent-kafka": version("confluent-kafka")}
    print(f"kafka bench: {events} events, {machine['nproc']} cores, load {load_start}", flush=True)
    results: dict[str, Any] = {}
    cluster = MockKafka()
    pg = None if args.no_postgres else PgServer(args.pg)
    try:
        with tempfile.TemporaryDirectory(prefix="peerledger-kafka-bench-") as tmp:
            stream = Path(tmp) / "stream.jsonl"
            write_jsonl(stream, generate_many(args.seed, events, PLATFORMS))
            bootstrap = cluster.bootstrap_servers
            topic = cluster.new_topic("bench")
            results["produce_librdkafka"] = produce_with_librdkafka(bootstrap, topic, stream)
            check_topic_whole(bootstrap, topic, events)
            base = {"bootstrap": bootstrap, "topic": topic, "events": events}

            def measure(key: str, kind: str, **spec: Any) -> dict[str, Any]:
                print(f"  {key} ...", end=" ", flush=True)
                r = results[key] = run_worker(kind, {**base, **spec})
                print(f"{r['events'] / r['seconds']:,.0f} events/s", flush=True)
                return r

            measure("bare_poll", "bare_poll", check_crcs=True)
            measure("bare_poll_no_crc", "bare_poll", check_crcs=False)
            sqlite = measure("consume_sqlite", "consume", db=f"sqlite:///{tmp}/consume.db", projector="process")
            inline = measure("consume_sqlite_inline", "consume", db=f"sqlite:///{tmp}/inline.db",
                             projector="inline")
            digests = [sqlite["digests"], inline["digests"]]
            if pg is not None:
                digests.append(measure("consume_pg", "consume", db=pg.url(pg.create()), projector="process")["digests"])
            measure("append_sqlite", "append", db=f"sqlite:///{tmp}/append.db", file=str(stream))
            digests.append(measure("project_sqlite", "project", db=f"sqlite:///{tmp}/append.db")["digests"])
            if any(d != digests[0] for d in digests):
                raise SystemExit(f"the runs disagree on the digests: {digests}")
            measure("produce_cli", "produce", topic=cluster.new_topic("bench-produce"), file=str(stream))
    finally:
        if pg is not None:
            pg.close()
        cluster.close()

    load_end = loadavg()
    text, rows = table(results)
    took = (datetime.datetime.now(datetime.UTC) - started_at).total_seconds()
    consume = results["consume_sqlite"]["summary"]
    notes = [
        f"stream: `generate_many({args.seed}, {events}, {PLATFORMS})`, every event acceptable; topic of 6 "
        "partitions on librdkafka's mock cluster (3 brokers, in the benchmark's process), gzip batches, "
        "keyed by platform (partitions 0, 2, 5).",
        "consume rows: `LedgerConsumer.run()` in a fresh interpreter, from subscribing to returning "
        "(group join, every batch appended and committed, group left, read models at the head); "
        f"the SQLite run made {consume['commits']} commits of batches of at most 1000 events.",
        "every consume run and the read-side row ended with the same balances digests per platform.",
        "÷ bare poll: events/s of the row divided by the bare poll loop's (CRC checks on).",
        f"load average (1, 5, 15 min) at start {load_start}, at end {load_end}; the machine is shared.",
    ]
    header = [
        "# peerledger Kafka consume benchmark", "",
        f"- date: {started_at:%Y-%m-%d %H:%M:%S} UTC (took {took:.0f} s)",
        "- command: `" + " ".join(["python bench/kafka_bench.py", *(argv if argv is not None else sys.argv[1:])]) + "`",
        f"- machine: nproc {machine['nproc']}, {machine['cpu']}, Python {machine['python']}, "
        f"kafka-python {machine['kafka-python']}, confluent-kafka {machine['confluent-kafka']}"
        + (f", PostgreSQL {pg.version}" if pg is not None else ""),
        f"- git rev: {machine['git_rev']}", "",
    ]
    document = "\n".join(header) + "\n" + text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print()
    print(document)
    save_report(Path(args.results), name, document, {
        "date": f"{started_at:%Y-%m-%dT%H:%M:%SZ}", "events": events, "machine": machine,
        "postgresql": pg.version if pg is not None else None,
        "load_average": {"start": load_start, "end": load_end},
        "rows": rows, "consume_sqlite_summary": consume, "notes": notes,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
