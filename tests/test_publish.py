"""`peerledger publish`: booking documents on a Kafka topic, exactly once (docs/bookings.md § Kafka).

Kafka is librdkafka's mock cluster over TCP (tests/kafka_mock.py).  The mock
takes transactions but keeps none of their guarantees: aborted records stay
visible, a producer is never fenced, and transaction markers carry no CRC
(hence `--no-check-crcs`).  So on the mock a killed publisher's open
transaction counts as published, and the kill -9 tests check the other half
of exactly once: that a restart finds the topic's last record of each
platform and resumes after it, never before and never after.  Fencing and
`read_committed` are checked against a real broker when
KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES
from kafka import KafkaConsumer
from kafka_mock import MockKafka

from ledger.bookings.documents import read_documents
from ledger.demo.generate import generate, generate_many, write_jsonl
from ledger.kafka.publisher import (
    Position,
    PublishError,
    Publisher,
    PublishSettings,
    list_positions,
    partition_of,
    save_position,
)
from ledger.ops import metrics
from ledger.storage.store import Store

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
WORKED = EXAMPLES / "worked.jsonl"
WORKED_SEQS = list(range(1, 14))  # worked.jsonl: 13 accepted events on platform demo
PLATFORMS = ["east", "north", "south"]


def cli(*args: str, db: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          env=BASE_ENV, timeout=300, **kw)


def publish_args(bootstrap: str, topic: str, *more: str) -> list[str]:
    return ["publish", "--bootstrap-servers", bootstrap, "--topic", topic, "--no-check-crcs", *more]


def settings(bootstrap: str, topic: str, **kw: Any) -> PublishSettings:
    return PublishSettings(bootstrap_servers=bootstrap, topic=topic, follow=False, check_crcs=False, **kw)


def topic_records(bootstrap: str, topic: str, **kw: Any) -> dict[str, list[tuple[int, dict[str, bytes], bytes, int]]]:
    """platform -> its records in offset order: (seq, headers, value, partition)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             isolation_level="read_committed", check_crcs=False, enable_auto_commit=False,
                             consumer_timeout_ms=3000, **kw)
    out: dict[str, list[tuple[int, dict[str, bytes], bytes, int]]] = defaultdict(list)
    try:
        for record in sorted(consumer, key=lambda r: (r.partition, r.offset)):
            headers = dict(record.headers)
            out[record.key.decode()].append((int(headers["seq"]), headers, record.value, record.partition))
    finally:
        consumer.close()
    return dict(out)


def assert_every_document_once_in_order(db: str, records: dict[str, list[Any]]) -> dict[str, int]:
    """Each platform's records are its documents 1…head, once each, in seq
    order, byte for byte; returns the heads."""
    heads = {}
    with Store(db) as store:
        for platform in store.platforms():
            heads[platform] = head = store.head(platform)
            seqs = [seq for seq, _, _, _ in records.get(platform, [])]
            assert seqs == list(range(1, head + 1)), f"{platform}: {_summary(seqs)} for head {head}"
            documents = []
            while len(documents) < head:
                documents += read_documents(store, platform, len(documents))
            assert [value for _, _, value, _ in records[platform]] == [d.body for d in documents]
            assert [h["type"].decode() for _, h, _, _ in records[platform]] == [d.type for d in documents]
        assert set(records) <= set(heads)
    return heads


def _summary(seqs: list[int]) -> str:
    dups = sorted(s for s in set(seqs) if seqs.count(s) > 1)[:5]
    return f"{len(seqs)} records, {len(set(seqs))} distinct, duplicates {dups}, first {seqs[:3]}"


def ingest_in_background(db: str, tmp_path: Path, seed: int) -> subprocess.Popen[bytes]:
    """`peerledger ingest` of 6 000 generated events of PLATFORMS, running while the test goes on."""
    stream = tmp_path / "stream.jsonl"
    write_jsonl(stream, generate_many(seed, 6000, PLATFORMS))
    return subprocess.Popen([sys.executable, "-m", "ledger.cli", "ingest", str(stream), "--db", db],
                            env=BASE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def worked_db(db_url: str) -> str:
    assert cli("ingest", str(WORKED), db=db_url).returncode == 3  # 3: some events were rejected
    return db_url


@pytest.fixture
def topic(mock_kafka: MockKafka) -> str:
    return mock_kafka.create_topic(f"bookings-{uuid.uuid4().hex[:8]}", 6)


def test_every_document_is_on_the_topic_once_keyed_by_platform_with_seq_and_type_headers(
        worked_db: str, mock_kafka: MockKafka, topic: str) -> None:
    done = cli(*publish_args(mock_kafka.bootstrap_servers, topic, "--until-caught-up", "--json"), db=worked_db)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = json.loads(done.stdout)
    assert summary["published"] == 13 and summary["platforms"] == {"demo": {"published": 13, "last_seq": 13}}
    records = topic_records(mock_kafka.bootstrap_servers, topic)
    assert assert_every_document_once_in_order(worked_db, records) == {"demo": 13}
    # The default partitioner's partition for the key (murmur2, as the Java client).
    assert {partition for *_, partition in records["demo"]} == {partition_of("demo", 6)}
    assert records["demo"][7][1] == {"seq": b"8", "type": b"value.realized"}


def test_a_restart_publishes_nothing_twice_and_then_the_new_documents(
        worked_db: str, mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    bootstrap = mock_kafka.bootstrap_servers
    for _ in range(2):
        assert cli(*publish_args(bootstrap, topic, "--until-caught-up"), db=worked_db).returncode == 0
    more = tmp_path / "more.jsonl"
    write_jsonl(more, generate_many(3, 600, PLATFORMS))
    assert cli("ingest", str(more), db=worked_db).returncode in (0, 3)
    done = cli(*publish_args(bootstrap, topic, "--until-caught-up", "--json"), db=worked_db)
    assert json.loads(done.stdout)["platforms"]["demo"] == {"published": 0, "last_seq": 13}
    heads = assert_every_document_once_in_order(worked_db, topic_records(bootstrap, topic))
    assert set(heads) == {"demo", *PLATFORMS}


def test_a_restart_reads_only_what_follows_the_stored_position(
        sqlite_url: str, mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    stream = tmp_path / "s.jsonl"
    write_jsonl(stream, generate(7, 2600))
    assert cli("ingest", str(stream), db=sqlite_url).returncode in (0, 3)
    with Store(sqlite_url) as store:
        head = store.head("demo")
        first = Publisher(store, settings(mock_kafka.bootstrap_servers, topic))
        first.run()
        assert first.summary.transactions == -(-head // 1000)  # one transaction per page of 1 000
        [(platform, position)] = list_positions(store, topic)
        assert platform == "demo" and position.seq == head
        again = Publisher(store, settings(mock_kafka.bootstrap_servers, topic))
        again.run()
    assert again.summary.published == {} and again.summary.last_seq == {"demo": head}
    assert again.reader is not None and again.reader.records_read == 1  # the last record, at the position


def test_an_idle_platforms_position_follows_the_partitions_end_so_a_restart_reads_nothing_of_others(
        worked_db: str, mock_kafka: MockKafka, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.kafka.publisher as module
    from kafka import KafkaProducer

    bootstrap = mock_kafka.bootstrap_servers
    with Store(worked_db) as store:
        Publisher(store, settings(bootstrap, topic)).run()
        other = KafkaProducer(bootstrap_servers=bootstrap)  # another producer, writing the same partition
        for n in range(3000):
            other.send(topic, key=b"elsewhere", value=b"{}", partition=partition_of("demo", 6))
        other.flush()
        other.close()
        monkeypatch.setattr(module, "POSITION_REFRESH_SECONDS", 0.0)
        idle = Publisher(store, settings(bootstrap, topic))
        idle.run()  # reads back to demo's last record once, then moves the position past the 3 000
        [(_, position)] = list_positions(store, topic)
        assert position.seq == 13 and position.offset >= 13 + 3000
        again = Publisher(store, settings(bootstrap, topic))
        again.run()
    assert again.reader is not None and again.reader.records_read == 0


def test_a_topic_that_holds_another_ledgers_documents_stops_the_publisher(
        worked_db: str, mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    bootstrap = mock_kafka.bootstrap_servers
    assert cli(*publish_args(bootstrap, topic, "--until-caught-up"), db=worked_db).returncode == 0
    other = f"sqlite:///{tmp_path / 'other.db'}"
    stream = tmp_path / "other.jsonl"
    write_jsonl(stream, generate(5, 40))  # platform demo too, other events
    assert cli("ingest", str(stream), db=other).returncode in (0, 3)
    done = cli(*publish_args(bootstrap, topic, "--until-caught-up"), db=other)
    assert done.returncode == 1
    assert "holds seq 13, but its bytes differ from this ledger's document" in done.stderr.decode()
    assert len(topic_records(bootstrap, topic)["demo"]) == 13  # nothing added


def test_a_restored_ledger_without_positions_resumes_after_the_topics_last_record(
        mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    bootstrap = mock_kafka.bootstrap_servers
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    for db in (first, second):
        assert cli("ingest", str(WORKED), db=db).returncode == 3
    assert cli(*publish_args(bootstrap, topic, "--until-caught-up"), db=first).returncode == 0
    done = cli(*publish_args(bootstrap, topic, "--until-caught-up", "--json"), db=second)
    assert json.loads(done.stdout)["published"] == 0  # the whole partition searched once: all there
    assert_every_document_once_in_order(second, topic_records(bootstrap, topic))


def test_a_platform_whose_key_moved_to_another_partition_stops_the_publisher(
        worked_db: str, mock_kafka: MockKafka, topic: str) -> None:
    bootstrap = mock_kafka.bootstrap_servers
    assert cli(*publish_args(bootstrap, topic, "--until-caught-up"), db=worked_db).returncode == 0
    with Store(worked_db) as store:
        moved = (partition_of("demo", 6) + 1) % 6  # as if the topic had had another partition count
        save_position(store, topic, "demo", Position(moved, 0, 14))
        with pytest.raises(PublishError, match=f"its documents are in {topic}/{moved}, but the topic's partition"):
            Publisher(store, settings(bootstrap, topic)).run()


def test_only_the_platforms_asked_for_are_published(mock_kafka: MockKafka, topic: str, sqlite_url: str,
                                                    tmp_path: Path) -> None:
    stream = tmp_path / "s.jsonl"
    write_jsonl(stream, generate_many(3, 900, PLATFORMS))
    assert cli("ingest", str(stream), db=sqlite_url).returncode in (0, 3)
    done = cli(*publish_args(mock_kafka.bootstrap_servers, topic, "--until-caught-up", "--platform", "north",
                             "--platform", "south"), db=sqlite_url)
    assert done.returncode == 0
    assert set(topic_records(mock_kafka.bootstrap_servers, topic)) == {"north", "south"}


def test_the_metrics_count_documents_and_the_lag_is_zero_when_caught_up(
        worked_db: str, mock_kafka: MockKafka, topic: str) -> None:
    before = metrics.PUBLISH_DOCUMENTS.labels("demo")._value.get()
    with Store(worked_db) as store:
        publisher = Publisher(store, settings(mock_kafka.bootstrap_servers, topic))
        publisher.run()
        publisher._gauges()
    assert metrics.PUBLISH_DOCUMENTS.labels("demo")._value.get() - before == 13
    assert metrics.PUBLISH_LAG.labels("demo")._value.get() == 0


def test_sigterm_ends_a_following_publisher_after_its_transaction(
        worked_db: str, mock_kafka: MockKafka, topic: str) -> None:
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli",
                          *publish_args(mock_kafka.bootstrap_servers, topic), "--db", worked_db],
                         env=BASE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(topic_records(mock_kafka.bootstrap_servers, topic).get("demo", [])) < 13:
        assert time.monotonic() < deadline and p.poll() is None
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()[-2000:]
    assert b"published 13 documents" in out


def test_kill_9_of_publish_at_random_instants_leaves_every_document_once_in_order(
        db_url: str, mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    ingest = ingest_in_background(db_url, tmp_path, seed=23)
    rng = random.Random(19)
    command = [sys.executable, "-m", "ledger.cli", *publish_args(mock_kafka.bootstrap_servers, topic),
               "--db", db_url]
    for _ in range(6):  # each publisher is killed while documents commit under it, mid-transaction or not
        p = subprocess.Popen(command, env=BASE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 3.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert ingest.wait(timeout=300) in (0, 3)
    assert cli(*publish_args(mock_kafka.bootstrap_servers, topic, "--until-caught-up"), db=db_url).returncode == 0
    heads = assert_every_document_once_in_order(db_url, topic_records(mock_kafka.bootstrap_servers, topic))
    assert sum(heads.values()) > 4000


@pytest.mark.postgres
def test_publishers_sharing_a_postgresql_database_split_the_platforms_and_publish_each_document_once(
        pg_url: str, mock_kafka: MockKafka, topic: str, tmp_path: Path) -> None:
    ingest = ingest_in_background(pg_url, tmp_path, seed=29)
    command = [sys.executable, "-m", "ledger.cli", *publish_args(mock_kafka.bootstrap_servers, topic),
               "--json", "--db", pg_url]
    workers = [subprocess.Popen(command, env=BASE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    assert ingest.wait(timeout=300) in (0, 3)
    with Store(pg_url) as store:
        heads = {p: store.head(p) for p in store.platforms()}
    deadline = time.monotonic() + 120
    while {p: len(r) for p, r in topic_records(mock_kafka.bootstrap_servers, topic).items()} != heads:
        assert time.monotonic() < deadline, "the publishers did not catch up"
        time.sleep(0.5)
    summaries = []
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()[-2000:]
        summaries.append(json.loads(out))
    assert_every_document_once_in_order(pg_url, topic_records(mock_kafka.bootstrap_servers, topic))
    assert sum(s["published"] for s in summaries) == sum(heads.values())


# -- a real broker ------------------------------------------------------------------------------


def test_on_a_real_broker_a_zombie_is_fenced_and_its_transaction_never_seen(
        real_kafka: str, worked_db: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import ProducerFencedError

    from ledger.kafka.publisher import PlatformPublisher, TopicReader, headers_of

    topic = f"peerledger-publish-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=real_kafka)
    try:
        admin.create_topics([NewTopic(topic, 3, min(3, len(admin.describe_cluster()["brokers"])))])
        s = PublishSettings(bootstrap_servers=real_kafka, topic=topic, follow=False)
        with Store(worked_db) as store:
            reader = TopicReader(s)
            zombie = PlatformPublisher(store, s, reader, "demo")
            zombie.producer.begin_transaction()
            for document in read_documents(store, "demo", 0, 5):
                zombie.producer.send(topic, key=b"demo", value=document.body, partition=zombie.partition,
                                     headers=headers_of(document))
            zombie.producer.flush()
            successor = PlatformPublisher(store, s, reader, "demo")  # fences the zombie, aborts its records
            assert successor.published_seq == 0
            with pytest.raises(ProducerFencedError):
                zombie.producer.commit_transaction()
            while successor.publish_next():
                pass
            successor.close()
            zombie.close()
            reader.close()
        assert_every_document_once_in_order(worked_db, topic_records(real_kafka, topic))
        assert cli(*publish_args(real_kafka, topic, "--until-caught-up"), db=worked_db).returncode == 0
        assert_every_document_once_in_order(worked_db, topic_records(real_kafka, topic))
    finally:
        admin.delete_topics([topic])
        admin.close()
