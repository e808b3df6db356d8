"""The prosumer's verifier: a balance proof and a public key, no database (AUDIT.md §5).

`audit_balance_proof` answers one question: is the balance this proof shows
counted in the total the platform signed that it owes its prosumers?  It
checks, in order: the checkpoint's shape, key id and Ed25519 signature
(§3); then each entry: the leaf's fields, that it is of the checkpoint's
size and of a prosumer account (the same one in every entry, one entry per
currency in code point order), that `leaves` is the signed number of
accounts and the index lies within it, that every sum on the path is a
non-negative integer, and that folding the path (RFC 9162 §2.1.3.2 with
sums, `projections.liabilities.fold_path`) ends at the signed root and
total.  A negative sibling sum is refused because it could cancel a
balance out of the total.

An entry may carry the prosumer's `bookings` (`prove balance
--with-bookings`): each booking's event, whose canonical bytes must hash to
a leaf of the signed log (its RFC 9162 inclusion proof at the checkpoint's
size), of a type that books the booking's column, and the amounts must add
up to the leaf's balance.

What the prosumer still trusts: that every other leaf is a real account
with its real balance (the auditor's check of the liabilities export), and
that each booking's amount is what the rules give for its event (an audit
replays them: the events are in the log, the attribution is the ledger's).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ledger.audit.checks import Check, signature_checks
from ledger.audit.signing import SigningKeyError, checkpoint_shape_error, load_public_key
from projections.balances import canonical_json
from projections.liabilities import LEAF_FIELDS, SALT_RE, Node, fold_path, is_prosumer, leaf_node
from projections.merkle import leaf_hash as event_leaf_hash
from projections.merkle import verify_inclusion

# A proof is a checkpoint and, per currency, a leaf and ~log2(accounts) siblings.
PROOF_FILE_MAX_BYTES = 1024 * 1024
PROOF_ENTRY_FIELDS = ("index", "leaf", "leaves", "path")
BOOKING_FIELDS = ("amount", "column", "event", "inclusion", "seq")
# The event types that book each column (EVENTS.md §9).
COLUMN_TYPES = {"earned": {"value.realized", "pool.closed"}, "reversed": {"value.reversed"},
                "paid": {"payout.issued", "payout.returned"}}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def audit_balance_proof(proof_path: str | Path, public_key_path: str | Path) -> list[Check]:
    """Every check of the module doc, in order; all pass iff the proof is valid."""
    try:
        public_key = load_public_key(Path(public_key_path))
    except SigningKeyError as e:
        return [Check("public key", False, str(e))]
    proof, problem = _load(Path(proof_path))
    if problem is not None:
        return [Check("proof", False, problem)]
    checkpoint = proof["checkpoint"]
    if (shape := checkpoint_shape_error(checkpoint)) is not None:
        return [Check("checkpoint", False, shape)]
    if "liabilities" not in checkpoint:
        return [Check("checkpoint", False, "the checkpoint has no liabilities field (signed before AUDIT.md "
                                           "revision 1.1): it proves no balance")]
    checks = signature_checks("checkpoint", checkpoint, public_key)
    entries = proof["proofs"]
    currencies = [e.get("leaf", {}).get("currency") if isinstance(e, dict) and isinstance(e.get("leaf"), dict)
                  else None for e in entries]
    accounts = {e["leaf"].get("account") for e in entries if isinstance(e, dict) and isinstance(e.get("leaf"), dict)}
    ordered = all(isinstance(c, str) for c in currencies) and currencies == sorted(set(currencies))
    checks.append(Check("entries", ordered and len(accounts) <= 1,
                        f"{len(entries)} entries, currencies {currencies}, accounts {sorted(map(str, accounts))}: "
                        "one per currency in code point order, all of one account"))
    for i, entry in enumerate(entries):
        checks.append(_entry_check(i, entry, checkpoint))
    return checks


def _load(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        with open(path, "rb") as f:
            data = f.read(PROOF_FILE_MAX_BYTES + 1)
    except OSError as e:
        return {}, f"cannot read {path}: {e.strerror}"
    if len(data) > PROOF_FILE_MAX_BYTES:
        return {}, f"{path} is larger than {PROOF_FILE_MAX_BYTES} bytes: not a balance proof"
    try:
        proof = json.loads(data)  # not orjson: sums may exceed 64 bits
    except (ValueError, RecursionError) as e:
        return {}, f"{path} is not JSON: {e}"
    if not isinstance(proof, dict) or set(proof) != {"checkpoint", "proofs"} or not isinstance(proof["proofs"], list):
        return {}, 'a balance proof is {"checkpoint": {…}, "proofs": [{…}, …]} (AUDIT.md §5)'
    return proof, None


def _entry_check(i: int, entry: object, checkpoint: dict[str, Any]) -> Check:
    name = f"proof {i}"
    if (problem := _entry_shape_error(entry, checkpoint)) is not None:
        return Check(name, False, problem)
    assert isinstance(entry, dict)
    leaf, index, leaves = entry["leaf"], entry["index"], entry["leaves"]
    currency = leaf["currency"]
    signed = checkpoint["liabilities"][currency]
    path = [Node(bytes.fromhex(p["hash"]), p["sum"]) for p in entry["path"]]
    root = fold_path(leaf_node(leaf), index, leaves, path)
    where = f"{leaf['account']} {currency} balance {leaf['balance']}, leaf {index} of {leaves}"
    if root is None:
        return Check(name, False, f"{where}: a path of {len(path)} siblings does not fit that index and size")
    ok = root.hash.hex() == signed["root"] and root.sum == signed["total"]
    detail = (f"{where}: the path folds to root {root.hash.hex()} and total {root.sum}; the checkpoint signed "
              f"{signed['root']} and {signed['total']}")
    if ok and "bookings" in entry:
        problem = _bookings_problem(entry["bookings"], leaf, checkpoint)
        ok = problem is None
        detail += "; " + (problem or f"its {len(entry['bookings'])} bookings are events of the signed log (RFC 9162 "
                                      "inclusion) and add up to the balance")
    return Check(name, ok, detail)


def _bookings_problem(bookings: object, leaf: dict[str, Any], checkpoint: dict[str, Any]) -> str | None:
    """Why the bookings do not prove the leaf's balance, or None: each is of an
    event included in the checkpoint's tree (its leaf hash recomputed from the
    event's canonical bytes), of a type that books its column, in seq order,
    and together they add up to the balance (earned + reversed − paid)."""
    if not isinstance(bookings, list):
        return "bookings is a list"
    root, size = bytes.fromhex(checkpoint["root"]), checkpoint["size"]
    total, previous = 0, 0
    for b in bookings:
        if not isinstance(b, dict) or set(b) != set(BOOKING_FIELDS):
            return f"a booking has exactly the fields {list(BOOKING_FIELDS)}"
        seq, column, amount, event, inclusion = b["seq"], b["column"], b["amount"], b["event"], b["inclusion"]
        if type(seq) is not int or not previous < seq <= size:
            return f"booking seqs are ascending and within the checkpoint's size, got {seq!r}"
        if column not in COLUMN_TYPES or type(amount) is not int or not isinstance(event, dict):
            return f"seq {seq}: a booking has a column of {sorted(COLUMN_TYPES)}, an integer amount and an event"
        if event.get("type") not in COLUMN_TYPES[column] or event.get("platform") != checkpoint["platform"]:
            return f"seq {seq}: a {event.get('type')!r} event of {event.get('platform')!r} books no {column!r}"
        if not isinstance(inclusion, dict) or set(inclusion) != {"leaf_hash", "path"} or not isinstance(
                inclusion["path"], list) or not all(isinstance(h, str) and _HEX64.match(h) for h in inclusion["path"]):
            return f"seq {seq}: inclusion is {{\"leaf_hash\", \"path\": [hex, …]}}"
        leaf_hash = event_leaf_hash(canonical_json(event))
        if leaf_hash.hex() != inclusion["leaf_hash"] or not verify_inclusion(
                seq - 1, size, leaf_hash, [bytes.fromhex(h) for h in inclusion["path"]], root):
            return f"seq {seq}: the event is not the one at that seq of the signed log"
        total += -amount if column == "paid" else amount
        previous = seq
    if total != leaf["balance"]:
        return f"the bookings add up to {total}, the leaf's balance is {leaf['balance']}"
    return None


def _entry_shape_error(entry: object, checkpoint: dict[str, Any]) -> str | None:
    if not isinstance(entry, dict) or set(entry) - {"bookings"} != set(PROOF_ENTRY_FIELDS):
        return f"an entry has exactly the fields {list(PROOF_ENTRY_FIELDS)} (and, optionally, bookings)"
    leaf = entry["leaf"]
    if not isinstance(leaf, dict) or set(leaf) != set(LEAF_FIELDS):
        return f"a leaf has exactly the fields {list(LEAF_FIELDS)}"
    if not isinstance(leaf["account"], str) or not is_prosumer(leaf["account"]):
        return f"the leaf's account {leaf['account']!r} is not a prosumer account"
    if type(leaf["balance"]) is not int or not isinstance(leaf["currency"], str):
        return "the leaf's balance is an integer and its currency a string"
    if not isinstance(leaf["salt"], str) or not SALT_RE.match(leaf["salt"]):
        return "the leaf's salt is 64 lower-case hex characters"
    if type(leaf["size"]) is not int or leaf["size"] != checkpoint["size"]:
        return f"the leaf is of size {leaf['size']!r}, the checkpoint of size {checkpoint['size']}"
    signed = checkpoint["liabilities"].get(leaf["currency"])
    if signed is None:
        return f"the checkpoint signed no {leaf['currency']!r} tree"
    index, leaves = entry["index"], entry["leaves"]
    if type(leaves) is not int or leaves != signed["accounts"]:
        return f"leaves is {leaves!r}; the checkpoint's {leaf['currency']} tree has {signed['accounts']} accounts"
    if type(index) is not int or not 0 <= index < leaves:
        return f"index {index!r} is not in 0…{leaves - 1}"
    if not isinstance(entry["path"], list):
        return "path is a list"
    for step in entry["path"]:
        if not isinstance(step, dict) or set(step) != {"hash", "sum"}:
            return 'each step of the path is {"hash", "sum"}'
        if not isinstance(step["hash"], str) or not _HEX64.match(step["hash"]):
            return "each hash on the path is 64 lower-case hex characters"
        if type(step["sum"]) is not int or step["sum"] < 0:
            return f"a sum on the path is {step['sum']!r}: sums are non-negative integers"
    return None
