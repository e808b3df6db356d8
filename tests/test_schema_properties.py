"""Property tests of the v1 event schema (hypothesis)."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.contract.schema import (
    EVENT_TYPES,
    InvalidEvent,
    canonical_bytes,
    parse_event,
    validate_event_obj,
)
from projections.periods import utc_month

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stdlib_canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------ strategies

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)
short_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,8}", fullmatch=True)
platforms = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
currencies = st.from_regex(r"[A-Z]{3}", fullmatch=True)
hashes = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
weights = st.integers(1, 1_000_000)
amounts = st.one_of(st.integers(1, 2**63 - 1), st.sampled_from([1, 2**31, 2**53 + 1, 2**63 - 1]))
bps = st.integers(0, 10_000)
TRICKY = ['"', "\\", "/", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u2029",
          "\ufeff", "\ufffd", "\uffff", "\U0001F600", "\U0010FFFF", "é", ":", "{", "}", ",", "\\u003a", "\\u"]
PIECES = st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY))  # TRICKY holds a few multi-character pieces
texts = st.lists(PIECES, max_size=80).map(lambda p: "".join(p)[:200])


def authors(min_size: int) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.one_of(short_ids, ids), weights, min_size=min_size, max_size=64)


@st.composite
def ats(draw) -> str:
    moment = draw(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31, 23, 59, 59)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{moment.year:04d}" + text[text.index("-"):]  # strftime does not pad years < 1000 everywhere
    if draw(st.booleans()):
        text += "." + draw(st.from_regex(r"[0-9]{1,12}", fullmatch=True))
    if draw(st.booleans()):
        text += "Z"
    else:
        minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
        sign = "-" if minutes < 0 or (minutes == 0 and draw(st.booleans())) else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text


def _output_fix(d: dict) -> dict:
    if not d.get("authors") and "upstream_bps" in d:
        d["upstream_bps"] = 10_000
    return d


DATA = {
    "prosumer.registered": st.fixed_dictionaries({"prosumer": ids}, optional={"name": texts}),
    "contribution.recorded": st.fixed_dictionaries(
        {"work": ids, "authors": authors(1)}, optional={"kind": texts, "content_hash": hashes}
    ),
    "output.composed": st.fixed_dictionaries(
        {"work": ids, "components": st.dictionaries(ids, weights, min_size=1, max_size=30)},
        optional={"authors": authors(0), "upstream_bps": bps, "kind": texts},
    ).map(_output_fix),
    "value.realized": st.fixed_dictionaries(
        {"value": ids, "work": ids, "amount": amounts, "currency": currencies}, optional={"source": texts}
    ),
    "value.reversed": st.fixed_dictionaries({"value": ids, "amount": amounts}, optional={"reason": texts}),
    "policy.set": st.fixed_dictionaries({"platform_fee_bps": bps}),
    "work.retracted": st.fixed_dictionaries({"work": ids}, optional={"reason": texts}),
    "work.reinstated": st.fixed_dictionaries({"work": ids}, optional={"reason": texts}),
    "work.reassigned": st.fixed_dictionaries({"work": ids, "authors": authors(0)}),
    "payout.issued": st.fixed_dictionaries(
        {"payout": ids, "prosumer": ids, "amount": amounts, "currency": currencies}, optional={"reference": texts}
    ),
    "pool.opened": st.fixed_dictionaries(
        {"pool": ids, "currency": currencies, "method": st.sampled_from(["pro_rata", "user_centric"])},
        optional={"name": texts},
    ),
    "pool.funded": st.fixed_dictionaries({"pool": ids, "subscriber": ids, "amount": amounts}),
    "usage.recorded": st.fixed_dictionaries(
        {"pool": ids, "subscriber": ids,
         "uses": st.dictionaries(ids, st.integers(1, 1_000_000_000), min_size=1, max_size=30)}
    ),
    "pool.closed": st.fixed_dictionaries({"pool": ids}),
    "payout.returned": st.fixed_dictionaries({"payout": ids}, optional={"reason": texts}),
}
assert set(DATA) == set(EVENT_TYPES)


@st.composite
def events(draw) -> dict:
    type_ = draw(st.sampled_from(EVENT_TYPES))
    fields = [
        ("v", 1),
        ("id", draw(ids)),
        ("platform", draw(platforms)),
        ("type", type_),
        ("at", draw(ats())),
        ("data", draw(DATA[type_])),
    ]
    random.Random(draw(st.integers(0, 2**32))).shuffle(fields)  # key order as a producer might send it
    return dict(fields)


def _escape_char(c: str, rnd: random.Random) -> str:
    if c == '"':
        return '\\"'
    if c == "\\":
        return "\\\\"
    if ord(c) < 0x20:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}.get(c, f"\\u{ord(c):04x}") \
            if rnd.random() < 0.5 else f"\\u{ord(c):04X}"
    if rnd.random() < 0.15:  # optional escapes, including of ':' and '/'
        if c == "/" and rnd.random() < 0.5:
            return "\\/"
        if ord(c) > 0xFFFF:
            v = ord(c) - 0x10000
            return f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}"
        return f"\\u{ord(c):04x}" if rnd.random() < 0.5 else f"\\u{ord(c):04X}"
    return c


def producer_json(obj: object, rnd: random.Random, dup: tuple[dict, str] | None = None) -> str:
    """JSON text as an arbitrary (valid) producer might write it: random whitespace and escapes.

    With `dup` = (an object inside `obj`, one of its keys), that key is written twice.
    """

    def ws() -> str:
        return rnd.choice(["", "", " ", "\n", "\t", "\r\n  "])

    def pair(k: str, v: object) -> str:
        return f"{ws()}{producer_json(k, rnd)}{ws()}:{ws()}{producer_json(v, rnd, dup)}{ws()}"

    if isinstance(obj, dict):
        items = [pair(k, v) for k, v in obj.items()]
        if dup is not None and dup[0] is obj:
            items.insert(rnd.randint(0, len(items)), pair(dup[1], obj[dup[1]]))
        return "{" + ",".join(items) + ws() + "}"
    if isinstance(obj, str):
        return '"' + "".join(_escape_char(c, rnd) for c in obj) + '"'
    if isinstance(obj, bool) or obj is None:
        return json.dumps(obj)
    if isinstance(obj, int):
        return str(obj)
    raise TypeError(type(obj))


# ------------------------------------------------------------------ round trips


@SETTINGS
@given(event=events())
def test_random_valid_events_round_trip(event):
    raw = json.dumps(event, ensure_ascii=False).encode("utf-8")
    parsed = parse_event(raw)
    assert parsed.event == event
    assert list(parsed.event) == list(event)
    # orjson's canonical bytes are exactly what an auditor gets with Python's json
    assert parsed.canonical == stdlib_canonical(event)
    assert canonical_bytes(event) == parsed.canonical
    again = parse_event(parsed.canonical)
    assert again.event == event and again.canonical == parsed.canonical
    assert validate_event_obj(copy.deepcopy(event)).canonical == parsed.canonical


@SETTINGS
@given(event=events(), seed=st.integers(0, 2**32), ascii_only=st.booleans(), crlf=st.booleans())
def test_random_valid_events_in_any_producer_encoding_parse_the_same(event, seed, ascii_only, crlf):
    rnd = random.Random(seed)
    text = producer_json(event, rnd) if not ascii_only else json.dumps(event, ensure_ascii=True)
    raw = text.encode("utf-8") + (b"\r\n" if crlf else b"\n")
    parsed = parse_event(raw)
    assert parsed.event == event
    assert parsed.canonical == stdlib_canonical(event)
    assert parse_event(text).canonical == parsed.canonical


@SETTINGS
@given(event=events(), seed=st.integers(0, 2**32))
def test_a_repeated_key_anywhere_is_always_invalid(event, seed):
    rnd = random.Random(seed)
    objects = []

    def collect(o: dict) -> None:
        objects.append(o)
        for v in o.values():
            if isinstance(v, dict):
                collect(v)

    collect(event)
    target = rnd.choice([o for o in objects if o])
    key = rnd.choice(list(target))
    text = producer_json(event, rnd, dup=(target, key))
    with pytest.raises(InvalidEvent, match="duplicate key"):
        parse_event(text.encode("utf-8"))


# ------------------------------------------------------------------ mutations

JSON_KINDS = {
    "int": st.integers(-(2**70), 2**70),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "str": st.text(max_size=20),
    "bool": st.booleans(),
    "null": st.none(),
    "list": st.lists(st.integers(0, 3), max_size=3),
    "dict": st.dictionaries(st.text(max_size=5), st.integers(0, 3), max_size=3),
}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


def _paths(obj: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in obj.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out.extend(_paths(v, prefix + (k,)))
    return out


@SETTINGS
@given(event=events(), data=st.data())
def test_a_field_of_the_wrong_json_type_is_always_invalid(event, data):
    path = data.draw(st.sampled_from(_paths(event)))
    parent = event
    for k in path[:-1]:
        parent = parent[k]
    original = parent[path[-1]]
    kind = data.draw(st.sampled_from(sorted(set(JSON_KINDS) - {_kind(original)})))
    parent[path[-1]] = data.draw(JSON_KINDS[kind])
    raw = json.dumps(event, ensure_ascii=data.draw(st.booleans())).encode("utf-8")
    with pytest.raises(InvalidEvent):
        parse_event(raw)
    with pytest.raises(InvalidEvent):
        validate_event_obj(event)


@SETTINGS
@given(event=events(), data=st.data())
def test_an_unknown_field_in_any_object_is_always_invalid(event, data):
    objects = [event, event["data"]]
    target = data.draw(st.sampled_from(objects))
    name = data.draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in target))
    assume(not (target is event["data"] and name in {"name", "kind", "content_hash", "authors",
                                                     "upstream_bps", "source", "reason", "reference"}))
    target[name] = data.draw(st.one_of(*JSON_KINDS.values()))
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps(event).encode())


@SETTINGS
@given(event=events(), data=st.data())
def test_a_missing_required_field_is_always_invalid(event, data):
    required = {"v", "id", "platform", "type", "at", "data"}
    target = data.draw(st.sampled_from([event, event["data"]]))
    if target is event:
        key = data.draw(st.sampled_from(sorted(required)))
    else:
        needed = {
            "prosumer.registered": ["prosumer"],
            "contribution.recorded": ["work", "authors"],
            "output.composed": ["work", "components"],
            "value.realized": ["value", "work", "amount", "currency"],
            "value.reversed": ["value", "amount"],
            "policy.set": ["platform_fee_bps"],
            "work.retracted": ["work"],
            "work.reinstated": ["work"],
            "work.reassigned": ["work", "authors"],
            "payout.issued": ["payout", "prosumer", "amount", "currency"],
            "pool.opened": ["pool", "currency", "method"],
            "pool.funded": ["pool", "subscriber", "amount"],
            "usage.recorded": ["pool", "subscriber", "uses"],
            "pool.closed": ["pool"],
            "payout.returned": ["payout"],
        }[event["type"]]
        key = data.draw(st.sampled_from(needed))
    del target[key]
    with pytest.raises(InvalidEvent):
        parse_event(json.dumps(event).encode())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=6)),
    max_leaves=20,
)


@SETTINGS
@given(value=json_values)
def test_arbitrary_json_is_an_event_or_invalid_event(value):
    try:
        raw = json.dumps(value).encode()
    except ValueError:
        return
    try:
        parse_event(raw)
    except InvalidEvent:
        pass
    try:
        validate_event_obj(value)
    except InvalidEvent:
        pass


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_never_raises_anything_but_invalid_event(raw):
    try:
        parse_event(raw)
    except InvalidEvent:
        pass


@SETTINGS
@given(event=events(), data=st.data())
def test_byte_level_corruption_never_raises_anything_but_invalid_event(event, data):
    raw = bytearray(json.dumps(event, ensure_ascii=False).encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_event(bytes(raw))
    except InvalidEvent:
        return
    assert parsed.canonical == stdlib_canonical(parsed.event)


# ------------------------------------------------------------------ canonical bytes, time

canonical_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=6)),
    max_leaves=25,
)


@SETTINGS
@given(value=canonical_values)
def test_canonical_bytes_equal_python_json_for_any_json_value(value):
    assert canonical_bytes(value) == stdlib_canonical(value)


@SETTINGS
@given(at=ats())
def test_utc_month_agrees_with_datetime(at):
    moment = datetime.fromisoformat(at[:19] + ("+00:00" if at.endswith("Z") else at[-6:]))
    utc = moment.astimezone(timezone.utc)
    assert utc_month(at) == f"{utc.year:04d}-{utc.month:02d}"
