"""Existing ledgers upgrade (issue 13, item 9), on SQLite and PostgreSQL.

A database written by the peerledger of before the state lived in tables
(commit e896f68) holds the log (events, id records, rejects, Merkle nodes),
signed checkpoints and the old projector's read models, but no state
tables.  The new code opens it with `Store.upgrade_pending`, refuses to
write to it, and `ledger.storage.upgrade.upgrade` (which every CLI command
runs on opening such a database, and `peerledger upgrade` runs on request)
builds each platform's state from its log, once.  Afterwards the ledger
answers what the old code answered: balances and their digest, the digest
after earlier seqs, Merkle roots and the old checkpoints, every value's
explanation, statements; `verify` passes, and it takes more events.

The old ledgers are in tests/fixtures/upgrade (its README says how they were
made): an SQLite file, copied for each test, and a pg_dump, restored into a
fresh PostgreSQL database for each test; `expected.json` holds the old
code's answers.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import fresh_pg_database

from ledger.audit.signing import load_public_key, signature_valid
from ledger.audit.tree import StoredTree, list_checkpoints
from ledger.audit.verify import verify
from ledger.ingest.ingestor import ACCEPTED, DUPLICATE, REJECTED, Ingestor
from ledger.ingest.projector import Projector
from ledger.ingest.sources import Offered, batches
from ledger.storage.dialect import DbUrl
from ledger.storage.queries import statement_doc
from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store
from ledger.storage.upgrade import upgrade
from ledger.storage.views import read_balances, read_explain
from projections.balances import balances_digest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upgrade"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
OLD = EXPECTED["platforms"]  # platform -> what the old code answered
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
CLI_TIMEOUT_S = 120


def explain_hash(doc: dict[str, Any]) -> str:
    """As tests/fixtures/upgrade/record.py hashed the old explanations."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()


def restore_pg_dump(url: str, dump: Path) -> None:
    """Run a gzipped plain-SQL pg_dump against the (empty) database at `url`.

    Lines starting with a backslash are psql's meta-commands, not SQL
    (pg_dump ≥ 15.14 brackets its output in `\\restrict` … `\\unrestrict`):
    skipped.  The dump was made with `--inserts`, so the rest is plain
    statements, run as one script.
    """
    import psycopg

    script = "\n".join(line for line in gzip.decompress(dump.read_bytes()).decode().splitlines()
                       if not line.startswith("\\"))
    params = DbUrl.parse(url).pg
    assert params is not None
    with psycopg.connect(autocommit=True, **params) as conn:
        conn.execute(script)  # type: ignore[call-overload]  # no parameters: one script of statements


@contextlib.contextmanager
def old_database(backend: str, directory: Path) -> Iterator[str]:
    """A fresh copy of the old ledger; its URL."""
    if backend == "sqlite":
        shutil.copyfile(FIXTURES / "ledger.db", directory / "ledger.db")
        yield f"sqlite:///{directory / 'ledger.db'}"
        return
    with fresh_pg_database() as url:
        restore_pg_dump(url, FIXTURES / "ledger.pg.sql.gz")
        yield url


def backend_of(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


@pytest.fixture(params=BACKENDS)
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An old ledger, not upgraded, for a test that changes it."""
    with old_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def upgraded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """An old ledger upgraded with `ledger.storage.upgrade.upgrade`, shared by the tests that only read."""
    with old_database(request.param, tmp_path_factory.mktemp("upgraded")) as url, Store(url) as store:
        upgrade(store)
        yield store


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=CLI_TIMEOUT_S)


def assert_answers_as_the_old_code(store: Store) -> None:
    """The figures every check below looks at in detail, at a glance: for a
    test that upgraded a ledger another way."""
    for platform, old in OLD.items():
        assert read_balances(store, platform) == old["balances"]
        assert StoredTree(store, platform).root(old["head"]).hex() == old["roots"][str(old["head"])]
        assert {v: explain_hash(read_explain(store, platform, v) or {}) for v in old["explain_hash"]} \
            == old["explain_hash"]
        assert verify(store, platform).ok


# -- before the upgrade ----------------------------------------------------------


def test_an_old_database_opens_with_its_upgrade_pending(old_db: str):
    with Store(old_db) as store:
        assert store.upgrade_pending
        assert not store.state_built()
        assert {p: store.head(p) for p in OLD} == {p: old["head"] for p, old in OLD.items()}


def test_writers_refuse_an_old_database_until_it_is_upgraded(old_db: str):
    with Store(old_db) as store:
        with pytest.raises(RuntimeError, match="peerledger upgrade"):
            Ingestor(store)
        with pytest.raises(RuntimeError, match="peerledger upgrade"):
            Projector(store)
        upgrade(store)
        Ingestor(store)


# -- the upgrade ---------------------------------------------------------------------


def test_the_upgrade_builds_every_platform_and_reports_its_progress(old_db: str):
    reports: list[tuple[str, int, int]] = []
    with Store(old_db) as store:
        assert upgrade(store, lambda *report: reports.append(report)) == sorted(OLD)
    for platform, old in OLD.items():
        done = [d for p, d, total in reports if p == platform and total == old["head"]]
        assert done == sorted(done) and done[-1] == old["head"], (platform, reports)


def test_the_upgrade_records_the_schema_version(upgraded: Store):
    assert not upgraded.upgrade_pending
    with Store(upgraded.url) as again:
        assert again.state_built()
        assert not again.upgrade_pending


def test_upgraded_balances_and_digest_are_the_old_ones(upgraded: Store):
    for platform, old in OLD.items():
        rows = read_balances(upgraded, platform)
        assert rows == old["balances"]
        assert balances_digest(rows) == old["digest"]


def test_upgraded_digests_after_earlier_seqs_are_the_old_ones(upgraded: Store):
    for platform, old in OLD.items():
        got = {seq: balances_digest(balances_as_of(upgraded, platform, int(seq))) for seq in old["digest_by_seq"]}
        assert got == old["digest_by_seq"], platform


def test_upgraded_merkle_roots_are_the_old_ones(upgraded: Store):
    for platform, old in OLD.items():
        tree = StoredTree(upgraded, platform)
        assert {size: tree.root(int(size)).hex() for size in old["roots"]} == old["roots"], platform


def test_old_checkpoints_still_hold_after_the_upgrade(upgraded: Store):
    public_key = load_public_key(FIXTURES / "signing-key.pub.pem")
    issued = EXPECTED["checkpoints"][backend_of(upgraded.url)]
    for platform in OLD:
        checkpoints = list_checkpoints(upgraded, platform, 100)
        assert checkpoints == [c for c in issued if c["platform"] == platform]
        for c in checkpoints:
            assert signature_valid(c, public_key)
            assert StoredTree(upgraded, platform).root(c["size"]).hex() == c["root"]
            assert balances_digest(balances_as_of(upgraded, platform, c["size"])) == c["balances_digest"]


def test_upgraded_explanations_are_the_old_ones(upgraded: Store):
    for platform, old in OLD.items():
        values = {v for (v,) in upgraded.query("SELECT value FROM peerledger_values WHERE platform = ?", (platform,))}
        assert values == set(old["explain_hash"])
        for value, doc in old["explain"].items():
            assert read_explain(upgraded, platform, value) == doc
        got = {v: explain_hash(read_explain(upgraded, platform, v) or {}) for v in values}
        assert got == old["explain_hash"], platform


def test_upgraded_statements_are_the_old_ones(upgraded: Store):
    for platform, old in OLD.items():
        got = {account: statement_doc(upgraded, platform, account, None) for account in old["statements"]}
        assert got == old["statements"], platform


def test_an_upgraded_ledger_verifies(upgraded: Store):
    for platform, old in OLD.items():
        report = verify(upgraded, platform)
        assert report.ok, report.difference
        assert (report.events, report.digest) == (old["head"], old["digest"])


# -- through the command line ------------------------------------------------------------


def test_any_command_upgrades_an_old_database_on_opening_it(old_db: str):
    first = cli("balances", "--platform", "gen", "--json", db=old_db)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == OLD["gen"]["balances"]
    assert "building each platform's state from its log" in first.stderr
    for platform, old in OLD.items():
        assert f"{platform}: state built from {old['head']} events" in first.stderr
    assert f"upgraded {len(OLD)} platform(s)" in first.stderr
    second = cli("digest", "--platform", "demo", db=old_db)
    assert (second.returncode, second.stdout.strip(), second.stderr) == (0, OLD["demo"]["digest"], "")


def test_peerledger_upgrade_builds_once_then_has_nothing_to_do(old_db: str):
    first = cli("upgrade", db=old_db)
    assert first.returncode == 0, first.stderr
    assert f"upgraded {len(OLD)} platform(s)" in first.stderr
    second = cli("upgrade", db=old_db)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("nothing to upgrade")
    with Store(old_db) as store:
        assert_answers_as_the_old_code(store)


# -- after the upgrade ------------------------------------------------------------------

NEW_PROSUMER = "p-after-upgrade"
WIDEST = max(OLD["gen"]["explain"].values(), key=lambda doc: doc["works_reached"])


def _event(n: int, kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, "id": f"after-upgrade-{n}", "platform": "gen", "type": kind,
                       "at": f"2026-12-01T00:00:{n:02d}Z", "data": data}).encode()


# Events that lean on the upgraded state: a remix of the old output whose
# value reached the most works, a retraction and a reassignment of popular
# contributions (walking their stored dependents), sales before and after
# them, a refund of an old value, a payout; then an exact resend of an old
# event (duplicate) and an old id with new content (conflict).
MORE_EVENTS = [
    _event(1, "prosumer.registered", {"prosumer": NEW_PROSUMER}),
    _event(2, "contribution.recorded", {"work": "c-after-upgrade", "authors": {NEW_PROSUMER: 1}, "kind": "photo"}),
    _event(3, "output.composed", {"work": "o-after-upgrade", "components": {"c-after-upgrade": 1, WIDEST["work"]: 2},
                                  "authors": {NEW_PROSUMER: 1}, "upstream_bps": 6000}),
    _event(4, "value.realized", {"value": "v-after-upgrade-1", "work": "o-after-upgrade", "amount": 1_000_000,
                                 "currency": "USD", "source": "sale"}),
    _event(5, "work.retracted", {"work": "c000001", "reason": "dispute"}),
    _event(6, "work.reassigned", {"work": "c000002", "authors": {NEW_PROSUMER: 1}}),
    _event(7, "value.realized", {"value": "v-after-upgrade-2", "work": WIDEST["work"], "amount": 50_000,
                                 "currency": "EUR", "source": "sale"}),
    _event(8, "value.reversed", {"value": WIDEST["value"], "amount": 1, "reason": "refund"}),
    _event(9, "work.reinstated", {"work": "c000001", "reason": "counter-notice"}),
    _event(10, "value.realized", {"value": "v-after-upgrade-3", "work": "o-after-upgrade", "amount": 7_777,
                                  "currency": "JPY", "source": "sale"}),
    _event(11, "payout.issued", {"payout": "pay-after-upgrade", "prosumer": NEW_PROSUMER, "amount": 1_000,
                                 "currency": "USD"}),
]
NEW_VALUES = ["v-after-upgrade-1", "v-after-upgrade-2", "v-after-upgrade-3", WIDEST["value"]]


def test_an_upgraded_ledger_accepts_more_events(old_db: str, tmp_path: Path):
    head = OLD["gen"]["head"]
    with Store(old_db) as store:
        upgrade(store)
        old_line = next(store.read_log("gen", after_seq=1, upto_seq=2)).state
        resent = [old_line, old_line.replace(b'"prosumer":"p00001"', b'"prosumer":"p-impostor"')]
        outcomes = Ingestor(store).ingest([Offered(line, "more") for line in MORE_EVENTS + resent])
        accepted = [o.seq for o in outcomes if o.outcome == ACCEPTED]
        assert accepted == list(range(head + 1, head + 1 + len(MORE_EVENTS)))
        assert [(o.outcome, o.code) for o in outcomes[len(MORE_EVENTS):]] == [(DUPLICATE, None), (REJECTED, "conflict")]
        for platform in OLD:
            report = verify(store, platform)
            assert report.ok, report.difference
        # A ledger that never was old, fed the same log and the same events, agrees.
        with Store(f"sqlite:///{tmp_path / 'never-old.db'}") as fresh:
            writer = Ingestor(fresh)
            for platform in OLD:
                for batch in batches(Offered(e.state, "log") for e in store.read_log(platform)):
                    writer.ingest(batch)
            writer.ingest([Offered(line, "more") for line in MORE_EVENTS])
            for platform in OLD:
                assert read_balances(store, platform) == read_balances(fresh, platform)
            for value in NEW_VALUES:
                assert read_explain(store, "gen", value) == read_explain(fresh, "gen", value)
            assert statement_doc(store, "gen", NEW_PROSUMER, None) == statement_doc(fresh, "gen", NEW_PROSUMER, None)


def test_an_upgrade_waiting_for_another_builds_nothing_again(old_db: str):
    with Store(old_db) as first, Store(old_db) as second:
        assert first.upgrade_pending and second.upgrade_pending  # both opened it before either upgraded
        upgrade(first)
        Ingestor(first).ingest([Offered(MORE_EVENTS[0], "more")])  # the ledger is in service
        reports: list[tuple[str, int, int]] = []
        assert upgrade(second, lambda *report: reports.append(report)) == []
        assert reports == [] and not second.upgrade_pending


# The upgrade in a process of its own, killed (SIGKILL) once the second
# platform's state is partly committed: the replay commits every
# KILLED_BATCH_EVENTS events, and the process dies after KILLED_AFTER_EVENTS.
KILLED_BATCH_EVENTS = 500
KILLED_AFTER_EVENTS = 1000
KILLED_UPGRADE = f"""
import os, signal, sys
import ledger.storage.replay
from ledger.storage.store import Store
from ledger.storage.upgrade import upgrade

ledger.storage.replay.REPLAY_BATCH_EVENTS = {KILLED_BATCH_EVENTS}

def progress(platform, done, total):
    if platform == "gen" and done >= {KILLED_AFTER_EVENTS}:
        os.kill(os.getpid(), signal.SIGKILL)

upgrade(Store(sys.argv[1]), progress)
"""


def test_an_upgrade_killed_midway_is_done_again_from_the_start(old_db: str):
    killed = subprocess.run([sys.executable, "-c", KILLED_UPGRADE, old_db], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Store(old_db) as store:
        assert store.upgrade_pending  # the version is recorded last
        built = dict(store.query("SELECT platform, seq FROM peerledger_heads"))
        assert {p: int(s) for p, s in built.items()} == {"demo": OLD["demo"]["head"], "gen": KILLED_AFTER_EVENTS}
        assert upgrade(store) == sorted(OLD)
        assert_answers_as_the_old_code(store)
    with Store(old_db) as store:
        assert not store.upgrade_pending
