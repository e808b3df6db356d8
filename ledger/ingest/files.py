"""Ingest of files and stdin: what `peerledger ingest` (and `demo`) run."""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import ExitStack
from typing import Any, Iterator, Sequence

from rich.console import Console

from ledger.ingest.ingestor import ACCEPTED, DUPLICATE, REJECTED, Ingestor
from ledger.ingest.sources import Offered, batches, read_lines
from ledger.storage.store import Store

err = Console(stderr=True, highlight=False)


def _offered(paths: Sequence[str], stack: ExitStack, progress: Any) -> Iterator[Offered]:
    for path in paths:
        if path == "-":
            yield from read_lines(sys.stdin.buffer, "stdin")
            continue
        stream = stack.enter_context(open(path, "rb"))
        task = None
        if progress is not None:
            task = progress.add_task(os.path.basename(path), total=os.path.getsize(path))
        for item in read_lines(stream, path):
            if task is not None:
                progress.update(task, completed=stream.tell())
            yield item


def ingest_paths(store: Store, paths: Sequence[str], show_progress: bool) -> dict[str, Any]:
    """Ingest files (or stdin); the read models are written with each batch."""
    counts: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    with ExitStack() as stack:
        ingestor = Ingestor(store)
        progress = None
        if show_progress:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            progress = stack.enter_context(Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=err, transient=False))
        for outcomes in ingestor.ingest_stream(batches(_offered(paths, stack, progress))):
            for outcome in outcomes:
                counts[outcome.outcome] += 1
                if outcome.code:
                    by_code[outcome.code] += 1
    return {
        ACCEPTED: counts[ACCEPTED],
        DUPLICATE: counts[DUPLICATE],
        REJECTED: counts[REJECTED],
        "rejected_by_code": dict(sorted(by_code.items())),
    }


