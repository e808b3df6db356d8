"""Strict v1 event schema of peerledger (EVENTS.md sections 1, 2, 5 and 7).

Everything here is stateless: a line (or an already parsed JSON value) is either a
valid v1 event or an :class:`InvalidEvent`.  Rules that need ledger state (ids that
must be new or must exist, balances, an empty author set on ``work.reassigned``
for a work that is not an output with ``upstream_bps`` 10 000, ...) are checked
elsewhere.

Decisions taken where EVENTS.md is silent (to be copied into the project docs):

* Nesting: a line (or HTTP array element, or Kafka value) whose arrays and
  objects nest deeper than ``JSON_DEPTH_MAX`` is rejected before any parser
  recurses into it; see :func:`nests_too_deep`.  Any other failure of a parser
  or serialiser on hostile input is that input's ``invalid`` too: nothing but
  :class:`InvalidEvent` leaves :func:`parse_event` or :func:`validate_event_obj`.
* Line length: the limit ``MAX_LINE_BYTES`` applies to the line *without* its
  terminator ("\\n" or "\\r\\n", of which one is stripped).  A longer line is
  rejected before any JSON parsing.  Inside the line, ordinary JSON whitespace
  (including newlines, e.g. a pretty-printed Kafka message) is allowed: framing is
  the caller's job.
* Duplicate keys in any JSON object are invalid (``{"v":1,"v":1,...}`` is
  ambiguous: parsers disagree on which value wins).  The check is exact and costs
  a few ``bytes.count`` calls; see ``_colon_counts_agree``.
* ``at``: RFC 3339 ``date-time`` with upper-case ``T`` and ``Z``; seconds are
  required, the fraction may have any number of digits; offsets ``+hh:mm`` /
  ``-hh:mm`` with hh <= 23 (``-00:00`` is accepted and means UTC).  Leap seconds
  (``:60``) are rejected, and so are instants outside years 0001..9999 in local
  time *or* in UTC: statements are cut by UTC month, which we compute with Python
  datetimes, and those cannot represent a leap second or year 0 / 10000.  Rather
  than guess which month ``23:59:60+00:30`` belongs to, such events are invalid.
* Integers: a JSON number with a fraction or exponent (``5.0``, ``1e2``) is not an
  integer, even if its value is integral.  ``-0`` is the integer 0.
* Canonical bytes (section 5): keys sorted in code point order, no whitespace,
  ``","`` / ``":"`` separators, non-ASCII unescaped, UTF-8; control characters are
  escaped exactly as Python's ``json.dumps(..., ensure_ascii=False)`` does
  (``\\n``, ``\\u001f``, ...).  orjson produces these bytes; a property test checks
  them against the stdlib form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Annotated, Any, Literal, NotRequired, Union

import orjson
from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from projections.periods import utc_instant

__all__ = [
    "MAX_LINE_BYTES",
    "JSON_DEPTH_MAX",
    "Envelope",
    "read_envelope",
    "nests_too_deep",
    "JSON_ESCAPE",
    "EVENT_TYPES",
    "InvalidEvent",
    "ParsedEvent",
    "parse_event",
    "validate_event_obj",
    "at_error",
    "canonical_bytes",
    "ID_PATTERN",
    "PLATFORM_PATTERN",
    "CURRENCY_PATTERN",
    "CONTENT_HASH_PATTERN",
    "AT_PATTERN",
    "METHOD_PATTERN",
    "POOL_METHODS",
]

MAX_LINE_BYTES: int = 1024 * 1024  # 1 MiB, excluding the line terminator
# The deepest nesting of arrays and objects an offered item may have.  A valid
# event nests 3 deep (envelope → data → authors or components); the bound leaves
# room for a future field or two and stays far below the depth at which any
# parser we use recurses into trouble (orjson.dumps gives up at 255, the
# stdlib json and pydantic near Python's recursion limit of 1000).
JSON_DEPTH_MAX = 32

EVENT_TYPES: tuple[str, ...] = (
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
    # Usage pools (EVENTS.md section 7, revision 1.1).
    "pool.opened",
    "pool.funded",
    "usage.recorded",
    "pool.closed",
    # Returned payouts (EVENTS.md section 8, revision 1.2).
    "payout.returned",
)

MAX_WEIGHT = 1_000_000
MAX_AMOUNT = 2**63 - 1
MAX_BPS = 10_000
MAX_TEXT = 200
MAX_AUTHORS = 64
MAX_COMPONENTS = 1000
# usage.recorded (section 7): works per event and the count of one work.
MAX_USES = 1000
MAX_USE_COUNT = 1_000_000_000
POOL_METHODS = ("pro_rata", "user_centric")

# --------------------------------------------------------------------------- patterns
#
# These patterns are given to pydantic-core, which compiles them with the Rust
# ``regex`` crate (``regex_engine="rust-regex"`` is pinned in the config below).  In
# that engine ``$`` matches only at the very end of the text (Python's ``re`` would
# also let it match before a trailing "\n"), and ``[0-9]`` is used instead of ``\d``,
# which is Unicode-aware in both engines.  The Python-side copies use ``fullmatch``.

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PLATFORM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
CONTENT_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
# A strict str constrained by a pattern rather than Literal[...]: like `v`,
# a literal would take more than strings, and the message then names the
# allowed values like every other pattern rule (_PATTERN_NAMES).
METHOD_PATTERN = "^(?:" + "|".join(POOL_METHODS) + ")$"
# RFC 3339 date-time, restricted as described in the module docstring.  Field
# ranges are checked by the pattern; day-of-month against the month (and the UTC
# year range) is checked in _check_at.  Seconds are [0-5][0-9]: no leap second.
AT_PATTERN = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)

_ID_RE = re.compile(ID_PATTERN[1:-1])
_PLATFORM_RE = re.compile(PLATFORM_PATTERN[1:-1])
_AT_RE = re.compile(AT_PATTERN[1:-1])
_LOOSE_AT_RE = re.compile(  # only used to give a better message for ":60"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:60(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)

# ------------------------------------------------------------------ pydantic types

_CONFIG = ConfigDict(strict=True, extra="forbid", regex_engine="rust-regex")

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PlatformId = Annotated[str, StringConstraints(pattern=PLATFORM_PATTERN)]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
ContentHash = Annotated[str, StringConstraints(pattern=CONTENT_HASH_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Weight = Annotated[int, Field(ge=1, le=MAX_WEIGHT)]
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT)]
Bps = Annotated[int, Field(ge=0, le=MAX_BPS)]
# Not Literal[1]: pydantic's literal validator accepts True and 1.0 for 1 even in
# strict mode, a strict int constrained to [1, 1] does not.
Version = Annotated[int, Field(ge=1, le=1)]
Authors1 = Annotated[dict[Id, Weight], Field(min_length=1, max_length=MAX_AUTHORS)]
Authors0 = Annotated[dict[Id, Weight], Field(min_length=0, max_length=MAX_AUTHORS)]
Components = Annotated[dict[Id, Weight], Field(min_length=1, max_length=MAX_COMPONENTS)]
UseCount = Annotated[int, Field(ge=1, le=MAX_USE_COUNT)]
Uses = Annotated[dict[Id, UseCount], Field(min_length=1, max_length=MAX_USES)]
Method = Annotated[str, StringConstraints(pattern=METHOD_PATTERN)]


class _Data(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]


class ProsumerRegistered(_Data):
    prosumer: Id
    name: NotRequired[Text]


class ContributionRecorded(_Data):
    work: Id
    authors: Authors1
    kind: NotRequired[Text]
    content_hash: NotRequired[ContentHash]


class OutputComposed(_Data):
    work: Id
    components: Components
    authors: NotRequired[Authors0]
    upstream_bps: NotRequired[Bps]
    kind: NotRequired[Text]


class ValueRealized(_Data):
    value: Id
    work: Id
    amount: Amount
    currency: Currency
    source: NotRequired[Text]


class ValueReversed(_Data):
    value: Id
    amount: Amount
    reason: NotRequired[Text]


class PolicySet(_Data):
    platform_fee_bps: Bps


class WorkRetracted(_Data):
    work: Id
    reason: NotRequired[Text]


class WorkReinstated(_Data):
    work: Id
    reason: NotRequired[Text]


class WorkReassigned(_Data):
    work: Id
    authors: Authors0


class PayoutIssued(_Data):
    payout: Id
    prosumer: Id
    amount: Amount
    currency: Currency
    reference: NotRequired[Text]


class PoolOpened(_Data):
    pool: Id
    currency: Currency
    method: Method
    name: NotRequired[Text]


class PoolFunded(_Data):
    pool: Id
    # An id by the rule of section 1, not a registered prosumer (section 7).
    subscriber: Id
    amount: Amount


class UsageRecorded(_Data):
    pool: Id
    subscriber: Id
    uses: Uses


class PoolClosed(_Data):
    pool: Id


class PayoutReturned(_Data):
    payout: Id
    reason: NotRequired[Text]


DATA_TYPES: dict[str, type] = {
    "prosumer.registered": ProsumerRegistered,
    "contribution.recorded": ContributionRecorded,
    "output.composed": OutputComposed,
    "value.realized": ValueRealized,
    "value.reversed": ValueReversed,
    "policy.set": PolicySet,
    "work.retracted": WorkRetracted,
    "work.reinstated": WorkReinstated,
    "work.reassigned": WorkReassigned,
    "payout.issued": PayoutIssued,
    "pool.opened": PoolOpened,
    "pool.funded": PoolFunded,
    "usage.recorded": UsageRecorded,
    "pool.closed": PoolClosed,
    "payout.returned": PayoutReturned,
}
assert tuple(DATA_TYPES) == EVENT_TYPES


def _envelope(type_name: str, data_type: type) -> type:
    # One TypedDict per event type, all sharing the envelope; `type` is the tag of
    # a discriminated union, so pydantic-core picks the right one in Rust.
    name = "".join(p.capitalize() for p in re.split(r"[._]", type_name)) + "Event"
    td = TypedDict(  # type: ignore[operator]
        name,
        {
            "v": Version,
            "id": Id,
            "platform": PlatformId,
            "type": Literal[type_name],  # type: ignore[valid-type]
            "at": str,  # shape and calendar are checked in at_error (better messages)
            "data": data_type,
        },
    )
    td.__pydantic_config__ = _CONFIG  # type: ignore[attr-defined]
    return td


EVENT_MODELS: dict[str, type] = {t: _envelope(t, d) for t, d in DATA_TYPES.items()}

_EVENT_ADAPTER: TypeAdapter = TypeAdapter(
    Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # type: ignore[arg-type]
)

# ------------------------------------------------------------------------ errors


class InvalidEvent(Exception):
    """A line or object that is not a valid v1 event (outcome ``rejected/invalid``).

    ``message`` names the field path and what is wrong; ``event_id`` and
    ``platform`` are taken from the raw object, best effort, when they are strings
    matching their patterns, so that the reject can be filed under its platform.
    """

    def __init__(self, message: str, event_id: str | None = None, platform: str | None = None):
        super().__init__(message)
        self.message = message
        self.event_id = event_id
        self.platform = platform

    def __repr__(self) -> str:
        return f"InvalidEvent({self.message!r}, event_id={self.event_id!r}, platform={self.platform!r})"


def _invalid(message: str, obj: object = None) -> InvalidEvent:
    envelope = Envelope.of(obj)
    return InvalidEvent(message, envelope.event_id, envelope.platform_id)


def _show(value: object, limit: int = 60) -> str:
    """A short JSON rendering of an offending value for error messages."""
    try:
        text = orjson.dumps(value).decode()
    except Exception:
        text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _json_type(value: object) -> str:
    t = type(value)
    if t is dict:
        return "object"
    if t is list:
        return "array"
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if value is None:
        return "null"
    if t is int or t is float:
        return "number"
    return t.__name__


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:-]*")


def _path(parts: tuple | list) -> str:
    out = ""
    for p in parts:
        if type(p) is int:
            out += f"[{p}]"
        elif _SIMPLE_KEY.fullmatch(p):
            out += ("." if out else "") + p
        else:
            out += "[" + _show(p) + "]"
    return out or "event"


_PATTERN_NAMES = {
    ID_PATTERN: "an id matching " + ID_PATTERN,
    PLATFORM_PATTERN: "a platform id matching " + PLATFORM_PATTERN,
    CURRENCY_PATTERN: "three upper-case letters",
    CONTENT_HASH_PATTERN: '"sha256:" followed by 64 lower-case hex digits',
    METHOD_PATTERN: " or ".join(f'"{m}"' for m in POOL_METHODS),
}


def _describe(err: dict) -> str:
    """One concise human message (field path + what is wrong) for a pydantic error."""
    kind = err["type"]
    loc = list(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "union_tag_not_found":
        return "type: missing required field"
    if kind == "union_tag_invalid":
        return f"type: unknown event type {_show(value.get('type') if isinstance(value, dict) else value)}" \
            f"; expected one of {', '.join(EVENT_TYPES)}"
    if loc and loc[0] in EVENT_MODELS:  # discriminated-union tag
        loc = loc[1:]
    if len(loc) >= 2 and loc[-1] == "[key]" and kind not in ("extra_forbidden", "missing"):
        # pydantic marks an invalid dict key with a trailing "[key]"; a field that is
        # literally named "[key]" can only be unknown (extra_forbidden).
        where = _path(loc[:-2])
        key = loc[-2]
        if kind == "string_pattern_mismatch":
            return f"{where}: key {_show(key)} is not {_PATTERN_NAMES.get(ctx.get('pattern'), 'valid')}"
        return f"{where}: invalid key {_show(key)}: {err['msg']}"
    where = _path(loc)
    if kind == "missing":
        return f"{where}: missing required field"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "int_type":
        return f"{where}: must be a JSON integer, got {_show(value)}"
    if kind == "string_type":
        return f"{where}: must be a string, got {_show(value)}"
    if kind in ("dict_type", "model_attributes_type", "model_type"):
        return f"{where}: must be a JSON object, got {_json_type(value)}"
    if kind == "string_unicode":
        return f"{where}: must be a valid Unicode string (no lone surrogates)"
    if where == "v" and kind in ("greater_than_equal", "less_than_equal"):
        return f"v: must be 1, got {_show(value)}"
    if kind == "greater_than_equal":
        return f"{where}: must be at least {ctx.get('ge')}, got {_show(value)}"
    if kind == "less_than_equal":
        return f"{where}: must be at most {ctx.get('le')}, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return f"{where}: must be {_PATTERN_NAMES.get(ctx.get('pattern'), 'valid')}, got {_show(value)}"
    if kind == "string_too_long":
        return f"{where}: must be at most {ctx.get('max_length')} characters, got {len(value)}"
    if kind == "too_short":
        return f"{where}: must have at least {ctx.get('min_length')} entries, got {ctx.get('actual_length')}"
    if kind == "too_long":
        n = len(value) if isinstance(value, dict) else ctx.get("actual_length")
        return f"{where}: must have at most {ctx.get('max_length')} entries, got {n}"
    return f"{where}: {err['msg']}"


def _pydantic_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    try:
        msg = _describe(errors[0])
    except Exception:  # never let message formatting turn a reject into a crash
        msg = f"{'.'.join(map(str, errors[0]['loc'])) or 'event'}: {errors[0]['msg']}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return msg


# -------------------------------------------------------------------------- time

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month]


def at_error(at: str) -> str | None:
    """None if `at` is acceptable, else what is wrong with it (also for
    options that become an event's `at`, e.g. a payout run's)."""
    if not _AT_RE.fullmatch(at):
        if _LOOSE_AT_RE.fullmatch(at):
            # Leap seconds are rejected on purpose: Python datetimes cannot represent
            # second 60, and the UTC month of every event must be exact.
            return f"at: leap seconds (:60) are not accepted, got {_show(at)}"
        return f"at: must be an RFC 3339 date-time such as 2026-11-26T10:00:00Z, got {_show(at)}"
    # Fast path on the validated shape: string comparisons instead of int().
    if at[8:10] > "28":
        year = int(at[0:4])
        if int(at[8:10]) > _days_in_month(year, int(at[5:7])):
            return f"at: {at[0:10]} is not a real calendar date"
    if at[0:4] in ("0000", "0001", "9999"):
        # Year 0 and instants whose UTC time leaves 0001..9999 cannot be statemented
        # with Python datetimes.
        try:
            utc_instant(at)
        except (ValueError, OverflowError):
            return f"at: instant out of range (UTC years 0001-9999), got {_show(at)}"
    return None


# ---------------------------------------------------------------- nesting
#
# The depth is checked on the raw bytes, before orjson, pydantic or the stdlib
# json (duplicate keys) recurse into the value.  Brackets inside strings do not
# count, so the strings are cut out first, by two linear regex passes that never
# backtrack: every escape (a backslash and the byte after it, paired from the
# left as JSON pairs them) is dropped, after which every remaining '"' is a
# string delimiter and '"[^"]*"' spans exactly one string.  On text that is
# not JSON the count may be off after the first syntax error, but no parser
# gets that far.

# A backslash and the byte after it: one escape, or garbage outside a string.
JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nests_too_deep(raw: bytes) -> bool:
    """Whether the JSON text `raw` nests arrays and objects deeper than JSON_DEPTH_MAX.

    ``{}`` nests 1 deep, ``{"data": {"authors": {}}}`` 3.  Linear in the length
    of `raw` and never recursive; a text with at most JSON_DEPTH_MAX opening
    brackets (every valid event) is answered by two ``bytes.count`` calls.
    """
    if raw.count(b"[") + raw.count(b"{") <= JSON_DEPTH_MAX:
        return False
    outside_strings = _STRING.sub(b"", JSON_ESCAPE.sub(b"", raw))
    steps = outside_strings.translate(_DEPTH_STEP, _NOT_A_BRACKET)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > JSON_DEPTH_MAX


def _too_deep() -> InvalidEvent:
    return InvalidEvent(f"line: arrays and objects nest deeper than {JSON_DEPTH_MAX} levels "
                        "(an event needs 3); not parsed")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What an offered item says it is, before it is judged: its ``id``,
    ``platform`` and ``type`` when it is a JSON object holding them as strings
    (each None otherwise).  Routing needs these before the schema speaks: the
    platform of an HTTP path or a Kafka key, the event types a token may post."""

    id: str | None = None
    platform: str | None = None
    type: str | None = None

    @classmethod
    def of(cls, obj: object) -> Envelope:
        if type(obj) is not dict:
            return cls()
        return cls(*(value if type(value := obj.get(name)) is str else None
                     for name in ("id", "platform", "type")))

    @property
    def event_id(self) -> str | None:
        """The id, if it is one (to file a reject under)."""
        return self.id if self.id is not None and _ID_RE.fullmatch(self.id) else None

    @property
    def platform_id(self) -> str | None:
        """The platform, if it is a platform id (to file a reject under)."""
        return self.platform if self.platform is not None and _PLATFORM_RE.fullmatch(self.platform) else None


def read_envelope(raw: bytes) -> Envelope:
    """The envelope of a raw item, never raising: an empty one for anything
    parse_event would refuse unread (too long, too deep) or cannot parse."""
    if len(raw) > MAX_LINE_BYTES + 2 or nests_too_deep(raw):  # + 2: a line's terminator
        return Envelope()
    try:
        return Envelope.of(orjson.loads(raw))
    except Exception:  # not JSON, or absurd input (MemoryError): nothing to read
        return Envelope()


# ------------------------------------------------------------ duplicate keys
#
# orjson silently keeps one value of a duplicated key.  We detect duplicates
# exactly, without a second parse in the common case:
#
#   Let N be the number of key/value pairs written in the raw text and K the number
#   of keys in the parsed result (sum of len() of all objects).  Duplicates exist iff
#   N > K.  Outside strings, ':' occurs only as the separator of a pair, so the raw
#   count of ':' is C = N + L, L = literal ':' inside strings.  Re-serialising the
#   parsed value with orjson (which never escapes ':') gives exactly K + P colons,
#   P = colons inside the parsed strings.  A parsed colon comes either from a literal
#   ':' or from a \u003a / \u003A escape; let T be the number of textual occurrences
#   of those escapes in the raw text (T >= the real number of such escapes).  Then
#   C + T >= N + P >= K + P, and C + T == K + P implies N == K: no duplicates.
#   When the counts differ (a duplicate, or merely an escaped colon / an escaped
#   backslash followed by "u003a"), we decide exactly with the stdlib parser and an
#   object_pairs_hook.  Cost on the fast path: two bytes.count calls and a scan
#   for a backslash (plus two more counts when the line has one).


class _DuplicateKey(Exception):
    pass


def _pairs_hook(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def _find_duplicate_key(raw: bytes) -> str | None:
    """Exact slow path: the first duplicated key found, or None."""
    try:
        json.loads(raw, object_pairs_hook=_pairs_hook)
    except _DuplicateKey as e:
        return e.args[0]
    return None


def _colon_counts_agree(raw: bytes, reserialised: bytes) -> bool:
    c = raw.count(b":")
    if b"\\" in raw:  # T can only be non-zero if there is a backslash at all
        c += raw.count(b"\\u003a") + raw.count(b"\\u003A")
    return c == reserialised.count(b":")


# --------------------------------------------------------------- the event


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A valid v1 event.

    ``event`` is the JSON object exactly as received (nothing added, nothing
    normalised; absent optional fields stay absent).  ``canonical`` is its
    canonical serialisation (EVENTS.md section 5), the bytes that are hashed.
    Treat both as read-only.
    """

    event: dict
    canonical: bytes

    @property
    def id(self) -> str:
        return self.event["id"]

    @property
    def platform(self) -> str:
        return self.event["platform"]

    @property
    def type(self) -> str:
        return self.event["type"]

    @property
    def at(self) -> str:
        return self.event["at"]

    @property
    def data(self) -> dict:
        return self.event["data"]


_SORT = orjson.OPT_SORT_KEYS


def _validate(obj: object) -> None:
    """All stateless rules of EVENTS.md sections 1-2; raises InvalidEvent."""
    if type(obj) is not dict:
        raise _invalid(f"event: must be a JSON object, got {_json_type(obj)}")
    try:
        _EVENT_ADAPTER.validate_python(obj)
    except ValidationError as e:
        raise _invalid(_pydantic_message(e), obj) from None
    except (TypeError, ValueError) as e:  # exotic Python objects via validate_event_obj
        raise _invalid(f"event: {e}", obj) from None
    problem = at_error(obj["at"])
    if problem is not None:
        raise _invalid(problem, obj)
    if obj["type"] == "output.composed":
        data = obj["data"]
        if not data.get("authors") and data.get("upstream_bps", MAX_BPS) != MAX_BPS:
            raise _invalid(
                f"data.upstream_bps: must be 10000 when the output has no authors, got {data['upstream_bps']}",
                obj,
            )


def parse_event(line: bytes | str) -> ParsedEvent:
    """Parse and validate one line (JSON Lines, UTF-8).  Raises InvalidEvent,
    and nothing else whatever the bytes (a TypeError only for an argument that
    is not text at all: a caller's bug).

    One trailing "\\n" or "\\r\\n" is stripped.  A line longer than MAX_LINE_BYTES
    (terminator excluded), or nesting deeper than JSON_DEPTH_MAX, is rejected
    without being parsed.
    """
    if type(line) is not bytes:
        if isinstance(line, str):
            if len(line) > MAX_LINE_BYTES + 2:  # >= 1 byte per code point
                raise InvalidEvent(f"line: longer than {MAX_LINE_BYTES} bytes")
            try:
                line = line.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent("line: not valid UTF-8 (lone surrogate)") from None
        elif isinstance(line, (bytes, bytearray, memoryview)):
            line = bytes(line)
        else:
            raise TypeError(f"parse_event() needs bytes or str, got {type(line).__name__}")
    try:
        return _parse_line(line)
    except InvalidEvent:
        raise
    except Exception as e:
        raise _unreadable(e) from None


def _unreadable(e: Exception) -> InvalidEvent:
    """A parser or serialiser failed on hostile input (no valid event makes one
    fail): that input is `invalid`, it never crashes its batch."""
    return InvalidEvent(f"event: cannot be checked ({type(e).__name__}: {_show(str(e))})")


def _parse_line(line: bytes) -> ParsedEvent:
    if line[-1:] == b"\n":
        line = line[:-2] if line[-2:-1] == b"\r" else line[:-1]
    if len(line) > MAX_LINE_BYTES:
        raise InvalidEvent(f"line: {len(line)} bytes, longer than {MAX_LINE_BYTES} bytes")
    if nests_too_deep(line):
        raise _too_deep()
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise InvalidEvent(f"line: not valid JSON: {e}") from None
    try:
        _validate(obj)
    except InvalidEvent:
        # A duplicate key is the more fundamental problem: report it instead.
        if type(obj) is dict or type(obj) is list:
            key = None
            if not _colon_counts_agree(line, orjson.dumps(obj)):
                try:
                    key = _find_duplicate_key(line)
                except Exception:  # the stdlib parser cannot decide: keep the validation error
                    key = None
            if key is not None:
                raise _invalid(f"event: duplicate key {_show(key)} in a JSON object", obj) from None
        raise
    canonical = orjson.dumps(obj, option=_SORT)
    if not _colon_counts_agree(line, canonical):
        _raise_duplicate(line, obj)
    return ParsedEvent(obj, canonical)


def _raise_duplicate(line: bytes, obj: object) -> None:
    try:
        key = _find_duplicate_key(line)
    except Exception as e:  # the stdlib parser cannot decide
        raise _invalid(f"event: cannot check for duplicate keys ({type(e).__name__})", obj) from None
    if key is not None:
        raise _invalid(f"event: duplicate key {_show(key)} in a JSON object", obj)


def validate_event_obj(obj: object) -> ParsedEvent:
    """Validate an already parsed JSON value.  Raises InvalidEvent, and nothing
    else whatever the value.

    `obj` must consist of plain JSON types (dict, list, str, int, bool, None; no
    subclasses).  Duplicate keys cannot be seen here: the caller's parser has
    already merged them, so offer raw bytes (parse_event) where there are any.
    """
    try:
        _validate(obj)
        _check_json_value(obj)
        canonical = orjson.dumps(obj, option=_SORT)
    except InvalidEvent:
        raise
    except (TypeError, ValueError) as e:
        raise _invalid(f"event: {e}", obj) from None
    except Exception as e:
        raise _unreadable(e) from None
    return ParsedEvent(obj, canonical)  # type: ignore[arg-type]


# ------------------------------------------------------------ canonical bytes


def _check_json_value(obj: object) -> None:
    """Raise TypeError/ValueError unless obj is made of plain JSON types only.

    Floats are refused: no v1 event or report contains one, and a number without a
    canonical form has no place in hashed bytes (NaN, 1e16 vs 1e+16, ...).
    """
    stack = [obj]
    pop = stack.pop
    push = stack.append
    while stack:
        x = pop()
        t = type(x)
        if t is dict:
            for k, v in x.items():
                if type(k) is not str:
                    raise TypeError(f"object keys must be strings, got {type(k).__name__}")
                push(v)
        elif t is list:
            stack.extend(x)
        elif t is str or t is int or t is bool or x is None:
            pass  # lone surrogates in strings are refused by the serialiser
        elif t is float:
            raise ValueError("floats have no canonical form (use integers)")
        else:
            raise TypeError(f"not a JSON value: {t.__name__}")


def canonical_bytes(obj: Any) -> bytes:
    """EVENTS.md section 5 canonical serialisation of a JSON value.

    Keys sorted in code point order, no whitespace, "," and ":" separators,
    non-ASCII characters unescaped, UTF-8: byte for byte what
    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    .encode()`` gives.  Only plain dict/list/str/int/bool/None are accepted
    (TypeError/ValueError otherwise; floats are refused).
    """
    _check_json_value(obj)
    try:
        return orjson.dumps(obj, option=_SORT)
    except TypeError:
        # Integers beyond 64 bits (e.g. a huge sum of amounts): the stdlib handles
        # them and is otherwise byte-identical for plain JSON values.
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
