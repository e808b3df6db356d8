"""The offline auditor: an export, a checkpoint and a public key, no database.

`audit_export` answers the three questions of AUDIT.md:

(a) is this the log the ledger signed?  The checkpoint's key id and Ed25519
    signature, then the root recomputed from the export's first `size`
    lines (each line's leaf hash, folded by `projections.merkle.Frontier`);
(b) was nothing accepted changed, removed or reordered since an earlier
    checkpoint?  With `previous`, a consistency proof between the two sizes
    is computed from the export and verified against both signed roots
    (RFC 9162 §2.1.4.2), and the export's prefix is compared with the
    previous root;
(c) do the balances follow from the log by the rules?  Every line is parsed
    (`ledger.contract.schema.parse_event`), must be its own canonical bytes, of the
    checkpoint's platform, with a new id, allowed by `ledger.contract.rules.check` on
    the fold so far, and is applied; the balances digest at `size` (and at
    the previous size) must be the signed one.

The export is read once, line by line: memory is a batch of lines, the
bounded caches of the replay (its state lives in a scratch SQLite file that
the audit removes) and O(log n) hashes (the proof's nodes are known before
reading and kept as the recomputation completes them).

Where a difference can be placed, the check names the seq: a line that is
not a valid canonical event or that the rules refuse (a swap often makes a
reference precede its target), an export that ends early (an event
removed).  A root alone cannot place a change to an otherwise valid event:
the report then says whether the change lies before or after the previous
checkpoint, and `peerledger verify`, which has every stored leaf hash and
node, names the seq.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any, BinaryIO

from ledger.audit.checks import Check, signature_checks
from ledger.audit.liabilities_audit import liabilities_checks
from ledger.audit.signing import SigningKeyError, checkpoint_shape_error, load_public_key
from ledger.contract import rules
from ledger.contract.schema import (
    MAX_LINE_BYTES,
    InvalidEvent,
    ParsedEvent,
    parse_event,
)
from ledger.storage.replay import REPLAY_BATCH_EVENTS, Replay, scratch_store
from ledger.storage.store import Store
from projections.balances import balance_rows, balances_digest
from projections.merkle import (
    EMPTY_ROOT,
    Frontier,
    NodeKey,
    consistency_ranges,
    leaf_hash,
    nodes_of,
    range_hash,
    verify_consistency,
)

# A checkpoint is a few hundred bytes; refuse anything far larger unread.
CHECKPOINT_FILE_MAX_BYTES = 64 * 1024


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read(CHECKPOINT_FILE_MAX_BYTES + 1)
    if len(data) > CHECKPOINT_FILE_MAX_BYTES:
        raise ValueError(f"{path}: larger than {CHECKPOINT_FILE_MAX_BYTES} bytes, not a checkpoint")
    try:
        obj = json.loads(data)  # not orjson: a liabilities total may exceed 64 bits
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    return obj  # type: ignore[no-any-return]


class _Replay:
    """The rules replay of the export: the ledger's own fold, into a scratch
    database (`ledger.storage.replay`, bounded memory), a batch of lines at
    a time, and the first refusal.  Lines are queued by `apply` and folded
    when a batch is full or a digest is asked for."""

    def __init__(self, platform: str, scratch: Store) -> None:
        self.platform = platform
        self.replay = Replay(scratch, platform)
        self.scratch = scratch
        self.failure: Check | None = None
        self._queued: list[tuple[int, bytes]] = []
        # The ids seen so far: a table in the scratch database, not a set.
        with scratch.write_transaction() as c:
            c.execute("CREATE TABLE audit_ids (platform TEXT NOT NULL, event_id TEXT NOT NULL, "
                      "PRIMARY KEY (platform, event_id))")

    def apply(self, seq: int, line: bytes) -> None:
        if self.failure is not None:  # the fold no longer follows the log
            return
        self._queued.append((seq, line))
        if len(self._queued) >= REPLAY_BATCH_EVENTS:
            self.flush()

    def digest(self) -> str:
        self.flush()
        return balances_digest(balance_rows(self.replay.balances()))

    def flush(self) -> None:
        """Fold the lines queued so far."""
        queued, self._queued = self._queued, []
        if self.failure is not None or not queued:
            return
        parsed: list[tuple[int, bytes, ParsedEvent]] = []
        for seq, line in queued:
            try:
                parsed.append((seq, line, parse_event(line)))
            except InvalidEvent as e:
                self.failure = Check("events", False, f"seq {seq}: not a valid v1 event: {e.message}", seq)
                break
        ids = sorted({p.event["id"] for _, _, p in parsed})
        seen = set(self.scratch.state.select("audit_ids", "event_id", ("event_id",), self.platform, ids))
        replay = self.replay
        replay.begin([(seq, p.event, line) for seq, line, p in parsed])
        batch_ids: list[tuple[str]] = []
        for seq, line, p in parsed:
            event = p.event
            if p.canonical != line:
                self.failure = Check("events", False, f"seq {seq}: the line is not the event's canonical bytes", seq)
            elif event["platform"] != self.platform:
                self.failure = Check("events", False, f"seq {seq}: an event of platform {event['platform']!r}", seq)
            elif (event["id"],) in seen:
                self.failure = Check("events", False, f"seq {seq}: event id {event['id']!r} appears twice", seq)
            elif (refusal := rules.check(replay.state, event)) is not None:
                self.failure = Check("rules", False, f"seq {seq}: the rules refuse this event: {refusal.code}: "
                                                     f"{refusal.message}", seq)
            if self.failure is not None:
                break
            seen.add((event["id"],))
            batch_ids.append((event["id"],))
            replay.apply(seq, event, line)
        replay.end()
        with self.scratch.write_transaction() as c:
            c.executemany("INSERT INTO audit_ids (platform, event_id) VALUES (?, ?)",
                          [(self.platform, event_id) for (event_id,) in batch_ids])


def _read_lines(stream: BinaryIO) -> Any:
    """Export lines without their `\\n`; an over-long line is cut to a prefix
    (it cannot be a valid event, and the replay will say so)."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 2)
        if not line:
            return
        if not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):  # drain an over-long line
                rest = stream.readline(MAX_LINE_BYTES)
            yield line
        else:
            yield line[:-1]


def audit_export(
    log_path: str | Path, checkpoint_path: str | Path, public_key_path: str | Path,
    previous_path: str | Path | None = None, liabilities_paths: Sequence[str | Path] = (),
) -> list[Check]:
    """Every check of the module doc, in order; all pass iff the audit passes."""
    checks: list[Check] = []
    try:
        public_key = load_public_key(Path(public_key_path))
    except SigningKeyError as e:
        return [Check("public key", False, str(e))]
    checkpoint = load_checkpoint(checkpoint_path)
    if (shape := checkpoint_shape_error(checkpoint)) is not None:
        return [Check("checkpoint", False, shape)]
    checks += signature_checks("checkpoint", checkpoint, public_key)
    platform, size = checkpoint["platform"], checkpoint["size"]

    previous: dict[str, Any] | None = None
    if previous_path is not None:
        previous = load_checkpoint(previous_path)
        if (shape := checkpoint_shape_error(previous)) is not None:
            return checks + [Check("previous checkpoint", False, shape)]
        checks += signature_checks("previous checkpoint", previous, public_key)
        same = previous["platform"] == platform and previous["size"] <= size
        checks.append(Check("previous checkpoint order", same,
                            f"previous is {previous['platform']!r} at size {previous['size']}, "
                            f"this is {platform!r} at size {size}"))
        if not same:
            previous = None
    old_size = previous["size"] if previous else 0
    # The nodes the consistency proof needs, kept as the recomputation completes them.
    proof_ranges = consistency_ranges(old_size, size) if 0 < old_size < size else []

    with scratch_store() as scratch, open(log_path, "rb") as stream:
        replay = _Replay(platform, scratch)
        checks += _audit_log(stream, checkpoint, previous, proof_ranges, replay)
        if "liabilities" in checkpoint:
            replayed = replay.failure is None and replay.replay.seq == size
            checks += liabilities_checks(checkpoint, scratch if replayed else None, liabilities_paths)
        elif liabilities_paths:
            checks.append(Check("liabilities", False, "liabilities exports were given, but the checkpoint "
                                                      "signed no liabilities trees"))
        return checks


def _audit_log(stream: BinaryIO, checkpoint: dict[str, Any], previous: dict[str, Any] | None,
               proof_ranges: list[tuple[int, int]], replay: _Replay) -> list[Check]:
    """The checks the export's lines answer: one pass over them."""
    size = checkpoint["size"]
    old_size = previous["size"] if previous else 0
    wanted: set[NodeKey] = set(nodes_of(proof_ranges))
    frontier = Frontier()
    kept: dict[NodeKey, bytes] = {}
    old_root = old_digest = None
    beyond = 0
    if old_size == 0:
        old_root, old_digest = EMPTY_ROOT, replay.digest()
    for line in _read_lines(stream):
        if frontier.size == size:
            beyond += 1
            continue
        seq = frontier.size + 1
        leaf = leaf_hash(line)
        if (0, seq - 1) in wanted:
            kept[(0, seq - 1)] = leaf
        for level, idx, h in frontier.append(leaf):
            if (level, idx) in wanted:
                kept[(level, idx)] = h
        replay.apply(seq, line)
        if seq == old_size:
            old_root = frontier.root()
            old_digest = replay.digest() if replay.failure is None else None

    replay.flush()
    checks = _log_checks(checkpoint, frontier, replay, beyond)
    if previous is not None:
        root_ok = next(c.ok for c in checks if c.name == "root")
        checks += _previous_checks(previous, checkpoint, root_ok, frontier.size, old_root, old_digest, replay,
                                   [range_hash(s, e, lambda lv, ix: kept[(lv, ix)]) for s, e in proof_ranges]
                                   if frontier.size == size else None)
    return checks


def _log_checks(checkpoint: dict[str, Any], frontier: Frontier, replay: _Replay, beyond: int) -> list[Check]:
    size, read = checkpoint["size"], frontier.size
    checks = []
    if read < size:
        checks.append(Check("export length", False, f"the export ends at seq {read}; the checkpoint covers "
                                                    f"seq 1–{size}: seq {read + 1} is missing", read + 1))
    else:
        note = f"; {beyond} later events are not covered by the checkpoint" if beyond else ""
        checks.append(Check("export length", True, f"{size} events{note}"))
    if replay.failure is not None:
        checks.append(replay.failure)
    else:
        checks.append(Check("events", True, f"{read} lines are canonical v1 events of {replay.platform!r} "
                                            "with distinct ids"))
        checks.append(Check("rules", True, "the rules of EVENTS.md allow every event, in log order"))
    root = frontier.root().hex()
    checks.append(Check("root", root == checkpoint["root"] and read == size,
                        f"the export's first {read} events hash to {root}, the checkpoint signed "
                        f"{checkpoint['root']} at size {size}"))
    if replay.failure is None and read == size:
        digest = replay.digest()
        checks.append(Check("balances digest", digest == checkpoint["balances_digest"],
                            f"replayed {digest}, signed {checkpoint['balances_digest']}"))
    else:
        checks.append(Check("balances digest", False, "not recomputed: the replay did not reach the "
                                                      "checkpoint's size"))
    return checks


def _previous_checks(
    previous: dict[str, Any], checkpoint: dict[str, Any], root_ok: bool, read: int, old_root: bytes | None,
    old_digest: str | None, replay: _Replay, proof: list[bytes] | None,
) -> list[Check]:
    m, n = previous["size"], checkpoint["size"]
    checks = []
    if proof is None:
        checks.append(Check("consistency", False, f"no proof: the export ends at seq {read}, before size {n}"))
    else:
        ok = (
            previous["root"] == EMPTY_ROOT.hex() if m == 0
            else verify_consistency(m, n, bytes.fromhex(previous["root"]), bytes.fromhex(checkpoint["root"]), proof)
        )
        checks.append(Check("consistency", ok, f"RFC 9162 consistency proof of {len(proof)} hashes from the "
                                               f"export: size {m} → {n} {'verifies' if ok else 'does not verify'}"))
    if old_root is None:
        checks.append(Check("previous root", False, f"the export ends at seq {read}, before size {m}", read + 1))
    else:
        same = old_root.hex() == previous["root"]
        if not same:
            where = f": some event at seq ≤ {m} was changed, removed or reordered since the previous checkpoint"
        else:
            where = "" if root_ok else f": the export differs from the signed log only after seq {m}"
        checks.append(Check("previous root", same, f"the export's first {m} events hash to {old_root.hex()}, "
                                                   f"the previous checkpoint signed {previous['root']}{where}"))
    if old_digest is None:
        checks.append(Check("previous balances digest", False, "not recomputed: the replay stopped at seq "
                                                               f"{replay.failure.seq if replay.failure else read}"))
    else:
        checks.append(Check("previous balances digest", old_digest == previous["balances_digest"],
                            f"replayed {old_digest}, signed {previous['balances_digest']}"))
    return checks
