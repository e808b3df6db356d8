"""Where offered events come from, cut into items (ledger.ingest.sources): one
test per rule of the splitters, on real bytes."""

from __future__ import annotations

import io
import tracemalloc

import orjson
import pytest

from ledger.contract.schema import JSON_DEPTH_MAX, InvalidEvent, parse_event
from ledger.ingest.sources import (
    EVENTS_PER_REQUEST_MAX,
    BodyError,
    BodyTooLarge,
    array_items,
    ndjson_items,
    read_lines,
)

EVENT = {"v": 1, "id": "e1", "platform": "demo", "type": "prosumer.registered", "at": "2026-12-01T00:00:00Z",
         "data": {"prosumer": "ann"}}
LINE = orjson.dumps(EVENT)


def nested(depth: int) -> bytes:
    """An event whose `data.name` nests `depth` arrays: the event nests depth + 2."""
    return LINE.replace(b'"ann"}', b'"ann","name":' + b"[" * depth + b"]" * depth + b"}")


# -- blank lines ------------------------------------------------------------------


@pytest.mark.parametrize("control", [b"\f", b"\v", b"\x1c", b"\x1f", b"\x85", b"\x00"])
def test_a_line_of_a_control_character_is_content_not_blank(control: bytes):
    """JSON whitespace is space, tab, CR and LF only; bytes.strip() would also
    have dropped \\f, \\v and \\x1c-\\x1f, and the line would have vanished."""
    stream = io.BytesIO(LINE + b"\n" + control + b"\n" + LINE + b"\n")
    offered = list(read_lines(stream, "f"))
    assert [o.source for o in offered] == ["f:1", "f:2", "f:3"]
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_event(offered[1].payload)  # type: ignore[arg-type]
    items = ndjson_items(LINE + b"\n" + control + b"\n" + LINE)
    assert [i.number for i in items] == [1, 2, 3] and items[1].payload == control


def test_a_line_of_json_whitespace_only_is_blank():
    body = b" \t\r\n\r\n\n" + LINE + b"\n \t \n"
    assert [o.source for o in read_lines(io.BytesIO(body), "f")] == ["f:4"]
    assert [i.number for i in ndjson_items(body)] == [4]


def test_ndjson_numbers_items_by_their_line_in_the_body():
    items = ndjson_items(b"\n\n" + LINE + b"\r\n\n{not json\n" + LINE)
    assert [(i.number, i.envelope.id) for i in items] == [(3, "e1"), (5, None), (6, "e1")]
    assert items[0].payload == LINE + b"\r"  # the CR of a CRLF body is JSON whitespace, judged with the line


# -- counting while splitting -------------------------------------------------------


@pytest.mark.parametrize("split, body", [
    (ndjson_items, b"{}\n" * (1024 * 1024)),
    (array_items, b"[" + b"0," * (1024 * 1024 - 1) + b"0]"),
])
def test_a_body_of_a_million_tiny_items_is_refused_after_10001_without_building_them(split, body):
    """2 MiB to 3 MiB of bytes, a million items: refused once item 10 001 is cut,
    having held the body, its masked copy (arrays) and 10 000 slices."""
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge, match=str(EVENTS_PER_REQUEST_MAX)):
            split(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(body) + 8 * 1024 * 1024, peak


def test_exactly_10000_items_is_allowed():
    assert len(array_items(b"[" + b"0," * (EVENTS_PER_REQUEST_MAX - 1) + b"0]")) == EVENTS_PER_REQUEST_MAX
    assert len(ndjson_items(b"{}\n" * EVENTS_PER_REQUEST_MAX)) == EVENTS_PER_REQUEST_MAX


# -- the JSON array ----------------------------------------------------------------------


def test_array_elements_are_their_exact_texts_whatever_the_strings_hold():
    tricky = b'{"s": "a,]}\\"[{", "t": "\\\\"}'
    body = b' [ ' + LINE + b' ,\n' + tricky + b',1 , "x" ,[1,[2]] ]\r\n'
    assert [i.payload for i in array_items(body)] == [LINE, tricky, b"1", b'"x"', b"[1,[2]]"]
    assert [i.number for i in array_items(body)] == [1, 2, 3, 4, 5]


def test_an_empty_array_has_no_items():
    assert array_items(b"[]") == [] and array_items(b" [\n] ") == []


def test_an_element_nesting_past_the_limit_is_one_item_whatever_its_depth():
    """33, 1000 and 100 000 levels: each is cut whole (its bracket matched at any
    depth) and its neighbours are untouched; parse_event then rejects it unparsed."""
    deep = [nested(JSON_DEPTH_MAX - 1), nested(1000), nested(100_000)]
    items = array_items(b"[" + LINE + b"," + b",".join(deep) + b"," + LINE + b"]")
    assert [i.payload for i in items] == [LINE, *deep, LINE]
    with pytest.raises(InvalidEvent, match=f"deeper than {JSON_DEPTH_MAX} levels"):
        parse_event(items[1].payload)


def test_a_malformed_element_is_an_item_the_schema_rejects():
    items = array_items(b'[{"v": }, ' + LINE + b"]")
    assert [i.payload for i in items] == [b'{"v": }', LINE]
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_event(items[0].payload)


@pytest.mark.parametrize("body, problem", [
    (b'{"v": 1}', "must be a JSON array"),
    (b"", "must be a JSON array"),
    (b"\xef\xbb\xbf[]", "must be a JSON array"),
    (b'[{"v": 1},', "the array is not closed"),
    (b"[1,,2]", "empty element"),
    (b"[1,]", "empty element"),
    (b"[1] 2", "text after the array"),
    (b"[1}", "unexpected '}'"),
])
def test_a_body_whose_array_is_malformed_is_refused_whole(body: bytes, problem: str):
    with pytest.raises(BodyError, match=problem):
        array_items(body)


def test_items_carry_their_envelope_for_routing():
    [item] = array_items(b"[" + LINE + b"]")
    assert (item.envelope.id, item.envelope.platform, item.envelope.type) == ("e1", "demo", "prosumer.registered")
    [deep] = array_items(b"[" + nested(100) + b"]")
    assert deep.envelope.platform is None  # too deep to read: routed as "no platform", and rejected
