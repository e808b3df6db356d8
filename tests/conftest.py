"""Shared fixtures: real databases (an SQLite file, the local PostgreSQL) and a mock Kafka cluster."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from kafka_mock import MockKafka

# The contract lives in shared/spec beside the repository (as CI lays it out);
# PEERLEDGER_SPEC_DIR points elsewhere.
SPEC = Path(os.environ.get("PEERLEDGER_SPEC_DIR") or Path(__file__).resolve().parents[2] / "shared" / "spec")
EXAMPLES = SPEC / "examples"
assert EXAMPLES.is_dir(), f"the spec's examples are not at {EXAMPLES}: set PEERLEDGER_SPEC_DIR"

PG_BASE = os.environ.get("PEERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg

    from ledger.storage.dialect import DbUrl

    params = DbUrl.parse(PG_BASE).pg
    assert params is not None
    return psycopg.connect(autocommit=True, **params), params


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    conn, params = _pg_admin()
    name = f"peerledger_t_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        user = params["user"]
        yield f"postgresql://{user}@{params['host']}:{params['port']}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes `db_url` runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture(scope="session")
def mock_kafka() -> Iterator[MockKafka]:
    """One in-process mock cluster (3 brokers) for the session; tests take fresh topics of it."""
    cluster = MockKafka()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def real_kafka() -> Iterator[str]:
    """A real broker's bootstrap servers (KAFKA_BOOTSTRAP_SERVERS), or the test is skipped."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is not set: no real Kafka broker to run the same flow against "
                    "(the mock-cluster tests cover the rest)")
    yield bootstrap
