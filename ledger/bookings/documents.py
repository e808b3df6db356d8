"""Reading a platform's booking documents from the store, in seq order.

Every reader of documents (the `bookings` command, the HTTP route) goes
through `read_documents`: one page is
two indexed range reads, the log's events and the bookings rows of the same
seqs, whatever the log's length.  Only committed rows are visible to a
reader, and a platform's seqs commit in order (one writer per platform holds
its lock), so a page never runs ahead of what was committed and never skips
a seq that commits later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

import orjson

from ledger.storage.store import Store
from projections.bookings import booking_document, document_bytes

# A page of documents: bounded memory for every reader (a document carries at
# most an event's recipients, themselves bounded by the schema's limits).
PAGE_DOCUMENTS = 1000
# How often a follower looks for new documents when it has caught up.
FOLLOW_POLL_SECONDS = 0.2


class Document(NamedTuple):
    """One booking document: its identity and its canonical bytes."""

    platform: str
    seq: int
    type: str
    body: bytes


def read_documents(store: Store, platform: str, after_seq: int, limit: int = PAGE_DOCUMENTS) -> list[Document]:
    """Up to `limit` documents of the platform with seq > `after_seq`, in seq order."""
    assert 0 < limit <= PAGE_DOCUMENTS, f"a page holds 1…{PAGE_DOCUMENTS} documents, not {limit}"
    assert after_seq >= 0
    upto = after_seq + limit
    booked = {int(seq): (col, currency, entries) for seq, col, currency, entries in store.query(
        "SELECT seq, col, currency, entries FROM peerledger_bookings WHERE platform = ? AND seq > ? AND seq <= ?",
        (platform, after_seq, upto))}
    out: list[Document] = []
    for entry in store.read_log(platform, after_seq=after_seq, upto_seq=upto):
        seq = entry.originator_version
        event = orjson.loads(entry.state)
        document = booking_document(platform, seq, event, booked.pop(seq, None))
        out.append(Document(platform, seq, document["type"], document_bytes(document)))
    # Bookings rows and events commit together: a row without its event is a damaged store.
    assert not booked, f"{platform}: bookings rows {sorted(booked)[:5]} have no event in the log"
    return out


def follow_documents(store: Store, platform: str, after_seq: int, *, follow: bool) -> Iterator[Document]:
    """Every document after `after_seq`, a page at a time; with `follow`, then
    waits for new ones (like `tail -f`) until its consumer stops."""
    position = after_seq
    while True:
        page = read_documents(store, platform, position)
        yield from page
        if page:
            position = page[-1].seq
            continue
        if not follow:
            return
        time.sleep(FOLLOW_POLL_SECONDS)
