"""Bearer tokens for the HTTP API: who may do what on which platform.

A token looks like `plt_<id>_<secret>`: `<id>` is 16 hex characters, public,
the row's key (it appears in `tokens list`, in reject sources and in logs);
`<secret>` is 256 random bits (`secrets.token_urlsafe(32)`).  The database
keeps only SHA-256 of the whole token.  Checking a presented token is a
primary-key lookup by `<id>`, then `hmac.compare_digest` of the two hashes, so
the comparison takes the same time whatever the first differing byte, and
the lookup never touches secret material.

Why SHA-256 and no slow KDF (bcrypt, scrypt, Argon2): a slow KDF exists to
make guessing a *low-entropy* password from a leaked hash expensive.  Our
secrets are 256 uniformly random bits chosen by the ledger: no dictionary
applies, and inverting SHA-256 on a 2^256 space is infeasible however fast
the hash is.  A fast hash keeps every request's check at microseconds.

Roles (`ROLES`):

| role | reads its platform | POSTs events to its platform |
|---|---|---|
| ingest | no | yes, every type |
| operator | yes | only `OPERATOR_EVENT_TYPES` |
| auditor | yes | no |
| admin | yes, every platform | yes, every platform, every type |

Payout runs (`GET …/payouts/plan`) are planned by `PAY_ROLES`: operator and
admin, who may also post the `payout.issued` events they plan and the
`payout.returned` events their bank reports (`payouts reconcile`).
A prosumer's balance proof (AUDIT.md §5, `…/prosumers/{x}/proof`) is fetched
by `PROVE_ROLES` (operator and admin: the platform hands it to its user in
its own app); the leaves of a whole liabilities tree (`…/liabilities`), every
prosumer's balance, go to `LIABILITIES_ROLES` only (auditor and admin).
Webhook endpoints (`…/webhooks`: URLs, and secrets shown once) are managed
by `WEBHOOK_ROLES` (operator and admin).

A token belongs to one platform, except an admin token, which belongs to
all (`platform` NULL).  Revoking marks the row (`revoked_at`) and takes effect
at the next request: tokens are checked against the database every time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ledger.contract.schema import PLATFORM_PATTERN
from ledger.ingest.ingestor import ledger_time
from ledger.storage.store import Store

INGEST = "ingest"
OPERATOR = "operator"
AUDITOR = "auditor"
ADMIN = "admin"
ROLES = (INGEST, OPERATOR, AUDITOR, ADMIN)
READ_ROLES = frozenset({OPERATOR, AUDITOR, ADMIN})
WRITE_ROLES = frozenset({INGEST, OPERATOR, ADMIN})
PAY_ROLES = frozenset({OPERATOR, ADMIN})
PROVE_ROLES = frozenset({OPERATOR, ADMIN})
LIABILITIES_ROLES = frozenset({AUDITOR, ADMIN})
# Webhook endpoints (`…/webhooks`) are the platform operator's: where the
# platform's booking documents go, and the secrets that sign them.
WEBHOOK_ROLES = frozenset({OPERATOR, ADMIN})
# An operator corrects and pays out (books returned payouts back), and runs the platform's usage pools: it
# opens a pool (choosing its split method, a policy like the fee) and closes
# it (the month is over: book it).  The platform's own events (prosumers,
# works, sales, refunds, a pool's funding and usage) come from its ingest
# pipeline.
OPERATOR_EVENT_TYPES = frozenset(
    {"payout.issued", "payout.returned", "policy.set", "work.retracted", "work.reinstated", "work.reassigned",
     "pool.opened", "pool.closed"}
)

TOKEN_PREFIX = "plt_"
TOKEN_ID_HEX_CHARS = 16
TOKEN_SECRET_BYTES = 32  # 256 bits
# Longer presented tokens are refused before hashing: nothing legitimate is longer.
TOKEN_MAX_CHARS = 128
LABEL_MAX_CHARS = 200

_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}([0-9a-f]{{{TOKEN_ID_HEX_CHARS}}})_([A-Za-z0-9_-]{{20,80}})")
_PLATFORM_RE = re.compile(PLATFORM_PATTERN[1:-1])


def tokens_ddl(blob: str) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_tokens ("
        "token_id TEXT PRIMARY KEY, "
        f"token_hash {blob} NOT NULL, "
        "role TEXT NOT NULL, "
        "platform TEXT, "  # NULL: every platform (admin)
        "label TEXT NOT NULL, "
        "created_at TEXT NOT NULL, "
        "revoked_at TEXT)"
    ]


# Bump when the statements change: existing databases then run them once more.
TOKENS_SCHEMA_VERSION = 1


def create_tokens_table(store: Store) -> None:
    store.ensure_schema("tokens", TOKENS_SCHEMA_VERSION, tokens_ddl(store.dialect.blob))


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a valid token, as the HTTP API sees it."""

    token_id: str
    role: str
    platform: str | None  # None: every platform (admin)

    def sees(self, platform: str) -> bool:
        """Whether `platform` exists for this token at all (else: 404)."""
        return self.platform is None or self.platform == platform

    @property
    def may_read(self) -> bool:
        return self.role in READ_ROLES

    @property
    def may_write(self) -> bool:
        return self.role in WRITE_ROLES

    @property
    def may_pay(self) -> bool:
        return self.role in PAY_ROLES

    @property
    def may_prove(self) -> bool:
        return self.role in PROVE_ROLES

    @property
    def may_export_liabilities(self) -> bool:
        return self.role in LIABILITIES_ROLES

    @property
    def may_manage_webhooks(self) -> bool:
        return self.role in WEBHOOK_ROLES

    @property
    def event_types(self) -> frozenset[str] | None:
        """The event types this token may POST; None means every type."""
        return OPERATOR_EVENT_TYPES if self.role == OPERATOR else None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's row, without its hash (what `tokens list` shows)."""

    token_id: str
    role: str
    platform: str | None
    label: str
    created_at: str
    revoked_at: str | None

    def as_json(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "role": self.role, "platform": self.platform,
                "label": self.label, "created_at": self.created_at, "revoked_at": self.revoked_at}


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def create_token(store: Store, role: str, platform: str | None, label: str = "") -> tuple[str, TokenInfo]:
    """A new token: returns (the token, shown once and never stored, its row)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (role == ADMIN) != (platform is None):
        raise ValueError("an admin token is for all platforms; every other role is for one platform")
    if platform is not None and not _PLATFORM_RE.fullmatch(platform):
        raise ValueError(f"not a platform id: {platform!r} (EVENTS.md §1: {PLATFORM_PATTERN})")
    if len(label) > LABEL_MAX_CHARS:
        raise ValueError(f"label longer than {LABEL_MAX_CHARS} characters")
    token_id = secrets.token_hex(TOKEN_ID_HEX_CHARS // 2)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(TOKEN_SECRET_BYTES)}"
    info = TokenInfo(token_id, role, platform, label, ledger_time(), None)
    with store.transaction(commit=True) as c:
        c.execute(
            store.dialect.sql(
                "INSERT INTO peerledger_tokens (token_id, token_hash, role, platform, label, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (token_id, _hash(token), role, platform, label, info.created_at),
        )
    return token, info


def list_tokens(store: Store) -> list[TokenInfo]:
    rows = store.query(
        "SELECT token_id, role, platform, label, created_at, revoked_at FROM peerledger_tokens "
        "ORDER BY created_at, token_id"
    )
    return [TokenInfo(*row) for row in rows]


def revoke_token(store: Store, token_id: str) -> bool:
    """Revoke a token by id; False when there is no such (unrevoked) token."""
    with store.transaction(commit=True) as c:
        c.execute(
            store.dialect.sql(
                "UPDATE peerledger_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL "
                "RETURNING token_id"
            ),
            (ledger_time(), token_id),
        )
        return bool(c.fetchall())


# Compared against when the id is unknown, so that an unknown id and a wrong
# secret cost the same hash-and-compare.
_NO_HASH = bytes(32)


def authenticate(store: Store, presented: str | None) -> Principal | None:
    """The principal of a presented token, or None (missing, malformed,
    unknown, wrong secret or revoked: the caller answers 401 alike)."""
    if not presented or len(presented) > TOKEN_MAX_CHARS:
        return None
    m = _TOKEN_RE.fullmatch(presented)
    if m is None:
        return None
    rows = store.query(
        "SELECT token_hash, role, platform, revoked_at FROM peerledger_tokens WHERE token_id = ?",
        (m.group(1),),
    )
    stored, role, platform, revoked_at = rows[0] if rows else (_NO_HASH, "", None, None)
    if not hmac.compare_digest(_hash(presented), bytes(stored)) or revoked_at is not None:
        return None
    return Principal(m.group(1), role, platform)
