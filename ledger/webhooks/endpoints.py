"""Webhook endpoints and their delivery records: the operator's tables outside the log.

An endpoint is a URL of one platform's operator that wants that platform's
booking documents (EVENTS.md §9) pushed to it, optionally only those of some
event types.  Four tables, on both backends, none of them part of the log
(an auditor's export never holds a URL or a secret):

| table | one row per | what for |
|---|---|---|
| `peerledger_webhook_endpoints` | endpoint | URL, types, secrets, **cursor**, disabled or not |
| `peerledger_webhook_attempts` | POST made | seq, attempt number, time, status or error, duration |
| `peerledger_webhook_retries` | document waiting for another attempt | attempts so far, when next |
| `peerledger_webhook_dead_letters` | document that exhausted the schedule | its last status or error |

The **cursor** is the seq up to which every document got its first attempt
(or was skipped by the type filter).  It is written in the same transaction
as those attempts' rows, after their POSTs answered: a deliverer killed at
any instant resends, on restart, only what it had in flight, and never skips
a seq.  A deliverer starts from the cursor: nothing it does at start grows
with the log.

Secrets.  A secret is `whsec_` and the base64 of `SECRET_BYTES` random bytes
(Standard Webhooks).  The ledger must sign with it, so it is stored as is
(unlike the API tokens, of which only a hash is kept): this table is as
sensitive as the database's password.  It is shown once, when made (`add`,
`rotate`), never by `list` nor in any log; `Endpoint`'s repr leaves it out.
After a rotation the previous secret still signs for `ROTATION_GRACE_SECONDS`
(each request then carries two `v1,` signatures, as Svix does), so a receiver
can switch secrets without dropping a request.

URLs: http or https, with a host, at most `URL_MAX_CHARS`, no user or password
in them (credentials in a URL end up in logs and tables; receivers
authenticate the ledger by its signature instead).
"""

from __future__ import annotations

import base64
import re
import secrets as random_secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from ledger.contract.schema import EVENT_TYPES, PLATFORM_PATTERN
from ledger.ingest.ingestor import ledger_time
from ledger.storage.store import Store

# Bump when the statements change: existing databases then run them once more.
WEBHOOKS_SCHEMA_VERSION = 1
SECRET_PREFIX = "whsec_"
# Standard Webhooks asks for 24 to 64 bytes; 32 is what HMAC-SHA256 uses in full.
SECRET_BYTES = 32
ENDPOINT_ID_PREFIX = "ep_"
ENDPOINT_ID_HEX_CHARS = 16
# Far beyond any real receiver's URL, and small enough for every table and log line.
URL_MAX_CHARS = 2048
# Svix keeps the old secret signing for 24 hours after a rotation.
ROTATION_GRACE_SECONDS = 24 * 3600
# `attempts` and `dead-letters` pages.
LIST_LIMIT_MAX = 1000

_PLATFORM_RE = re.compile(PLATFORM_PATTERN[1:-1])
_ENDPOINT_ID_RE = re.compile(rf"{ENDPOINT_ID_PREFIX}[0-9a-f]{{{ENDPOINT_ID_HEX_CHARS}}}")
_KNOWN_TYPES = frozenset(EVENT_TYPES)


class WebhookError(ValueError):
    """What an operator asked cannot be stored; the message names the field."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint's row.  `types` empty means every event type.  The
    secrets are left out of the repr: an endpoint may be logged, a secret never."""

    endpoint_id: str
    platform: str
    url: str
    types: tuple[str, ...]
    cursor_seq: int
    created_at: str
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: float | None  # unix seconds of the first failure since the last success
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False, default=None)
    previous_until: float | None = None  # unix seconds: the previous secret signs until then

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def wants(self, event_type: str) -> bool:
        return not self.types or event_type in self.types

    def signing_secrets(self, now_seconds: float) -> list[str]:
        """The secrets a request made now is signed with: the current one, and
        the previous one during its grace period."""
        out = [self.secret]
        if self.previous_secret and self.previous_until is not None and now_seconds < self.previous_until:
            out.append(self.previous_secret)
        return out

    def as_json(self) -> dict[str, Any]:
        """Everything but the secrets (`webhooks list --json`, the HTTP API)."""
        return {"endpoint_id": self.endpoint_id, "platform": self.platform, "url": self.url,
                "types": list(self.types), "cursor_seq": self.cursor_seq, "created_at": self.created_at,
                "enabled": self.enabled, "disabled_at": self.disabled_at, "disabled_reason": self.disabled_reason,
                "failing_since": _instant(self.failing_since),
                "previous_secret_until": _instant(self.previous_until) if self.previous_secret else None}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST of one document to one endpoint."""

    seq: int
    attempt: int  # 1 for the first attempt, 2 for the first retry, …
    at: str
    status: int | None  # the HTTP status, or None when no answer came (see `error`)
    error: str | None
    duration_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "attempt": self.attempt, "at": self.at, "status": self.status,
                "error": self.error, "duration_seconds": round(self.duration_seconds, 6)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A document that failed every attempt of the schedule."""

    seq: int
    attempts: int
    status: int | None
    error: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "attempts": self.attempts, "status": self.status, "error": self.error,
                "at": self.at}


@dataclass(frozen=True, slots=True)
class Retry:
    """A document waiting for its next attempt."""

    seq: int
    attempts: int  # attempts made so far
    next_at: float  # unix seconds


def _instant(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- validation ----------------------------------------------------------------


def checked_url(url: str) -> str:
    """`url` if a deliverer may POST to it; WebhookError saying why not."""
    if not isinstance(url, str) or not url:
        raise WebhookError("url: empty")
    if len(url) > URL_MAX_CHARS:
        raise WebhookError(f"url: longer than {URL_MAX_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise WebhookError("url: holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError on a port that is not a number in 0…65535
    except ValueError as e:
        raise WebhookError(f"url: not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(f"url: the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise WebhookError("url: no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url: no user or password in the URL (receivers check the signature instead)")
    if parts.fragment:
        raise WebhookError("url: a fragment (#…) is never sent; leave it out")
    return url


def checked_types(types: Iterable[str] | None) -> tuple[str, ...]:
    """The event types of a filter, sorted and unique; () for every type."""
    if types is None:
        return ()
    out = sorted({t.strip() for t in types if t.strip()})
    unknown = [t for t in out if t not in _KNOWN_TYPES]
    if unknown:
        raise WebhookError(f"types: unknown event type {unknown[0]!r} (one of {', '.join(EVENT_TYPES)})")
    return tuple(out)


def checked_platform(platform: str) -> str:
    if not _PLATFORM_RE.fullmatch(platform):
        raise WebhookError(f"platform: not a platform id: {platform!r} (EVENTS.md §1: {PLATFORM_PATTERN})")
    return platform


def is_endpoint_id(text: str) -> bool:
    return bool(_ENDPOINT_ID_RE.fullmatch(text))


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


# -- the tables ----------------------------------------------------------------


def webhooks_ddl(serial_pk: str, clustered: str) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS peerledger_webhook_endpoints ("
        "endpoint_id TEXT PRIMARY KEY, platform TEXT NOT NULL, url TEXT NOT NULL, "
        "types TEXT NOT NULL, "  # comma-separated; '' = every type
        "secret TEXT NOT NULL, previous_secret TEXT, previous_until DOUBLE PRECISION, "
        "cursor_seq BIGINT NOT NULL, created_at TEXT NOT NULL, "
        "disabled_at TEXT, disabled_reason TEXT, failing_since DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS peerledger_webhook_endpoints_platform "
        "ON peerledger_webhook_endpoints (platform)",
        f"CREATE TABLE IF NOT EXISTS peerledger_webhook_attempts (attempt_id {serial_pk}, "
        "endpoint_id TEXT NOT NULL, seq BIGINT NOT NULL, attempt INTEGER NOT NULL, at TEXT NOT NULL, "
        "status INTEGER, error TEXT, duration_seconds DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX IF NOT EXISTS peerledger_webhook_attempts_endpoint "
        "ON peerledger_webhook_attempts (endpoint_id, attempt_id)",
        "CREATE TABLE IF NOT EXISTS peerledger_webhook_retries (endpoint_id TEXT NOT NULL, seq BIGINT NOT NULL, "
        "attempts INTEGER NOT NULL, next_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (endpoint_id, seq))" + clustered,
        "CREATE INDEX IF NOT EXISTS peerledger_webhook_retries_due ON peerledger_webhook_retries (endpoint_id, next_at)",
        "CREATE TABLE IF NOT EXISTS peerledger_webhook_dead_letters (endpoint_id TEXT NOT NULL, seq BIGINT NOT NULL, "
        "attempts INTEGER NOT NULL, status INTEGER, error TEXT, at TEXT NOT NULL, "
        "PRIMARY KEY (endpoint_id, seq))" + clustered,
    ]


def create_webhooks_tables(store: Store) -> None:
    store.ensure_schema("webhooks", WEBHOOKS_SCHEMA_VERSION,
                        webhooks_ddl(store.dialect.serial_pk, store.dialect.clustered))


_COLUMNS = ("endpoint_id, platform, url, types, cursor_seq, created_at, disabled_at, disabled_reason, "
            "failing_since, secret, previous_secret, previous_until")


def _endpoint(row: Sequence[Any]) -> Endpoint:
    (endpoint_id, platform, url, types, cursor_seq, created_at, disabled_at, disabled_reason, failing_since,
     secret, previous_secret, previous_until) = row
    return Endpoint(endpoint_id, platform, url, tuple(t for t in types.split(",") if t), int(cursor_seq),
                    created_at, disabled_at, disabled_reason,
                    None if failing_since is None else float(failing_since), secret, previous_secret,
                    None if previous_until is None else float(previous_until))


def _fetch(c: Any) -> list[tuple[Any, ...]]:
    """A cursor's rows as tuples (PostgreSQL's transactions give dicts)."""
    return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in c.fetchall()]


def add_endpoint(store: Store, platform: str, url: str, types: Iterable[str] | None = None,
                 from_seq: int | None = None) -> tuple[Endpoint, str]:
    """A new endpoint: returns (its row, its secret, shown once).

    It receives the documents from `from_seq` on (default: those accepted from
    now on, after the platform's current head), as Svix's endpoints receive
    the messages sent after they were made; `replay` sends older ones."""
    checked_platform(platform)
    url = checked_url(url)
    filter_types = checked_types(types)
    if from_seq is not None and from_seq < 1:
        raise WebhookError(f"from_seq: seqs start at 1, got {from_seq}")
    create_webhooks_tables(store)
    cursor = store.head(platform) if from_seq is None else from_seq - 1
    secret = new_secret()
    endpoint_id = ENDPOINT_ID_PREFIX + random_secrets.token_hex(ENDPOINT_ID_HEX_CHARS // 2)
    created_at = ledger_time()
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "INSERT INTO peerledger_webhook_endpoints (endpoint_id, platform, url, types, secret, cursor_seq, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            (endpoint_id, platform, url, ",".join(filter_types), secret, cursor, created_at))
    return Endpoint(endpoint_id, platform, url, filter_types, cursor, created_at, None, None, None, secret), secret


def list_endpoints(store: Store, platform: str | None = None) -> list[Endpoint]:
    """The platform's endpoints (every platform's with None), oldest first."""
    create_webhooks_tables(store)
    where, params = ("WHERE platform = ? ", (platform,)) if platform is not None else ("", ())
    rows = store.query(f"SELECT {_COLUMNS} FROM peerledger_webhook_endpoints {where}ORDER BY created_at, "
                       "endpoint_id", params)
    return [_endpoint(r) for r in rows]


def get_endpoint(store: Store, endpoint_id: str) -> Endpoint | None:
    rows = store.query(f"SELECT {_COLUMNS} FROM peerledger_webhook_endpoints WHERE endpoint_id = ?",
                       (endpoint_id,))
    return _endpoint(rows[0]) if rows else None


def remove_endpoint(store: Store, endpoint_id: str) -> bool:
    """Delete an endpoint with its attempts, retries and dead letters; False when there was none."""
    create_webhooks_tables(store)
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "DELETE FROM peerledger_webhook_endpoints WHERE endpoint_id = ? RETURNING endpoint_id"), (endpoint_id,))
        if not _fetch(c):
            return False
        for table in ("attempts", "retries", "dead_letters"):
            c.execute(store.dialect.sql(f"DELETE FROM peerledger_webhook_{table} WHERE endpoint_id = ?"),
                      (endpoint_id,))
    return True


def rotate_secret(store: Store, endpoint_id: str, grace_seconds: float = ROTATION_GRACE_SECONDS) -> str | None:
    """A new secret for the endpoint (returned, shown once); the current one
    keeps signing beside it for `grace_seconds`.  None for no such endpoint."""
    assert grace_seconds >= 0
    create_webhooks_tables(store)
    secret = new_secret()
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "UPDATE peerledger_webhook_endpoints SET previous_secret = secret, previous_until = ?, secret = ? "
            "WHERE endpoint_id = ? RETURNING endpoint_id"), (time.time() + grace_seconds, secret, endpoint_id))
        return secret if _fetch(c) else None


def enable_endpoint(store: Store, endpoint_id: str) -> bool:
    """Enable a disabled endpoint (a no-op for an enabled one): it resumes at
    its cursor, and its pending retries are due at once.  False for no such endpoint."""
    create_webhooks_tables(store)
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "UPDATE peerledger_webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, "
            "failing_since = NULL WHERE endpoint_id = ? RETURNING endpoint_id"), (endpoint_id,))
        if not _fetch(c):
            return False
        c.execute(store.dialect.sql("UPDATE peerledger_webhook_retries SET next_at = ? WHERE endpoint_id = ?"),
                  (time.time(), endpoint_id))
    return True


def replay(store: Store, endpoint_id: str, from_seq: int) -> bool:
    """Send every document from `from_seq` on again (those the type filter
    takes): the cursor moves back to `from_seq` - 1 (never forward: that would
    skip documents), and the retries and dead letters from `from_seq` on are
    dropped, since their documents are sent again as first attempts.  A
    receiver that deduplicates on `webhook-id` drops those it had.  False for
    no such endpoint."""
    if from_seq < 1:
        raise WebhookError(f"from_seq: seqs start at 1, got {from_seq}")
    create_webhooks_tables(store)
    with store.write_transaction() as c:
        c.execute(store.dialect.sql(
            "UPDATE peerledger_webhook_endpoints SET cursor_seq = CASE WHEN cursor_seq < ? THEN cursor_seq "
            "ELSE ? END WHERE endpoint_id = ? RETURNING endpoint_id"), (from_seq - 1, from_seq - 1, endpoint_id))
        if not _fetch(c):
            return False
        for table in ("retries", "dead_letters"):
            c.execute(store.dialect.sql(f"DELETE FROM peerledger_webhook_{table} WHERE endpoint_id = ? AND seq >= ?"),
                      (endpoint_id, from_seq))
    return True


def list_attempts(store: Store, endpoint_id: str, limit: int = LIST_LIMIT_MAX) -> list[Attempt]:
    """The endpoint's newest `limit` attempts, oldest first."""
    assert 0 < limit <= LIST_LIMIT_MAX
    create_webhooks_tables(store)
    rows = store.query(
        "SELECT seq, attempt, at, status, error, duration_seconds FROM peerledger_webhook_attempts "
        "WHERE endpoint_id = ? ORDER BY attempt_id DESC LIMIT ?", (endpoint_id, limit))
    return [Attempt(int(s), int(a), at, None if st is None else int(st), e, float(d))
            for s, a, at, st, e, d in reversed(rows)]


def list_dead_letters(store: Store, endpoint_id: str, limit: int = LIST_LIMIT_MAX) -> list[DeadLetter]:
    """The endpoint's dead letters in seq order (the first `limit`)."""
    assert 0 < limit <= LIST_LIMIT_MAX
    create_webhooks_tables(store)
    rows = store.query(
        "SELECT seq, attempts, status, error, at FROM peerledger_webhook_dead_letters WHERE endpoint_id = ? "
        "ORDER BY seq LIMIT ?", (endpoint_id, limit))
    return [DeadLetter(int(s), int(a), None if st is None else int(st), e, at) for s, a, st, e, at in rows]


def pending_retries(store: Store, endpoint_id: str) -> int:
    return int(store.query("SELECT count(*) FROM peerledger_webhook_retries WHERE endpoint_id = ?",
                           (endpoint_id,))[0][0])


def due_retries(store: Store, endpoint_id: str, now_seconds: float, limit: int) -> list[Retry]:
    """Up to `limit` retries due at `now_seconds`, the longest-waiting first."""
    rows = store.query(
        "SELECT seq, attempts, next_at FROM peerledger_webhook_retries WHERE endpoint_id = ? AND next_at <= ? "
        "ORDER BY next_at, seq LIMIT ?", (endpoint_id, now_seconds, limit))
    return [Retry(int(s), int(a), float(n)) for s, a, n in rows]


def next_retry_at(store: Store, endpoint_id: str) -> float | None:
    rows = store.query("SELECT MIN(next_at) FROM peerledger_webhook_retries WHERE endpoint_id = ?", (endpoint_id,))
    return None if rows[0][0] is None else float(rows[0][0])


# -- a delivery round's record ---------------------------------------------------------

FAILING_UNCHANGED = "unchanged"
FAILING_CLEARED = "cleared"  # a POST succeeded: the endpoint is not failing
FAILING_SET = "set"  # only failures: failing since the first of them


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """What one round of a deliverer's POSTs to one endpoint changes, written
    in one transaction after they answered (`record_round`)."""

    endpoint_id: str
    cursor_from: int  # the cursor the round started at
    cursor_to: int  # the cursor once the round's first attempts are recorded
    attempts: tuple[tuple[int, int, str, int | None, str | None, float], ...]  # (seq, attempt, at, status, error, s)
    retries: tuple[Retry, ...]  # documents to try again (inserted or updated)
    delivered: tuple[int, ...]  # seqs of retried documents now delivered (their retry rows go)
    dead: tuple[DeadLetter, ...]  # documents out of attempts (their retry rows go)
    failing: str  # FAILING_UNCHANGED, FAILING_CLEARED or FAILING_SET
    now_seconds: float
    gone: bool  # the receiver answered 410 Gone: disable at once
    disable_after_seconds: float  # disable when failing for this long


@dataclass(frozen=True, slots=True)
class RoundResult:
    exists: bool  # False: the endpoint was removed meanwhile (nothing was written)
    cursor_moved: bool  # False: someone moved the cursor meanwhile (a replay): read it again
    disabled_reason: str | None  # set when this round disabled the endpoint


def record_round(store: Store, r: RoundRecord) -> RoundResult:
    """Write a round's attempts, retries, dead letters and cursor in one transaction.

    The cursor moves from `cursor_from` to `cursor_to` only if it is still at
    `cursor_from` (a `replay` may have moved it back meanwhile; the round's
    attempts are recorded anyway, and the deliverer reads the cursor again)."""
    assert r.cursor_to >= r.cursor_from
    assert r.failing in (FAILING_UNCHANGED, FAILING_CLEARED, FAILING_SET)
    d = store.dialect
    failing_sql = {FAILING_UNCHANGED: "failing_since", FAILING_CLEARED: "NULL",
                   FAILING_SET: "COALESCE(failing_since, ?)"}[r.failing]
    params: tuple[Any, ...] = (r.cursor_from, r.cursor_to) + ((r.now_seconds,) if r.failing == FAILING_SET else ()) + (
        r.endpoint_id,)
    disabled_reason = None
    with store.write_transaction() as c:
        c.execute(d.sql(
            "UPDATE peerledger_webhook_endpoints SET cursor_seq = CASE WHEN cursor_seq = ? THEN ? ELSE cursor_seq END, "
            f"failing_since = {failing_sql} WHERE endpoint_id = ? RETURNING cursor_seq, failing_since, disabled_at"),
            params)
        rows = _fetch(c)
        if not rows:
            return RoundResult(False, False, None)
        cursor, failing_since, disabled_at = rows[0]
        if r.attempts:
            c.executemany(d.sql(
                "INSERT INTO peerledger_webhook_attempts (endpoint_id, seq, attempt, at, status, error, "
                "duration_seconds) VALUES (?, ?, ?, ?, ?, ?, ?)"), [(r.endpoint_id, *a) for a in r.attempts])
        if r.retries:
            c.executemany(d.sql(
                "INSERT INTO peerledger_webhook_retries (endpoint_id, seq, attempts, next_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (endpoint_id, seq) DO UPDATE SET attempts = excluded.attempts, next_at = excluded.next_at"),
                [(r.endpoint_id, x.seq, x.attempts, x.next_at) for x in r.retries])
        done = list(r.delivered) + [x.seq for x in r.dead]
        if done:
            c.executemany(d.sql("DELETE FROM peerledger_webhook_retries WHERE endpoint_id = ? AND seq = ?"),
                          [(r.endpoint_id, s) for s in done])
        if r.dead:
            c.executemany(d.sql(
                "INSERT INTO peerledger_webhook_dead_letters (endpoint_id, seq, attempts, status, error, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, seq) DO UPDATE SET attempts = excluded.attempts, "
                "status = excluded.status, error = excluded.error, at = excluded.at"),
                [(r.endpoint_id, x.seq, x.attempts, x.status, x.error, x.at) for x in r.dead])
        if disabled_at is None:
            if r.gone:
                disabled_reason = "the receiver answered 410 Gone"
            elif failing_since is not None and r.now_seconds - float(failing_since) >= r.disable_after_seconds:
                disabled_reason = f"every attempt failed for {r.disable_after_seconds:g} s"
            if disabled_reason is not None:
                c.execute(d.sql("UPDATE peerledger_webhook_endpoints SET disabled_at = ?, disabled_reason = ? "
                                "WHERE endpoint_id = ?"), (ledger_time(), disabled_reason, r.endpoint_id))
    return RoundResult(True, int(cursor) == r.cursor_to, disabled_reason)


__all__ = ["Attempt", "DeadLetter", "Endpoint", "Retry", "RoundRecord", "RoundResult", "WebhookError",
           "add_endpoint", "checked_types", "checked_url", "create_webhooks_tables", "due_retries",
           "enable_endpoint", "get_endpoint", "is_endpoint_id", "list_attempts", "list_dead_letters",
           "list_endpoints", "next_retry_at", "pending_retries", "record_round", "remove_endpoint", "replay",
           "rotate_secret"]
