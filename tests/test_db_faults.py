"""Faults at the database: the connection dropped before, during and after a
commit, through a TCP proxy in front of the real PostgreSQL that the test
controls.  Whatever happens, the outcomes a writer reports are what the log
holds, and no reject of one offering is stored twice."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from conftest import EXAMPLES

from ledger.audit.verify import verify
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.sources import Offered
from ledger.storage import store as store_module
from ledger.storage.dialect import DbUrl
from ledger.storage.store import OutcomeUnknown, Store

LINES = (EXAMPLES / "worked.jsonl").read_bytes().splitlines()
# psycopg ends a transaction with a simple-protocol query: 'Q', its length, "COMMIT\0".
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"
# How long the proxy lets the server read a COMMIT before it cuts the connection.
SERVER_READ_S = 0.3


class Proxy:
    """Relays TCP between clients and PostgreSQL; `arm(mode)` makes it cut the
    next connection that commits: "before" drops the COMMIT unsent, "after"
    delivers it and drops the server's answer.  `down` (after the next
    commit's cut) cuts every connection and turns new ones away, as a
    database that went down would, until `up`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode: str | None = None
        self.refuse = False
        self.go_down_after_cut = False
        self.cuts = 0
        self.open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str, *, then_down: bool = False) -> None:
        with self._lock:
            self.mode = mode
            self.go_down_after_cut = then_down

    def up(self) -> None:
        self.refuse = False

    def _down(self) -> None:
        self.refuse = True
        for s in list(self.open):
            _close(s)

    def _take(self) -> str | None:
        with self._lock:
            mode, self.mode = self.mode, None
            if mode is not None:
                self.cuts += 1
            return mode

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.refuse:
                client.close()
                continue
            server = socket.create_connection(self.target)
            self.open.update((client, server))
            muted = threading.Event()  # set: the server's answers are dropped
            threading.Thread(target=self._client_to_server, args=(client, server, muted), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, muted), daemon=True).start()

    def _client_to_server(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if COMMIT in data and self.mode is not None:
                    mode = self._take()
                    if mode == "before":
                        return  # the server never sees the COMMIT: it rolls back when we hang up
                    muted.set()
                    server.sendall(data)
                    time.sleep(SERVER_READ_S)  # it commits; its answer goes nowhere
                    if self.go_down_after_cut:
                        self._down()
                    return
                server.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, server):
                _close(s)

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket, muted: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not muted.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@pytest.fixture
def proxied(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Proxy]]:
    """(direct URL, URL through the proxy, the proxy)."""
    # The proxy must read the protocol: Debian's server offers TLS (ssl = on,
    # its snakeoil certificate), which libpq takes by default.
    monkeypatch.setenv("PGSSLMODE", "disable")
    pg = DbUrl.parse(pg_url).pg
    assert pg is not None
    proxy = Proxy(pg["host"], pg["port"])
    Store(pg_url).close()  # the schema, created directly
    yield pg_url, f"postgresql://{pg['user']}@127.0.0.1:{proxy.port}/{pg['dbname']}", proxy


def offered(lines: list[bytes], first: int) -> list[Offered]:
    return [Offered(line, f"worked.jsonl:{first + i}") for i, line in enumerate(lines)]


def stored(direct_url: str) -> tuple[list[bytes], list[tuple[str, str]]]:
    """The log and the (event id, code) of every kept reject, read directly."""
    with Store(direct_url) as store:
        return ([e.state for e in store.read_log("demo")],
                [(r[2], r[3]) for r in store.rejects("demo", 1000)])


@pytest.mark.postgres
def test_a_connection_dropped_before_the_commit_writes_nothing_and_says_so(proxied):
    direct, url, proxy = proxied
    with Store(url) as store:
        ingestor = Ingestor(store)
        ingestor.ingest(offered(LINES[:8], 1))
        before = stored(direct)
        proxy.arm("before")
        with pytest.raises(Exception):
            ingestor.ingest(offered(LINES[8:], 9))
        assert proxy.cuts == 1
        assert stored(direct) == before  # nothing of the batch, not even its rejects
        outcomes = ingestor.ingest(offered(LINES[8:], 9))  # the resend decides it again, whole
    log, rejects = stored(direct)
    assert [o.seq for o in outcomes if o.outcome == "accepted"] == list(range(9, 14)) and len(log) == 13
    assert sorted(rejects) == sorted({(r[0], r[1]) for r in rejects})  # each kept once
    assert len(rejects) == sum(o.outcome == "rejected" for o in outcomes)


@pytest.mark.postgres
def test_a_connection_dropped_after_the_server_committed_reports_the_committed_outcomes(proxied):
    direct, url, proxy = proxied
    with Store(url) as store:
        ingestor = Ingestor(store)
        ingestor.ingest(offered(LINES[:8], 1))
        proxy.arm("after")
        outcomes = ingestor.ingest(offered(LINES[8:], 9))  # no error: the batch's token says it committed
        assert proxy.cuts == 1
        log, rejects = stored(direct)
        accepted = [o for o in outcomes if o.outcome == "accepted"]
        assert [o.seq for o in accepted] == list(range(9, 14)) and len(log) == 13
        assert [orjson.loads(log[o.seq - 1])["id"] for o in accepted] == [o.event_id for o in accepted]
        assert sorted((o.event_id, o.code) for o in outcomes if o.outcome == "rejected") == sorted(rejects)
        # The writer goes on from the committed state: a resend is all duplicates and rejects.
        again = ingestor.ingest(offered(LINES[8:], 9))
        assert {o.outcome for o in again} <= {"duplicate", "rejected"}
        report = verify(store, "demo")
        assert report.ok, report.difference


@pytest.mark.postgres
def test_a_commit_whose_outcome_cannot_be_asked_is_not_reported(proxied, monkeypatch: pytest.MonkeyPatch):
    direct, url, proxy = proxied
    monkeypatch.setattr(store_module, "COMMIT_CHECK_S", 1.0)
    with Store(url) as store:
        ingestor = Ingestor(store)
        ingestor.ingest(offered(LINES[:8], 1))
        proxy.arm("after", then_down=True)  # the database is gone as the writer tries to ask
        with pytest.raises(OutcomeUnknown):
            ingestor.ingest(offered(LINES[8:], 9))
        proxy.up()
        again = ingestor.ingest(offered(LINES[8:], 9))  # it had committed: the resend says so
    assert {o.outcome for o in again} <= {"duplicate", "rejected"}
    log, _ = stored(direct)
    assert len(log) == 13


def test_a_writer_leaves_no_row_behind_when_it_closes(sqlite_url: str):
    """peerledger_writes holds a row per running writer, not one per process ever run."""
    for _ in range(3):
        with Store(sqlite_url) as store:
            Ingestor(store).ingest(offered(LINES[:3], 1))
    with Store(sqlite_url) as store:
        assert store.query("SELECT COUNT(*) FROM peerledger_writes")[0][0] == 0
