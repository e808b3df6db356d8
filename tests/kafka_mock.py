"""An in-process Kafka cluster for the Kafka tests, the deploy test and the bench: librdkafka's mock.

librdkafka (shipped inside the `confluent-kafka` wheel) contains a mock
cluster that speaks the real Kafka wire protocol on loopback sockets:
produce, fetch, list offsets, consumer groups with rebalances and offset
commits.  kafka-python talks to it exactly as to a broker.

Why ctypes: the mock does not implement CreateTopics, and topics it creates
on demand have 4 partitions.  A topic with a chosen partition count is made
with `rd_kafka_mock_topic_create`, part of librdkafka's C API
(`rdkafka_mock.h`) that the Python binding does not wrap; so the cluster is
started through that C API (`rd_kafka_mock_cluster_new` on a producer handle
of our own) from the very library `confluent_kafka` loads.  It lives as long
as the `MockKafka` object; `close()` tears it down.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

BROKERS = 3
PARTITIONS = 6
RD_KAFKA_PRODUCER = 0


def _librdkafka() -> ctypes.CDLL:
    import confluent_kafka

    site = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    candidates = (
        glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*"))  # manylinux wheels
        + glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__), ".dylibs", "librdkafka*"))  # macOS
    )
    path = candidates[0] if candidates else ctypes.util.find_library("rdkafka")
    if not path:
        raise RuntimeError("librdkafka not found beside confluent_kafka nor on the system")
    lib = ctypes.CDLL(path)
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for name, restype, argtypes in (
        ("rd_kafka_conf_new", p, []),
        ("rd_kafka_new", p, [i, p, s, ctypes.c_size_t]),
        ("rd_kafka_destroy", None, [p]),
        ("rd_kafka_mock_cluster_new", p, [p, i]),
        ("rd_kafka_mock_cluster_destroy", None, [p]),
        ("rd_kafka_mock_cluster_bootstraps", s, [p]),
        ("rd_kafka_mock_topic_create", i, [p, s, i, i]),
        ("rd_kafka_mock_group_initial_rebalance_delay_ms", None, [p, i]),
        ("rd_kafka_mock_push_request_errors_array", None, [p, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(i)]),
        ("rd_kafka_mock_clear_request_errors", None, [p, ctypes.c_int16]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class MockKafka:
    """A mock cluster of `brokers` brokers on 127.0.0.1, alive until close()."""

    def __init__(self, brokers: int = BROKERS) -> None:
        self._lib = lib = _librdkafka()
        errstr = ctypes.create_string_buffer(512)
        self._rk = lib.rd_kafka_new(RD_KAFKA_PRODUCER, lib.rd_kafka_conf_new(), errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(errstr.value.decode())
        self._cluster = lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._cluster:
            lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        # A real broker waits 3 s for more members before the first
        # assignment of a new group; tests start consumers on purpose.
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._cluster, 0)
        self.bootstrap_servers: str = lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create_topic(self, name: str, partitions: int = PARTITIONS, replication: int = BROKERS) -> str:
        err = self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, replication)
        if err:
            raise RuntimeError(f"rd_kafka_mock_topic_create({name!r}) failed with error {err}")
        return name

    def new_topic(self, prefix: str, partitions: int = PARTITIONS) -> str:
        """A fresh topic (and its dead-letter topic), so tests never share offsets."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.create_topic(f"{name}.rejected", partitions=1)
        return self.create_topic(name, partitions)

    @contextlib.contextmanager
    def failing(self, api_key: int, error_code: int, count: int) -> Iterator[None]:
        """The next `count` requests of `api_key` (any client, any broker) fail
        with `error_code`; injected errors left over are cleared on exit."""
        errors = (ctypes.c_int * count)(*([error_code] * count))
        self._lib.rd_kafka_mock_push_request_errors_array(self._cluster, api_key, count, errors)
        try:
            yield
        finally:
            self._lib.rd_kafka_mock_clear_request_errors(self._cluster, api_key)

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._lib.rd_kafka_destroy(self._rk)
            self._cluster = self._rk = None


def produce_with_librdkafka(bootstrap: str, topic: str, path: Path) -> int:
    """Publish a JSON Lines file as a platform would with librdkafka: several
    times faster than kafka-python's producer, and with another default
    partitioner (CRC32, not murmur2): all the ledger needs is one partition
    per key."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "compression.type": "gzip", "linger.ms": 20, "queue.buffering.max.messages": 200_000})
    sent = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            key = orjson.loads(line)["platform"].encode()
            while True:
                try:
                    producer.produce(topic, key=key, value=line)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.1)
            producer.poll(0)
            sent += 1
    assert producer.flush(60) == 0
    return sent
