"""Every long-running peerledger process is scrapeable and probeable: the
workers' endpoint (`ledger.ops.metrics.serve`) answers /metrics, /healthz and
/readyz, and a projection worker reports where each platform's read models are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import EXAMPLES
from http_helpers import free_port

from ledger.kafka.consumer import (
    READY_POLL_MAX_AGE_SECONDS,
    ConsumerSettings,
    LedgerConsumer,
)
from ledger.ops import metrics
from ledger.storage.store import Store

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", *args]


def test_the_worker_endpoint_answers_metrics_healthz_and_readyz(sqlite_url: str):
    Store(sqlite_url).close()  # the file exists
    server = metrics.serve(0, "127.0.0.1", (metrics.database_check(sqlite_url),))
    try:
        port = server.server_port
        status, page = get(port, "/metrics")
        assert status == 200 and "# TYPE peerledger_projection_lag_events gauge" in page
        assert get(port, "/healthz") == (200, '{"status":"ok"}')
        assert get(port, "/readyz") == (200, '{"status":"ready"}')
        assert get(port, "/nothing")[0] == 404
    finally:
        server.shutdown()


def test_readyz_is_503_with_the_first_failing_check_while_healthz_stays_200(tmp_path: Path):
    missing = metrics.database_check(f"sqlite:///{tmp_path / 'no' / 'such.db'}")
    server = metrics.serve(0, "127.0.0.1", (lambda: None, missing, lambda: "never asked"))
    try:
        assert get(server.server_port, "/readyz") == (503, '{"detail":"database unreachable: OperationalError"}')
        assert get(server.server_port, "/healthz")[0] == 200
    finally:
        server.shutdown()


def test_a_postgres_that_does_not_answer_makes_readyz_503():
    check = metrics.database_check("postgresql://postgres@127.0.0.1:1/none")
    assert check() == "database unreachable: OperationalError"


def test_a_consumer_is_ready_once_in_its_group_and_while_it_polls(sqlite_url: str):
    with Store(sqlite_url) as store:
        consumer = LedgerConsumer(store, ConsumerSettings("127.0.0.1:9", "events"))  # connects only in run()
        assert consumer.not_ready() == "not in the consumer group yet"
        consumer._on_assigned(set())  # the group's callback, as kafka-python calls it from poll
        assert consumer.not_ready() is None
        consumer._last_poll_at -= READY_POLL_MAX_AGE_SECONDS + 1
        assert (consumer.not_ready() or "").startswith("no poll completed for")


def test_project_follow_serves_probes_and_each_platforms_applied_seq_and_lag(sqlite_url: str):
    r = subprocess.run(cli("ingest", str(EXAMPLES / "worked.jsonl"), "--db", sqlite_url), capture_output=True,
                       env=BASE_ENV, timeout=120)
    assert r.returncode in (0, 3), r.stderr
    with Store(sqlite_url) as store:
        head = store.head("demo")
    port = free_port()
    proc = subprocess.Popen(cli("project", "--follow", "--metrics-port", str(port), "--db", sqlite_url),
                            env=BASE_ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, page = get(port, "/metrics")
                if f'peerledger_projection_applied_seq{{platform="demo"}} {float(head)}' in page:
                    break
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.1)
        assert 'peerledger_projection_lag_events{platform="demo"} 0.0' in page
        assert get(port, "/readyz")[0] == 200 and get(port, "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr


def test_a_metrics_port_without_follow_is_a_usage_error(sqlite_url: str):
    r = subprocess.run(cli("project", "--metrics-port", "9464", "--db", sqlite_url), capture_output=True,
                       text=True, env=BASE_ENV, timeout=60)
    assert r.returncode == 2 and "--follow" in r.stderr
