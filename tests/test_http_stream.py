"""A held-back stream posted over HTTP ends where `peerledger ingest` ends.

The generator's stream (two platforms, a few deliberately bad events) is
written to a file for the CLI, and posted per platform to a real server in
batches of 1000, alternating JSON arrays and NDJSON.  Both ledgers must then
have the same log bytes, balances digests (also part-way, `as_of`), rejects
and outcomes; resending changes nothing.  On both backends.  The CLI's
side is read with the functions `peerledger digest` and `export` call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from http_helpers import BASE_ENV, make_token, running_server

from ledger.demo.generate import generate_many, write_jsonl
from ledger.storage.replay import balances_as_of
from ledger.storage.store import Store
from ledger.storage.views import read_balances
from projections.balances import balances_digest

EVENTS = 6000
PLATFORMS = ("demo", "shop")
POST_EVENTS = 1000


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db_url], capture_output=True,
                          env=BASE_ENV, timeout=300)


def _bodies(events: list[dict], as_ndjson: bool) -> tuple[bytes, str]:
    if as_ndjson:
        return b"".join(orjson.dumps(e) + b"\n" for e in events), "application/x-ndjson"
    return orjson.dumps(events), "application/json"


def test_http_stream_gives_the_same_digests_as_cli_ingest(db_url: str, tmp_path: Path):
    stream = list(generate_many(11, EVENTS, PLATFORMS, bad_fraction_ppm=3000))
    path = tmp_path / "stream.jsonl"
    write_jsonl(path, stream)
    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert _cli(cli_db, "ingest", str(path)).returncode in (0, 3)

    admin = make_token(db_url, "admin", None)
    outcomes: dict[str, list[str]] = {}
    with running_server(db_url, tmp_path) as server, server.client(admin) as c:
        for platform in PLATFORMS:
            mine = [e for e in stream if e.get("platform") == platform]
            for i in range(0, len(mine), POST_EVENTS):
                body, media = _bodies(mine[i:i + POST_EVENTS], as_ndjson=(i // POST_EVENTS) % 2 == 1)
                r = c.post(f"/v1/platforms/{platform}/events", content=body, headers={"content-type": media})
                assert r.status_code == 200, r.text
                outcomes.setdefault(platform, []).extend(x["outcome"] for x in r.json()["results"])
        with Store(cli_db) as cli_store:
            for platform in PLATFORMS:
                expected = balances_digest(read_balances(cli_store, platform))
                assert c.get(f"/v1/platforms/{platform}/digest").json()["digest"] == expected
                head = cli_store.head(platform)
                for as_of in (1, head // 3, head - 1):
                    expected = balances_digest(balances_as_of(cli_store, platform, as_of))
                    assert c.get(f"/v1/platforms/{platform}/digest?as_of={as_of}").json()["digest"] == expected
                export = b"".join(s.state + b"\n" for s in cli_store.read_log(platform))
                logged = c.get(f"/v1/platforms/{platform}/log?limit=10000",
                               headers={"accept": "application/x-ndjson"})
                assert logged.content == export
                http_codes = sorted(r["code"] for r in c.get(f"/v1/platforms/{platform}/rejects").json())
                cli_codes = sorted(row[3] for row in cli_store.rejects(platform, 10_000))
                assert http_codes == cli_codes and "rejected" in outcomes[platform]
        # At-least-once delivery: the same batches again are all duplicates or rejected again.
        for platform in PLATFORMS:
            mine = [e for e in stream if e.get("platform") == platform][:POST_EVENTS]
            body, media = _bodies(mine, as_ndjson=True)
            doc = c.post(f"/v1/platforms/{platform}/events", content=body, headers={"content-type": media}).json()
            assert doc["accepted"] == 0
            with Store(cli_db) as cli_store:
                expected = balances_digest(read_balances(cli_store, platform))
            assert c.get(f"/v1/platforms/{platform}/digest").json()["digest"] == expected
    verify = _cli(db_url, "verify")
    assert verify.returncode == 0, verify.stdout


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEERLEDGER_DB", raising=False)
