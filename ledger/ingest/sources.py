"""Where offered events come from, cut into items: lines of files and stdin,
HTTP bodies (NDJSON lines or the elements of a JSON array), and bounded
batches of them for the ingestor.  Nothing here decides anything: an item
that is not an event is still an item, and the ingestor rejects it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson

from ledger.contract.schema import MAX_LINE_BYTES, has_duplicate_keys

# One transaction per batch: big enough that the commit's fsync is amortised,
# small enough that a batch's rows fit comfortably in memory and a crash
# redoes little work.
BATCH_MAX_EVENTS = 1000
BATCH_MAX_BYTES = 16 * 1024 * 1024
# The most events one HTTP request may carry (else 413).
EVENTS_PER_REQUEST_MAX = 10_000
# A value that is not JSON (an NDJSON line the ingestor will reject `invalid`).
NOT_JSON = object()


@dataclass(frozen=True, slots=True)
class Offered:
    """One event as offered: a raw line or a parsed JSON value, and its origin."""

    payload: bytes | object
    source: str


def batches(items: Iterable[Offered]) -> Iterator[list[Offered]]:
    """Split a stream of offered events into bounded batches."""
    batch: list[Offered] = []
    size_bytes = 0
    for item in items:
        n = len(item.payload) if isinstance(item.payload, (bytes, bytearray)) else 0
        if batch and (len(batch) >= BATCH_MAX_EVENTS or size_bytes + n > BATCH_MAX_BYTES):
            yield batch
            batch, size_bytes = [], 0
        batch.append(item)
        size_bytes += min(n, MAX_LINE_BYTES + 1)
    if batch:
        yield batch


def read_lines(stream: Any, name: str) -> Iterator[Offered]:
    """JSON Lines from a binary stream; blank lines are skipped.

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
        if line.strip():
            yield Offered(line, f"{name}:{number}")



class BodyError(ValueError):
    """The body as a whole cannot be read (400)."""


# (number, parsed value or NOT_JSON, payload for the Ingestor): the number is
# the 1-based line (NDJSON) or array index, and names the event in its source.
Item = tuple[int, object, object]


def ndjson_items(body: bytes) -> list[Item]:
    """One event per line; blank lines are skipped, as in files.  A line that
    is not JSON is still an item: the Ingestor rejects it `invalid`."""
    items: list[Item] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = NOT_JSON
        items.append((number, obj, line))
    return items


def array_items(body: bytes) -> list[Item]:
    """The elements of a JSON array body, each handed on parsed; when the body
    repeats a key somewhere, each element's own text instead, so that the
    schema names the element whose key is repeated."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BodyError(f"body: not valid JSON: {e}") from None
    if type(parsed) is not list:
        raise BodyError("body: must be a JSON array of events (or send application/x-ndjson)")
    if len(parsed) > EVENTS_PER_REQUEST_MAX or not has_duplicate_keys(body, parsed):
        return [(i, obj, obj) for i, obj in enumerate(parsed, start=1)]
    texts = _element_texts(body)
    return [(i, obj, text) for i, (obj, text) in enumerate(zip(parsed, texts), start=1)]


def _element_texts(body: bytes) -> list[bytes]:
    """The exact text of each element of a JSON array (slow path, stdlib)."""
    text = body.decode("utf-8")
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    position = ws.match(text, text.index("[") + 1).end()
    texts = []
    while text[position] != "]":
        _, end = decoder.raw_decode(text, position)
        texts.append(text[position:end].encode("utf-8"))
        position = ws.match(text, end).end()
        if text[position] == ",":
            position = ws.match(text, position + 1).end()
    return texts


