"""Replay a platform's log from the store alone: the state after any seq (`--as-of` queries)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import orjson

from ledger.storage.store import Store
from projections.fold import PlatformFold


class Fold(Protocol):
    """What `fold_log` drives: PlatformFold, and folds that wrap it."""

    @property
    def platform(self) -> str: ...

    @property
    def seq(self) -> int: ...

    def apply(self, event: dict[str, Any], seq: int) -> Any: ...


F = TypeVar("F", bound=Fold)


def fold_log(store: Store, fold: F, upto_seq: int | None = None) -> F:
    """Apply the stored events past `fold.seq`, up to `upto_seq` (the head when
    None), to `fold` in log order; returns it."""
    for stored in store.read_log(fold.platform, after_seq=fold.seq, upto_seq=upto_seq):
        fold.apply(orjson.loads(stored.state), stored.originator_version)
    return fold


def replay(store: Store, platform: str, upto_seq: int | None = None) -> PlatformFold:
    """The fold of the first `upto_seq` events (all when None)."""
    return fold_log(store, PlatformFold(platform), upto_seq)


