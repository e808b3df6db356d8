"""Schemathesis against `/openapi.json` of a real server: no 5xx, and every
response fits the documented status codes, content types, headers and schemas.

The server holds the spec's worked example (so reads find data), and the
cases run with an admin token, so every operation is reachable.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import orjson
import pytest
import schemathesis
from http_helpers import Server, worked_example_server
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from ledger.http.app import create_app

# Enough to cover every operation's parameters in ~30 s; raise it for a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("PEERLEDGER_SCHEMATHESIS_EXAMPLES", "25"))


@schemathesis.serializer("application/x-ndjson")
def _ndjson(_ctx: Any, value: Any) -> bytes:
    """Generated NDJSON bodies: a string is sent as is, a list one item per line."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    items = value if isinstance(value, list) else [value]
    return b"".join(_json_line(item) + b"\n" for item in items)


def _json_line(item: Any) -> bytes:
    # Generated bodies may hold integers beyond 64 bits, which orjson refuses
    # and the server must still answer (as invalid events).
    try:
        return orjson.dumps(item)
    except TypeError:
        return json.dumps(item).encode("utf-8", "surrogatepass")


@schemathesis.deserializer("application/x-ndjson")
def _ndjson_text(_ctx: Any, response: Any) -> str:
    return response.content.decode("utf-8")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with worked_example_server(tmp_path_factory.mktemp("http_schemathesis")) as srv:
        yield srv


# The document is built at collection time, before any server runs (the app's
# routes make it; no database is opened), and must be the one the server serves.
OPENAPI = create_app("sqlite:///unused.db").openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_server_serves_the_document_under_test(server: Server) -> None:
    with server.client() as c:
        assert c.get("/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_openapi_conformance_no_5xx_and_responses_fit_the_schema(case: Any, server: Server) -> None:
    # Every byte string is a well-formed NDJSON body (a line that is not an event
    # is that event's `invalid`), so "negative" NDJSON bodies are not errors.
    excluded = [negative_data_rejection] if case.media_type == "application/x-ndjson" else []
    # OpenAPI cannot say that `as_of` and `as_of_time` exclude each other, nor
    # that an instant in year 0 has no UTC: those schema-valid requests are 400.
    excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['admin']}"},
                           excluded_checks=excluded)
