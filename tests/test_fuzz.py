"""The fuzz campaign that stays in the suite: hypothesis generating hostile
bytes and near-valid events for every door an event comes in by.

Doors: the shape check (`parse_event`, `read_envelope`, `nests_too_deep`),
the HTTP body splitters (`ndjson_items`, `array_items`) and the whole POST path
of the writer process (`RequestWriter.ingest`, on a real SQLite file), and the
Kafka record path (`consumer.offer`, then the Ingestor, without a broker).

What must hold, whatever the bytes: no exception escapes (only InvalidEvent,
which is the `invalid` outcome, or a whole-body 400/413); every item gets
exactly one outcome; every `invalid` carries a message; every reject is kept.

Budget: derandomized (the same examples on every run, no example database),
2 300 examples in all, about 15 s of CPU (25 s on the shared 2-core host, under
a minute when it runs at half speed).  Each finding of the campaign is kept as an
explicit `@example`; with the nesting limit and the catch-all removed, the
generated examples alone find the crash again (TypeError from orjson.dumps).
"""

from __future__ import annotations

import json
import queue
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_schema_properties import events, producer_json

from ledger.contract.schema import (
    JSON_DEPTH_MAX,
    Envelope,
    InvalidEvent,
    ParsedEvent,
    nests_too_deep,
    parse_event,
    read_envelope,
)
from ledger.http.app import IngestJob, RequestWriter
from ledger.ingest.ingestor import REJECTED, Ingestor
from ledger.ingest.sources import (
    JSON_WHITESPACE,
    BodyError,
    Offered,
    array_items,
    ndjson_items,
)
from ledger.kafka.consumer import offer
from ledger.storage.store import RejectRecord, Store

# The sum of every @fuzz budget below: raising one past it is a decision, not an accident.
FUZZ_EXAMPLES_MAX = 2_300


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def judged(raw: bytes) -> ParsedEvent | InvalidEvent:
    """The schema's outcome for `raw`; any exception but InvalidEvent fails the test."""
    try:
        parsed = parse_event(raw)
    except InvalidEvent as e:
        assert isinstance(e.message, str) and e.message.strip(), repr(raw[:200])
        return e
    assert parse_event(parsed.canonical).canonical == parsed.canonical
    return parsed


# -- strategies -------------------------------------------------------------------------

def nest(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def nest_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# What a field's value may be replaced with: past every parser's limit, numbers
# no integer type holds, broken Unicode, control characters, the wrong types.
NASTY_VALUES = [
    *(nest(d) for d in (JSON_DEPTH_MAX - 3, JSON_DEPTH_MAX - 2, JSON_DEPTH_MAX - 1, 254, 255, 256, 1023, 1025, 5000)),
    *(nest_objects(d) for d in (JSON_DEPTH_MAX, 300, 2000)),
    b"1" * 400, b"-" + b"9" * 30, b"18446744073709551616", b"9223372036854775808", b"-9223372036854775809",
    b"1e400", b"-1e400", b"1e-400", b"-0", b"-0.0", b"1.0", b"1E2", b"0x10", b"NaN", b"Infinity", b"01", b"+1",
    b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud800\\u0041"', b'"\\uDFFF"', b'"\xff"', b'"\xc0\x80"',
    b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\x00"', b'"\x1f"', b'"\\u0000"', b'"a\\"', b'"\\x41"',
    b'"\xef\xbb\xbf"', b"true", b"null", b"[]", b"{}", b'"1"', b"[1]", b'{"":1}', b'"' + b"x" * 5000 + b'"',
]
SENTINEL = "fuzz-sentinel-4b1d"


@st.composite
def near_valid_events(draw: st.DrawFn) -> bytes:
    """A valid event, then one to three mutations: a field's value replaced
    (NASTY_VALUES), a key repeated, a field dropped or added, bytes prefixed
    (BOM, form feed, vertical tab), inserted or cut off."""
    event = draw(events())
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    objects = [event, event["data"], *(v for v in event["data"].values() if isinstance(v, dict) and v)]
    duplicate = None
    replacements: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        target = rnd.choice(objects)
        mutation = draw(st.sampled_from(["value", "value", "repeat", "drop", "add", "bytes"]))
        if mutation == "value" and target:
            target[rnd.choice(list(target))] = f"{SENTINEL}{len(replacements)}"
            replacements.append(draw(st.sampled_from(NASTY_VALUES)))
        elif mutation == "repeat" and target:
            duplicate = (target, rnd.choice(list(target)))
        elif mutation == "drop" and target:
            del target[rnd.choice(list(target))]
        elif mutation == "add":
            target[draw(st.sampled_from(["v", "extra", "", "\u0000", "name", "ïd"]))] = rnd.randint(-2, 2)
    if duplicate is not None and duplicate[1] not in duplicate[0]:
        duplicate = None  # the key was dropped after it was chosen
    raw = producer_json(event, rnd, duplicate).encode("utf-8")
    for i, value in enumerate(replacements):
        raw = raw.replace(f'"{SENTINEL}{i}"'.encode(), value)
    if draw(st.booleans()):
        cut = draw(st.sampled_from(["prefix", "insert", "truncate"]))
        at = rnd.randint(0, len(raw))
        if cut == "prefix":
            raw = draw(st.sampled_from([b"\xef\xbb\xbf", b"\f", b"\v", b"\x00", b" ", b"\xff"])) + raw
        elif cut == "insert":
            raw = raw[:at] + bytes([rnd.randrange(256)]) + raw[at:]
        else:
            raw = raw[:at]
    return raw


# Bytes weighted toward JSON's structure: brackets, quotes, escapes, surrogates.
JSONISH = st.lists(st.sampled_from([
    b"{", b"}", b"[", b"]", b'"', b"\\", b"\\\\", b'\\"', b",", b":", b"1", b"-", b"e", b".", b"true", b"null",
    b" ", b"\n", b"\r", b"\t", b"\f", b"\v", b"\\u", b"d800", b"\\ud800", b"\xff", b"\xef\xbb\xbf", b'"v"', b'"id"',
    b'"platform"', b'"p"', b"\x00",
]), max_size=120).map(b"".join)
ANY_ITEM = st.one_of(st.binary(max_size=512), JSONISH, near_valid_events())
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=15,
)


# -- (a) and (b): the shape check -----------------------------------------------------------

# Findings kept as regressions: each crashed the ingest (and so a whole batch,
# an HTTP request with 500, or a Kafka partition at every restart) before the
# nesting limit and the catch-all existed.
DEEP_NAME = (b'{"v":1,"id":"e1","platform":"p","type":"prosumer.registered","at":"2026-01-01T00:00:00Z",'
             b'"data":{"prosumer":"a","name":' + nest(300) + b"}}")  # TypeError from orjson.dumps past 255


@fuzz(1000)
@given(raw=ANY_ITEM)
@example(raw=DEEP_NAME)
@example(raw=DEEP_NAME.replace(nest(300), nest(1000)))  # parsed by orjson, then too deep for the checks
@example(raw=b"\f")  # a line of a form feed is content: `invalid`, not a skipped blank line
@example(raw=b"\v")
@example(raw=b'["' + b'\\"' * 40 + b"[" * 40)  # escaped quotes do not end the string the nesting scan skips
def test_any_bytes_get_an_outcome_from_the_shape_check(raw: bytes):
    outcome = judged(raw)
    envelope = read_envelope(raw)
    assert isinstance(envelope, Envelope)
    if nests_too_deep(raw):
        assert isinstance(outcome, InvalidEvent) and f"deeper than {JSON_DEPTH_MAX} levels" in outcome.message
        assert envelope == Envelope()
    if isinstance(outcome, ParsedEvent):
        assert (envelope.id, envelope.platform, envelope.type) == (outcome.id, outcome.platform, outcome.type)


@fuzz(200)
@given(depth=st.integers(0, 3000), strings=st.lists(st.sampled_from([b'"[["', b'"\\\\"', b'"\\"]"', b'"{\\u005b"']),
                                                     max_size=4))
def test_the_nesting_scan_agrees_with_the_real_depth(depth: int, strings: list[bytes]):
    """Brackets inside strings (with escaped quotes and backslashes) never count."""
    raw = b"[" + b",".join(strings) + (b"," if strings else b"") + nest(depth) + b"]"
    assert nests_too_deep(raw) == (depth + 1 > JSON_DEPTH_MAX)


# -- (c): the HTTP body splitters -----------------------------------------------------------


@fuzz(250)
@given(lines=st.lists(st.one_of(ANY_ITEM, st.sampled_from([b"", b" \t", b"\r", b"\f", b"\v \t"])), max_size=20),
       crlf=st.booleans())
def test_ndjson_bodies_give_one_item_per_line_with_content(lines: list[bytes], crlf: bool):
    body = (b"\r\n" if crlf else b"\n").join(lines)
    expected = [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip(JSON_WHITESPACE)]
    items = ndjson_items(body)
    assert [(i.number, i.payload) for i in items] == expected
    for item in items:
        judged(item.payload)


@fuzz(250)
@given(elements=st.lists(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v, indent=1).encode()),
                                   near_valid_events()), max_size=12),
       spacing=st.sampled_from([b",", b" , ", b",\n  ", b"\r\n,\t"]))
@example(elements=[nest(5000)], spacing=b",")
@example(elements=[b'"a,]\\"[{"', b'{"s":"\\\\"}'], spacing=b",")
def test_json_array_bodies_split_exactly_into_their_elements(elements: list[bytes], spacing: bytes):
    """Where orjson reads the body as an array, each item is exactly one of its
    elements; where it cannot, the body is a 400 or items the schema judges."""
    body = b"[ " + spacing.join(elements) + b" ]"
    try:
        expected = orjson.loads(body)
    except orjson.JSONDecodeError:
        expected = None
    try:
        items = array_items(body)
    except BodyError as e:
        assert expected is None, (e, body[:300])
        return
    if expected is not None:
        assert [orjson.loads(i.payload) for i in items] == expected
        assert [i.number for i in items] == list(range(1, len(expected) + 1))
    for item in items:
        judged(item.payload)


@fuzz(300)
@given(body=st.one_of(st.binary(max_size=600), JSONISH.map(lambda b: b"[" + b)))
@example(body=b"[" + b'\\"' * 100 + b'"]')  # an unterminated string of escaped quotes: linear, not quadratic
@example(body=b'[{"v": 1,')
def test_any_bytes_as_a_json_array_body_are_items_or_a_400(body: bytes):
    try:
        items = array_items(body)
    except BodyError as e:
        assert str(e).startswith("body: ")
        return
    for item in items:
        judged(item.payload)


# -- the writer process's POST path, end to end on a real SQLite file ---------------------------

PLATFORM = "fz"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'ledger.db'}") as s:
        yield s


def rejects_kept(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) FROM peerledger_rejects")[0][0])


def retargeted(raw: bytes) -> bytes:
    """Near-valid events of the path's platform, so that they reach the Ingestor."""
    return raw.replace(b'"platform"', b'"platform":"fz","was"', 1) if raw.startswith(b"{") else raw


@fuzz(150)
@given(items=st.lists(st.one_of(ANY_ITEM, near_valid_events().map(retargeted)), max_size=15),
       ndjson=st.booleans())
def test_a_post_gives_every_item_exactly_one_outcome_and_keeps_every_reject(store: Store, items: list[bytes],
                                                                            ndjson: bool):
    body = b"\n".join(items) if ndjson else b"[" + b",".join(items) + b"]"
    try:
        expected = ndjson_items(body) if ndjson else array_items(body)
    except BodyError:
        expected = None
    before = rejects_kept(store)
    reply = RequestWriter(store, queue.Queue()).ingest(IngestJob(PLATFORM, ndjson, body, "fuzz", None))
    doc = orjson.loads(reply.body)
    if expected is None:
        assert reply.status == 400 and doc["detail"].startswith("body: ")
        return
    assert reply.status == 200, doc
    results = doc["results"]
    assert len(results) == len(expected) == doc["accepted"] + doc["duplicate"] + doc["rejected"]
    rejected = [r for r in results if r["outcome"] == REJECTED]
    assert all(r["code"] and r["message"] for r in rejected)
    assert rejects_kept(store) - before == len(rejected)


def test_a_post_of_10001_fuzzed_items_is_413(store: Store):
    reply = RequestWriter(store, queue.Queue()).ingest(IngestJob(PLATFORM, True, b"\f\n" * 10_001, "fuzz", None))
    assert reply.status == 413


# -- (d): the Kafka record path, without a broker -------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What the consumer reads of a kafka-python ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


KEYS = st.one_of(st.none(), st.binary(max_size=16), st.sampled_from([b"fz", b"p", b"\xff\xfe", b"", b"fz\x00"]))


@fuzz(150)
@given(messages=st.lists(st.tuples(KEYS, st.one_of(st.none(), ANY_ITEM, near_valid_events().map(retargeted))),
                         min_size=1, max_size=15))
@example(messages=[(b"p", DEEP_NAME), (b"p", b"\f"), (None, None)])  # the consumer used to crash on the first
def test_every_kafka_record_gets_exactly_one_outcome_and_every_reject_is_kept(
        store: Store, messages: list[tuple[bytes | None, bytes | None]]):
    records = [Record("events", 0, offset, key, value) for offset, (key, value) in enumerate(messages)]
    decided = [offer(r, "2026-12-01T00:00:00.000Z") for r in records]
    offered = [d for d in decided if isinstance(d, Offered)]
    mis_keyed = [d for d in decided if isinstance(d, RejectRecord)]
    assert len(offered) + len(mis_keyed) == len(records)
    assert all(r.code == "invalid" and r.message for r in mis_keyed)
    before = rejects_kept(store)
    outcomes = Ingestor(store).ingest(offered, extra_rejects=mis_keyed)
    assert len(outcomes) == len(offered)
    rejected = [o for o in outcomes if o.outcome == REJECTED]
    assert all(o.code and o.message for o in rejected)
    assert rejects_kept(store) - before == len(rejected) + len(mis_keyed)


def test_the_campaign_stays_in_its_budget():
    """No budget is raised past FUZZ_EXAMPLES_MAX unnoticed."""
    examples = sum(int(n) for n in re.findall(r"@fuzz\((\d+)\)", Path(__file__).read_text()))
    assert examples <= FUZZ_EXAMPLES_MAX
