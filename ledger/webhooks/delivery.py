"""The webhook deliverer: every booking document to every endpoint that wants it.

    peerledger deliver [--follow] [--metrics-port PORT]     (and a child of `peerledger serve`)

What a receiver gets.  One POST per document (EVENTS.md §9), its body the
document's canonical bytes (`Content-Type: application/json`), signed by the
Standard Webhooks scheme with the maintained `standardwebhooks` package:

    webhook-id:        <platform>:<seq>          the same for every attempt: deduplicate on it
    webhook-timestamp: <unix seconds>            of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>
                       (two, space-separated, during a rotation's grace period)

A 2xx answer is a delivery.  Anything else (another status, no answer within
`REQUEST_TIMEOUT_SECONDS`, a refused or reset connection) is a failed
attempt, tried again on Svix's schedule: at once, then after 5 s, 5 min,
30 min, 2 h, 5 h, 10 h and 10 h (`RETRY_DELAYS_SECONDS`); a `Retry-After` on a
failed answer makes the next attempt wait at least that long (at most
`RETRY_AFTER_MAX_SECONDS`) and pauses the endpoint's new documents as long.
A document that fails its eighth attempt goes to the endpoint's dead letters
(`webhooks dead-letters ID`; `webhooks replay` sends it again).  An endpoint
is disabled at once by a 410 Gone, and after `DISABLE_AFTER_FAILING_SECONDS`
(5 days) in which every attempt failed (`webhooks enable ID` resumes it at its
cursor: nothing is lost meanwhile, the log is the queue).  Redirects are not
followed (a 3xx is a failure): a receiver's URL is what its operator registered.

At least once, never a gap.  Each endpoint has a **cursor** in its table row,
the seq up to which every document had its first attempt.  A round takes the
next `IN_FLIGHT_MAX` documents after the cursor (with the retries now due),
POSTs them concurrently, waits for every answer, and only then writes the
attempts, the retries, the dead letters and the moved cursor in one
transaction (`ledger.webhooks.endpoints.record_round`).  When every POST
of a round was delivered, nothing in its record changes what comes next, so
the next round's POSTs go out while it commits (records still commit in
order, each before the next is written).  A deliverer killed at any instant
restarts from the stored cursor: it sends again at most the two rounds it
had in flight (duplicates, which the receiver drops by `webhook-id`), and
never skips a seq.  It starts from the cursor: nothing at start grows
with the log.

Isolation.  Each endpoint is its own asyncio task, with its own HTTP client (aiohttp)
(at most `IN_FLIGHT_MAX` connections) and its own cursor: a slow or dead
receiver delays only its own documents.  The deliverer only reads the log
and writes its own small tables, so the writers never wait for it.  Memory
is bounded per endpoint: one read-ahead page (`READ_AHEAD_DOCUMENTS`), one
round's answers each read up to `RESPONSE_READ_MAX_BYTES` (a receiver that
answers 10 MiB costs 4 KiB), and at most `RETRIES_PENDING_MAX` documents
waiting for a retry: when that many wait, the endpoint's cursor stops moving
(its new documents wait in the log) until retries succeed or die.

Tests and benches scale the schedule's time (the retry delays and the 5
days, not `Retry-After`, which is the receiver's own word) by
`PEERLEDGER_WEBHOOK_TIME_SCALE` or `deliver --time-scale`.

One deliverer per database is the intended deployment (`serve`'s child, or
`deliver --follow`, not both): a second one never loses nor corrupts anything
(the cursor moves only from where the round found it), but sends duplicates.
Secrets are never logged; log lines name endpoints by id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, TypeVar

import aiohttp
from standardwebhooks.webhooks import Webhook

from ledger.bookings.documents import Document, read_documents
from ledger.ingest.ingestor import ledger_time
from ledger.ops import metrics
from ledger.storage.store import Store
from ledger.webhooks import endpoints as eps

log = logging.getLogger("peerledger.webhooks")

# After a failed attempt n (1-based), attempt n + 1 comes this many seconds later (Svix's schedule).
RETRY_DELAYS_SECONDS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
ATTEMPTS_MAX = 1 + len(RETRY_DELAYS_SECONDS)
# An endpoint every attempt to which failed for this long is disabled (Svix: 5 days).
DISABLE_AFTER_FAILING_SECONDS = 5 * 24 * 3600
# One attempt, from connecting to the answer's last byte read (Svix: 15 s).
REQUEST_TIMEOUT_SECONDS = 15.0
# Of an answer's body, only this much is read (then the connection is dropped):
# the status is all that counts, and a receiver must not cost us its body's size.
RESPONSE_READ_MAX_BYTES = 4096
# POSTs at once to one endpoint (a round), and its HTTP client's connections.
IN_FLIGHT_MAX = 16
# Documents of one endpoint waiting for another attempt; when that many wait,
# the endpoint takes no new ones (its cursor stops) until some succeed or die.
RETRIES_PENDING_MAX = 1000
# A receiver's Retry-After is honoured up to this.
RETRY_AFTER_MAX_SECONDS = 3600.0
# Documents one endpoint reads ahead of its cursor (one page of `read_documents`).
READ_AHEAD_DOCUMENTS = 256
# How often a deliverer looks for new, removed and re-enabled endpoints.
ENDPOINTS_POLL_SECONDS = 1.0
# How often a caught-up endpoint looks for new documents (as `bookings --follow`).
FOLLOW_POLL_SECONDS = 0.2
# How often a stop request from another thread (a signal handler) is noticed.
STOP_POLL_SECONDS = 0.05
# Threads for the database: the store is synchronous; two is the PostgreSQL
# pool's base size, and SQLite writes one at a time anyway.
DB_THREADS = 2
# An error kept with an attempt (an exception's text: never a secret, never the body).
ERROR_MAX_CHARS = 200
# The time scale of the schedule (tests): 1 is real time.
TIME_SCALE_ENV = "PEERLEDGER_WEBHOOK_TIME_SCALE"
TIME_SCALE_MIN = 1e-9
USER_AGENT = "peerledger-webhooks/1"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """How a deliverer behaves; the defaults are production's."""

    time_scale: float = 1.0  # multiplies RETRY_DELAYS_SECONDS and DISABLE_AFTER_FAILING_SECONDS
    request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS
    in_flight_max: int = IN_FLIGHT_MAX
    retries_pending_max: int = RETRIES_PENDING_MAX
    follow_poll_seconds: float = FOLLOW_POLL_SECONDS
    endpoints_poll_seconds: float = ENDPOINTS_POLL_SECONDS

    def __post_init__(self) -> None:
        assert self.time_scale >= TIME_SCALE_MIN, f"time scale {self.time_scale} below {TIME_SCALE_MIN}"
        assert self.request_timeout_seconds > 0
        assert 1 <= self.in_flight_max <= self.retries_pending_max

    @classmethod
    def from_env(cls, time_scale: float | None = None, **kwargs: Any) -> "Settings":
        """Settings with the time scale of `time_scale`, else `PEERLEDGER_WEBHOOK_TIME_SCALE`, else 1."""
        if time_scale is None:
            text = os.environ.get(TIME_SCALE_ENV)
            time_scale = 1.0 if not text else parse_time_scale(text)
        return cls(time_scale=time_scale, **kwargs)

    def retry_delay_seconds(self, attempts_made: int) -> float:
        """How long after failed attempt `attempts_made` the next one comes."""
        assert 1 <= attempts_made < ATTEMPTS_MAX
        return RETRY_DELAYS_SECONDS[attempts_made - 1] * self.time_scale

    @property
    def disable_after_seconds(self) -> float:
        return DISABLE_AFTER_FAILING_SECONDS * self.time_scale


def parse_time_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_ENV} must be a number, got {text!r}") from None
    if not TIME_SCALE_MIN <= value <= 1.0:
        raise ValueError(f"the webhook time scale must be from {TIME_SCALE_MIN} to 1, got {value}")
    return value


def retry_after_seconds(value: str | None, now_seconds: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now,
    within 0…RETRY_AFTER_MAX_SECONDS; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(int(value[:12]))
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now_seconds
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


def outcome_label(status: int | None, error: str | None) -> str:
    """The bounded `outcome` label of an attempt."""
    if status is not None:
        return f"{min(max(status // 100, 1), 5)}xx"
    return "timeout" if error and error.startswith("timeout") else "error"


@dataclass(slots=True)
class Answer:
    """What one POST gave."""

    status: int | None
    error: str | None
    duration_seconds: float
    at: str
    retry_after_seconds: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class Summary:
    """What a deliverer did (`deliver` without --follow prints it)."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    disabled: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed_attempts": self.failed, "dead_letters": self.dead,
                "disabled": sorted(self.disabled)}


def sign(secrets: list[str], msg_id: str, timestamp_seconds: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,` signature per secret, space-separated."""
    at = datetime.fromtimestamp(timestamp_seconds, timezone.utc)
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def webhook_id(document: Document) -> str:
    return f"{document.platform}:{document.seq}"


class Deliverer:
    """Delivers every enabled endpoint's documents (one asyncio task each).

    `run(stop)` blocks: with `follow`, until `stop` is set (a threading.Event,
    so a signal handler or a test's thread can set it); without, until every
    endpoint has had its documents up to the head sent once and its due
    retries tried."""

    def __init__(self, store: Store, settings: Settings | None = None, *, follow: bool = True) -> None:
        self.store = store
        self.settings = settings or Settings.from_env()
        self.follow = follow
        self.summary = Summary()
        self._db_pool: ThreadPoolExecutor | None = None
        self._stopped: asyncio.Event | None = None
        eps.create_webhooks_tables(store)

    def run(self, stop: threading.Event | None = None) -> Summary:
        asyncio.run(self._main(stop or threading.Event()))
        return self.summary

    # -- plumbing ---------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous store call on the database threads."""
        assert self._db_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, fn, *args)

    @property
    def stopping(self) -> bool:
        assert self._stopped is not None
        return self._stopped.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        assert self._stopped is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _watch(self, stop: threading.Event) -> None:
        assert self._stopped is not None
        while not stop.is_set():
            await asyncio.sleep(STOP_POLL_SECONDS)
        self._stopped.set()

    async def _main(self, stop: threading.Event) -> None:
        self._stopped = asyncio.Event()
        self._db_pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="peerledger-deliver-db")
        watcher = asyncio.create_task(self._watch(stop))
        workers: dict[str, asyncio.Task[None]] = {}
        try:
            while not self.stopping:
                for endpoint in await self.db(eps.list_endpoints, self.store):
                    running = workers.get(endpoint.endpoint_id)
                    if endpoint.enabled and (running is None or running.done()):
                        if running is not None and not running.cancelled() and running.exception() is not None:
                            log.error("webhook endpoint %s: its worker failed (%s); restarting it",
                                      endpoint.endpoint_id, running.exception())
                        workers[endpoint.endpoint_id] = asyncio.create_task(
                            EndpointWorker(self, endpoint.endpoint_id).run(), name=endpoint.endpoint_id)
                if not self.follow:
                    await asyncio.gather(*workers.values())
                    break
                await self.sleep(self.settings.endpoints_poll_seconds)
            await asyncio.gather(*workers.values(), return_exceptions=True)
        finally:
            watcher.cancel()
            self._db_pool.shutdown(wait=True)


class EndpointWorker:
    """One endpoint's rounds, from its stored cursor (see the module doc)."""

    def __init__(self, deliverer: Deliverer, endpoint_id: str) -> None:
        self.d = deliverer
        self.endpoint_id = endpoint_id
        self.settings = deliverer.settings
        self.buffer: deque[Document] = deque()
        self.cursor: int | None = None  # the stored cursor as this worker last saw it
        self.read_to = 0  # the last seq in (or consumed from) the buffer
        self.paused_until = 0.0  # unix seconds: a Retry-After holds the endpoint's new documents
        self.lag_checked = 0.0
        # A clean round's record, committing while the next round's POSTs go
        # out, and the cursor it moves to (see `_round`).
        self.recording: asyncio.Task[eps.RoundResult] | None = None
        self.recording_to = 0

    async def run(self) -> None:
        # aiohttp, not httpx: on this workload httpx's connection pool costs
        # about 2 ms of CPU per request (its bookkeeping walks every connection
        # for every request), aiohttp's C parser and plain pool a tenth of that.
        connector = aiohttp.TCPConnector(limit=self.settings.in_flight_max, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                         auto_decompress=False, headers={"user-agent": USER_AGENT}) as client:
            try:
                while not self.d.stopping:
                    if not await self._round(client):
                        return
            finally:
                await self._recorded()  # a killed process skips this: the round is sent again
                for gauge in (metrics.WEBHOOK_LAG, metrics.WEBHOOK_RETRIES_PENDING):
                    try:
                        gauge.remove(self.endpoint_id)
                    except KeyError:
                        pass

    async def _round(self, client: aiohttp.ClientSession) -> bool:
        """One round; False when this worker is done (endpoint gone or
        disabled, or caught up without --follow)."""
        d, s = self.d, self.settings
        endpoint = await d.db(eps.get_endpoint, d.store, self.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return False
        # The stored cursor is behind this worker's while a record commits; a
        # replay meanwhile shows in that record's result instead.
        if self.recording is None and self.cursor != endpoint.cursor_seq:  # first round, or a replay moved it
            self.buffer.clear()
            self.cursor = self.read_to = endpoint.cursor_seq
        now = time.time()
        await self._gauges(endpoint, now)
        due = await d.db(eps.due_retries, d.store, self.endpoint_id, now, s.in_flight_max)
        fresh: list[Document] = []
        cursor_to = self.cursor
        room = s.in_flight_max - len(due)
        if room > 0 and now >= self.paused_until:
            pending = await d.db(eps.pending_retries, d.store, self.endpoint_id)
            # Room for every new document of the round to fail: the bound holds.
            if pending + room <= s.retries_pending_max:
                while len(fresh) < room:
                    if not self.buffer:
                        page = await d.db(read_documents, d.store, endpoint.platform, self.read_to,
                                          READ_AHEAD_DOCUMENTS)
                        if not page:
                            break
                        self.buffer.extend(page)
                        self.read_to = page[-1].seq
                    document = self.buffer.popleft()
                    assert document.seq == cursor_to + 1, f"{self.endpoint_id}: seq {document.seq} after {cursor_to}"
                    cursor_to = document.seq
                    if endpoint.wants(document.type):
                        fresh.append(document)
        if not due and cursor_to == self.cursor:
            if not await self._recorded():  # caught up: the last record commits before the wait
                return False
            return await self._idle(now)
        retried = await d.db(_documents_of, d.store, endpoint.platform, [r.seq for r in due])
        sends = [(doc, r.attempts + 1, r) for doc, r in zip(retried, due)] + [(doc, 1, None) for doc in fresh]
        answers = await asyncio.gather(*(self._post(client, endpoint, doc) for doc, _, _ in sends))
        record = self._record(endpoint, cursor_to, sends, answers)
        if not await self._recorded():  # the previous round's, first: records commit in order
            return False
        if not due and all(a.delivered for a in answers):
            # Every new document delivered: nothing in this record changes what
            # the next round sends (no retry, no pause, no disabling), so the
            # next round's POSTs go out while it commits.  A crash meanwhile
            # sends both rounds again: at least once still, never a gap.
            self.recording = asyncio.create_task(d.db(eps.record_round, d.store, record))
            self.recording_to = self.cursor = cursor_to
            return True
        return self._settle(await d.db(eps.record_round, d.store, record), cursor_to)

    async def _recorded(self) -> bool:
        """Wait for the record committing (if any); False when the worker must stop."""
        recording, self.recording = self.recording, None
        return True if recording is None else self._settle(await recording, self.recording_to)

    def _settle(self, result: eps.RoundResult, cursor_to: int) -> bool:
        """What a committed record says: False when the worker must stop."""
        if not result.exists:
            log.info("webhook endpoint %s: removed; its worker stops", self.endpoint_id)
            return False
        # Another writer moved the cursor (a replay): the next round reads it again.
        self.cursor = cursor_to if result.cursor_moved else None
        if result.disabled_reason is not None:
            log.warning("webhook endpoint %s disabled: %s", self.endpoint_id, result.disabled_reason)
            self.d.summary.disabled.append(self.endpoint_id)
            return False
        return True

    async def _idle(self, now: float) -> bool:
        """Nothing to send now: wait for new documents or the next retry (--follow), or stop."""
        d, s = self.d, self.settings
        if not d.follow:
            return False
        next_at = await d.db(eps.next_retry_at, d.store, self.endpoint_id)
        wait = s.follow_poll_seconds
        if next_at is not None:
            wait = min(wait, max(next_at - now, 0.0))
        if self.paused_until > now:
            wait = min(wait, self.paused_until - now)
        await d.sleep(wait)
        return True

    async def _gauges(self, endpoint: eps.Endpoint, now: float) -> None:
        """Lag and pending retries, at most every poll interval (a head read is a query)."""
        if now - self.lag_checked < self.settings.follow_poll_seconds:
            return
        self.lag_checked = now
        head = await self.d.db(self.d.store.head, endpoint.platform)
        metrics.WEBHOOK_LAG.labels(self.endpoint_id).set(max(head - endpoint.cursor_seq, 0))
        pending = await self.d.db(eps.pending_retries, self.d.store, self.endpoint_id)
        metrics.WEBHOOK_RETRIES_PENDING.labels(self.endpoint_id).set(pending)

    async def _post(self, client: aiohttp.ClientSession, endpoint: eps.Endpoint, document: Document) -> Answer:
        """POST one document, signed; read at most RESPONSE_READ_MAX_BYTES of the answer."""
        msg_id = webhook_id(document)
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(endpoint.signing_secrets(timestamp), msg_id, timestamp, document.body)}
        at = ledger_time()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        timeout_seconds = self.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(timeout_seconds):
                async with client.post(endpoint.url, data=document.body, headers=headers,
                                       allow_redirects=False) as response:
                    status = response.status
                    retry_after = response.headers.get("retry-after")
                    received = 0
                    while received < RESPONSE_READ_MAX_BYTES:
                        chunk = await response.content.read(RESPONSE_READ_MAX_BYTES - received)
                        if not chunk:
                            break
                        received += len(chunk)
                    if not response.content.at_eof():
                        response.close()  # drops the connection and the rest of the body
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            error = f"timeout after {timeout_seconds:g} s"
        except aiohttp.ClientError as e:
            error = f"{type(e).__name__}: {e}"[:ERROR_MAX_CHARS]
        duration = time.monotonic() - started
        metrics.WEBHOOK_ATTEMPT_SECONDS.observe(duration)
        answer = Answer(status, error, duration, at, retry_after_seconds(retry_after, time.time()))
        metrics.WEBHOOK_ATTEMPTS.labels("2xx" if answer.delivered else outcome_label(status, error)).inc()
        return answer

    def _record(self, endpoint: eps.Endpoint, cursor_to: int,
                sends: list[tuple[Document, int, eps.Retry | None]], answers: list[Answer]) -> eps.RoundRecord:
        """The round's rows: attempts, what to retry when, what died, the endpoint's failing state."""
        assert self.cursor is not None and len(sends) == len(answers)
        s, summary = self.settings, self.d.summary
        now = time.time()
        attempts, retries, delivered, dead = [], [], [], []
        gone = False
        for (document, attempt, retry), answer in zip(sends, answers):
            attempts.append((document.seq, attempt, answer.at, answer.status, answer.error, answer.duration_seconds))
            if answer.delivered:
                summary.delivered += 1
                metrics.WEBHOOK_DOCUMENTS_DELIVERED.inc()
                if retry is not None:
                    delivered.append(document.seq)
                continue
            summary.failed += 1
            gone = gone or answer.status == 410
            if attempt >= ATTEMPTS_MAX:
                summary.dead += 1
                metrics.WEBHOOK_DEAD_LETTERS.inc()
                dead.append(eps.DeadLetter(document.seq, attempt, answer.status, answer.error, answer.at))
                continue
            delay = s.retry_delay_seconds(attempt)
            if answer.retry_after_seconds is not None:
                delay = max(delay, answer.retry_after_seconds)
                self.paused_until = max(self.paused_until, now + answer.retry_after_seconds)
            retries.append(eps.Retry(document.seq, attempt, now + delay))
        failing = (eps.FAILING_CLEARED if any(a.delivered for a in answers) else
                   eps.FAILING_SET if answers else eps.FAILING_UNCHANGED)
        return eps.RoundRecord(self.endpoint_id, self.cursor, cursor_to, tuple(attempts), tuple(retries),
                               tuple(delivered), tuple(dead), failing, now, gone, s.disable_after_seconds)


def _documents_of(store: Store, platform: str, seqs: list[int]) -> list[Document]:
    """The documents of these seqs (a round's retries), in the order given."""
    out = []
    for seq in seqs:
        page = read_documents(store, platform, seq - 1, 1)
        assert page and page[0].seq == seq, f"{platform}: no document at seq {seq}"
        out.append(page[0])
    return out


__all__ = ["ATTEMPTS_MAX", "Deliverer", "RETRY_DELAYS_SECONDS", "Settings", "Summary", "sign", "webhook_id"]
