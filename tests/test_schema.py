"""The strict v1 event schema (EVENTS.md sections 1, 2 and 5): one test per rule."""

from __future__ import annotations

import copy
import enum
import json
from pathlib import Path

import orjson
import pytest

from ledger.contract import schema
from ledger.contract.schema import (
    EVENT_TYPES,
    MAX_LINE_BYTES,
    InvalidEvent,
    ParsedEvent,
    canonical_bytes,
    parse_event,
    validate_event_obj,
)
from projections.periods import utc_month

_HERE = Path(__file__).resolve()
EXAMPLES = next(
    (
        p
        for p in (
            _HERE.parents[2] / "shared" / "spec" / "examples",
            _HERE.parents[1] / "shared" / "spec" / "examples",
            _HERE.parents[1] / "spec" / "examples",
        )
        if p.exists()
    ),
    None,
)

E1_LINE = (
    b'{"v": 1, "id": "e1", "platform": "demo", "type": "policy.set", '
    b'"at": "2026-10-01T00:00:00Z", "data": {"platform_fee_bps": 1000}}\n'
)
E1_CANONICAL = (
    '{"at":"2026-10-01T00:00:00Z","data":{"platform_fee_bps":1000},"id":"e1",'
    '"platform":"demo","type":"policy.set","v":1}'
)
E16_LINE = (
    b'{"v": 1, "id": "e16", "platform": "demo", "type": "value.realized", '
    b'"at": "2026-11-06T00:00:00Z", "data": {"value": "v5", "work": "o1", "amount": 5.0, "currency": "USD"}}\n'
)

H = "sha256:" + "0123456789abcdef" * 4

# Minimal (required fields only) and full (every optional field) data per type.
MINIMAL = {
    "prosumer.registered": {"prosumer": "alice"},
    "contribution.recorded": {"work": "c1", "authors": {"alice": 1}},
    "output.composed": {"work": "o1", "components": {"c1": 1}},
    "value.realized": {"value": "v1", "work": "o1", "amount": 1001, "currency": "USD"},
    "value.reversed": {"value": "v1", "amount": 500},
    "policy.set": {"platform_fee_bps": 1000},
    "work.retracted": {"work": "c2"},
    "work.reinstated": {"work": "c2"},
    "work.reassigned": {"work": "c1", "authors": {"bob": 1}},
    "payout.issued": {"payout": "p1", "prosumer": "carol", "amount": 400, "currency": "USD"},
    "pool.opened": {"pool": "P", "currency": "USD", "method": "pro_rata"},
    "pool.funded": {"pool": "P", "subscriber": "s1", "amount": 60},
    "usage.recorded": {"pool": "P", "subscriber": "s1", "uses": {"o1": 1}},
    "pool.closed": {"pool": "P"},
    "payout.returned": {"payout": "p1"},
}
FULL = {
    "prosumer.registered": {"prosumer": "alice", "name": "Alice"},
    "contribution.recorded": {"work": "c1", "authors": {"alice": 1}, "kind": "design", "content_hash": H},
    "output.composed": {
        "work": "o1",
        "components": {"c1": 1, "c2": 1},
        "authors": {"carol": 1},
        "upstream_bps": 4000,
        "kind": "album",
    },
    "value.realized": {"value": "v1", "work": "o1", "amount": 1001, "currency": "USD", "source": "sale"},
    "value.reversed": {"value": "v1", "amount": 500, "reason": "refund"},
    "policy.set": {"platform_fee_bps": 1000},
    "work.retracted": {"work": "c2", "reason": "takedown"},
    "work.reinstated": {"work": "c2", "reason": "resolved"},
    "work.reassigned": {"work": "c1", "authors": {"bob": 1, "carol": 2}},
    "payout.issued": {"payout": "p1", "prosumer": "carol", "amount": 400, "currency": "USD", "reference": "wire 1"},
    "pool.opened": {"pool": "P", "currency": "USD", "method": "user_centric", "name": "November"},
    "pool.funded": {"pool": "P", "subscriber": "s1", "amount": 60},
    "usage.recorded": {"pool": "P", "subscriber": "s1", "uses": {"o1": 1, "c2": 9}},
    "pool.closed": {"pool": "P"},
    "payout.returned": {"payout": "p1", "reason": "AC04 closed account"},
}
OPTIONAL = {t: sorted(set(FULL[t]) - set(MINIMAL[t])) for t in EVENT_TYPES}
TEXT_FIELDS = [
    ("prosumer.registered", "name"),
    ("contribution.recorded", "kind"),
    ("output.composed", "kind"),
    ("value.realized", "source"),
    ("value.reversed", "reason"),
    ("work.retracted", "reason"),
    ("work.reinstated", "reason"),
    ("payout.issued", "reference"),
    ("pool.opened", "name"),
    ("payout.returned", "reason"),
]
ID_FIELDS = [
    ("prosumer.registered", "prosumer"),
    ("contribution.recorded", "work"),
    ("output.composed", "work"),
    ("value.realized", "value"),
    ("value.realized", "work"),
    ("value.reversed", "value"),
    ("work.retracted", "work"),
    ("work.reinstated", "work"),
    ("work.reassigned", "work"),
    ("payout.issued", "payout"),
    ("payout.issued", "prosumer"),
    ("pool.opened", "pool"),
    ("pool.funded", "pool"),
    ("pool.funded", "subscriber"),
    ("usage.recorded", "pool"),
    ("usage.recorded", "subscriber"),
    ("pool.closed", "pool"),
    ("payout.returned", "payout"),
]
AMOUNT_FIELDS = [("value.realized", "amount"), ("value.reversed", "amount"), ("payout.issued", "amount"),
                 ("pool.funded", "amount")]
CURRENCY_FIELDS = [("value.realized", "currency"), ("payout.issued", "currency"), ("pool.opened", "currency")]
WEIGHT_MAPS = [
    ("contribution.recorded", "authors"),
    ("output.composed", "components"),
    ("output.composed", "authors"),
    ("work.reassigned", "authors"),
]
# Maps keyed by ids: the weight maps and usage.recorded's counts (1 to 10^9).
ID_MAPS = [*WEIGHT_MAPS, ("usage.recorded", "uses")]


def ev(type_: str = "policy.set", data: dict | None = None, **envelope) -> dict:
    obj = {"v": 1, "id": "e1", "platform": "demo", "type": type_, "at": "2026-10-01T00:00:00Z"}
    obj["data"] = copy.deepcopy(FULL[type_] if data is None else data)
    obj.update(envelope)
    return obj


def with_data(type_: str, **fields) -> dict:
    data = copy.deepcopy(MINIMAL[type_])
    data.update(fields)
    return ev(type_, data)


def line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def ok(obj_or_line) -> ParsedEvent:
    raw = obj_or_line if isinstance(obj_or_line, (bytes, str)) else line(obj_or_line)
    parsed = parse_event(raw)
    if not isinstance(obj_or_line, (bytes, str)):
        assert parsed.event == obj_or_line
        assert validate_event_obj(copy.deepcopy(obj_or_line)).canonical == parsed.canonical
    return parsed


def bad(obj_or_line, *fragments: str) -> InvalidEvent:
    raw = obj_or_line if isinstance(obj_or_line, (bytes, str)) else line(obj_or_line)
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    if not isinstance(obj_or_line, (bytes, str)):
        with pytest.raises(InvalidEvent):
            validate_event_obj(copy.deepcopy(obj_or_line))
    return info.value


def stdlib_canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ----------------------------------------------------------- the public fixture


def test_canonical_first_event_matches_fixture():
    assert parse_event(E1_LINE).canonical == E1_CANONICAL.encode()
    if EXAMPLES is None:
        pytest.skip("shared/spec/examples not found")
    expected = json.loads((EXAMPLES / "worked.expected.json").read_text("utf-8"))
    first = (EXAMPLES / "worked.jsonl").read_bytes().splitlines(keepends=True)[0]
    assert parse_event(first).canonical == expected["canonical_first_event"].encode("utf-8")


def test_e16_amount_float_is_invalid():
    err = bad(E16_LINE)
    assert err.message == "data.amount: must be a JSON integer, got 5.0"
    assert (err.event_id, err.platform) == ("e16", "demo")


def test_worked_fixture_all_lines_parse_except_e16():
    if EXAMPLES is None:
        pytest.skip("shared/spec/examples not found")
    lines = (EXAMPLES / "worked.jsonl").read_bytes().splitlines(keepends=True)
    outcomes = json.loads((EXAMPLES / "worked.expected.json").read_text("utf-8"))["outcomes"]
    assert len(lines) == len(outcomes) == 21
    invalid = []
    for raw, outcome in zip(lines, outcomes):
        try:
            parsed = parse_event(raw)
        except InvalidEvent as e:
            invalid.append(e.event_id)
            assert outcome["code"] == "invalid"
        else:
            assert parsed.id == outcome["id"]
            assert parsed.event == json.loads(raw)
            assert parsed.canonical == stdlib_canonical(json.loads(raw))
    assert invalid == ["e16"]


# ------------------------------------------------------------------ the envelope


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_minimal_event_of_each_type_is_valid(type_):
    parsed = ok(ev(type_, MINIMAL[type_]))
    assert parsed.type == type_


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_event_with_all_optional_fields_of_each_type_is_valid(type_):
    ok(ev(type_, FULL[type_]))


def test_event_types_are_the_ten_of_section_2_and_the_four_of_section_7():
    assert EVENT_TYPES == (
        "prosumer.registered",
        "contribution.recorded",
        "output.composed",
        "value.realized",
        "value.reversed",
        "policy.set",
        "work.retracted",
        "work.reinstated",
        "work.reassigned",
        "payout.issued",
        "pool.opened",
        "pool.funded",
        "usage.recorded",
        "pool.closed",
        "payout.returned",
    )


@pytest.mark.parametrize("v", [0, 2, -1, 10])
def test_version_other_than_1_is_invalid(v):
    assert bad(ev(v=v), "v:").message == f"v: must be 1, got {v}"


@pytest.mark.parametrize("v", [True, 1.0, "1", None, [1], {"v": 1}])
def test_version_must_be_the_json_integer_1(v):
    bad(ev(v=v), "v:")


def test_integer_true_is_invalid():
    bad(with_data("value.realized", amount=True), "data.amount: must be a JSON integer, got true")
    bad(with_data("policy.set", platform_fee_bps=True), "data.platform_fee_bps", "got true")
    bad(with_data("policy.set", platform_fee_bps=False), "data.platform_fee_bps", "got false")


def test_integer_float_is_invalid():
    bad(with_data("policy.set", platform_fee_bps=1000.0), "data.platform_fee_bps: must be a JSON integer, got 1000.0")


def test_integer_string_is_invalid():
    bad(with_data("policy.set", platform_fee_bps="1000"), 'data.platform_fee_bps: must be a JSON integer, got "1000"')


def test_integer_with_exponent_is_invalid():
    raw = line(with_data("value.realized")).replace(b'"amount": 1001', b'"amount": 1e3')
    bad(raw, "data.amount: must be a JSON integer")


def test_negative_zero_is_the_integer_zero():
    raw = line(with_data("policy.set", platform_fee_bps=7)).replace(b": 7}", b": -0}")
    parsed = ok(raw)
    assert parsed.data["platform_fee_bps"] == 0 and type(parsed.data["platform_fee_bps"]) is int


@pytest.mark.parametrize("field", ["v", "id", "platform", "type", "at", "data"])
def test_missing_envelope_field_is_invalid(field):
    obj = ev()
    del obj[field]
    err = bad(obj)
    assert field in err.message


def test_unknown_envelope_field_is_invalid():
    bad(ev(seq=1), "seq: unknown field")


@pytest.mark.parametrize("name", ["[key]", "", "é", "a.b", "0", "data.x"])
def test_unknown_field_with_any_name_is_invalid(name):
    bad(ev() | {name: None}, "unknown field")
    bad(with_data("policy.set", **{name: None}), "unknown field")


def test_unknown_field_in_data_is_invalid():
    bad(with_data("work.retracted", note="x"), "data.note: unknown field")


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_unknown_field_in_data_of_each_type_is_invalid(type_):
    bad(with_data(type_, extra=1), "data.extra: unknown field")


@pytest.mark.parametrize("type_,field", [(t, f) for t in EVENT_TYPES for f in MINIMAL[t]])
def test_missing_data_field_is_invalid(type_, field):
    data = copy.deepcopy(MINIMAL[type_])
    del data[field]
    bad(ev(type_, data), f"data.{field}: missing required field")


@pytest.mark.parametrize("type_", ["policy.sett", "Policy.set", "", "policy", "value.realised"])
def test_unknown_type_is_invalid(type_):
    bad(ev() | {"type": type_}, "type: unknown event type")


@pytest.mark.parametrize("type_", [1, None, True, ["policy.set"], {"policy.set": 1}])
def test_type_not_a_string_is_invalid(type_):
    bad(ev() | {"type": type_}, "type:")


@pytest.mark.parametrize("data", [None, [], "x", 1, [{"platform_fee_bps": 1000}]])
def test_data_not_an_object_is_invalid(data):
    bad(ev() | {"data": data}, "data: must be a JSON object")


def test_data_of_another_type_is_invalid():
    bad(ev("policy.set", FULL["work.retracted"]), "data.")


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_null_for_an_optional_field_is_invalid(type_):
    for field in OPTIONAL[type_]:
        bad(with_data(type_, **{field: None}), f"data.{field}")


# ------------------------------------------------------------------ not JSON / not an object


@pytest.mark.parametrize("raw", [b"", b"\n", b"   ", b"{", b"nope", b'{"v":1,}', b"{'v': 1}", b"NaN", b'{"v":NaN}'])
def test_not_json_is_invalid(raw):
    err = bad(raw, "not valid JSON")
    assert err.event_id is None and err.platform is None


@pytest.mark.parametrize("raw", [b"[]", b"[1]", b'"x"', b"1", b"null", b"true", b"[" + E1_LINE.strip() + b"]"])
def test_not_an_object_is_invalid(raw):
    bad(raw, "event: must be a JSON object")


def test_invalid_utf8_is_invalid():
    bad(line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\xffl"), "not valid JSON")
    bad(line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\xc3l"), "not valid JSON")


def test_overlong_utf8_encoding_is_invalid():
    bad(line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\xc0\xafl"), "not valid JSON")


def test_lone_surrogate_escape_is_invalid():
    raw = line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\\ud800l")
    bad(raw, "not valid JSON")
    raw = line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\\udc00l")
    bad(raw, "not valid JSON")


def test_surrogate_pair_escape_is_valid():
    raw = line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"\\ud83d\\ude00")
    parsed = ok(raw)
    assert parsed.data["name"] == "\U0001F600"
    assert "\U0001F600".encode() in parsed.canonical


def test_lone_surrogate_in_str_line_is_invalid():
    text = line(with_data("prosumer.registered", name="Al")).decode().replace("Al", "A\ud800l")
    bad(text, "UTF-8")


def test_lone_surrogate_in_object_is_invalid():
    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("prosumer.registered", name="A\ud800l"))
    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("contribution.recorded", authors={"\udc00": 1}))


def test_byte_order_mark_is_invalid():
    bad(b"\xef\xbb\xbf" + E1_LINE, "not valid JSON")


def test_raw_control_character_in_string_is_invalid():
    bad(line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\x01l"), "not valid JSON")
    bad(line(with_data("prosumer.registered", name="Al")).replace(b"Al", b"A\nl"), "not valid JSON")


# ------------------------------------------------------------------ duplicate keys


def test_duplicate_top_level_key_is_invalid():
    raw = E1_LINE.replace(b'{"v": 1,', b'{"v": 1, "v": 1,')
    err = bad(raw, 'duplicate key "v"')
    assert (err.event_id, err.platform) == ("e1", "demo")


def test_duplicate_key_with_different_values_is_invalid():
    bad(E1_LINE.replace(b'"id": "e1",', b'"id": "e0", "id": "e1",'), 'duplicate key "id"')


def test_duplicate_key_in_data_is_invalid():
    bad(E1_LINE.replace(b'{"platform_fee_bps": 1000}', b'{"platform_fee_bps": 5, "platform_fee_bps": 1000}'),
        'duplicate key "platform_fee_bps"')


def test_duplicate_key_in_authors_is_invalid():
    raw = line(with_data("contribution.recorded", authors={"alice": 1})).replace(b'{"alice": 1}', b'{"alice": 1, "alice": 1}')
    bad(raw, 'duplicate key "alice"')


def test_duplicate_key_written_with_an_escape_is_invalid():
    bad(E1_LINE.replace(b'{"v": 1,', b'{"\\u0076": 1, "v": 1,'), 'duplicate key "v"')


def test_duplicate_key_hidden_by_an_escaped_colon_is_invalid():
    # The escaped colon makes the parsed value hold one more ':' than the raw text.
    raw = E1_LINE.replace(b'"id": "e1"', b'"id": "e\\u003a1", "v": 1')
    bad(raw, 'duplicate key "v"')
    raw = E1_LINE.replace(b'"id": "e1"', b'"id": "e\\u003A1", "v": 1')
    bad(raw, 'duplicate key "v"')


def test_duplicate_key_whose_first_value_is_an_object_is_invalid():
    raw = E1_LINE.replace(b'"data":', b'"data": {"a:b": {"c": 1}}, "data":')
    bad(raw, 'duplicate key "data"')


def test_duplicate_key_in_an_invalid_event_is_reported():
    raw = E1_LINE.replace(b'{"v": 1,', b'{"v": 1, "v": 2,')
    bad(raw, 'duplicate key "v"')


def test_escaped_colon_without_duplicates_is_valid():
    parsed = ok(E1_LINE.replace(b'"id": "e1"', b'"id": "e\\u003a1"'))
    assert parsed.id == "e:1"


def test_escaped_backslash_before_u003a_text_is_valid():
    raw = line(with_data("prosumer.registered", name="x")).replace(b'"name": "x"', b'"name": "a\\\\u003a:b"')
    parsed = ok(raw)
    assert parsed.data["name"] == "a\\u003a:b"


def test_colons_and_whitespace_around_them_do_not_confuse_the_duplicate_check():
    raw = (
        b'{ "v" : 1 , "id" : "a:b:c" , "platform" : "demo" , "type" : "prosumer.registered" ,'
        b' "at" : "2026-10-01T00:00:00+01:00" , "data" : { "prosumer" : "p:1" , "name" : "::\\":\\\\:" } }'
    )
    parsed = ok(raw)
    assert parsed.data["name"] == '::":\\:'


# ------------------------------------------------------------------ the line


def test_line_over_1_mib_is_invalid_unparsed(monkeypatch):
    assert MAX_LINE_BYTES == 1048576

    def boom(*_a, **_k):
        raise AssertionError("the line was parsed")

    monkeypatch.setattr(schema.orjson, "loads", boom)
    monkeypatch.setattr(schema.json, "loads", boom)
    raw = E1_LINE.strip()
    raw = raw[:-1] + b" " * (MAX_LINE_BYTES + 1 - len(raw)) + b"}"
    assert len(raw) == MAX_LINE_BYTES + 1
    err = bad(raw, "longer than 1048576 bytes")
    assert err.event_id is None and err.platform is None
    bad(raw.decode(), "longer than 1048576 bytes")
    bad(raw + b"\n", "longer than 1048576 bytes")
    bad("x" * (10 * MAX_LINE_BYTES), "longer than")


def test_line_of_exactly_1_mib_is_valid():
    raw = E1_LINE.strip()
    raw = raw[:-1] + b" " * (MAX_LINE_BYTES - len(raw)) + b"}"
    assert len(raw) == MAX_LINE_BYTES
    assert ok(raw).canonical == E1_CANONICAL.encode()
    assert ok(raw + b"\n").canonical == E1_CANONICAL.encode()
    assert ok(raw + b"\r\n").canonical == E1_CANONICAL.encode()
    assert ok(raw.decode() + "\n").canonical == E1_CANONICAL.encode()


def test_line_limit_counts_utf8_bytes_of_a_str_line():
    raw = E1_LINE.strip().decode()
    pad = "\u00e9"  # 2 bytes in UTF-8, inside a (too long) name: the length check comes first
    text = raw.replace('"type": "policy.set"', '"type": "prosumer.registered"').replace(
        '{"platform_fee_bps": 1000}', '{"prosumer": "a", "name": "' + pad * (MAX_LINE_BYTES // 2) + '"}'
    )
    assert len(text) < MAX_LINE_BYTES < len(text.encode())
    bad(text, "longer than 1048576 bytes")


def test_trailing_newline_is_stripped():
    assert parse_event(E1_LINE).canonical == E1_CANONICAL.encode()
    assert parse_event(E1_LINE.strip() + b"\r\n").canonical == E1_CANONICAL.encode()
    assert parse_event(E1_LINE.decode()).canonical == E1_CANONICAL.encode()
    assert parse_event(bytearray(E1_LINE)).canonical == E1_CANONICAL.encode()
    assert parse_event(memoryview(E1_LINE)).canonical == E1_CANONICAL.encode()


def test_json_whitespace_inside_the_line_is_allowed():
    pretty = json.dumps(json.loads(E1_LINE), indent=2).encode()
    assert parse_event(pretty).canonical == E1_CANONICAL.encode()


def test_non_text_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse_event(123)  # type: ignore[arg-type]


# ------------------------------------------------------------------ ids


VALID_IDS = ["a", "A", "0", "e1", "a.b:c-d_e", "9" * 128, "x" + "._:-" * 31 + "abc", "urn:uuid:1234"]
INVALID_IDS = ["", "@platform", "@unattributed", ".a", "_a", "-a", ":a", "a b", "a/b", "a\n", "\na", "é", "a\u0661",
               "x" * 129, "a\x00", "a\t"]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_ids_are_accepted(value):
    assert ok(ev(id=value)).id == value
    for type_, field in ID_FIELDS:
        ok(with_data(type_, **{field: value}))
    ok(with_data("contribution.recorded", authors={value: 1}))
    ok(with_data("output.composed", components={value: 1}))


@pytest.mark.parametrize("value", INVALID_IDS)
def test_invalid_event_id_is_invalid(value):
    err = bad(ev(id=value), "id: must be an id matching")
    assert err.event_id is None and err.platform == "demo"


@pytest.mark.parametrize("value", INVALID_IDS)
@pytest.mark.parametrize("type_,field", ID_FIELDS)
def test_invalid_data_id_is_invalid(type_, field, value):
    bad(with_data(type_, **{field: value}), f"data.{field}: must be an id matching")


def test_id_of_128_chars_is_valid_and_129_invalid():
    ok(ev(id="a" * 128))
    bad(ev(id="a" * 129), "id:")
    ok(with_data("value.realized", value="v" * 128))
    bad(with_data("value.realized", value="v" * 129), "data.value:")


def test_id_starting_with_at_sign_is_invalid():
    bad(with_data("payout.issued", prosumer="@platform"), "data.prosumer")
    bad(with_data("contribution.recorded", authors={"@unattributed": 1}), "data.authors: key \"@unattributed\"")


def test_id_with_trailing_newline_is_invalid():
    # Python's `$` would match before a trailing "\n"; the ledger must not.
    bad(ev(id="e1\n"), "id:")
    bad(with_data("work.retracted", work="c1\n"), "data.work:")
    bad(with_data("contribution.recorded", authors={"alice\n": 1}), "data.authors: key")


@pytest.mark.parametrize("value", [1, None, True, ["e1"], {"e": 1}])
def test_id_not_a_string_is_invalid(value):
    err = bad(ev(id=value), "id: must be a string")
    assert err.event_id is None


@pytest.mark.parametrize("type_,field", ID_MAPS)
@pytest.mark.parametrize("key", ["@x", "", "a b", "x" * 129, "a\n"])
def test_map_keys_must_match_the_id_pattern(type_, field, key):
    data = copy.deepcopy(FULL[type_])
    data[field] = {"ok": 1, key: 1}
    bad(ev(type_, data), f"data.{field}: key")


# ------------------------------------------------------------------ platform


@pytest.mark.parametrize("value", ["demo", "a", "0", "zazzle", "my_platform-2", "a" * 64])
def test_valid_platform_is_accepted(value):
    assert ok(ev(platform=value)).platform == value


@pytest.mark.parametrize("value", ["", "Demo", "DEMO", "-demo", "_demo", "de.mo", "de:mo", "de mo", "demo\n",
                                   "a" * 65, "démo", 1, None])
def test_invalid_platform_is_invalid(value):
    err = bad(ev(platform=value), "platform:")
    assert err.platform is None and err.event_id == "e1"


def test_platform_of_64_chars_is_valid_and_65_invalid():
    ok(ev(platform="p" * 64))
    bad(ev(platform="p" * 65), "platform:")


# ------------------------------------------------------------------ currency and content hash


@pytest.mark.parametrize("type_,field", CURRENCY_FIELDS)
def test_valid_currency_is_accepted(type_, field):
    for value in ["USD", "EUR", "JPY", "XAU", "ZZZ"]:
        ok(with_data(type_, **{field: value}))


@pytest.mark.parametrize("type_,field", CURRENCY_FIELDS)
@pytest.mark.parametrize("value", ["usd", "Usd", "US", "USDT", "", "US1", "USD\n", " USD", "ÉUR", 840, None])
def test_invalid_currency_is_invalid(type_, field, value):
    bad(with_data(type_, **{field: value}), f"data.{field}:")


def test_valid_content_hash_is_accepted():
    ok(with_data("contribution.recorded", content_hash="sha256:" + "0" * 64))
    ok(with_data("contribution.recorded", content_hash="sha256:" + "f" * 64))


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "F" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "g" * 64,
        "SHA256:" + "0" * 64,
        "sha512:" + "0" * 64,
        "0" * 64,
        "sha256:" + "0" * 64 + "\n",
        "",
        1,
    ],
)
def test_invalid_content_hash_is_invalid(value):
    bad(with_data("contribution.recorded", content_hash=value), "data.content_hash:")


# ------------------------------------------------------------------ weights, amounts, bps


@pytest.mark.parametrize("type_,field", WEIGHT_MAPS)
def test_weight_1_and_1_000_000_are_valid(type_, field):
    data = copy.deepcopy(FULL[type_])
    data[field] = {"a": 1, "b": 1_000_000}
    ok(ev(type_, data))


@pytest.mark.parametrize("type_,field", WEIGHT_MAPS)
@pytest.mark.parametrize("weight", [0, 1_000_001, -1, 2**63, 1.0, 0.5, "1", True, None, [1], {"w": 1}])
def test_invalid_weight_is_invalid(type_, field, weight):
    data = copy.deepcopy(FULL[type_])
    data[field] = {"a": 1, "b": weight}
    bad(ev(type_, data), f"data.{field}.b:")


def test_weight_0_and_1_000_001_messages():
    bad(with_data("contribution.recorded", authors={"a": 0}), "data.authors.a: must be at least 1, got 0")
    bad(with_data("contribution.recorded", authors={"a": 1_000_001}),
        "data.authors.a: must be at most 1000000, got 1000001")


@pytest.mark.parametrize("type_,field", AMOUNT_FIELDS)
def test_amount_1_and_2_pow_63_minus_1_are_valid(type_, field):
    ok(with_data(type_, **{field: 1}))
    parsed = ok(with_data(type_, **{field: 2**63 - 1}))
    assert parsed.data[field] == 2**63 - 1
    assert b"9223372036854775807" in parsed.canonical


@pytest.mark.parametrize("type_,field", AMOUNT_FIELDS)
@pytest.mark.parametrize("amount", [0, -1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63) - 1])
def test_amount_out_of_range_is_invalid(type_, field, amount):
    bad(with_data(type_, **{field: amount}), f"data.{field}:")


@pytest.mark.parametrize("type_,field", AMOUNT_FIELDS)
@pytest.mark.parametrize("amount", [5.0, 1001.5, "1001", True, None, [5], {"units": 5}])
def test_amount_float_is_invalid(type_, field, amount):
    bad(with_data(type_, **{field: amount}), f"data.{field}:")


def test_amount_2_pow_63_message():
    bad(with_data("value.realized", amount=2**63), "data.amount: must be at most 9223372036854775807")


@pytest.mark.parametrize("bps", [0, 1, 5000, 10_000])
def test_bps_0_to_10000_are_valid(bps):
    ok(with_data("policy.set", platform_fee_bps=bps))
    ok(with_data("output.composed", authors={"a": 1}, upstream_bps=bps))


@pytest.mark.parametrize("bps", [-1, 10_001, 2**63, 100.0, "5000", True, None])
def test_bps_out_of_range_is_invalid(bps):
    bad(with_data("policy.set", platform_fee_bps=bps), "data.platform_fee_bps:")
    bad(with_data("output.composed", authors={"a": 1}, upstream_bps=bps), "data.upstream_bps:")


# ------------------------------------------------------------------ free text


@pytest.mark.parametrize("type_,field", TEXT_FIELDS)
def test_text_of_200_chars_is_valid_and_201_invalid(type_, field):
    ok(with_data(type_, **{field: "x" * 200}))
    bad(with_data(type_, **{field: "x" * 201}), f"data.{field}: must be at most 200 characters, got 201")


@pytest.mark.parametrize("type_,field", TEXT_FIELDS)
def test_text_length_counts_code_points(type_, field):
    ok(with_data(type_, **{field: "\U0001F600" * 200}))  # 800 bytes, 400 UTF-16 units
    ok(with_data(type_, **{field: "é" * 200}))
    bad(with_data(type_, **{field: "\U0001F600" * 201}), f"data.{field}:")


@pytest.mark.parametrize("type_,field", TEXT_FIELDS)
def test_text_may_be_empty_and_hold_any_character(type_, field):
    ok(with_data(type_, **{field: ""}))
    ok(with_data(type_, **{field: 'a"b\\c\n\t\x00\x1f\x7f\u2028\u2029\ufeff\U0010FFFF/'}))


@pytest.mark.parametrize("type_,field", TEXT_FIELDS)
@pytest.mark.parametrize("value", [1, 1.5, True, ["x"], {"x": "y"}])
def test_text_not_a_string_is_invalid(type_, field, value):
    bad(with_data(type_, **{field: value}), f"data.{field}: must be a string")


# ------------------------------------------------------------------ maps


def _map(n: int, prefix: str = "k") -> dict:
    return {f"{prefix}{i}": 1 for i in range(n)}


def test_contribution_authors_1_to_64_entries():
    ok(with_data("contribution.recorded", authors=_map(1)))
    ok(with_data("contribution.recorded", authors=_map(64)))
    bad(with_data("contribution.recorded", authors={}), "data.authors: must have at least 1 entries, got 0")
    bad(with_data("contribution.recorded", authors=_map(65)), "data.authors: must have at most 64 entries, got 65")


def test_output_authors_0_to_64_entries():
    ok(with_data("output.composed", authors={}))
    ok(with_data("output.composed", authors=_map(1)))
    ok(with_data("output.composed", authors=_map(64)))
    bad(with_data("output.composed", authors=_map(65)), "data.authors: must have at most 64 entries")


def test_reassigned_authors_0_to_64_entries():
    ok(with_data("work.reassigned", authors={}))  # legality for this work needs ledger state
    ok(with_data("work.reassigned", authors=_map(64)))
    bad(with_data("work.reassigned", authors=_map(65)), "data.authors: must have at most 64 entries")


def test_components_1_to_1000_entries():
    ok(with_data("output.composed", components=_map(1)))
    ok(with_data("output.composed", components=_map(1000)))
    bad(with_data("output.composed", components={}), "data.components: must have at least 1 entries")
    bad(with_data("output.composed", components=_map(1001)), "data.components: must have at most 1000 entries, got 1001")


@pytest.mark.parametrize("type_,field", ID_MAPS)
@pytest.mark.parametrize("value", [[], [["a", 1]], "a", 1, None, True])
def test_map_not_an_object_is_invalid(type_, field, value):
    data = copy.deepcopy(FULL[type_])
    data[field] = value
    bad(ev(type_, data), f"data.{field}: must be a JSON object")


def test_authors_map_order_is_kept_as_received():
    parsed = ok(with_data("contribution.recorded", authors={"zed": 1, "amy": 2}))
    assert list(parsed.data["authors"]) == ["zed", "amy"]
    assert b'"authors":{"amy":2,"zed":1}' in parsed.canonical


# ------------------------------------------------------------------ output.composed


def test_output_without_authors_requires_upstream_10000():
    ok(with_data("output.composed"))  # neither authors nor upstream_bps
    ok(with_data("output.composed", upstream_bps=10_000))
    ok(with_data("output.composed", authors={}, upstream_bps=10_000))
    ok(with_data("output.composed", authors={}))
    bad(with_data("output.composed", upstream_bps=4000), "data.upstream_bps: must be 10000 when the output has no authors")
    bad(with_data("output.composed", authors={}, upstream_bps=4000), "data.upstream_bps")
    bad(with_data("output.composed", authors={}, upstream_bps=0), "data.upstream_bps")
    bad(with_data("output.composed", upstream_bps=9999), "data.upstream_bps")


def test_output_with_authors_may_keep_part_of_the_value():
    ok(with_data("output.composed", authors={"carol": 1}, upstream_bps=0))
    ok(with_data("output.composed", authors={"carol": 1}, upstream_bps=4000))
    ok(with_data("output.composed", authors={"carol": 1}))


# ------------------------------------------------------------------ usage pools (section 7)


@pytest.mark.parametrize("method", ["pro_rata", "user_centric"])
def test_pool_opened_method_must_be_pro_rata_or_user_centric(method):
    assert ok(with_data("pool.opened", method=method)).data["method"] == method
    bad(with_data("pool.opened", method="fair"), 'data.method: must be "pro_rata" or "user_centric", got "fair"')


@pytest.mark.parametrize("method", ["Pro_rata", "PRO_RATA", "pro-rata", "prorata", "user-centric", "pro_rata ",
                                    " pro_rata", "pro_rata\n", "pro_rata|user_centric", "", "userCentric"])
def test_pool_opened_method_is_matched_exactly(method):
    bad(with_data("pool.opened", method=method), "data.method: must be")


@pytest.mark.parametrize("method", [1, None, True, ["pro_rata"], {"pro_rata": 1}])
def test_pool_opened_method_must_be_a_string(method):
    bad(with_data("pool.opened", method=method), "data.method: must be a string")


def test_usage_recorded_counts_are_1_to_1e9():
    ok(with_data("usage.recorded", uses={"a": 1, "b": 1_000_000_000}))
    bad(with_data("usage.recorded", uses={"a": 0}), "data.uses.a: must be at least 1, got 0")
    bad(with_data("usage.recorded", uses={"a": 1_000_000_001}),
        "data.uses.a: must be at most 1000000000, got 1000000001")


@pytest.mark.parametrize("count", [-1, 2**63, 1.0, 0.5, "1", True, None, [1], {"n": 1}])
def test_usage_recorded_count_must_be_a_json_integer_in_range(count):
    bad(with_data("usage.recorded", uses={"a": 1, "b": count}), "data.uses.b:")


def test_usage_recorded_uses_1_to_1000_entries():
    ok(with_data("usage.recorded", uses=_map(1)))
    ok(with_data("usage.recorded", uses=_map(1000)))
    bad(with_data("usage.recorded", uses={}), "data.uses: must have at least 1 entries, got 0")
    bad(with_data("usage.recorded", uses=_map(1001)), "data.uses: must have at most 1000 entries, got 1001")


def test_pool_subscriber_is_an_id_not_a_registered_prosumer():
    # Any id will do at this layer; the subscriber never needs registering (section 7).
    ok(with_data("pool.funded", subscriber="s" * 128))
    bad(with_data("pool.funded", subscriber="@platform"), "data.subscriber: must be an id matching")
    bad(with_data("usage.recorded", subscriber="a b"), "data.subscriber: must be an id matching")


def test_payout_returned_names_its_payout_and_maybe_a_reason():
    ok(with_data("payout.returned"))
    bad(with_data("payout.returned", amount=5), "data.amount: unknown field")
    bad(with_data("payout.returned", payout="@platform"), "data.payout")


def test_pool_closed_names_only_its_pool():
    ok(with_data("pool.closed"))
    bad(with_data("pool.closed", amount=5), "data.amount: unknown field")


def test_pools_fixture_all_lines_parse_except_p26_method_fair():
    if EXAMPLES is None:
        pytest.skip("shared/spec/examples not found")
    lines = (EXAMPLES / "pools.jsonl").read_bytes().splitlines(keepends=True)
    outcomes = json.loads((EXAMPLES / "pools.expected.json").read_text("utf-8"))["outcomes"]
    assert len(lines) == len(outcomes)
    invalid = []
    for raw, outcome in zip(lines, outcomes):
        try:
            parsed = parse_event(raw)
        except InvalidEvent as e:
            invalid.append(e.event_id)
            assert outcome["code"] == "invalid"
            assert e.message == 'data.method: must be "pro_rata" or "user_centric", got "fair"'
        else:
            assert parsed.id == outcome["id"] and outcome["code"] != "invalid"
            assert parsed.canonical == stdlib_canonical(json.loads(raw))
    assert invalid == ["p26"]


def test_absent_optional_fields_stay_absent():
    obj = with_data("output.composed")
    parsed = ok(obj)
    assert parsed.data == {"work": "o1", "components": {"c1": 1}}
    assert "upstream_bps" not in parsed.data and "authors" not in parsed.data
    assert parsed.canonical == stdlib_canonical(obj)
    assert b"upstream_bps" not in parsed.canonical and b"authors" not in parsed.canonical
    for type_ in EVENT_TYPES:
        parsed = ok(ev(type_, MINIMAL[type_]))
        assert parsed.data == MINIMAL[type_]
        assert set(parsed.event) == {"v", "id", "platform", "type", "at", "data"}


def test_event_is_exactly_as_received():
    raw = b'{"data":{"authors":{"zed":1,"amy":2},"work":"c1"},"at":"2026-10-01T00:00:00.500+02:00",' \
          b'"type":"contribution.recorded","platform":"demo","id":"e1","v":1}'
    parsed = ok(raw)
    assert parsed.event == orjson.loads(raw)
    assert list(parsed.event) == ["data", "at", "type", "platform", "id", "v"]
    assert parsed.at == "2026-10-01T00:00:00.500+02:00"  # not normalised


def test_validate_event_obj_returns_the_same_object():
    obj = ev("value.realized")
    parsed = validate_event_obj(obj)
    assert parsed.event is obj
    assert obj == ev("value.realized")  # nothing added or changed


# ------------------------------------------------------------------ at


VALID_AT = [
    "2026-11-26T10:00:00Z",
    "2026-11-26T10:00:00+01:00",
    "2026-11-26T10:00:00-05:30",
    "2026-11-26T10:00:00+23:59",
    "2026-11-26T10:00:00-23:59",
    "2026-11-26T10:00:00+00:00",
    "2026-11-26T10:00:00-00:00",
    "2026-11-26T10:00:00.5Z",
    "2026-11-26T10:00:00.123456Z",
    "2026-11-26T10:00:00.123456789012+02:00",
    "2026-01-31T23:59:59Z",
    "2024-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2026-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
INVALID_AT = [
    "2026-02-30T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-10-00T00:00:00Z",
    "2026-10-32T00:00:00Z",
    "2026-10-01T24:00:00Z",
    "2026-10-01T23:60:00Z",
    "2026-10-01T23:59:60Z",
    "2026-12-31T23:59:60Z",
    "2026-10-01T00:00:00+24:00",
    "2026-10-01T00:00:00+01:60",
    "2026-10-01T00:00:00+0100",
    "2026-10-01T00:00:00+01",
    "2026-10-01T00:00:00",
    "2026-10-01T00:00Z",
    "2026-10-01t00:00:00Z",
    "2026-10-01T00:00:00z",
    "2026-10-01 00:00:00Z",
    "2026-10-01T00:00:00.Z",
    "2026-10-01T00:00:00,5Z",
    "2026-10-01",
    "2026-10-01T00:00:00Z\n",
    " 2026-10-01T00:00:00Z",
    "26-10-01T00:00:00Z",
    "+2026-10-01T00:00:00Z",
    "20261001T000000Z",
    "2026-1-01T00:00:00Z",
    "2026-10-01T00:00:00UTC",
    "2026-10-01T00:00:00GMT+1",
    "２０２６-10-01T00:00:00Z",
    "2026-10-01T00:00:0\u0661Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00",
    "",
]


@pytest.mark.parametrize("at", VALID_AT)
def test_valid_at_is_accepted(at):
    assert ok(ev(at=at)).at == at


@pytest.mark.parametrize("at", INVALID_AT)
def test_invalid_at_is_invalid(at):
    bad(ev(at=at), "at:")


def test_impossible_date_2026_02_30_is_invalid():
    bad(ev(at="2026-02-30T00:00:00Z"), "at: 2026-02-30 is not a real calendar date")


def test_month_13_is_invalid():
    bad(ev(at="2026-13-01T00:00:00Z"), "at: must be an RFC 3339 date-time")


def test_hour_24_is_invalid():
    bad(ev(at="2026-10-01T24:00:00Z"), "at:")


def test_offset_hours_above_23_are_invalid():
    bad(ev(at="2026-10-01T00:00:00+24:00"), "at:")
    bad(ev(at="2026-10-01T00:00:00-99:00"), "at:")


def test_leap_second_is_invalid():
    # Python datetimes cannot represent second 60 and statement months must be exact.
    bad(ev(at="2016-12-31T23:59:60Z"), "at: leap seconds (:60) are not accepted")
    bad(ev(at="2016-12-31T23:59:60.5+00:00"), "at: leap seconds")


def test_february_29_only_in_leap_years():
    ok(ev(at="2028-02-29T12:00:00Z"))
    bad(ev(at="2027-02-29T12:00:00Z"), "not a real calendar date")
    bad(ev(at="1900-02-29T12:00:00Z"), "not a real calendar date")


@pytest.mark.parametrize("at", [20261001, None, True, ["2026-10-01T00:00:00Z"]])
def test_at_not_a_string_is_invalid(at):
    bad(ev(at=at), "at: must be a string")


@pytest.mark.parametrize(
    "at,month",
    [
        ("2026-11-01T00:30:00+01:00", "2026-10"),
        ("2026-10-31T23:30:00-01:00", "2026-11"),
        ("2026-10-31T23:59:59.999999999Z", "2026-10"),
        ("2026-11-01T00:00:00Z", "2026-11"),
        ("2026-11-02T08:00:00+01:00", "2026-11"),
        ("2027-01-01T00:00:00+00:01", "2026-12"),
        ("2026-12-31T23:59:00-00:01", "2027-01"),
        ("2024-03-01T05:00:00+06:00", "2024-02"),
        ("2026-03-01T05:00:00+06:00", "2026-02"),
        ("2026-10-15T12:00:00-00:00", "2026-10"),
        ("2026-10-01T00:00:00+00:00", "2026-10"),
        ("0001-01-01T00:00:00Z", "0001-01"),
        ("9999-12-31T23:59:59Z", "9999-12"),
    ],
)
def test_utc_month(at, month):
    assert utc_month(at) == month


# ------------------------------------------------------------------ InvalidEvent


def test_invalid_event_carries_id_and_platform_best_effort():
    err = bad(with_data("value.realized", amount=0))
    assert (err.event_id, err.platform) == ("e1", "demo")
    assert isinstance(err, Exception) and str(err) == err.message
    err = bad(ev(id="@bad", platform="Bad", v=2))
    assert (err.event_id, err.platform) == (None, None)
    err = bad(ev(id=5, platform=["demo"]))
    assert (err.event_id, err.platform) == (None, None)
    err = bad(b"[1, 2]")
    assert (err.event_id, err.platform) == (None, None)


def test_invalid_event_message_names_the_nested_path():
    bad(with_data("output.composed", components={"c1": "1"}), 'data.components.c1: must be a JSON integer, got "1"')
    bad(with_data("contribution.recorded", authors={"a b": 1}), 'data.authors: key "a b" is not an id')


def test_invalid_event_message_counts_further_errors():
    err = bad(ev("value.realized", {"value": "v1", "work": "o1", "amount": 0, "currency": "usd"}))
    assert "(and 1 more error)" in err.message


# ------------------------------------------------------------------ ParsedEvent


def test_parsed_event_properties():
    parsed = ok(ev("value.realized"))
    assert parsed.id == "e1"
    assert parsed.platform == "demo"
    assert parsed.type == "value.realized"
    assert parsed.at == "2026-10-01T00:00:00Z"
    assert parsed.data == FULL["value.realized"]
    assert parsed.event == ev("value.realized")


def test_parsed_event_is_frozen():
    parsed = ok(ev())
    with pytest.raises(AttributeError):
        parsed.canonical = b"{}"  # type: ignore[misc]


# ------------------------------------------------------------------ validate_event_obj


def test_validate_event_obj_rejects_non_plain_json_types():
    class Weight(enum.IntEnum):
        ONE = 1

    class Text(str):
        pass

    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("contribution.recorded", authors={"a": Weight.ONE}))
    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("prosumer.registered", name=Text("x")))
    with pytest.raises(InvalidEvent):
        validate_event_obj(ev() | {"data": ({"platform_fee_bps": 1},)})
    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("policy.set", platform_fee_bps=1.0))
    with pytest.raises(InvalidEvent):
        validate_event_obj(with_data("policy.set", platform_fee_bps=object()))


@pytest.mark.parametrize("obj", [None, [], "x", 1, b"{}", (1,)])
def test_validate_event_obj_rejects_non_objects(obj):
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        validate_event_obj(obj)


# ------------------------------------------------------------------ canonical bytes


def test_canonical_bytes_sorts_keys_without_whitespace():
    assert canonical_bytes(json.loads(E1_LINE)) == E1_CANONICAL.encode()
    assert canonical_bytes({"b": [1, {"d": None, "c": True}], "a": "é"}) == '{"a":"é","b":[1,{"c":true,"d":null}]}'.encode()


def test_canonical_bytes_escapes_like_python_json():
    obj = {"k\u2028": 'a"b\\c\n\r\t\b\f\x00\x1f\x7f/\u2028\ufeff\U0001F600é'}
    assert canonical_bytes(obj) == stdlib_canonical(obj)
    assert b"\\u0000" in canonical_bytes(obj) and "\u2028".encode() in canonical_bytes(obj)


def test_canonical_bytes_sorts_by_code_point():
    obj = {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "a": 4, "B": 5, "é": 6}
    assert canonical_bytes(obj) == stdlib_canonical(obj)
    assert list(orjson.loads(canonical_bytes(obj))) == sorted(obj)


def test_canonical_bytes_of_integers_beyond_64_bits_match_python_json():
    obj = {"earned": 2**64 + 5, "balance": -(2**70), "paid": 0}
    assert canonical_bytes(obj) == stdlib_canonical(obj)


@pytest.mark.parametrize("obj", [{"a": 1.5}, {"a": float("nan")}, [float("inf")], 1.0])
def test_canonical_bytes_refuses_floats(obj):
    with pytest.raises(ValueError):
        canonical_bytes(obj)


@pytest.mark.parametrize("obj", [{1: 2}, {"a": (1, 2)}, {"a": b"x"}, {"a": {1, 2}}, {"a": object()}])
def test_canonical_bytes_refuses_non_json_values(obj):
    with pytest.raises(TypeError):
        canonical_bytes(obj)


def test_canonical_bytes_refuses_lone_surrogates():
    with pytest.raises((TypeError, ValueError)):
        canonical_bytes({"a": "\ud800"})


def test_canonical_bytes_of_a_parsed_event_reparse_to_the_same_event():
    for type_ in EVENT_TYPES:
        parsed = ok(ev(type_))
        again = parse_event(parsed.canonical)
        assert again.event == parsed.event and again.canonical == parsed.canonical
        assert canonical_bytes(parsed.event) == parsed.canonical


# ------------------------------------------------------------------ hostile input


def nest(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def test_nesting_deeper_than_32_levels_is_invalid_unparsed_and_names_the_limit():
    """The envelope is level 1, so `data.name` holding 31 arrays nests 33 deep."""
    event = line(with_data("prosumer.registered", name="X")).replace(b'"X"', nest(30))  # 32 deep
    bad(event, "data.name: must be a string")  # judged by the schema: the depth is fine
    for depth in (31, 300, 1000, 5000):  # 33 deep; orjson.dumps gives up at 255, orjson.loads at 1024
        bad(line(with_data("prosumer.registered", name="X")).replace(b'"X"', nest(depth)),
            "nest deeper than 32 levels")
    assert not schema.nests_too_deep(nest(32)) and schema.nests_too_deep(nest(33))


def test_brackets_inside_strings_do_not_count_toward_the_nesting():
    name = "[" * 100 + '\\"{' * 50  # 150 openers, all inside one string (with escaped quotes)
    assert ok(with_data("prosumer.registered", name=name[:200])).data["name"] == name[:200]
    assert not schema.nests_too_deep(b'["' + b'[' * 100 + b'\\\\", "\\"' + b'{' * 50 + b'"]')
    assert schema.nests_too_deep(b'["\\\\"' + b"[" * 40 + b"]" * 40 + b"]")  # the string ends after \\


def test_any_parser_failure_on_an_event_is_invalid_never_an_escaping_exception(monkeypatch):
    """RecursionError, MemoryError, ...: what a parser might raise on absurd
    input is that input's `invalid`, with the failure named."""
    for failure in (RecursionError("maximum recursion depth exceeded"), MemoryError(), UnicodeError("bad")):
        def failing(_obj, *_args, failure=failure, **_kwargs):
            raise failure
        monkeypatch.setattr(schema._EVENT_ADAPTER, "validate_python", failing, raising=False)
        named = "bad" if isinstance(failure, ValueError) else f"cannot be checked \\({type(failure).__name__}"
        with pytest.raises(InvalidEvent, match=named):
            parse_event(line(ev()))
        with pytest.raises(InvalidEvent, match=named):
            validate_event_obj(ev())


def test_a_deep_value_handed_over_parsed_is_invalid_too():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    bad_obj = with_data("prosumer.registered", name="X")
    bad_obj["data"]["name"] = deep
    with pytest.raises(InvalidEvent):
        validate_event_obj(bad_obj)


def test_the_envelope_of_an_item_is_read_without_judging_it():
    envelope = schema.read_envelope(line(ev(id="e1", platform="demo")))
    assert (envelope.id, envelope.platform, envelope.type) == ("e1", "demo", "policy.set")
    odd = schema.read_envelope(b'{"id": "not an id!", "platform": "Caps", "type": 7}')
    assert (odd.id, odd.platform, odd.type) == ("not an id!", "Caps", None)
    assert (odd.event_id, odd.platform_id) == (None, None)  # not filed under what they are not
    for unreadable in (b"{not json", nest(1000), b"[]", b'"x"', b'{"platform": "p"' + b" " * MAX_LINE_BYTES + b"}"):
        assert schema.read_envelope(unreadable) == schema.Envelope()
