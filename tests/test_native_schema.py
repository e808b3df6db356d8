"""The native shape check agrees with the reference (`ledger.contract.schema.parse_event`).

For every payload: the same verdict (an event, or invalid), and for an event the
same canonical bytes, leaf hash, id, platform, type and statement month.  For an
invalid payload the shell asks the reference for everything its reject holds
(message, id, platform): rejects are rare, and their words are the reference's.
"""

from __future__ import annotations

import copy
import json
import random

import orjson
import pytest
from conftest import EXAMPLES
from hypothesis import given
from hypothesis import strategies as st
from test_schema import FULL, MINIMAL
from test_schema_properties import SETTINGS, events, json_values, producer_json

from ledger.contract.schema import EVENT_TYPES, InvalidEvent, parse_event
from ledger.demo.generate import generate
from projections.merkle import leaf_hash
from projections.periods import utc_month

native = pytest.importorskip("projections._native", reason="the native core is not built (scripts/build-native)")


def reference(payload: bytes) -> tuple:
    try:
        p = parse_event(payload)
    except InvalidEvent as e:
        return (False, None, None, e.event_id, e.platform, None, None)
    return (True, p.canonical, leaf_hash(p.canonical), p.id, p.platform, p.type, utc_month(p.at))


def agree(payloads: list[bytes]) -> None:
    got = native.parse_events(payloads)
    for payload, mine in zip(payloads, got):
        expected = reference(payload)
        if not expected[0]:
            assert mine[0] is False, payload
            continue
        assert mine == expected, payload


def test_every_line_of_the_spec_fixtures():
    agree([line for path in sorted(EXAMPLES.glob("*.jsonl")) for line in path.read_bytes().splitlines(keepends=True)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_streams_with_bad_events(seed: int):
    agree([orjson.dumps(e) for e in generate(seed, 3000, f"p{seed}", bad_fraction_ppm=50_000)])


def _mutations(obj: dict) -> list[object]:
    """The event with each field dropped, given every JSON type and boundary value, and an unknown field."""
    out: list[object] = []
    boundaries = [0, 1, -1, -0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 1.0, 1e2, True, None, "1", "", [], {},
                  "x" * 200, "x" * 201, "é" * 200, "😀" * 200, "😀" * 201, "@platform", "a" * 128, "a" * 129]

    def walk(target: dict) -> None:
        for key in list(target):
            saved = target[key]
            del target[key]
            out.append(copy.deepcopy(obj))
            for b in boundaries:
                target[key] = b
                out.append(copy.deepcopy(obj))
            target[key] = saved
            if isinstance(saved, dict):
                walk(saved)
        target["extra"] = 1
        out.append(copy.deepcopy(obj))
        del target["extra"]

    walk(obj)
    return out


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_every_field_of_every_type_mutated(type_: str):
    payloads: list[bytes] = []
    for data in (MINIMAL[type_], FULL[type_]):
        event = {"v": 1, "id": "e1", "platform": "demo", "type": type_, "at": "2026-10-01T00:00:00Z",
                 "data": copy.deepcopy(data)}
        payloads.append(json.dumps(event).encode())
        payloads.extend(json.dumps(m, ensure_ascii=False).encode() for m in _mutations(event))
    agree(payloads)


AT_CASES = ["2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2026-01-01T00:00:60Z", "2026-01-01T23:59:59.999+23:59",
            "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00-00:00", "0001-01-01T00:30:00+01:00",
            "0001-01-01T00:30:00-01:00", "9999-12-31T23:30:00-01:00", "9999-12-31T23:30:00+01:00",
            "0000-06-01T00:00:00Z", "2026-1-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00z", "2026-12-31T23:30:00-00:31", "2026-04-31T00:00:00Z",
            "2100-02-29T00:00:00Z", "2000-02-29T12:00:00+13:00", "2026-01-01T00:00:00+05:60"]


@pytest.mark.parametrize("at", AT_CASES)
def test_at_edge_cases(at: str):
    agree([json.dumps({"v": 1, "id": "e1", "platform": "demo", "type": "policy.set", "at": at,
                       "data": {"platform_fee_bps": 1}}).encode()])


RAW_CASES = [b"", b"\n", b"\r\n", b"\f", b"\v", b" ", b"{}", b"[]", b"null", b"\xef\xbb\xbf{}", b"NaN", b"Infinity",
             b'{"v":1}\n\n', b'{"v":1}\r\r\n', "[" * 33 + "]" * 33, "[" * 32 + "]" * 32, b'"\\ud800"', b'"\\udc00"',
             b'{"a":1,"a":1}', b"\xff\xfe", b'{"v":1,"id":"e1","platform":"demo","type":"policy.set","at":'
             b'"2026-10-01T00:00:00Z","data":{"platform_fee_bps":1}} x',
             b'{"v":1,"id":"e1","platform":"demo","type":"policy.set","at":"2026-10-01T00:00:00Z",'
             b'"data":{"platform_fee_bps":1,"platform_fee_bps":1}}',
             b'{"v":1,"id":"e1","platform":"demo","type":"policy.set","at":"2026-10-01T00:00:00Z",'
             b'"data":{"platform_fee_bps":1}}' + b" " * (1024 * 1024),
             b'{"v":1,"id":"e\\u0031","platform":"demo","type":"policy.set","at":"2026-10-01T00:00:00Z",'
             b'"data":{"platform_fee\\u005fbps":1}}']


@pytest.mark.parametrize("raw", RAW_CASES)
def test_raw_edge_cases(raw):
    agree([raw.encode() if isinstance(raw, str) else raw])


@SETTINGS
@given(event=events(), seed=st.integers(0, 2**32), crlf=st.booleans())
def test_random_valid_events_in_any_producer_encoding(event, seed, crlf):
    text = producer_json(event, random.Random(seed))
    agree([text.encode("utf-8") + (b"\r\n" if crlf else b"\n")])


@SETTINGS
@given(event=events(), data=st.data())
def test_random_events_with_corrupted_bytes(event, data):
    raw = bytearray(json.dumps(event, ensure_ascii=False).encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    agree([bytes(raw)])


@SETTINGS
@given(value=json_values)
def test_arbitrary_json(value):
    try:
        raw = json.dumps(value).encode()
    except ValueError:
        return
    agree([raw])


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(raw):
    agree([raw])
