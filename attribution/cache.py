"""A least-recently-used cache bounded in items' entries and bytes.

Every cache of the ledger is one of these: share vectors here in
`attribution`, and in a writer the rows of a platform's state
(`projections.state`).  A process holds a fixed budget whatever the length
of the log it serves; what does not fit is read again from where it is kept.

Sizes are *estimates* the caller gives per item: ``size_of(value)`` returns
(entries, bytes), e.g. a share vector's recipients and the digits of its
numbers.  An item larger than the whole budget is not kept at all (the
caller still has it), so one huge item cannot flush everything else.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """LRU by use: `get` and `put` make an item the most recent; the least
    recent go first once either bound would be exceeded.

    >>> c = BoundedCache(max_entries=2, max_bytes=100, size_of=lambda v: (1, 10))
    >>> c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
    1
    >>> sorted(c.keys())
    ['a', 'c']
    """

    __slots__ = ("_items", "_entries", "_bytes", "max_entries", "max_bytes", "_size_of")

    def __init__(self, max_entries: int, max_bytes: int, size_of: Callable[[V], tuple[int, int]]) -> None:
        assert max_entries >= 0 and max_bytes >= 0
        self._items: OrderedDict[K, tuple[V, int, int]] = OrderedDict()
        self._entries = 0
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of

    def get(self, key: K) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def put(self, key: K, value: V) -> None:
        entries, size = self._size_of(value)
        items = self._items
        old = items.get(key)
        if old is not None:
            if old[1] == entries and old[2] == size:  # a row replaced by one of its size: no eviction
                items[key] = (value, entries, size)
                items.move_to_end(key)
                return
            self.drop(key)
        if entries > self.max_entries or size > self.max_bytes:
            return  # larger than the whole budget: the caller has it, we do not keep it
        while items and (self._entries + entries > self.max_entries or self._bytes + size > self.max_bytes):
            _, (_, old_entries, old_size) = items.popitem(last=False)
            self._entries -= old_entries
            self._bytes -= old_size
        items[key] = (value, entries, size)
        self._entries += entries
        self._bytes += size
        assert self._entries <= self.max_entries and self._bytes <= self.max_bytes

    def drop(self, key: K) -> None:
        hit = self._items.pop(key, None)
        if hit is not None:
            self._entries -= hit[1]
            self._bytes -= hit[2]

    def clear(self) -> None:
        self._items.clear()
        self._entries = self._bytes = 0

    def keys(self) -> list[K]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> tuple[int, int, int]:
        """(items, entries, estimated bytes)."""
        return len(self._items), self._entries, self._bytes


__all__ = ["BoundedCache"]
