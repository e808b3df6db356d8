"""The auditor's commands: keys, checkpoint(s), prove, liabilities, export, audit, audit-proof.

    peerledger keys init [--key-file PATH]
    peerledger keys public [--key-file PATH] [--json]
    peerledger checkpoint --platform P [--size N] [--key-file PATH] [--json]
    peerledger checkpoints --platform P [--limit N] [--json]
    peerledger prove inclusion --platform P --seq S [--size N] [--json]
    peerledger prove consistency --platform P --from M [--to N] [--json]
    peerledger prove balance --platform P --prosumer X [--size N] [--with-bookings] [--json]
    peerledger liabilities --platform P --currency C [--size N]
    peerledger export --platform P [--to SEQ] [--output FILE]
    peerledger audit --log EXPORT --checkpoint CP --public-key PEM [--previous CP_OLD]
                     [--liabilities LEAVES …] [--json]
    peerledger audit-proof --proof FILE --public-key PEM [--json]

Formats are AUDIT.md's.  Exit codes as everywhere: 0 ok, 1 a failure or a
failed check, 2 bad usage, 4 not found (a seq or size beyond the log).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from rich.table import Table

from ledger.audit.auditor import audit_export
from ledger.audit.balance_proof import audit_balance_proof
from ledger.audit.liabilities import LiabilitiesMismatch, balance_snapshot, new_seed, stored_trees
from ledger.audit.signing import (
    SigningKeyError,
    create_key_file,
    key_id,
    key_path,
    load_private_key,
    public_pem,
    sign_checkpoint,
)
from ledger.audit.tree import (
    CHECKPOINTS_LIST_MAX,
    StoredTree,
    TreeError,
    create_audit_tables,
    list_checkpoints,
    record_checkpoint,
)
from ledger.cli.common import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    err,
    open_store,
    out,
    print_json,
)
from ledger.contract.documents import consistency_doc, inclusion_doc
from ledger.ingest.ingestor import ledger_time
from ledger.storage.queries import log_head
from ledger.storage.store import LogGap, Store
from projections.liabilities import is_prosumer


def _usage(message: str) -> int:
    err.print(f"peerledger: {message}")
    return EXIT_USAGE


def _not_found(message: str) -> int:
    err.print(f"peerledger: {message}")
    return EXIT_NOT_FOUND


# -- keys ----------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    path = key_path(args.key_file)
    try:
        key = create_key_file(path)
    except SigningKeyError as e:
        err.print(f"peerledger: {e}")
        return EXIT_FAILURE
    print(f"created signing key {path} (mode 0600), key id {key_id(key.public_key())}")
    return EXIT_OK


def cmd_keys_public(args: argparse.Namespace) -> int:
    try:
        public = load_private_key(key_path(args.key_file)).public_key()
    except SigningKeyError as e:
        err.print(f"peerledger: {e}")
        return EXIT_FAILURE
    if args.json:
        print_json({"key_id": key_id(public), "public_key": public_pem(public)})
    else:
        # PEM readers skip text outside the armour, so this output is itself a valid public key file.
        sys.stdout.write(public_pem(public) + f"key_id: {key_id(public)}\n")
    return EXIT_OK


# -- checkpoints ---------------------------------------------------------------------


def cmd_checkpoint(args: argparse.Namespace) -> int:
    try:
        key = load_private_key(key_path(args.key_file))
    except SigningKeyError as e:
        err.print(f"peerledger: {e}")
        return EXIT_FAILURE
    with open_store(args) as store:
        head = store.head(args.platform)
        size = head if args.size is None else args.size
        if size < 0:
            return _usage("--size must be ≥ 0")
        if head == 0 or size > head:
            return _not_found(f"platform {args.platform!r} has {head} events; no checkpoint at size {size}")
        root = StoredTree(store, args.platform).root(size)
        seed = new_seed()
        create_audit_tables(store)
        with balance_snapshot(store, args.platform, size, seed) as snapshot:
            liabilities = {currency: tree.as_json() for currency, tree in snapshot.build().items()}
            checkpoint = sign_checkpoint(key, args.platform, size, root, snapshot.digest, ledger_time(), liabilities)
            record_checkpoint(store, checkpoint, seed, snapshot.keep)
    if args.json:
        print_json(checkpoint)
    else:
        for field, value in checkpoint.items():
            if field == "liabilities":
                if not value:
                    out.print(f"{'liabilities':>16}  none (no prosumer has a balance yet)")
                for currency, tree in value.items():
                    out.print(f"{'liabilities':>16}  {currency}: total {tree['total']} minor units owed to "
                              f"{tree['accounts']:,} accounts, root {tree['root']}")
            else:
                out.print(f"{field:>16}  {value}")
    return EXIT_OK


def cmd_checkpoints(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        log_head(store, args.platform)  # no checkpoints of an unknown platform: not found, not an empty list
        create_audit_tables(store)
        checkpoints = list_checkpoints(store, args.platform, args.limit)
    if args.json:
        print_json(checkpoints)
        return EXIT_OK
    t = Table(title=f"checkpoints of {args.platform}")
    for col in ("issued_at", "size", "root", "balances_digest", "key_id"):
        t.add_column(col, justify="right" if col == "size" else "left")
    for c in checkpoints:
        t.add_row(c["issued_at"], f"{c['size']:,}", c["root"], c["balances_digest"], c["key_id"])
    out.print(t)
    return EXIT_OK


# -- proofs --------------------------------------------------------------------------


def cmd_prove_inclusion(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        head = store.head(args.platform)
        size = head if args.size is None else args.size
        if args.seq < 1:
            return _usage("--seq must be ≥ 1")
        if max(args.seq, size) > head:
            return _not_found(f"platform {args.platform!r} has {head} events, not {max(args.seq, size)}")
        if args.seq > size:
            return _usage(f"--seq {args.seq} is not in the tree of size {size}")
        leaf, path = StoredTree(store, args.platform).inclusion(args.seq, size)
    proof = inclusion_doc(args.platform, args.seq, size, leaf, path)
    _print_proof(args, proof)
    return EXIT_OK


def cmd_prove_consistency(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        head = store.head(args.platform)
        second = head if args.to is None else args.to
        if args.first < 1:
            return _usage("--from must be ≥ 1")
        if max(args.first, second) > head:
            return _not_found(f"platform {args.platform!r} has {head} events, not {max(args.first, second)}")
        if args.first > second:
            return _usage(f"need --from ≤ --to, got {args.first} > {second}")
        path = StoredTree(store, args.platform).consistency(args.first, second)
    proof = consistency_doc(args.platform, args.first, second, path)
    _print_proof(args, proof)
    return EXIT_OK


def _print_proof(args: argparse.Namespace, proof: dict[str, Any]) -> None:
    if args.json:
        print_json(proof)
        return
    for field, value in proof.items():
        if field != "path":
            out.print(f"{field:>10}  {value}")
    for i, h in enumerate(proof["path"]):
        out.print(f"{'path' if i == 0 else '':>10}  {h}")


def cmd_prove_balance(args: argparse.Namespace) -> int:
    if not is_prosumer(args.prosumer):
        return _usage(f"{args.prosumer!r} is a system account; liabilities trees hold prosumer accounts only")
    with open_store(args) as store:
        trees = stored_trees(store, args.platform, args.size)
        checkpoint = trees.checkpoint
        proof = {"checkpoint": checkpoint, "proofs": trees.proofs(args.prosumer, args.with_bookings)}
    if args.json:
        print_json(proof)
        return EXIT_OK
    out.print(f"checkpoint of {args.platform} at size {checkpoint['size']}, issued {checkpoint['issued_at']}")
    if not proof["proofs"]:
        out.print(f"{args.prosumer} has no balance at that size")
    for entry in proof["proofs"]:
        leaf = entry["leaf"]
        out.print(f"{leaf['currency']}: balance {leaf['balance']} minor units, leaf {entry['index']:,} of "
                  f"{entry['leaves']:,}, {len(entry['path'])} siblings (use --json for the proof itself)")
    return EXIT_OK


def cmd_liabilities(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        trees = stored_trees(store, args.platform, args.size)
        if args.currency not in trees.checkpoint["liabilities"]:
            return _not_found(f"the checkpoint at size {trees.checkpoint['size']} has no {args.currency} tree; it "
                              f"has {sorted(trees.checkpoint['liabilities']) or 'none'}")
        trees.check(args.currency)  # before the first line: never an export of leaves that were changed
        stream = sys.stdout.buffer
        for line in trees.lines(args.currency):
            stream.write(line + b"\n")
        stream.flush()
    return EXIT_OK


def cmd_audit_proof(args: argparse.Namespace) -> int:
    return _report(args, audit_balance_proof(args.proof, args.public_key))


# -- export and audit ----------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        head = log_head(store, args.platform)
        upto = head if args.to is None else args.to
        if upto < 1:
            return _usage("--to must be ≥ 1")
        if upto > head:
            return _not_found(f"platform {args.platform!r} has {head} events, not {upto}")
        try:
            if args.output is None:
                _write_export(store, args.platform, upto, sys.stdout.buffer)
                return EXIT_OK
            # Written beside the target and renamed when complete: a file
            # named FILE is never a truncated export.
            partial = f"{args.output}.partial"
            try:
                with open(partial, "wb") as f:
                    written = _write_export(store, args.platform, upto, f)
                    os.fsync(f.fileno())
                os.replace(partial, args.output)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
        except LogGap as gap:
            err.print(f"peerledger: {gap}; run `peerledger verify`")
            return EXIT_FAILURE
    err.print(f"exported {written:,} events of {args.platform} to {args.output}")
    return EXIT_OK


def _write_export(store: Store, platform: str, upto: int, stream: Any) -> int:
    """AUDIT.md §4: the stored canonical bytes, one per line, seq order from 1."""
    written = 0
    for stored in store.read_log(platform, upto_seq=upto):
        stream.write(stored.state + b"\n")
        written += 1
    stream.flush()
    return written


def cmd_audit(args: argparse.Namespace) -> int:
    return _report(args, audit_export(args.log, args.checkpoint, args.public_key, args.previous,
                                      args.liabilities or ()))


def _report(args: argparse.Namespace, checks: list[Any]) -> int:
    """The checks, one PASS/FAIL line each (or JSON); exit 0 iff all pass."""
    ok = all(c.ok for c in checks)
    if args.json:
        print_json({"ok": ok, "checks": [c.as_json() for c in checks]})
    else:
        for c in checks:
            print(c.line())
    return EXIT_OK if ok else EXIT_FAILURE


def _tree_errors(func: Any) -> Any:
    """A missing stored node, or balances that no longer give the signed
    liabilities trees, is a failure (exit 1) with its message, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (TreeError, LiabilitiesMismatch) as e:
            err.print(f"peerledger: {e}")
            return EXIT_FAILURE

    return run


# -- the parser ----------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser, jsonf: argparse.ArgumentParser,
             plat: argparse.ArgumentParser) -> None:
    """Add the auditor's commands to `peerledger`'s subparsers."""
    keyf = argparse.ArgumentParser(add_help=False)
    keyf.add_argument("--key-file", metavar="PATH",
                      help="the Ed25519 signing key (PEM); env PEERLEDGER_SIGNING_KEY, "
                           "default ~/.config/peerledger/signing-key.pem")

    keys = sub.add_parser("keys", help="the ledger's checkpoint signing key").add_subparsers(
        dest="keys_command", required=True)
    s = keys.add_parser("init", parents=[keyf], help="create the signing key (mode 0600; never overwrites)")
    s.set_defaults(func=cmd_keys_init)
    s = keys.add_parser("public", parents=[keyf, jsonf], help="the public key (PEM) and its key id")
    s.set_defaults(func=cmd_keys_public)

    s = sub.add_parser("checkpoint", parents=[common, jsonf, plat, keyf],
                       help="sign and record a checkpoint of the log (AUDIT.md §3)")
    s.add_argument("--size", type=int, metavar="N", help="tree size (default: the log's head)")
    s.set_defaults(func=_tree_errors(cmd_checkpoint))

    s = sub.add_parser("checkpoints", parents=[common, jsonf, plat], help="the checkpoints issued, oldest first")
    s.add_argument("--limit", type=int, default=1000, help=f"the newest N (at most {CHECKPOINTS_LIST_MAX})")
    s.set_defaults(func=cmd_checkpoints)

    prove = sub.add_parser("prove", help="RFC 9162 proofs (AUDIT.md §2)").add_subparsers(
        dest="prove_command", required=True)
    s = prove.add_parser("inclusion", parents=[common, jsonf, plat], help="the audit path of one event")
    s.add_argument("--seq", type=int, required=True)
    s.add_argument("--size", type=int, metavar="N", help="tree size (default: the log's head)")
    s.set_defaults(func=_tree_errors(cmd_prove_inclusion))
    s = prove.add_parser("consistency", parents=[common, jsonf, plat], help="that one tree extends another")
    s.add_argument("--from", dest="first", type=int, required=True, metavar="M")
    s.add_argument("--to", type=int, metavar="N", help="(default: the log's head)")
    s.set_defaults(func=_tree_errors(cmd_prove_consistency))

    s = prove.add_parser("balance", parents=[common, jsonf, plat],
                         help="a prosumer's balance proof against a signed checkpoint (AUDIT.md §5)")
    s.add_argument("--prosumer", required=True)
    s.add_argument("--size", type=int, metavar="N", help="the checkpoint's size (default: the newest checkpoint)")
    s.add_argument("--with-bookings", action="store_true",
                   help="each of the prosumer's bookings with its event and the event's inclusion proof")
    s.set_defaults(func=_tree_errors(cmd_prove_balance))

    s = sub.add_parser("liabilities", parents=[common, plat],
                       help="a checkpoint's liabilities tree leaves, in leaf order, as JSON Lines (AUDIT.md §5)")
    s.add_argument("--currency", required=True)
    s.add_argument("--size", type=int, metavar="N", help="the checkpoint's size (default: the newest checkpoint)")
    s.set_defaults(func=_tree_errors(cmd_liabilities))

    s = sub.add_parser("audit-proof", parents=[jsonf], help="check a prosumer's balance proof (no database)")
    s.add_argument("--proof", required=True, metavar="FILE")
    s.add_argument("--public-key", required=True, metavar="PEM")
    s.set_defaults(func=cmd_audit_proof)

    s = sub.add_parser("export", parents=[common, plat], help="the log's canonical bytes, one per line (AUDIT.md §4)")
    s.add_argument("--to", type=int, metavar="SEQ", help="last seq (default: the log's head)")
    s.add_argument("--output", metavar="FILE", help="default: stdout")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("audit", parents=[jsonf], help="check an export against a checkpoint (no database)")
    s.add_argument("--log", required=True, metavar="EXPORT")
    s.add_argument("--checkpoint", required=True, metavar="CP")
    s.add_argument("--public-key", required=True, metavar="PEM")
    s.add_argument("--previous", metavar="CP_OLD", help="an earlier checkpoint the log must extend")
    s.add_argument("--liabilities", metavar="LEAVES", action="append",
                   help="a liabilities export of the checkpoint (`peerledger liabilities`); repeat per currency")
    s.set_defaults(func=cmd_audit)
