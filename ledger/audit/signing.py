"""Signed checkpoints (AUDIT.md §3): the ledger's Ed25519 key and what it signs.

The signing key lives outside the database, in a PEM file (PKCS#8) readable
by its owner only: whoever can write the database must not thereby be able
to sign a rewritten history.  Its public half is published as PEM
(SubjectPublicKeyInfo) with its key id, the first 16 hex digits of SHA-256
of the raw 32-byte public key.

A checkpoint binds a platform, a tree size, the tree's root and the balances
digest after those events (and, since AUDIT.md revision 1.1, the summaries of
its liabilities trees, §5); the signature covers the canonical bytes
(EVENTS.md §5) of the checkpoint without its `signature` field.  Nothing
here touches the database, so the offline auditor uses it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from projections.balances import canonical_json

KEY_ENV = "PEERLEDGER_SIGNING_KEY"
DEFAULT_KEY_PATH = Path("~/.config/peerledger/signing-key.pem")
# A key file larger than this is not a PEM Ed25519 key; refuse before reading it whole.
KEY_FILE_MAX_BYTES = 64 * 1024
CHECKPOINT_FIELDS = ("platform", "size", "root", "balances_digest", "issued_at", "key_id", "signature")
LIABILITIES_TREE_FIELDS = ("root", "total", "accounts")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


class SigningKeyError(Exception):
    """The key file is missing, unreadable, not an Ed25519 key, or already exists."""


def key_path(explicit: str | None) -> Path:
    """--key-file, else $PEERLEDGER_SIGNING_KEY, else ~/.config/peerledger/signing-key.pem."""
    return Path(explicit or os.environ.get(KEY_ENV) or DEFAULT_KEY_PATH).expanduser()


def create_key_file(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key written to `path` with mode 0600; never overwrites.

    O_EXCL makes "refuse to overwrite" atomic, and the mode is given at
    creation, so the key is never readable by others even for an instant.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} exists already; refusing to overwrite a signing key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(KEY_FILE_MAX_BYTES + 1)
    except OSError as e:
        raise SigningKeyError(f"cannot read key file {path}: {e.strerror}") from None
    if len(data) > KEY_FILE_MAX_BYTES:
        raise SigningKeyError(f"{path} is larger than {KEY_FILE_MAX_BYTES} bytes: not a PEM key")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_bounded(path), password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A published PEM public key (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(_read_bounded(path))
    except ValueError as e:
        raise SigningKeyError(f"{path} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """AUDIT.md §3: the first 16 hex digits of SHA-256 of the raw 32-byte key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_bytes(checkpoint: dict[str, Any]) -> bytes:
    """The canonical bytes of the checkpoint without its signature: what is signed."""
    return canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})


def sign_checkpoint(
    key: Ed25519PrivateKey, platform: str, size: int, root: bytes, balances_digest: str, issued_at: str,
    liabilities: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A signed checkpoint; with `liabilities` (AUDIT.md §5), that field is signed too."""
    checkpoint: dict[str, Any] = {
        "platform": platform,
        "size": size,
        "root": root.hex(),
        "balances_digest": balances_digest,
        "issued_at": issued_at,
        "key_id": key_id(key.public_key()),
    }
    if liabilities is not None:
        checkpoint["liabilities"] = liabilities
    checkpoint["signature"] = base64.b64encode(key.sign(signed_bytes(checkpoint))).decode("ascii")
    return checkpoint


def checkpoint_shape_error(checkpoint: object) -> str | None:
    """Why `checkpoint` is not a well-formed AUDIT.md §3 object (with the
    optional `liabilities` field of §5), or None."""
    if not isinstance(checkpoint, dict):
        return "a checkpoint is a JSON object"
    fields = set(checkpoint) - {"liabilities"}
    if fields != set(CHECKPOINT_FIELDS):
        missing, unknown = sorted(set(CHECKPOINT_FIELDS) - fields), sorted(fields - set(CHECKPOINT_FIELDS))
        return f"fields differ from AUDIT.md §3: missing {missing}, unknown {unknown}"
    size = checkpoint["size"]
    if type(size) is not int or size < 0:
        return f"size must be a non-negative integer, got {size!r}"
    for name, pattern in (("root", _HEX64), ("balances_digest", _HEX64), ("key_id", _HEX16)):
        if not isinstance(checkpoint[name], str) or not pattern.match(checkpoint[name]):
            return f"{name} must be lower-case hex of the right length, got {checkpoint[name]!r}"
    if not isinstance(checkpoint["platform"], str) or not isinstance(checkpoint["issued_at"], str):
        return "platform and issued_at must be strings"
    if not isinstance(checkpoint["signature"], str):
        return "signature must be a base64 string"
    if "liabilities" in checkpoint:
        return liabilities_shape_error(checkpoint["liabilities"])
    return None


def liabilities_shape_error(liabilities: object) -> str | None:
    """Why a checkpoint's `liabilities` field is not AUDIT.md §5's, or None."""
    if not isinstance(liabilities, dict):
        return "liabilities must be an object of currency → tree"
    for currency, tree in liabilities.items():
        if not isinstance(tree, dict) or set(tree) != set(LIABILITIES_TREE_FIELDS):
            return f"liabilities[{currency!r}] must have exactly the fields {list(LIABILITIES_TREE_FIELDS)}"
        if not isinstance(tree["root"], str) or not _HEX64.match(tree["root"]):
            return f"liabilities[{currency!r}].root must be 64 lower-case hex characters"
        for name in ("total", "accounts"):
            if type(tree[name]) is not int or tree[name] < 0:
                return f"liabilities[{currency!r}].{name} must be a non-negative integer, got {tree[name]!r}"
    return None


def signature_valid(checkpoint: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    """The Ed25519 signature over the checkpoint's signed bytes (a well-formed checkpoint)."""
    try:
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        public_key.verify(signature, signed_bytes(checkpoint))
    except (binascii.Error, InvalidSignature):
        return False
    return True
