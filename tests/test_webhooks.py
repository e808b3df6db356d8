"""Webhooks (issue 19 point 3): every booking document POSTed, signed by the
Standard Webhooks scheme, to every matching endpoint, at least once.

A real HTTP receiver on loopback verifies each signature with the
`standardwebhooks` package (what a receiver would run), fails on purpose
when told to, and records what it saw.  The deliverer runs in process with a
small time scale (the retry schedule and the days before disabling shrink by
the same factor) or as `peerledger deliver` in a subprocess for kill -9.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import EXAMPLES
from standardwebhooks.webhooks import Webhook

from ledger.bookings.documents import read_documents
from ledger.storage.store import Store
from ledger.webhooks import endpoints as eps
from ledger.webhooks.delivery import ATTEMPTS_MAX, Deliverer, Settings

BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
WORKED = EXAMPLES / "worked.jsonl"
# worked.jsonl: 14 events, 13 accepted (seq 1…13), one rejected.
WORKED_SEQS = list(range(1, 14))
FAST = 1e-5  # 5 s of the retry schedule become 50 µs; 5 days become 4.3 s


def run(*args: str, db: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          env={**BASE_ENV, **(env or {})}, timeout=300, **kw)


class _Server(ThreadingHTTPServer):
    # A real receiver listens with a kernel-sized backlog; http.server's
    # default of 5 drops the SYNs of a deliverer's 16 parallel connects, each
    # then retried after 1 s.
    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """A webhook receiver: verifies, deduplicates on webhook-id, can misbehave.

    `script` is a list of statuses answered to the first POSTs (then 200);
    `hang` makes it never answer; `huge` answers 10 MiB."""

    def __init__(self, secret: str, script: list[int] | None = None, *, hang: bool = False,
                 huge: bool = False, retry_after: str | None = None) -> None:
        self.webhook = Webhook(secret)
        self.script = list(script or [])
        self.bodies: dict[str, bytes] = {}
        self.posts: Counter[str] = Counter()
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers["content-length"])
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request (kill -9): nothing to verify, nothing received
                if hang:
                    time.sleep(30)
                    return
                try:
                    receiver.webhook.verify(body, dict(self.headers.items()))
                except Exception:  # noqa: BLE001 — any failure to verify is a bad signature
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self._answer(400)
                    return
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.posts[self.headers["webhook-id"]] += 1
                    if 200 <= status < 300:
                        receiver.bodies[self.headers["webhook-id"]] = body
                if huge:
                    self.send_response(status)
                    self.send_header("content-length", str(10 * 1024 * 1024))
                    self.end_headers()
                    chunk = b"x" * 65536
                    try:
                        for _ in range(160):
                            self.wfile.write(chunk)
                    except OSError:
                        pass  # the deliverer stopped reading, as it should
                    return
                self._answer(status, retry_after)

            def _answer(self, status: int, retry_after: str | None = None) -> None:
                self.send_response(status)
                if retry_after is not None and status >= 300:
                    self.send_header("retry-after", retry_after)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def worked_db(db_url: str) -> str:
    assert run("ingest", str(WORKED), db=db_url).returncode in (0, 3)
    return db_url


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def endpoint(db: str, receivers: list[Receiver], **kw: Any) -> tuple[eps.Endpoint, Receiver]:
    """An endpoint from seq 1 and its receiver (made after the secret exists)."""
    types = kw.pop("types", None)
    holder: dict[str, Any] = {}
    with Store(db) as store:
        made, secret = eps.add_endpoint(store, "demo", "http://127.0.0.1:9/placeholder", types, from_seq=1)
        receiver = Receiver(secret, **kw)
        with store.write_transaction() as c:
            c.execute(store.dialect.sql("UPDATE peerledger_webhook_endpoints SET url = ? WHERE endpoint_id = ?"),
                      (receiver.url, made.endpoint_id))
        holder["e"] = eps.get_endpoint(store, made.endpoint_id)
    receivers.append(receiver)
    return holder["e"], receiver


def deliver(db: str, **settings: Any) -> Any:
    with Store(db) as store:
        return Deliverer(store, Settings(time_scale=settings.pop("time_scale", FAST), **settings),
                         follow=False).run()


def test_every_document_arrives_once_signed_with_its_platform_and_seq_as_id(worked_db: str, receivers: list) -> None:
    _, receiver = endpoint(worked_db, receivers)
    summary = deliver(worked_db)
    assert summary.delivered == 13 and summary.failed == 0
    assert receiver.bad_signatures == 0
    assert receiver.posts == Counter({f"demo:{s}": 1 for s in WORKED_SEQS})
    with Store(worked_db) as store:
        expected = {f"demo:{d.seq}": d.body for d in read_documents(store, "demo", 0)}
    assert receiver.bodies == expected  # the canonical bytes of EVENTS.md §9, as `bookings` prints them
    # A second run sends nothing again: the endpoint's cursor is at the head.
    assert deliver(worked_db).delivered == 0


def test_the_type_filter_sends_only_those_types(worked_db: str, receivers: list) -> None:
    _, receiver = endpoint(worked_db, receivers, types=["value.realized", "payout.issued"])
    deliver(worked_db)
    got = sorted(json.loads(b)["type"] for b in receiver.bodies.values())
    assert got == ["payout.issued", "value.realized", "value.realized", "value.realized"]


def test_a_failing_receiver_is_retried_until_it_answers_2xx(worked_db: str, receivers: list) -> None:
    made, receiver = endpoint(worked_db, receivers, script=[503, 500], retry_after="0")
    first = deliver(worked_db)
    assert first.failed == 2
    for _ in range(50):  # the retries are due after 5 s × FAST (Retry-After 0 asks for at once)
        if set(receiver.bodies) == {f"demo:{s}" for s in WORKED_SEQS}:
            break
        deliver(worked_db)
    assert set(receiver.bodies) == {f"demo:{s}" for s in WORKED_SEQS}
    with Store(worked_db) as store:
        attempts = eps.list_attempts(store, made.endpoint_id)
    assert sorted(a.status for a in attempts if a.status != 200) == [500, 503]
    assert sum(1 for a in attempts if a.status == 200) == 13


def test_410_disables_the_endpoint_at_once(worked_db: str, receivers: list) -> None:
    made, receiver = endpoint(worked_db, receivers, script=[410])
    summary = deliver(worked_db, in_flight_max=1)  # one POST at a time: the 410 is the only one
    assert summary.disabled == [made.endpoint_id]
    with Store(worked_db) as store:
        now = eps.get_endpoint(store, made.endpoint_id)
    assert now is not None and not now.enabled
    assert sum(receiver.posts.values()) == 1  # nothing after the 410
    assert run("webhooks", "enable", made.endpoint_id, db=worked_db).returncode == 0
    deliver(worked_db)
    assert set(receiver.bodies) >= {f"demo:{s}" for s in WORKED_SEQS[1:]}


def test_every_attempt_failing_ends_in_the_dead_letters_and_replay_sends_again(worked_db: str, receivers: list) -> None:
    made, receiver = endpoint(worked_db, receivers, types=["payout.issued"],
                              script=[500] * ATTEMPTS_MAX, retry_after="0")
    deadline = time.monotonic() + 60  # the shrunk schedule: about 1 s from the first attempt to the eighth
    while time.monotonic() < deadline:
        deliver(worked_db)
        with Store(worked_db) as store:
            if eps.list_dead_letters(store, made.endpoint_id):
                break
        time.sleep(0.01)
    with Store(worked_db) as store:
        dead = eps.list_dead_letters(store, made.endpoint_id)
    assert [d.seq for d in dead] == [13]
    assert receiver.posts["demo:13"] == ATTEMPTS_MAX and not receiver.bodies
    r = run("webhooks", "replay", made.endpoint_id, "--from-seq", "13", db=worked_db)
    assert r.returncode == 0, r.stderr
    deliver(worked_db)
    assert set(receiver.bodies) == {"demo:13"}


def test_a_receiver_that_never_answers_times_out_and_delays_no_other_endpoint(worked_db: str, receivers: list) -> None:
    stuck, _ = endpoint(worked_db, receivers, hang=True)
    _, healthy = endpoint(worked_db, receivers)
    started = time.monotonic()
    deliver(worked_db, request_timeout_seconds=2.0)
    assert time.monotonic() - started < 30  # 13 POSTs that hang, 16 at a time: one timeout, not 13
    for _ in range(20):  # on a loaded machine one healthy POST may time out too: its retry follows
        if set(healthy.bodies) == {f"demo:{s}" for s in WORKED_SEQS}:
            break
        deliver(worked_db, request_timeout_seconds=2.0)
    assert set(healthy.bodies) == {f"demo:{s}" for s in WORKED_SEQS}
    with Store(worked_db) as store:
        attempts = eps.list_attempts(store, stuck.endpoint_id)
    assert attempts and all(a.status is None for a in attempts)
    assert any("timeout" in (a.error or "") for a in attempts)


def test_a_10_mib_answer_is_not_read_to_its_end(worked_db: str, receivers: list) -> None:
    _, receiver = endpoint(worked_db, receivers, huge=True)
    summary = deliver(worked_db)
    assert summary.delivered == 13
    assert set(receiver.bodies) == {f"demo:{s}" for s in WORKED_SEQS}


@pytest.mark.parametrize("url, why", [
    ("ftp://example.com/x", "scheme"), ("http:///nohost", "no host"), ("https://u:p@example.com/", "password"),
    ("http://example.com/a b", "whitespace"), ("http://example.com:99999/", "port"), ("", "empty"),
])
def test_a_bad_url_is_refused_with_its_reason(sqlite_url: str, url: str, why: str) -> None:
    r = run("webhooks", "add", "--platform", "demo", "--url", url, db=sqlite_url)
    assert r.returncode != 0 and why in r.stderr.decode().lower()


def test_add_prints_the_secret_once_and_list_never(sqlite_url: str) -> None:
    r = run("webhooks", "add", "--platform", "demo", "--url", "https://example.com/h", "--json", db=sqlite_url)
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["secret"].startswith("whsec_")
    listed = run("webhooks", "list", "--platform", "demo", "--json", db=sqlite_url)
    assert added["endpoint_id"] in listed.stdout.decode() and "whsec_" not in listed.stdout.decode()
    rotated = run("webhooks", "rotate", added["endpoint_id"], "--json", db=sqlite_url)
    assert rotated.returncode == 0 and added["secret"] not in rotated.stdout.decode()
    assert run("webhooks", "remove", added["endpoint_id"], db=sqlite_url).returncode == 0
    assert added["endpoint_id"] not in run("webhooks", "list", "--platform", "demo", db=sqlite_url).stdout.decode()


def test_kill_9_of_deliver_at_random_instants_loses_no_document(db_url: str, receivers: list,
                                                                 tmp_path: Any) -> None:
    from ledger.demo.generate import generate, write_jsonl

    _, receiver = endpoint(db_url, receivers)
    stream = tmp_path / "stream.jsonl"
    write_jsonl(stream, generate(3, 3000))
    env = {"PEERLEDGER_WEBHOOK_TIME_SCALE": str(FAST)}
    ingest = subprocess.Popen([sys.executable, "-m", "ledger.cli", "ingest", str(stream), "--db", db_url],
                              env=BASE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(19)
    for _ in range(5):  # each deliverer is killed while documents commit under it
        p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "deliver", "--follow", "--db", db_url],
                             env={**BASE_ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert ingest.wait(timeout=300) in (0, 3)
    assert run("deliver", db=db_url, env=env).returncode == 0
    with Store(db_url) as store:
        head = store.head("demo")
    assert head > 2000
    assert set(receiver.bodies) == {f"demo:{s}" for s in range(1, head + 1)}  # at least once: every one arrived
    assert receiver.bad_signatures == 0
