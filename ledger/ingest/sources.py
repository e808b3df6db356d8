"""Where offered events come from, cut into items: lines of files and stdin,
HTTP bodies (NDJSON lines or the elements of a JSON array), and bounded
batches of them for the ingestor.  Nothing here decides anything: an item
that is not an event is still an item, and the ingestor rejects it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ledger.contract.schema import (
    JSON_DEPTH_MAX,
    JSON_ESCAPE,
    MAX_LINE_BYTES,
    Envelope,
    read_envelope,
)

# One transaction per batch: big enough that the commit's fsync is amortised,
# small enough that a batch's rows fit comfortably in memory and a crash
# redoes little work.
BATCH_MAX_EVENTS = 1000
BATCH_MAX_BYTES = 16 * 1024 * 1024
# The most events one HTTP request may carry (else 413).
EVENTS_PER_REQUEST_MAX = 10_000
# JSON's whitespace (RFC 8259): a line holding nothing else is blank.  Not
# bytes.strip()'s set, which also holds \f, \v and \x1c-\x1f: a line of those
# is content, an `invalid` event.
JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Offered:
    """One event as offered: its raw bytes (a line, an NDJSON line, an array
    element, a Kafka message's value) and where it came from."""

    payload: bytes
    source: str


def batches(items: Iterable[Offered]) -> Iterator[list[Offered]]:
    """Split a stream of offered events into bounded batches."""
    batch: list[Offered] = []
    size_bytes = 0
    for item in items:
        n = len(item.payload)
        if batch and (len(batch) >= BATCH_MAX_EVENTS or size_bytes + n > BATCH_MAX_BYTES):
            yield batch
            batch, size_bytes = [], 0
        batch.append(item)
        size_bytes += min(n, MAX_LINE_BYTES + 1)
    if batch:
        yield batch


def read_lines(stream: Any, name: str) -> Iterator[Offered]:
    """JSON Lines from a binary stream; blank lines (JSON whitespace only) are skipped.

    A line longer than MAX_LINE_BYTES is not read whole into memory: its
    first bytes are kept for the reject record and the rest is skipped.
    """
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 2)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES + 1 and not line.endswith(b"\n"):
            head = line
            while line and not line.endswith(b"\n"):  # drain the oversized line
                line = stream.readline(MAX_LINE_BYTES)
            yield Offered(head, f"{name}:{number}")
            continue
        if line.strip(JSON_WHITESPACE):
            yield Offered(line, f"{name}:{number}")


# -- HTTP bodies --------------------------------------------------------------
#
# A body is cut into items without parsing it whole: each item is a slice of
# the body, and the items are counted while they are cut, so a body of a
# million tiny items is refused (413) after EVENTS_PER_REQUEST_MAX + 1 of them,
# having built nothing but those slices.  Each item is then parsed on its own
# (`parse_event`, bounded by MAX_LINE_BYTES and JSON_DEPTH_MAX like a line of
# a file), so the Python objects of one request never outgrow one item.


class BodyError(ValueError):
    """The body as a whole cannot be read (400)."""


class BodyTooLarge(ValueError):
    """The body holds more items than one request may (413)."""


@dataclass(frozen=True, slots=True)
class BodyItem:
    """One item of a body: its 1-based line (NDJSON) or array index, which names
    it in its source, its bytes, and what it says it is (for routing)."""

    number: int
    payload: bytes
    envelope: Envelope


def _count(items: int) -> None:
    """Refuse the body on its item EVENTS_PER_REQUEST_MAX + 1, before cutting it."""
    if items >= EVENTS_PER_REQUEST_MAX:
        raise BodyTooLarge(f"more than {EVENTS_PER_REQUEST_MAX} events in one request")


def _item(number: int, payload: bytes) -> BodyItem:
    return BodyItem(number, payload, read_envelope(payload))


# A line with something besides JSON whitespace.  Anchored at line starts and
# possessive, so a long blank run is scanned once, never again from each byte.
_CONTENT_LINE = re.compile(rb"^[ \t\r]*+[^ \t\r\n][^\n]*+", re.MULTILINE)


def ndjson_items(body: bytes) -> list[BodyItem]:
    """One event per line; blank lines are skipped, as in files.  A line that
    is not JSON is still an item: the Ingestor rejects it `invalid`."""
    items: list[BodyItem] = []
    number, counted_to = 1, 0
    for line in _CONTENT_LINE.finditer(body):
        number += body.count(b"\n", counted_to, line.start())
        counted_to = line.start()
        _count(len(items))
        items.append(_item(number, line[0]))
    return items


def _nested(levels: int) -> bytes:
    """A pattern for one array or object nesting at most `levels` deep, each
    string skipped whole.  Possessive throughout: it never backtracks, so a
    match costs one pass over the text it spans."""
    group = b""
    for _ in range(levels):
        inner = rb'[^"\[\]{}]++|"[^"]*+"' + (b"|" + group if group else b"")
        group = rb"[\[{](?:" + inner + rb")*+[\]}]"
    return group


# The text of one array element (up to the ',' or ']' after it), on a body
# whose escapes are masked: every '"' left is a string's delimiter.  Elements
# nesting deeper than JSON_DEPTH_MAX stop it at their too-deep bracket.
_ELEMENT = re.compile(rb'(?:[^"\[\]{},]++|"[^"]*+"|' + _nested(JSON_DEPTH_MAX) + rb")*+")
# A string, or a run of opening or of closing brackets (one token for a whole
# run: the slow path below then walks plain deep nesting in two steps).
_STRING_OR_BRACKETS = re.compile(rb'"[^"]*+"|[\[{]++|[\]}]++')
_SPACE = re.compile(rb"[ \t\r\n]*+")


def array_items(body: bytes) -> list[BodyItem]:
    """The elements of a JSON array body, each its own exact text.

    The array itself must be well formed (400 otherwise: not an array, an
    empty element, not closed, text after it); what an element holds is that
    item's business (`invalid` if it is not an event, however malformed).
    """
    # Escapes masked in place, so positions in `masked` are positions in `body`;
    # the masked copy is gone before any element is parsed.
    spans = _element_spans(JSON_ESCAPE.sub(b"__", body))
    return [_item(number, body[start:end].rstrip(JSON_WHITESPACE)) for number, (start, end) in enumerate(spans, 1)]


def _element_spans(masked: bytes) -> list[tuple[int, int]]:
    """Where each element of the array is, or BodyError / BodyTooLarge."""
    position = _SPACE.match(masked).end()
    if masked[position:position + 1] != b"[":
        raise BodyError("body: must be a JSON array of events (or send application/x-ndjson)")
    position = _SPACE.match(masked, position + 1).end()
    spans: list[tuple[int, int]] = []
    if masked[position:position + 1] == b"]":
        return _after_array(masked, position, spans)
    while True:
        end = _element_end(masked, position)
        separator = masked[end:end + 1]
        if separator not in (b",", b"]"):
            what = f"unexpected {separator.decode('latin-1')!r}" if separator else "the array is not closed"
            raise BodyError(f"body: not valid JSON: {what} at byte {end}")
        if end == position:  # nothing but the whitespace already skipped
            raise BodyError(f"body: not valid JSON: empty element at byte {position}")
        _count(len(spans))
        spans.append((position, end))
        if separator == b"]":
            return _after_array(masked, end, spans)
        position = _SPACE.match(masked, end + 1).end()


def _after_array(masked: bytes, closing: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if _SPACE.match(masked, closing + 1).end() != len(masked):
        raise BodyError(f"body: not valid JSON: text after the array at byte {closing + 1}")
    return spans


def _element_end(masked: bytes, position: int) -> int:
    """Where the element starting at `position` ends (its ',' or ']', or the
    end of the body)."""
    while True:
        position = _ELEMENT.match(masked, position).end()
        if masked[position:position + 1] not in (b"[", b"{"):
            return position
        position = _group_end(masked, position)


def _group_end(masked: bytes, opening: int) -> int:
    """Just after the bracket closing the one at `opening`, at any depth (or
    the end of the body): the slow path, one token at a time, for an element
    nesting deeper than JSON_DEPTH_MAX, which its item then rejects."""
    depth = 0
    for token in _STRING_OR_BRACKETS.finditer(masked, opening):
        start, end = token.span()
        if masked[start] in b"[{":
            depth += end - start
        elif masked[start] in b"]}":
            if end - start >= depth:
                return start + depth
            depth -= end - start
    return len(masked)
