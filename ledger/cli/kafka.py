"""`peerledger consume`, `produce`, `kafka-offsets` and `publish`: the Kafka commands
(docs/kafka.md; `publish` in docs/bookings.md).

Kept apart from `ledger.cli.main` so that the other commands never import
kafka-python; `ledger.kafka` is imported only when one of these runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import orjson

from ledger.cli.common import open_store

EXIT_OK = 0
EXIT_FAILURE = 1
# The codecs kafka-python speaks; all but gzip need an optional package
# (python-snappy, lz4, zstandard).
COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd", "none")


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add `consume`, `produce`, `kafka-offsets` and `publish` to the `peerledger` subcommands.

    `plat` is accepted for symmetry with the other command families: a
    consumer serves every platform on its topic, so neither command takes one.
    """
    del plat
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT[,HOST:PORT...]")
    kafka.add_argument("--topic", required=True)
    group = argparse.ArgumentParser(add_help=False)
    group.add_argument("--group", default="peerledger", help="consumer group id (default peerledger)")

    s = sub.add_parser(
        "consume", parents=[common, jsonf, kafka, group],
        help="consume a Kafka topic into the ledger (effectively once) until SIGTERM/SIGINT",
        description="Consume events (value: one v1 event as JSON, key: its platform id) in a consumer "
                    "group. Once every rejected message of a batch is acknowledged by the dead-letter "
                    "topic, one transaction appends the batch and stores its offsets with the ledger "
                    "(where the consumer resumes after any crash or rebalance); they are then committed "
                    "to the group too. SIGTERM/SIGINT: finish the batch in hand, commit, leave the "
                    "group, exit 0.")
    s.add_argument("--dead-letter-topic", metavar="TOPIC",
                   help="where rejected messages are copied with reason headers (default TOPIC.rejected)")
    s.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics, /healthz and /readyz (database reachable, in the group, polling) "
                        "on http://0.0.0.0:PORT")
    s.add_argument("--stop-when-idle", type=float, metavar="SECONDS",
                   help="exit 0 once the group has committed the whole topic and no message arrived "
                        "for SECONDS (tests, back-fills); default: run until a signal")
    s.add_argument("--session-timeout-ms", type=int, default=10_000, metavar="MS",
                   help="after this long without a heartbeat the group reassigns a consumer's "
                        "partitions (default 10000)")
    s.add_argument("--projector", choices=("process", "inline", "none"), default="process",
                   help="keep the read models at the head from a second process (default), in "
                        "this one after each batch (one core, about half the rate), or not at all "
                        "(projection workers of their own: peerledger project --follow)")
    s.add_argument("--api-version", metavar="X.Y",
                   help="speak this Kafka version's protocol instead of negotiating it with the brokers")
    s.set_defaults(func=cmd_consume)

    s = sub.add_parser("produce", parents=[jsonf, kafka],
                       help="publish JSON Lines files to a Kafka topic, keyed by platform")
    s.add_argument("files", nargs="+")
    s.add_argument("--compression", choices=COMPRESSIONS, default="gzip",
                   help="batch compression (default gzip; snappy, lz4 and zstd need their Python package)")
    s.set_defaults(func=cmd_produce)

    s = sub.add_parser("kafka-offsets", parents=[common, jsonf, group],
                       help="where a consumer group resumes: the offsets stored with the ledger",
                       description="Per partition, the offset after the last message whose outcome the "
                                   "ledger holds, for a group and topic; the group's consumers resume "
                                   "there, whatever offsets Kafka has committed. Needs no broker.")
    s.add_argument("--topic", required=True)
    s.set_defaults(func=cmd_kafka_offsets)

    s = sub.add_parser(
        "publish", parents=[common, jsonf, kafka],
        help="publish every booking document to a Kafka topic, exactly once, until SIGTERM/SIGINT",
        description="Follow the ledger and publish each platform's booking documents (EVENTS.md §9) to "
                    "the topic: key = platform, value = the document's canonical bytes, headers seq and "
                    "type; in seq order per platform, one Kafka transaction per page of documents. After a "
                    "crash or kill at any instant, a restart resumes after the platform's last committed "
                    "record on the topic: every document is on the topic once. Publishers of one topic on "
                    "one PostgreSQL database split the platforms. SIGTERM/SIGINT: finish the transaction "
                    "in hand, exit 0.")
    s.add_argument("--platform", action="append", dest="platforms", metavar="PLATFORM",
                   help="publish only this platform (repeat for more; default: every platform)")
    s.add_argument("--until-caught-up", action="store_true",
                   help="exit 0 once every platform is published to its head (back-fills, tests)")
    s.add_argument("--compression", choices=COMPRESSIONS, default="none",
                   help="batch compression (default none; snappy, lz4 and zstd need their Python package)")
    s.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics, /healthz and /readyz on http://0.0.0.0:PORT")
    s.add_argument("--api-version", metavar="X.Y",
                   help="speak this Kafka version's protocol instead of negotiating it with the brokers")
    s.add_argument("--no-check-crcs", dest="check_crcs", action="store_false",
                   help="do not verify record batch CRCs when reading the topic back (for librdkafka's "
                        "mock cluster, which writes transaction markers without one)")
    s.set_defaults(func=cmd_publish)


def print_json(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _log_to_stderr() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("peerledger").setLevel(logging.INFO)


def cmd_consume(args: argparse.Namespace) -> int:
    from ledger.kafka.consumer import ConsumerSettings, LedgerConsumer
    from ledger.ops import metrics

    _log_to_stderr()
    settings = ConsumerSettings(
        bootstrap_servers=args.bootstrap_servers,
        topic=args.topic,
        group_id=args.group,
        dead_letter_topic=args.dead_letter_topic,
        session_timeout_ms=args.session_timeout_ms,
        stop_when_idle_seconds=args.stop_when_idle,
        projector=args.projector,
        api_version=args.api_version,
    )
    with open_store(args) as store:
        consumer = LedgerConsumer(store, settings)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: consumer.stop())
        if args.metrics_port is not None:
            metrics.serve(args.metrics_port, checks=(metrics.database_check(args.db), consumer.not_ready))
        summary = consumer.run()
    if args.json:
        print_json(summary.as_json())
    else:
        print(f"consumed {summary.consumed}: accepted {summary.accepted}, duplicate {summary.duplicate}, "
              f"rejected {summary.rejected} {summary.rejected_by_code or ''} "
              f"(dead-lettered to {settings.dead_letter_topic}: {summary.dead_lettered})")
    return EXIT_OK


def cmd_produce(args: argparse.Namespace) -> int:
    from ledger.kafka.consumer import produce_files

    _log_to_stderr()
    compression = None if args.compression == "none" else args.compression
    summary = produce_files(args.files, args.bootstrap_servers, args.topic, compression)
    if args.json:
        print_json(summary.as_json())
    else:
        print(f"sent {summary.sent} messages to {args.topic} ({summary.unkeyed} without a platform key), "
              f"{summary.failed} failed")
        for source in summary.too_long:
            print(f"  not sent, longer than 1 MiB: {source}", file=sys.stderr)
    return EXIT_FAILURE if summary.failed else EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    import threading

    from ledger.kafka.publisher import PublishError, Publisher, PublishSettings
    from ledger.ops import metrics

    _log_to_stderr()
    settings = PublishSettings(
        bootstrap_servers=args.bootstrap_servers,
        topic=args.topic,
        platforms=tuple(args.platforms or ()),
        follow=not args.until_caught_up,
        compression=None if args.compression == "none" else args.compression,
        api_version=args.api_version,
        check_crcs=args.check_crcs,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with open_store(args) as store:
        if args.metrics_port is not None:
            metrics.serve(args.metrics_port, checks=(metrics.database_check(args.db),))
        try:
            summary = Publisher(store, settings, args.db).run(stop)
        except PublishError as e:
            print(f"peerledger publish: {e}", file=sys.stderr)
            return EXIT_FAILURE
    if args.json:
        print_json(summary.as_json())
    else:
        print(f"published {sum(summary.published.values())} documents to {args.topic} in "
              f"{summary.transactions} transactions ({summary.failed_transactions} failed and retried)")
    return EXIT_OK


def cmd_kafka_offsets(args: argparse.Namespace) -> int:

    with open_store(args) as store:
        store.ensure_kafka_offsets_schema()
        offsets = store.kafka_offsets(args.group, args.topic)
    if args.json:
        print_json({"group": args.group, "topic": args.topic,
                     "offsets": {str(p): o for p, o in sorted(offsets.items())}})
    elif not offsets:
        print(f"no offsets stored for group {args.group!r} on topic {args.topic!r}: "
              "its consumers start at Kafka's committed offsets (or the beginning)")
    else:
        for partition, offset in sorted(offsets.items()):
            print(f"{args.topic}/{partition}: {offset}")
    return EXIT_OK
