"""Kafka ingestion against a real wire-protocol peer (librdkafka's mock cluster:
3 brokers, topics of 6 partitions), and against a real broker when
KAFKA_BOOTSTRAP_SERVERS is set.

The streams' platforms are chosen so that their keys land on partitions 0, 2
and 5 (kafka-python's murmur2 partitioner): with two consumers in a group
(range assignment 0-2 / 3-5) both have work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from http_helpers import free_port
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka_mock import MockKafka, produce_with_librdkafka

from ledger.audit.verify import verify
from ledger.demo.generate import generate_many, write_jsonl
from ledger.kafka.consumer import (
    HEADER_REASON_CODE,
    HEADER_REASON_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_VALUE_BYTES,
    ConsumerSettings,
    LedgerConsumer,
)
from ledger.ops import metrics
from ledger.storage.store import Store
from ledger.storage.views import read_balances
from projections.balances import balances_digest

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
PLATFORMS = ["east", "north", "south"]  # partitions 0, 2, 5
BIG_EVENTS = 100_000
# A dead consumer's partitions go to the others after this; short, so that
# the restarts of the crash tests wait little.
SESSION_TIMEOUT_MS = 3000
IDLE_SECONDS = 1.0
PRODUCE_API_KEY = 0


# -- helpers ----------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", *args]


def consume_cmd(bootstrap: str, topic: str, db: str, group: str, *extra: str) -> list[str]:
    return cli("consume", "--bootstrap-servers", bootstrap, "--topic", topic, "--db", db, "--group", group,
               "--stop-when-idle", str(IDLE_SECONDS), "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
               "--json", *extra)


def consume(bootstrap: str, topic: str, db: str, group: str, *extra: str) -> dict[str, Any]:
    r = subprocess.run(consume_cmd(bootstrap, topic, db, group, *extra), capture_output=True, text=True,
                       env=BASE_ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def produce(bootstrap: str, topic: str, path: Path) -> dict[str, Any]:
    r = subprocess.run(cli("produce", str(path), "--bootstrap-servers", bootstrap, "--topic", topic, "--json"),
                       capture_output=True, text=True, env=BASE_ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def ingest_reference(stream: Path, db_path: Path) -> str:
    url = f"sqlite:///{db_path}"
    r = subprocess.run(cli("ingest", str(stream), "--json", "--db", url), capture_output=True, text=True,
                       env=BASE_ENV, timeout=600)
    assert r.returncode in (0, 3), r.stderr[-3000:]
    return url


def logs(db: str) -> dict[str, list[bytes]]:
    with Store(db) as store:
        return {p: [e.state for e in store.read_log(p)] for p in store.platforms()}


def digests(db: str) -> dict[str, str]:
    with Store(db) as store:
        return {p: balances_digest(read_balances(store, p)) for p in store.platforms()}


def appended(db: str) -> int:
    with Store(db) as store:
        return sum(store.head(p) for p in PLATFORMS)


def rejects_by_source(db: str) -> dict[str, list[str]]:
    """source -> the codes it was rejected with (a redelivered message twice)."""
    with Store(db) as store:
        out: dict[str, list[str]] = {}
        for row in store.rejects(None, 100_000):
            out.setdefault(row[7], []).append(row[3])
        return out


def topic_offsets(bootstrap: str, topic: str, group: str | None = None) -> dict[int, int]:
    """partition -> the group's committed offset (or, without a group, the end offset)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        if group is None:
            return {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        return {tp.partition: c.committed(tp) or 0 for tp in tps}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every message of a topic, each partition in offset order."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        c.assign(tps)
        c.seek_to_beginning()
        end = c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                out.extend(records)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def send_raw(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    for key, value in messages:
        producer.send(topic, key=key, value=value, partition=0)  # one partition: their order is the test's
    producer.flush()
    producer.close()


def consume_in_process(bootstrap: str, topic: str, db: str, **settings: Any) -> LedgerConsumer:
    settings.setdefault("stop_when_idle_seconds", 0.5)
    settings.setdefault("projector", "inline")
    with Store(db) as store:
        consumer = LedgerConsumer(store, ConsumerSettings(bootstrap, topic, group_id=uuid.uuid4().hex, **settings))
        consumer.run()
    return consumer


def event(platform: str, event_id: str, type_: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 1, "id": event_id, "platform": platform, "type": type_,
                         "at": "2026-11-26T10:00:00Z", "data": data})


# -- the 100 000-event stream, produced once, consumed once ---------------------


@pytest.fixture(scope="module")
def big(mock_kafka: MockKafka, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("big")
    stream = tmp / "stream.jsonl"
    write_jsonl(stream, generate_many(2026, BIG_EVENTS, PLATFORMS))
    topic = mock_kafka.new_topic("big")
    assert produce_with_librdkafka(mock_kafka.bootstrap_servers, topic, stream) == BIG_EVENTS
    reference = ingest_reference(stream, tmp / "reference.db")
    db = f"sqlite:///{tmp / 'consumed.db'}"
    started = time.monotonic()
    summary = consume(mock_kafka.bootstrap_servers, topic, db, "big")
    return {"topic": topic, "db": db, "reference": reference, "summary": summary,
            "seconds": time.monotonic() - started}


def test_consume_of_100k_events_over_three_platforms_gives_the_digests_of_ingest(big: dict[str, Any],
                                                                                 mock_kafka: MockKafka):
    s = big["summary"]
    assert (s["consumed"], s["accepted"], s["duplicate"], s["rejected"]) == (BIG_EVENTS, BIG_EVENTS, 0, 0)
    assert logs(big["db"]) == logs(big["reference"])
    assert digests(big["db"]) == digests(big["reference"])  # the read models are at the head
    ends = topic_offsets(mock_kafka.bootstrap_servers, big["topic"])
    assert topic_offsets(mock_kafka.bootstrap_servers, big["topic"], "big") == ends
    assert sum(ends.values()) == BIG_EVENTS
    print(f"\n100k events consumed in {big['seconds']:.1f} s ({BIG_EVENTS / big['seconds']:,.0f} events/s)")


def test_replay_of_the_whole_topic_in_a_new_group_is_all_duplicates(big: dict[str, Any], mock_kafka: MockKafka):
    before = digests(big["db"])
    s = consume(mock_kafka.bootstrap_servers, big["topic"], big["db"], "replay")
    assert (s["consumed"], s["accepted"], s["duplicate"], s["rejected"]) == (BIG_EVENTS, 0, BIG_EVENTS, 0)
    assert digests(big["db"]) == before
    assert logs(big["db"]) == logs(big["reference"])


# -- crashes and groups ---------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_stream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("crash")
    stream = tmp / "stream.jsonl"
    write_jsonl(stream, generate_many(17, 16_000, PLATFORMS, bad_fraction_ppm=3000))
    reference = ingest_reference(stream, tmp / "reference.db")
    return {"path": stream, "reference": reference, "lines": len(stream.read_bytes().splitlines())}


def start_consumer(cmd: list[str]) -> subprocess.Popen[bytes]:
    # Its own process group: a kill takes the consumer and its projector
    # process together, as a crashed container would.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=BASE_ENV,
                            start_new_session=True)


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def wait_for_log(db: str, proc: subprocess.Popen[bytes], events: int, timeout_seconds: float = 120) -> None:
    deadline = time.monotonic() + timeout_seconds
    with Store(db) as watcher:
        while proc.poll() is None and sum(watcher.head(p) for p in PLATFORMS) < events:
            assert time.monotonic() < deadline, "the consumer made no progress"
            time.sleep(0.005)
    assert proc.poll() is None, "the consumer finished before the kill point"


def assert_same_ledger_and_every_reject_dead_lettered(db: str, reference: str, bootstrap: str, topic: str):
    assert logs(db) == logs(reference)  # nothing lost, nothing doubled, same order
    assert digests(db) == digests(reference)
    with Store(db) as store:
        for p in PLATFORMS:
            assert verify(store, p).ok
    # The rejects store is exactly-once (a reject is stored with its
    # partition's offset, and nothing the ledger holds is read again), with
    # the reference's codes; the dead-letter topic is at-least-once (a kill
    # between a dead letter's acknowledgement and its batch's transaction
    # sends it again), with the source to deduplicate by.
    kept = rejects_by_source(db)
    codes_kept = sorted(code for codes in kept.values() for code in codes)
    assert kept and codes_kept == sorted(code for codes in rejects_by_source(reference).values() for code in codes)
    assert all(len(codes) == 1 for codes in kept.values())
    dead = {(h[HEADER_SOURCE_PARTITION], h[HEADER_SOURCE_OFFSET])
            for h in map(headers, read_topic(bootstrap, topic + ".rejected"))}
    assert dead == {tuple(source.rsplit("/", 2)[1:]) for source in kept}


@pytest.mark.slow
def test_kill_9_at_random_points_then_restart_loses_nothing_and_doubles_nothing(
        crash_stream: dict[str, Any], mock_kafka: MockKafka, tmp_path: Path):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("crash")
    produce(bootstrap, topic, crash_stream["path"])
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    total = sum(len(v) for v in logs(crash_stream["reference"]).values())
    rng = random.Random(9)
    # One kill point per quarter of the log (not its last batches), each past
    # the one before, so every kill lands while events are being appended
    # (mid-batch, between append and commit, during a dead letter: wherever).
    quarter = (total - 3000) // 4
    kill_points = sorted(rng.randrange(i * quarter + 500, (i + 1) * quarter - 500) for i in range(4))
    for point in kill_points:
        proc = start_consumer(consume_cmd(bootstrap, topic, db, "crash"))
        wait_for_log(db, proc, point)
        kill_9(proc)
    killed_at = appended(db)
    summary = consume(bootstrap, topic, db, "crash")
    print(f"\nkill -9 at {kill_points} appended events; {killed_at} of {total} appended before the last "
          f"restart; the last run: {summary}; digests {digests(db)}")
    assert killed_at < total
    assert summary["accepted"] == total - killed_at
    assert_same_ledger_and_every_reject_dead_lettered(db, crash_stream["reference"], bootstrap, topic)
    assert topic_offsets(bootstrap, topic, "crash") == topic_offsets(bootstrap, topic)


@pytest.fixture(scope="module")
def pair_stream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Long enough that a second member joins, and the group rebalances
    (the mock needs up to a session timeout for it), well before the end."""
    tmp = tmp_path_factory.mktemp("pair")
    stream = tmp / "stream.jsonl"
    write_jsonl(stream, generate_many(19, 60_000, PLATFORMS, bad_fraction_ppm=3000))
    return {"path": stream, "reference": ingest_reference(stream, tmp / "reference.db")}


def accepted_by(port: int) -> float:
    """The events a running consumer has appended itself (its own counter)."""
    try:
        text = scrape(port)
    except OSError:
        return 0.0  # not serving yet
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('peerledger_events_accepted_total{source="kafka"}'))


@pytest.mark.slow
# librdkafka's mock cluster now and then fails a group's sync with a fatal
# error while a member dies mid-rebalance (a mock quirk, see docs/kafka.md);
# one more run separates that from a ledger fault, which would fail every run.
@pytest.mark.flaky(reruns=1)
def test_two_consumers_in_one_group_one_killed_midway_give_the_same_digests(
        pair_stream: dict[str, Any], mock_kafka: MockKafka, tmp_path: Path):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("pair")
    produce(bootstrap, topic, pair_stream["path"])
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    total = sum(len(v) for v in logs(pair_stream["reference"]).values())
    Store(db).close()  # two processes creating one new SQLite file at once collide
    ports = {"survivor": free_port(), "victim": free_port()}
    survivor = start_consumer(consume_cmd(bootstrap, topic, db, "pair", "--metrics-port", str(ports["survivor"])))
    victim = start_consumer(consume_cmd(bootstrap, topic, db, "pair", "--metrics-port", str(ports["victim"])))
    # Kill the victim once both have appended events of their own: they
    # shared the partitions, and the victim leaves work behind.
    deadline = time.monotonic() + 120
    while not (accepted_by(ports["survivor"]) > 0 and accepted_by(ports["victim"]) > 0):
        assert survivor.poll() is None and victim.poll() is None, "a consumer finished before both had appended"
        assert time.monotonic() < deadline, "the two consumers never both appended"
        time.sleep(0.02)
    kill_9(victim)
    assert appended(db) < total, "the kill came after the end: nothing was left to take over"
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert 0 < summary["accepted"] < total  # the victim appended the rest
    assert summary["assignments"] >= 2  # it took over the victim's partitions
    assert_same_ledger_and_every_reject_dead_lettered(db, pair_stream["reference"], bootstrap, topic)
    assert topic_offsets(bootstrap, topic, "pair") == topic_offsets(bootstrap, topic)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_batch_commits_what_is_appended_leaves_the_group_and_exits_0(
        signum: int, crash_stream: dict[str, Any], mock_kafka: MockKafka, tmp_path: Path):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("signal")
    clean = tmp_path / "clean.jsonl"  # without bad events: committed offsets then count appended events
    write_jsonl(clean, generate_many(5, 12_000, PLATFORMS))
    produce(bootstrap, topic, clean)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    # The mock answers LeaveGroup only in its v0-v2 form: speak Kafka 2.3.
    cmd = [c for c in consume_cmd(bootstrap, topic, db, "signal", "--api-version", "2.3")]
    cmd[cmd.index("--stop-when-idle"):cmd.index("--stop-when-idle") + 2] = []  # run until the signal
    proc = start_consumer(cmd)
    wait_for_log(db, proc, 3000)
    os.killpg(proc.pid, signum)  # the whole group, as a terminal's Ctrl-C or a supervisor does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    committed = topic_offsets(bootstrap, topic, "signal")
    assert 3000 <= sum(committed.values()) == summary["accepted"] == appended(db) < 12_000
    with Store(db) as store:  # the projector caught up before the exit
        assert {p: balances_digest(read_balances(store, p)) for p in PLATFORMS} == {
            p: verify(store, p).digest for p in PLATFORMS}
    # It left the group: a new member is assigned at once, not after the
    # old one's session timeout.
    started = time.monotonic()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id="signal", api_version=(2, 3), enable_auto_commit=False,
                      session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=SESSION_TIMEOUT_MS // 3)
    c.subscribe([topic])
    while not c.assignment():
        c.poll(timeout_ms=100)
    c.close()
    assert time.monotonic() - started < SESSION_TIMEOUT_MS / 1000


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(c) for c in f.read().split()}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_projector_process_stops_when_the_consumer_is_killed(mock_kafka: MockKafka, tmp_path: Path):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("orphan")
    stream = tmp_path / "s.jsonl"
    write_jsonl(stream, generate_many(6, 6_000, PLATFORMS))
    produce(bootstrap, topic, stream)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = start_consumer(consume_cmd(bootstrap, topic, db, "orphan"))
    wait_for_log(db, proc, 1000)
    projector = children(proc.pid)
    assert projector
    proc.kill()  # the consumer alone, not its process group
    proc.communicate()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in projector) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in projector)


# -- what is rejected ------------------------------------------------------------------


def test_rejected_and_unparseable_messages_are_dead_lettered_with_reasons_and_kept_as_rejects(
        mock_kafka: MockKafka, sqlite_url: str):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("dlq")
    good = [
        event("east", "e1", "prosumer.registered", {"prosumer": "ann"}),
        event("east", "e2", "contribution.recorded", {"work": "w1", "authors": {"ann": 1}}),
        event("east", "e3", "value.realized", {"value": "v1", "work": "w1", "amount": 100, "currency": "EUR"}),
    ]
    bad = {
        "not json": b"{this is not json",
        "schema": event("east", "x1", "value.realized", {"value": "v2", "work": "w1", "amount": 1.5,
                                                         "currency": "EUR"}),
        "reference": event("east", "x2", "value.realized", {"value": "v3", "work": "nowhere", "amount": 5,
                                                            "currency": "EUR"}),
    }
    messages = [(b"east", good[0]), (b"east", bad["not json"]), (b"east", good[1]), (b"east", bad["schema"]),
                (b"east", bad["reference"]), (b"east", good[2])]
    send_raw(bootstrap, topic, messages)
    consumer = consume_in_process(bootstrap, topic, sqlite_url)
    assert (consumer.summary.accepted, consumer.summary.rejected, consumer.summary.dead_lettered) == (3, 3, 3)
    with Store(sqlite_url) as store:
        assert [orjson.loads(e.state)["id"] for e in store.read_log("east")] == ["e1", "e2", "e3"]
    dead = read_topic(bootstrap, topic + ".rejected")
    expected = [(1, "invalid", bad["not json"]), (3, "invalid", bad["schema"]),
                (4, "unknown_reference", bad["reference"])]
    assert [(int(headers(r)[HEADER_SOURCE_OFFSET]), headers(r)[HEADER_REASON_CODE], r.value) for r in dead] == expected
    for r in dead:
        h = headers(r)
        assert r.key == b"east" and h[HEADER_SOURCE_TOPIC] == topic and h[HEADER_SOURCE_PARTITION] == "0"
        assert h[HEADER_REASON_MESSAGE]
    assert "not valid JSON" in headers(dead[0])[HEADER_REASON_MESSAGE]
    assert "amount" in headers(dead[1])[HEADER_REASON_MESSAGE]
    kept = rejects_by_source(sqlite_url)
    assert kept == {f"kafka:{topic}/0/{offset}": [code] for offset, code, _ in expected}


def test_a_message_keyed_by_another_platform_is_rejected_invalid(mock_kafka: MockKafka, db_url: str):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("keys")
    registered = event("east", "e1", "prosumer.registered", {"prosumer": "ann"})
    send_raw(bootstrap, topic, [(b"north", registered), (None, registered), (b"east", registered)])
    consumer = consume_in_process(bootstrap, topic, db_url)
    # Mis-keyed: rejected; unkeyed: accepted (keys are for ordering); then a duplicate.
    assert (consumer.summary.rejected, consumer.summary.accepted, consumer.summary.duplicate) == (1, 1, 1)
    [dead] = read_topic(bootstrap, topic + ".rejected")
    h = headers(dead)
    assert h[HEADER_REASON_CODE] == "invalid" and h[HEADER_SOURCE_OFFSET] == "0"
    assert "key 'north' differs from the event's platform 'east'" in h[HEADER_REASON_MESSAGE]
    with Store(db_url) as store:
        [row] = store.rejects("east", 10)
    assert row[3] == "invalid" and "differs" in row[4] and bytes(row[5]) == registered


def test_a_poison_message_never_blocks_its_partition(mock_kafka: MockKafka, sqlite_url: str):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("poison")
    huge = b'{"v":1,"pad":"' + b"x" * (1536 * 1024) + b'"}'  # over the ledger's 1 MiB and a dead letter's size
    after = event("east", "e1", "prosumer.registered", {"prosumer": "ann"})
    send_raw(bootstrap, topic, [(b"east", huge), (b"east", None), (b"\xff\xfe", after), (b"east", after)])
    consumer = consume_in_process(bootstrap, topic, sqlite_url)
    assert (consumer.summary.rejected, consumer.summary.accepted) == (3, 1)
    dead = read_topic(bootstrap, topic + ".rejected")
    assert [headers(r)[HEADER_SOURCE_OFFSET] for r in dead] == ["0", "1", "2"]
    assert headers(dead[0])[HEADER_VALUE_BYTES] == str(len(huge)) and huge.startswith(dead[0].value)
    assert "not UTF-8" in headers(dead[2])[HEADER_REASON_MESSAGE]
    assert topic_offsets(bootstrap, topic, consumer.settings.group_id)[0] == 4


def test_a_deeply_nested_message_is_rejected_and_its_partition_moves_on(mock_kafka: MockKafka, sqlite_url: str):
    """300 levels (legal JSON, which used to crash the consumer at every restart)
    and 5000 (past orjson's own limit): each `invalid`, the events after accepted."""
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("deep")
    registered = event("east", "e1", "prosumer.registered", {"prosumer": "ann"})
    deep = [registered.replace(b'"ann"}', b'"ann","name":' + b"[" * n + b"]" * n + b"}") for n in (300, 5000)]
    send_raw(bootstrap, topic, [(b"east", deep[0]), (b"east", deep[1]), (b"east", b"\f"), (b"east", registered)])
    consumer = consume_in_process(bootstrap, topic, sqlite_url)
    assert (consumer.summary.rejected, consumer.summary.accepted) == (3, 1)
    dead = read_topic(bootstrap, topic + ".rejected")
    assert [headers(r)[HEADER_SOURCE_OFFSET] for r in dead] == ["0", "1", "2"]
    assert all("deeper than 32 levels" in headers(r)[HEADER_REASON_MESSAGE] for r in dead[:2])
    assert topic_offsets(bootstrap, topic, consumer.settings.group_id)[0] == 4


# -- the commit protocol -------------------------------------------------------------------


def test_nothing_is_committed_for_a_batch_that_was_not_appended(
        mock_kafka: MockKafka, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ledger.ingest.ingestor import Ingestor

    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("fail")
    stream = tmp_path / "s.jsonl"
    write_jsonl(stream, generate_many(8, 6_000, PLATFORMS))
    produce(bootstrap, topic, stream)
    real_ingest = Ingestor.ingest
    calls = {"n": 0}

    def failing_third_batch(self: Ingestor, batch: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_ingest(self, batch, **kwargs)

    monkeypatch.setattr(Ingestor, "ingest", failing_third_batch)
    group = "fail"
    with Store(sqlite_url) as store, pytest.raises(OSError, match="disk full"):
        LedgerConsumer(store, ConsumerSettings(bootstrap, topic, group_id=group, projector="inline",
                                               batch_max_events=500)).run()
    assert calls["n"] == 3
    # Exactly the two batches before the failure are committed, in the ledger
    # and to Kafka; the third, not appended, is not.
    with Store(sqlite_url) as store:
        stored = store.kafka_offsets(group, topic)
    assert 0 < sum(stored.values()) == appended(sqlite_url) < 6_000
    assert {p: o for p, o in topic_offsets(bootstrap, topic, group).items() if o} == stored


def test_a_batch_is_appended_and_committed_only_after_its_dead_letters_are_acknowledged(
        mock_kafka: MockKafka, sqlite_url: str):
    from kafka.errors import KafkaError

    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("dlqdown")
    good = event("east", "e1", "prosumer.registered", {"prosumer": "ann"})
    send_raw(bootstrap, topic, [(b"east", good), (b"east", b"not json")])
    settings = ConsumerSettings(bootstrap, topic, group_id="dlqdown", projector="inline", stop_when_idle_seconds=0.5)
    # From now on the brokers refuse every produce request: the dead letter
    # cannot be acknowledged (29: TOPIC_AUTHORIZATION_FAILED, not retriable).
    with mock_kafka.failing(PRODUCE_API_KEY, 29, 100), Store(sqlite_url) as store, \
            pytest.raises(KafkaError) as raised:
        LedgerConsumer(store, settings).run()
    assert type(raised.value).__name__ == "TopicAuthorizationFailedError"
    assert appended(sqlite_url) == 0  # the batch was decided, not appended ...
    with Store(sqlite_url) as store:
        assert store.kafka_offsets("dlqdown", topic) == {}  # ... and its offsets stored nowhere
    assert topic_offsets(bootstrap, topic, "dlqdown") == {p: 0 for p in range(6)}


# -- producing, metrics ------------------------------------------------------------------------


def test_produce_keys_each_line_by_its_platform_and_keeps_each_platforms_order(
        mock_kafka: MockKafka, tmp_path: Path):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("produce")
    stream = tmp_path / "s.jsonl"
    write_jsonl(stream, generate_many(3, 3_000, PLATFORMS))
    with open(stream, "ab") as f:
        f.write(b"[1, 2]\n")
    assert produce(bootstrap, topic, stream) == {"sent": 3001, "unkeyed": 1, "too_long": [], "failed": 0}
    records = read_topic(bootstrap, topic)
    lines = stream.read_bytes().splitlines()
    for platform in PLATFORMS:
        mine = [r for r in records if r.key == platform.encode()]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [line for line in lines if line.startswith(b'{"') and
                                           orjson.loads(line)["platform"] == platform]
    assert [r.value for r in records if r.key is None] == [b"[1, 2]"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_count_messages_outcomes_latency_lag_and_last_seq(mock_kafka: MockKafka, sqlite_url: str):
    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("metrics")
    registered = event("east", "e1", "prosumer.registered", {"prosumer": "ann"})
    orphan = event("east", "e2", "contribution.recorded", {"work": "w1", "authors": {"nobody": 1}})
    send_raw(bootstrap, topic, [(b"east", registered), (b"east", registered), (b"east", orphan), (b"east", b"{")])
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        before = scrape(server.server_port)
        consume_in_process(bootstrap, topic, sqlite_url)
        text = scrape(server.server_port)
    finally:
        server.shutdown()

    def value(sample: str, page: str) -> float:
        for line in page.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    def delta(sample: str) -> float:
        return value(sample, text) - value(sample, before)

    assert delta(f'peerledger_kafka_messages_consumed_total{{topic="{topic}"}}') == 4
    assert delta('peerledger_events_accepted_total{source="kafka"}') == 1
    assert delta('peerledger_events_duplicate_total{source="kafka"}') == 1
    assert delta('peerledger_events_rejected_total{code="unknown_reference",source="kafka"}') == 1
    assert delta('peerledger_events_rejected_total{code="invalid",source="kafka"}') == 1
    assert delta(f'peerledger_kafka_dead_letters_total{{code="invalid",topic="{topic}.rejected"}}') == 1
    assert delta('peerledger_batch_append_latency_seconds_count{source="kafka"}') >= 1
    assert value('peerledger_last_appended_seq{platform="east"}', text) == 1
    assert value(f'peerledger_kafka_consumer_lag_messages{{partition="0",topic="{topic}"}}', text) == 0
    assert "# TYPE peerledger_batch_append_latency_seconds histogram" in text


# -- a real broker ------------------------------------------------------------------------------


def test_the_same_flow_against_a_real_broker(real_kafka: str, crash_stream: dict[str, Any], tmp_path: Path):
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"peerledger-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=real_kafka)
    try:
        replication = min(3, len(admin.describe_cluster()["brokers"]))
        admin.create_topics([NewTopic(topic, 6, replication), NewTopic(topic + ".rejected", 1, replication)])
        produce(real_kafka, topic, crash_stream["path"])
        db = f"sqlite:///{tmp_path / 'ledger.db'}"
        summary = consume(real_kafka, topic, db, "real")
        assert summary["consumed"] == crash_stream["lines"]
        assert_same_ledger_and_every_reject_dead_lettered(db, crash_stream["reference"], real_kafka, topic)
        assert topic_offsets(real_kafka, topic, "real") == topic_offsets(real_kafka, topic)
    finally:
        admin.delete_topics([topic, topic + ".rejected"])
        admin.close()


# -- offsets stored with the ledger ---------------------------------------------------------


def payout_refused_then_funded() -> list[bytes]:
    """ann's payout of 50 is refused (her balance is 0); the sale after it would fund it."""
    return [
        event("east", "r1", "prosumer.registered", {"prosumer": "ann"}),
        event("east", "c1", "contribution.recorded", {"work": "w1", "authors": {"ann": 1}}),
        event("east", "p1", "payout.issued", {"payout": "p1", "prosumer": "ann", "amount": 50, "currency": "EUR"}),
        event("east", "s1", "value.realized", {"value": "v1", "work": "w1", "amount": 100, "currency": "EUR"}),
    ]


def published_with_reference(mock_kafka: MockKafka, name: str, tmp_path: Path) -> tuple[str, list[bytes], str]:
    """The payout stream on a new topic, and the ledger `peerledger ingest` makes of it:
    (topic, lines, reference URL)."""
    topic = mock_kafka.new_topic(name)
    lines = payout_refused_then_funded()
    send_raw(mock_kafka.bootstrap_servers, topic, [(b"east", line) for line in lines])
    stream = tmp_path / "s.jsonl"
    stream.write_bytes(b"\n".join(lines) + b"\n")
    return topic, lines, ingest_reference(stream, tmp_path / "reference.db")


def test_a_crash_after_the_append_redelivers_nothing_so_a_refused_payout_stays_refused(
        mock_kafka: MockKafka, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bootstrap = mock_kafka.bootstrap_servers
    topic, _, reference = published_with_reference(mock_kafka, "crashpoint", tmp_path)

    class Crash(BaseException):
        """The process dies after the batch's transaction, before its Kafka commit."""

    def crash(self: LedgerConsumer, offsets: Any) -> None:
        if offsets:
            raise Crash

    settings = ConsumerSettings(bootstrap, topic, group_id="crashpoint", projector="inline",
                                stop_when_idle_seconds=0.5)
    with monkeypatch.context() as m, Store(db_url) as store, pytest.raises(Crash):
        m.setattr(LedgerConsumer, "_commit", crash)
        LedgerConsumer(store, settings).run()
    assert topic_offsets(bootstrap, topic, "crashpoint") == {p: 0 for p in range(6)}  # Kafka knows nothing

    with Store(db_url) as store:
        restarted = LedgerConsumer(store, settings)
        restarted.run()
    # Redelivered, p1 would be judged again against a funded balance and accepted.
    assert restarted.summary.consumed == 0
    assert logs(db_url) == logs(reference) and digests(db_url) == digests(reference)
    assert rejects_by_source(db_url) == {f"kafka:{topic}/0/2": ["insufficient_balance"]}
    assert topic_offsets(bootstrap, topic, "crashpoint")[0] == 4  # Kafka's offset caught up with the ledger's
    shown = subprocess.run(cli("kafka-offsets", "--db", db_url, "--group", "crashpoint", "--topic", topic, "--json"),
                           capture_output=True, env=BASE_ENV, timeout=60, check=True)
    assert orjson.loads(shown.stdout) == {"group": "crashpoint", "topic": topic, "offsets": {"0": 4}}


def test_a_batch_behind_the_stored_offset_is_fenced_writes_nothing_and_the_consumer_seeks_past_it(
        mock_kafka: MockKafka, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ledger.ingest.ingestor import Ingestor
    from ledger.ingest.sources import Offered
    from ledger.storage.store import OffsetAdvance

    bootstrap = mock_kafka.bootstrap_servers
    topic, lines, reference = published_with_reference(mock_kafka, "fence", tmp_path)
    real_ingest = Ingestor.ingest
    calls = {"n": 0}

    def another_consumer_got_there_first(self: Ingestor, batch: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the first three messages, appended with their offsets by someone else
            with Store(sqlite_url) as other:
                real_ingest(Ingestor(other), [Offered(line, f"kafka:{topic}/0/{i}") for i, line in enumerate(lines[:3])],
                            offsets=[OffsetAdvance("fence", topic, 0, 0, 3)])
        return real_ingest(self, batch, **kwargs)

    monkeypatch.setattr(Ingestor, "ingest", another_consumer_got_there_first)
    fenced_before = metrics.KAFKA_BATCHES_FENCED.labels(topic)._value.get()
    with Store(sqlite_url) as store:
        consumer = LedgerConsumer(store, ConsumerSettings(bootstrap, topic, group_id="fence", projector="inline",
                                                          stop_when_idle_seconds=0.5))
        consumer.run()
        assert store.kafka_offsets("fence", topic) == {0: 4}
    assert metrics.KAFKA_BATCHES_FENCED.labels(topic)._value.get() == fenced_before + 1
    # The fenced batch (all four messages) left no trace; the consumer took up at offset 3.
    assert (consumer.summary.consumed, consumer.summary.accepted, consumer.summary.duplicate) == (1, 1, 0)
    assert logs(sqlite_url) == logs(reference) and digests(sqlite_url) == digests(reference)
    assert rejects_by_source(sqlite_url) == {f"kafka:{topic}/0/2": ["insufficient_balance"]}


def test_a_fenced_append_rolls_back_events_rejects_and_offsets(db_url: str):
    from ledger.ingest.ingestor import Ingestor
    from ledger.ingest.sources import Offered
    from ledger.storage.store import OffsetAdvance, OffsetsFenced

    lines = payout_refused_then_funded()
    with Store(db_url) as store:
        store.ensure_kafka_offsets_schema()
        ingestor = Ingestor(store)
        ingestor.ingest([Offered(lines[0], "kafka:t/0/0")], offsets=[OffsetAdvance("g", "t", 0, 0, 1)])
        with pytest.raises(OffsetsFenced, match="stored at offset 1, past this batch's first message at 0"):
            ingestor.ingest([Offered(line, f"kafka:t/0/{i}") for i, line in enumerate(lines)],
                            offsets=[OffsetAdvance("g", "t", 0, 0, 4)])
        assert (store.head("east"), store.rejects(None, 10), store.kafka_offsets("g", "t")) == (1, [], {0: 1})
        # Offsets may have holes (transaction markers, compaction): a batch may start past the stored offset.
        outcomes = ingestor.ingest([Offered(line, f"kafka:t/0/{i + 5}") for i, line in enumerate(lines[1:])],
                                   offsets=[OffsetAdvance("g", "t", 0, 5, 8)])
        assert [o.outcome for o in outcomes] == ["accepted", "rejected", "accepted"]
        assert (store.head("east"), store.kafka_offsets("g", "t")) == (3, {0: 8})
