"""Existing ledgers upgrade (issue 13, item 9; issue 20), on SQLite and PostgreSQL.

Two generations of old ledgers:

* `v1`: written by the peerledger of before the state lived in tables
  (commit e896f68): the log (events, id records, rejects, Merkle nodes),
  signed checkpoints and the old projector's read models, but no state
  tables;
* `v2`: state schema version 2 (commit 1b40993, before EVENTS.md 1.2): state
  tables, but payouts kept as ids alone and no event's bookings.

The new code opens either with `Store.upgrade_pending`, refuses to write to
it, and `ledger.storage.upgrade.upgrade` (which every CLI command runs on
opening such a database, and `peerledger upgrade` runs on request) builds
each platform's state from its log, once.  Afterwards the ledger answers
what the old code answered: balances and their digest, the digest after
earlier seqs, Merkle roots and the old checkpoints, every value's
explanation, statements; `verify` passes, and it takes more events, a
return of a payout issued before the upgrade among them.

The old ledgers are in tests/fixtures/upgrade and tests/fixtures/upgrade-v2
(their READMEs say how they were made): an SQLite file, copied for each
test, and a pg_dump, restored into a fresh PostgreSQL database for each
test; `expected.json` holds the old code's answers.
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
from dataclasses import dataclass
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

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
CLI_TIMEOUT_S = 120


@dataclass(frozen=True)
class Generation:
    """One generation of old ledgers: its fixtures and what the old code answered."""

    name: str
    fixtures: Path
    expected: dict[str, Any]

    @property
    def old(self) -> dict[str, Any]:
        """platform -> what the old code answered."""
        return self.expected["platforms"]


GENERATIONS = [Generation(name, FIXTURES_DIR / folder, json.loads((FIXTURES_DIR / folder / "expected.json").read_text()))
               for name, folder in (("v1", "upgrade"), ("v2", "upgrade-v2"))]
OLD_LEDGERS = [pytest.param((g, backend), id=f"{g.name}-{backend}",
                            marks=[pytest.mark.postgres] if backend == "postgres" else [])
               for g in GENERATIONS for backend in ("sqlite", "postgres")]


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
def old_database(generation: Generation, backend: str, directory: Path) -> Iterator[str]:
    """A fresh copy of the old ledger; its URL."""
    if backend == "sqlite":
        shutil.copyfile(generation.fixtures / "ledger.db", directory / "ledger.db")
        yield f"sqlite:///{directory / 'ledger.db'}"
        return
    with fresh_pg_database() as url:
        restore_pg_dump(url, generation.fixtures / "ledger.pg.sql.gz")
        yield url


def backend_of(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


@dataclass(frozen=True)
class OldDb:
    """An old ledger's URL, and its generation."""

    url: str
    generation: Generation

    @property
    def old(self) -> dict[str, Any]:
        return self.generation.old


@dataclass(frozen=True)
class Upgraded:
    """An upgraded old ledger, open, and its generation."""

    store: Store
    generation: Generation

    @property
    def old(self) -> dict[str, Any]:
        return self.generation.old


@pytest.fixture(params=OLD_LEDGERS)
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OldDb]:
    """An old ledger, not upgraded, for a test that changes it."""
    generation, backend = request.param
    with old_database(generation, backend, tmp_path) as url:
        yield OldDb(url, generation)


@pytest.fixture(scope="module", params=OLD_LEDGERS)
def upgraded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgraded]:
    """An old ledger upgraded with `ledger.storage.upgrade.upgrade`, shared by the tests that only read."""
    generation, backend = request.param
    with old_database(generation, backend, tmp_path_factory.mktemp("upgraded")) as url, Store(url) as store:
        upgrade(store)
        yield Upgraded(store, generation)


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=CLI_TIMEOUT_S)


def assert_answers_as_the_old_code(store: Store, generation: Generation) -> None:
    """The figures every check below looks at in detail, at a glance: for a
    test that upgraded a ledger another way."""
    for platform, old in generation.old.items():
        assert read_balances(store, platform) == old["balances"]
        assert StoredTree(store, platform).root(old["head"]).hex() == old["roots"][str(old["head"])]
        assert {v: explain_hash(read_explain(store, platform, v) or {}) for v in old["explain_hash"]} \
            == old["explain_hash"]
        assert verify(store, platform).ok


# -- before the upgrade ----------------------------------------------------------


def test_an_old_database_opens_with_its_upgrade_pending(old_db: OldDb):
    OLD = old_db.old
    with Store(old_db.url) as store:
        assert store.upgrade_pending
        assert not store.state_built()
        assert {p: store.head(p) for p in OLD} == {p: old["head"] for p, old in OLD.items()}


def test_writers_refuse_an_old_database_until_it_is_upgraded(old_db: OldDb):
    OLD = old_db.old
    with Store(old_db.url) as store:
        with pytest.raises(RuntimeError, match="peerledger upgrade"):
            Ingestor(store)
        with pytest.raises(RuntimeError, match="peerledger upgrade"):
            Projector(store)
        upgrade(store)
        Ingestor(store)


# -- the upgrade ---------------------------------------------------------------------


def test_the_upgrade_builds_every_platform_and_reports_its_progress(old_db: OldDb):
    OLD = old_db.old
    reports: list[tuple[str, int, int]] = []
    with Store(old_db.url) as store:
        assert upgrade(store, lambda *report: reports.append(report)) == sorted(OLD)
    for platform, old in OLD.items():
        done = [d for p, d, total in reports if p == platform and total == old["head"]]
        assert done == sorted(done) and done[-1] == old["head"], (platform, reports)


def test_the_upgrade_records_the_schema_version(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    assert not store.upgrade_pending
    with Store(store.url) as again:
        assert again.state_built()
        assert not again.upgrade_pending


def test_upgraded_balances_and_digest_are_the_old_ones(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        rows = read_balances(store, platform)
        assert rows == old["balances"]
        assert balances_digest(rows) == old["digest"]


def test_upgraded_digests_after_earlier_seqs_are_the_old_ones(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        got = {seq: balances_digest(balances_as_of(store, platform, int(seq))) for seq in old["digest_by_seq"]}
        assert got == old["digest_by_seq"], platform


def test_upgraded_merkle_roots_are_the_old_ones(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        tree = StoredTree(store, platform)
        assert {size: tree.root(int(size)).hex() for size in old["roots"]} == old["roots"], platform


def test_old_checkpoints_still_hold_after_the_upgrade(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    public_key = load_public_key(upgraded.generation.fixtures / "signing-key.pub.pem")
    issued = upgraded.generation.expected["checkpoints"][backend_of(store.url)]
    for platform in OLD:
        checkpoints = list_checkpoints(store, platform, 100)
        assert checkpoints == [c for c in issued if c["platform"] == platform]
        for c in checkpoints:
            assert signature_valid(c, public_key)
            assert StoredTree(store, platform).root(c["size"]).hex() == c["root"]
            assert balances_digest(balances_as_of(store, platform, c["size"])) == c["balances_digest"]


def test_upgraded_explanations_are_the_old_ones(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        values = {v for (v,) in store.query("SELECT value FROM peerledger_values WHERE platform = ?", (platform,))}
        assert values == set(old["explain_hash"])
        for value, doc in old["explain"].items():
            assert read_explain(store, platform, value) == doc
        got = {v: explain_hash(read_explain(store, platform, v) or {}) for v in values}
        assert got == old["explain_hash"], platform


def test_upgraded_statements_are_the_old_ones(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        got = {account: statement_doc(store, platform, account, None) for account in old["statements"]}
        assert got == old["statements"], platform


def test_an_upgraded_ledger_verifies(upgraded: Upgraded):
    store, OLD = upgraded.store, upgraded.old
    for platform, old in OLD.items():
        report = verify(store, platform)
        assert report.ok, report.difference
        assert (report.events, report.digest) == (old["head"], old["digest"])


# -- through the command line ------------------------------------------------------------


def test_any_command_upgrades_an_old_database_on_opening_it(old_db: OldDb):
    OLD = old_db.old
    first = cli("balances", "--platform", "gen", "--json", db=old_db.url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == OLD["gen"]["balances"]
    assert "building each platform's state from its log" in first.stderr
    for platform, old in OLD.items():
        assert f"{platform}: state built from {old['head']} events" in first.stderr
    assert f"upgraded {len(OLD)} platform(s)" in first.stderr
    second = cli("digest", "--platform", "demo", db=old_db.url)
    assert (second.returncode, second.stdout.strip(), second.stderr) == (0, OLD["demo"]["digest"], "")


def test_peerledger_upgrade_builds_once_then_has_nothing_to_do(old_db: OldDb):
    OLD = old_db.old
    first = cli("upgrade", db=old_db.url)
    assert first.returncode == 0, first.stderr
    assert f"upgraded {len(OLD)} platform(s)" in first.stderr
    second = cli("upgrade", db=old_db.url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("nothing to upgrade")
    with Store(old_db.url) as store:
        assert_answers_as_the_old_code(store, old_db.generation)


# -- after the upgrade ------------------------------------------------------------------

NEW_PROSUMER = "p-after-upgrade"


def _event(n: int, kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, "id": f"after-upgrade-{n}", "platform": "gen", "type": kind,
                       "at": f"2026-12-01T00:00:{n:02d}Z", "data": data}).encode()


def widest(old: dict[str, Any]) -> dict[str, Any]:
    """The old explanation of the value whose sale reached the most works."""
    return max((doc for doc in old["gen"]["explain"].values() if "works_reached" in doc),
               key=lambda doc: doc["works_reached"])


def more_events(old: dict[str, Any], old_payout: str) -> list[bytes]:
    """Events that lean on the upgraded state: a remix of the old output whose
    value reached the most works, a retraction and a reassignment of popular
    contributions (walking their stored dependents), sales before and after
    them, a refund of an old value, a payout and its return, and the return
    of `old_payout`, issued before the upgrade (EVENTS.md §8)."""
    w = widest(old)
    return [
        _event(1, "prosumer.registered", {"prosumer": NEW_PROSUMER}),
        _event(2, "contribution.recorded", {"work": "c-after-upgrade", "authors": {NEW_PROSUMER: 1},
                                            "kind": "photo"}),
        _event(3, "output.composed", {"work": "o-after-upgrade", "components": {"c-after-upgrade": 1, w["work"]: 2},
                                      "authors": {NEW_PROSUMER: 1}, "upstream_bps": 6000}),
        _event(4, "value.realized", {"value": "v-after-upgrade-1", "work": "o-after-upgrade", "amount": 1_000_000,
                                     "currency": "USD", "source": "sale"}),
        _event(5, "work.retracted", {"work": "c000001", "reason": "dispute"}),
        _event(6, "work.reassigned", {"work": "c000002", "authors": {NEW_PROSUMER: 1}}),
        _event(7, "value.realized", {"value": "v-after-upgrade-2", "work": w["work"], "amount": 50_000,
                                     "currency": "EUR", "source": "sale"}),
        _event(8, "value.reversed", {"value": w["value"], "amount": 1, "reason": "refund"}),
        _event(9, "work.reinstated", {"work": "c000001", "reason": "counter-notice"}),
        _event(10, "value.realized", {"value": "v-after-upgrade-3", "work": "o-after-upgrade", "amount": 7_777,
                                      "currency": "JPY", "source": "sale"}),
        _event(11, "payout.issued", {"payout": "pay-after-upgrade", "prosumer": NEW_PROSUMER, "amount": 1_000,
                                     "currency": "USD"}),
        _event(12, "payout.returned", {"payout": "pay-after-upgrade", "reason": "account closed"}),
        _event(13, "payout.returned", {"payout": old_payout, "reason": "AC04"}),
    ]


def first_payout(store: Store, platform: str) -> str:
    """The first payout.issued of `platform`'s log."""
    for entry in store.read_log(platform):
        if entry.topic == "payout.issued":
            return json.loads(entry.state)["data"]["payout"]
    raise AssertionError(f"{platform} has no payout")


def test_an_upgraded_ledger_accepts_more_events(old_db: OldDb, tmp_path: Path):
    OLD = old_db.old
    head = OLD["gen"]["head"]
    with Store(old_db.url) as store:
        upgrade(store)
        more = more_events(OLD, first_payout(store, "gen"))
        new_values = ["v-after-upgrade-1", "v-after-upgrade-2", "v-after-upgrade-3", widest(OLD)["value"]]
        old_line = next(store.read_log("gen", after_seq=1, upto_seq=2)).state
        resent = [old_line, old_line.replace(b'"prosumer":"p00001"', b'"prosumer":"p-impostor"')]
        outcomes = Ingestor(store).ingest([Offered(line, "more") for line in more + resent])
        accepted = [o.seq for o in outcomes if o.outcome == ACCEPTED]
        assert accepted == list(range(head + 1, head + 1 + len(more)))
        assert [(o.outcome, o.code) for o in outcomes[len(more):]] == [(DUPLICATE, None), (REJECTED, "conflict")]
        for platform in OLD:
            report = verify(store, platform)
            assert report.ok, report.difference
        # A ledger that never was old, fed the same log and the same events, agrees.
        with Store(f"sqlite:///{tmp_path / 'never-old.db'}") as fresh:
            writer = Ingestor(fresh)
            for platform in OLD:
                for batch in batches(Offered(e.state, "log") for e in store.read_log(platform)):
                    writer.ingest(batch)
            writer.ingest([Offered(line, "more") for line in more])
            for platform in OLD:
                assert read_balances(store, platform) == read_balances(fresh, platform)
            for value in new_values:
                assert read_explain(store, "gen", value) == read_explain(fresh, "gen", value)
            assert statement_doc(store, "gen", NEW_PROSUMER, None) == statement_doc(fresh, "gen", NEW_PROSUMER, None)
            for table in ("peerledger_bookings", "peerledger_payouts"):  # what EVENTS.md 1.2 added, for old events too
                query = f"SELECT * FROM {table} WHERE platform = 'gen' ORDER BY 2"
                assert [tuple(map(str, r)) for r in store.query(query)] == \
                    [tuple(map(str, r)) for r in fresh.query(query)], table


def test_an_upgrade_waiting_for_another_builds_nothing_again(old_db: OldDb):
    OLD = old_db.old
    with Store(old_db.url) as first, Store(old_db.url) as second:
        assert first.upgrade_pending and second.upgrade_pending  # both opened it before either upgraded
        upgrade(first)
        Ingestor(first).ingest([Offered(more_events(OLD, "")[0], "more")])  # the ledger is in service
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


def test_an_upgrade_killed_midway_is_done_again_from_the_start(old_db: OldDb):
    OLD = old_db.old
    killed = subprocess.run([sys.executable, "-c", KILLED_UPGRADE, old_db.url], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Store(old_db.url) as store:
        assert store.upgrade_pending  # the version is recorded last
        built = dict(store.query("SELECT platform, seq FROM peerledger_heads"))
        assert {p: int(s) for p, s in built.items()} == {"demo": OLD["demo"]["head"], "gen": KILLED_AFTER_EVENTS}
        assert upgrade(store) == sorted(OLD)
        assert_answers_as_the_old_code(store, old_db.generation)
    with Store(old_db.url) as store:
        assert not store.upgrade_pending
