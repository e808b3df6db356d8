"""deploy/'s process types on one machine (`peerledger cluster`) against the
local PostgreSQL and librdkafka's mock Kafka cluster: 3 consume workers in
one group, 2 projection workers and the API; 300 000 events over 6
partitions and 4 platforms; one consumer killed with SIGKILL midway.  The
result must be exactly that of one `peerledger ingest` of the same file.

Run with `-s` to see the figures docs/scaling.md quotes.  The wall-clock
rate understates the workers: the mock answers a follower's SyncGroup that
arrives after the leader's with INVALID_REQUEST (a real broker returns the
assignment), that member rejoins, and each rebalance waits the session
timeout less 1 s.  So the test also prints each process's own rate while it
was busy (events over the seconds its metrics say it spent appending or
projecting), which is what the docs quote per consumer and per projector.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import fresh_pg_database
from http_helpers import make_token
from kafka import KafkaConsumer, TopicPartition
from kafka_mock import MockKafka, produce_with_librdkafka

from ledger.demo.generate import generate_many, write_jsonl
from ledger.storage.flows import tracking_name
from ledger.storage.store import Store
from ledger.storage.views import read_balances
from projections.balances import balances_digest

EVENTS = 300_000
# librdkafka's partitioner (CRC32 of the key, mod 6) puts these on partitions
# 0, 2, 4 and 5: with 3 consumers (range assignment 0-1, 2-3, 4-5) each has work.
PLATFORMS = ["north", "west", "east", "gamma"]
CONSUMERS, PROJECTORS = 3, 2
VICTIM = "consume-1"
# The victim's partitions go to the others (or to its restarted self) after
# this; the mock also waits this less 1 s in every rebalance (see above).
SESSION_TIMEOUT_MS = 3000
DEADLINE_SECONDS = 420  # the cluster's part has taken 70 to 85 s on 2 shared cores
POLL_SECONDS = 0.5
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", *args]


def free_port_run(n: int) -> int:
    """The first of n consecutive free ports (bound on every address, as the workers bind them)."""
    for _ in range(200):
        base = random.randint(20_000, 60_000)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def heads_and_tracked(store: Store) -> dict[str, tuple[int, int]]:
    return {p: (store.head(p), store.tracked_seq(tracking_name(p))) for p in PLATFORMS}


def digests(store: Store) -> dict[str, str]:
    return {p: balances_digest(read_balances(store, p)) for p in PLATFORMS}


def logs(store: Store) -> dict[str, list[bytes]]:
    return {p: [e.state for e in store.read_log(p)] for p in PLATFORMS}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def pg_figures(store: Store) -> tuple[int, int]:
    """(the server's WAL position in bytes, this database's size in bytes)."""
    (lsn, size), = store.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, pg_database_size(current_database())")
    return int(lsn), int(size)


def postgres_cpu_seconds(store: Store) -> float | None:
    """CPU seconds the PostgreSQL server has used: the postmaster, its live
    children, and the children it reaped (a closed connection's backend);
    None when the server is not a process of this machine."""
    def stat(pid: int | str) -> list[str]:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()

    (backend,), = store.query("SELECT pg_backend_pid()")
    if not (Path("/proc") / str(backend)).exists():
        return None
    postmaster = int(stat(backend)[1])  # the backend's parent
    own = stat(postmaster)
    ticks = sum(int(own[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    for path in Path("/proc").glob("[0-9]*"):
        try:
            fields = stat(path.name)
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def busy_rate(page: str, events: str, seconds: str) -> float:
    """Events per second of work of one process, from its /metrics."""
    total = sum(samples(page, events).values())
    busy = sum(samples(page, seconds).values())
    return total / busy if busy else 0.0


def samples(page: str, name: str) -> dict[str, float]:
    """label text -> value of every sample of the metric `name` (Prometheus text)."""
    out = {}
    for line in page.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            out[series[len(name):]] = float(value)
    return out


def topic_offsets(bootstrap: str, topic: str, group: str) -> dict[str, dict[int, int]]:
    """Per partition: the first offset the mock still keeps, the end offset, the group's committed offset."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        return {"starts": {tp.partition: o for tp, o in c.beginning_offsets(tps).items()},
                "ends": {tp.partition: o for tp, o in c.end_offsets(tps).items()},
                "committed": {tp.partition: c.committed(tp) or 0 for tp in tps}}
    finally:
        c.close()


class ClusterProcess:
    """`peerledger cluster --json` as a child; its lifecycle lines are read as they come."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, env=BASE_ENV,
                                        start_new_session=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def pid_of(self, name: str) -> int | None:
        started = [e for e in self.drain() if e["event"] == "started" and e["name"] == name]
        return started[-1]["pid"] if started else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=150)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self._log.close()
        self._reader.join(timeout=10)  # every line it printed is in `events`
        return code


@pytest.mark.postgres
@pytest.mark.slow
def test_a_cluster_of_3_consumers_one_killed_2_projectors_and_the_api_ends_with_the_digests_of_one_ingest(
        mock_kafka: MockKafka, tmp_path: Path):
    figures: dict[str, Any] = {"events": EVENTS, "platforms": len(PLATFORMS), "partitions": 6}
    t = time.monotonic()
    stream = tmp_path / "stream.jsonl"
    write_jsonl(stream, generate_many(300, EVENTS, PLATFORMS))
    figures["generate_s"] = time.monotonic() - t

    bootstrap = mock_kafka.bootstrap_servers
    topic = mock_kafka.new_topic("deploy")
    t = time.monotonic()
    assert produce_with_librdkafka(bootstrap, topic, stream) == EVENTS
    figures["produce_s"] = time.monotonic() - t
    group = f"deploy-{random.getrandbits(32):08x}"
    offsets = topic_offsets(bootstrap, topic, group)
    # The mock drops a partition's oldest batches past 5 MiB: it kept them all.
    assert set(offsets["starts"].values()) == {0} and sum(offsets["ends"].values()) == EVENTS, offsets

    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    t = time.monotonic()
    r = subprocess.run(cli("ingest", str(stream), "--json", "--db", reference), capture_output=True, text=True,
                       env=BASE_ENV, timeout=DEADLINE_SECONDS)
    figures["reference_ingest_s"] = time.monotonic() - t
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["accepted"] == EVENTS
    with Store(reference) as store:
        # The cluster is done when every platform is at the reference's head
        # and its projection workers have brought the derived views there.
        expected = {p: (head, head) for p, (head, _) in heads_and_tracked(store).items()}
        want_digests, want_logs = digests(store), logs(store)
    assert sum(head for head, _ in expected.values()) == EVENTS

    # One Store, opened before the cluster starts: opening one on PostgreSQL runs
    # CREATE ... IF NOT EXISTS, whose table locks can deadlock with a running append.
    with fresh_pg_database() as db, Store(db) as store:
        token = make_token(db, "admin", None)
        metrics_base = free_port_run(CONSUMERS + PROJECTORS)
        api_port = free_port_run(1)
        wal_before, _ = pg_figures(store)
        pg_cpu_before = postgres_cpu_seconds(store)
        cluster = ClusterProcess(cli(
            "cluster", "--json", "--db", db, "--bootstrap-servers", bootstrap, "--topic", topic, "--group", group,
            "--consumers", str(CONSUMERS), "--projectors", str(PROJECTORS), "--api-port", str(api_port),
            "--metrics-base-port", str(metrics_base), "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            # The mock answers LeaveGroup only in its v0-v2 form: speak Kafka 2.3.
            "--api-version", "2.3"), tmp_path / "cluster.log")
        try:
            started = time.monotonic()
            deadline = started + DEADLINE_SECONDS
            killed_at: int | None = None
            appended_s: float | None = None
            while True:
                assert cluster.process.poll() is None, cluster.log()
                now = heads_and_tracked(store)
                assert time.monotonic() < deadline, f"not done in time: {now}\n{cluster.log()}"
                in_log = sum(head for head, _ in now.values())
                if killed_at is None and in_log >= EVENTS // 3:
                    victim = cluster.pid_of(VICTIM)
                    assert victim is not None
                    os.kill(victim, signal.SIGKILL)
                    killed_at = in_log
                    figures["killed_at_events"] = in_log
                    figures["killed_at_s"] = time.monotonic() - started
                if appended_s is None and in_log == EVENTS:
                    appended_s = time.monotonic() - started
                if killed_at is not None and now == expected:
                    break
                time.sleep(POLL_SECONDS)
            figures["appended_s"] = appended_s
            figures["projected_s"] = time.monotonic() - started
            wal_after, db_bytes = pg_figures(store)
            figures["wal_bytes_per_event"] = (wal_after - wal_before) / EVENTS  # the server's: others' writes too
            figures["db_bytes_per_event"] = db_bytes / EVENTS
            pg_cpu_after = postgres_cpu_seconds(store)
            if pg_cpu_before is not None and pg_cpu_after is not None:
                figures["postgres_cpu_us_per_event"] = (pg_cpu_after - pg_cpu_before) / EVENTS * 1e6

            events = cluster.drain()
            assert killed_at is not None and 0 < killed_at < EVENTS
            exits = [(e["name"], e["status"]) for e in events if e["event"] == "exited"]
            figures["exits"] = exits  # the victim's; any other is a restart the policy absorbed
            assert (VICTIM, -signal.SIGKILL) in exits
            assert any(e["event"] == "started" and e["name"] == VICTIM and e["restarts"] >= 1 for e in events)
            offsets = topic_offsets(bootstrap, topic, group)
            assert offsets["committed"] == offsets["ends"]

            # Every process answers its probes; the restarted consumer is back in the group.
            ready_deadline = time.monotonic() + 60
            ports = [metrics_base + i for i in range(CONSUMERS + PROJECTORS)] + [api_port]
            while any(get(f"http://127.0.0.1:{port}/readyz")[0] != 200 for port in ports):
                assert time.monotonic() < ready_deadline, [get(f"http://127.0.0.1:{p}/readyz") for p in ports]
                time.sleep(POLL_SECONDS)
            assert all(get(f"http://127.0.0.1:{port}/healthz")[0] == 200 for port in ports)

            # The projection workers split the platforms and report them at the head.
            pages = [get(f"http://127.0.0.1:{metrics_base + CONSUMERS + j}/metrics")[1] for j in range(PROJECTORS)]
            claimed = [samples(page, "peerledger_projection_platforms_claimed")[""] for page in pages]
            assert sum(claimed) == len(PLATFORMS) and min(claimed) >= 1, claimed
            applied = {label: v for page in pages
                       for label, v in samples(page, "peerledger_projection_applied_seq").items()}
            assert applied == {f'{{platform="{p}"}}': float(expected[p][0]) for p in PLATFORMS}
            consumer_pages = [get(f"http://127.0.0.1:{metrics_base + i}/metrics")[1] for i in range(CONSUMERS)]
            accepted = sum(samples(page, "peerledger_events_accepted_total").get('{source="kafka"}', 0)
                           for page in consumer_pages)
            assert 0 < accepted <= EVENTS  # the victim's counts died with it
            figures["consumer_busy_events_per_s"] = [
                busy_rate(page, "peerledger_kafka_messages_consumed_total",
                          "peerledger_batch_append_latency_seconds_sum") for page in consumer_pages]
            figures["projector_busy_events_per_s"] = [
                busy_rate(page, "peerledger_projection_events_total", "peerledger_projection_batch_seconds_sum")
                for page in pages]

            # Exactly the ledger of one ingest: the same logs, read models, digests, by every route.
            assert digests(store) == want_digests
            assert logs(store) == want_logs
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                for p in PLATFORMS:
                    doc = api.get(f"/v1/platforms/{p}/digest").json()
                    assert doc["digest"] == want_digests[p]
            p = PLATFORMS[0]  # the CLI answers as the API (one platform: each run costs a start-up)
            r = subprocess.run(cli("digest", "--platform", p, "--db", db), capture_output=True, text=True,
                               env=BASE_ENV, timeout=60)
            assert r.stdout.strip() == want_digests[p], r.stderr
        finally:
            status = cluster.stop()
        assert status == 0, cluster.log()
        stopped = [e for e in cluster.drain() if e["event"] == "stopped"]
        assert sorted(e["name"] for e in stopped) == sorted(
            [f"consume-{i}" for i in range(CONSUMERS)] + [f"project-{j}" for j in range(PROJECTORS)] + ["api"])
        assert [e for e in stopped if e["status"] != 0] == [], cluster.log()

    figures["cluster_events_per_s"] = EVENTS / figures["projected_s"]
    figures["append_events_per_s"] = EVENTS / figures["appended_s"]
    figures["reference_events_per_s"] = EVENTS / figures["reference_ingest_s"]
    print("\ncluster figures: " + json.dumps(figures, default=str, indent=1))


def test_without_restarts_the_first_exit_stops_the_cluster_with_that_status(tmp_path: Path):
    # A topic name consume refuses: the consumer exits 1 at once, before any Kafka request.
    metrics_base = free_port_run(2)
    api_port = free_port_run(1)
    cluster = ClusterProcess(cli(
        "cluster", "--json", "--no-restart", "--db", f"sqlite:///{tmp_path / 'ledger.db'}",
        "--bootstrap-servers", "127.0.0.1:9", "--topic", "not a topic!", "--consumers", "1", "--projectors", "1",
        "--metrics-base-port", str(metrics_base), "--api-port", str(api_port)), tmp_path / "cluster.log")
    status = cluster.process.wait(timeout=120)
    cluster.stop()
    events = cluster.drain()
    assert status == 1, cluster.log()
    assert [(e["name"], e["status"]) for e in events if e["event"] == "exited"] == [("consume-0", 1)]
    assert not any(e["event"] == "restarting" for e in events)
    assert sorted(e["name"] for e in events if e["event"] == "stopped") == ["api", "project-0"]


def test_cluster_settings_refuse_overlapping_ports_and_unbounded_worker_counts():
    from ledger.cli.cluster import WORKERS_MAX, ClusterSettings

    with pytest.raises(ValueError, match="falls among the metrics ports"):
        ClusterSettings("sqlite:///x.db", "k:9092", "events", consumers=3, projectors=2, api_port=9466,
                        metrics_base_port=9464)
    with pytest.raises(ValueError, match="--consumers"):
        ClusterSettings("sqlite:///x.db", "k:9092", "events", consumers=WORKERS_MAX + 1)
    with pytest.raises(ValueError, match="--projectors"):
        ClusterSettings("sqlite:///x.db", "k:9092", "events", projectors=0)
