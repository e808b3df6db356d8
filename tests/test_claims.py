"""Projection workers on one PostgreSQL database split the platforms
(ledger/ingest/claims.py), hand them over when a worker joins or dies, and a
projector with claims projects exactly the platforms it owns."""

from __future__ import annotations

import time

import orjson
import pytest

from ledger.demo.generate import generate_many
from ledger.ingest.claims import REBALANCE_SECONDS, PlatformClaims, open_claims
from ledger.ingest.ingestor import Ingestor
from ledger.ingest.projector import Projector
from ledger.ingest.sources import Offered, batches
from ledger.storage.flows import tracking_name
from ledger.storage.store import DbUrl, Store

PLATFORMS = ["east", "gamma", "north", "west"]

pytestmark = pytest.mark.postgres


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def worker(pg_url: str, clock: Clock) -> PlatformClaims:
    pg = DbUrl.parse(pg_url).pg
    assert pg is not None
    return PlatformClaims(pg, clock)


def test_a_lone_worker_claims_every_platform_and_a_second_one_takes_half(pg_url: str):
    clock = Clock()
    a = worker(pg_url, clock)
    try:
        owned, released = a.update(lambda: PLATFORMS)
        assert (owned, released) == (PLATFORMS, [])
        b = worker(pg_url, clock)
        try:
            assert b.update(lambda: PLATFORMS) == ([], [])  # all locked by a, whose share is still 4
            clock.now += REBALANCE_SECONDS
            owned_a, released = a.update(lambda: PLATFORMS)
            assert len(owned_a) == 2 and sorted(owned_a + released) == PLATFORMS
            clock.now += REBALANCE_SECONDS
            owned_b, _ = b.update(lambda: PLATFORMS)
            assert sorted(owned_b) == sorted(released)
        finally:
            b.close()
        # b's locks die with its connection; its backend leaves pg_stat_activity a moment later.
        deadline = time.monotonic() + 10
        while a.update(lambda: PLATFORMS)[0] != PLATFORMS:
            assert time.monotonic() < deadline, a.owned
            clock.now += REBALANCE_SECONDS
            time.sleep(0.05)
    finally:
        a.close()


def test_claims_rebalance_at_most_every_period_and_list_platforms_only_then(pg_url: str):
    clock = Clock()
    listed = []

    def platforms() -> list[str]:
        listed.append(1)
        return PLATFORMS

    a = worker(pg_url, clock)
    try:
        a.update(platforms)
        a.update(platforms)
        assert len(listed) == 1
        clock.now += REBALANCE_SECONDS
        a.update(platforms)
        assert len(listed) == 2
    finally:
        a.close()


def test_open_claims_is_none_on_sqlite(sqlite_url: str):
    assert open_claims(sqlite_url) is None


def test_a_projector_with_claims_projects_only_the_platforms_it_owns(pg_url: str):
    with Store(pg_url) as store:
        ingestor = Ingestor(store)
        for batch in batches(Offered(orjson.dumps(e), "test") for e in generate_many(11, 2_000, PLATFORMS)):
            ingestor.ingest(batch)
        clock = Clock()
        a, b = worker(pg_url, clock), worker(pg_url, clock)
        try:
            Projector(store, a).catch_up()  # alone, its share is everything
            clock.now += REBALANCE_SECONDS
            b_projector = Projector(store, b)
            b_projector.catch_up()  # nothing free yet
            clock.now += REBALANCE_SECONDS
            a_projector = Projector(store, a)
            a_projector.catch_up()  # gives half up
            clock.now += REBALANCE_SECONDS
            b_projector.catch_up()  # takes it
            assert sorted(a.owned | b.owned) == PLATFORMS and not a.owned & b.owned and len(b.owned) == 2
            assert set(b_projector.platforms) == b.owned
            assert all(store.tracked_seq(tracking_name(p)) == store.head(p) for p in PLATFORMS)
        finally:
            a.close()
            b.close()
