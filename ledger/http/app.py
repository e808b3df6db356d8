"""The HTTP service: `peerledger serve` (FastAPI on uvicorn).

Three processes, so that the machine's two cores work in parallel and reads
stay quick while events stream in:

* this one, the **front**: HTTP, authentication, reads of the read models
  (`ledger.storage.views`), the dashboard and the metrics.  It never decides or
  folds events, so its event loop and threads only wait on I/O and SQL;
* the **writer** (one process, `RequestWriter`): splits a POSTed body into
  events, checks them against the path's platform and the token's role, and
  runs `ledger.ingest.ingestor.Ingestor` on batches of at most 1000 (one
  transaction each, the read models included).  One writer serialises the
  decisions, as `peerledger ingest` does;
* the **deliverer** (one process, unless `serve --deliverer none`):
  `ledger.webhooks.delivery` POSTs every booking document to the operators'
  webhook endpoints, each endpoint its own task, from its stored cursor;
* the **projector** (one process): `ledger.ingest.projector` keeps the
  derived views (the dashboard's flows) at the log's head, told by the
  writer which platform it appended to after every batch (a bounded queue).
  `serve --projector none` leaves that to projection workers of their own
  (`peerledger project --follow`, as in deploy/).

The helper processes end when the front does, however it ends (the kernel
kills them when their parent dies: `ledger.ops.runtime.die_with_parent`).

Freshness guarantee.  A POST answers after its events are durable, and the
read models (balances, statements, explanations) are written in the same
transaction as the events: a client that got its 200 reads its own writes,
and so does everyone after it.  `X-Ledger-Views-Seq` on the read endpoints
gives the platform's head the read models had just before the query (the
answer reflects at least that seq).  `as_of` queries replay the log; `/log`
reads it.

Tenancy.  Every resource lives under `/v1/platforms/{platform}/`.  A token
of another platform gets 404 with exactly the body of an unknown route,
whether or not the platform exists; a token of the platform whose role lacks
the right gets 403; no, unknown or revoked token: 401 (`ledger.http.tokens`).

Bounds: body `BODY_MAX_BYTES` (checked while streaming), events per request
`EVENTS_PER_REQUEST_MAX`, POSTs in flight `POSTS_IN_FLIGHT_MAX` (later ones
wait before their body is read), connections (`serve`'s
`limit_concurrency`), pages of `/log` and `/rejects`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import operator
import os
import queue
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Iterator, Literal

import anyio.to_thread
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.audit.liabilities import LiabilitiesMismatch, stored_trees
from ledger.audit.tree import (
    StoredTree,
    TreeError,
    create_audit_tables,
    list_checkpoints,
)
from ledger.bookings.documents import PAGE_DOCUMENTS, read_documents
from ledger.contract import documents as api
from ledger.contract import rules
from ledger.contract.schema import (
    AT_PATTERN,
    EVENT_TYPES,
    MAX_AMOUNT,
    MAX_TEXT,
    PLATFORM_PATTERN,
    InvalidEvent,
    parse_event,
)
from ledger.http import dashboard
from ledger.http.metrics import HttpMetrics, MetricsMiddleware
from ledger.http.tokens import Principal, authenticate, create_tokens_table
from ledger.ingest.ingestor import REJECTED, Ingestor, Outcome, ledger_time
from ledger.ingest.projector import FOLLOW_POLL_MS, Projector
from ledger.ingest.sources import (
    BATCH_MAX_EVENTS,
    EVENTS_PER_REQUEST_MAX,
    BodyError,
    BodyItem,
    BodyTooLarge,
    Offered,
    array_items,
    ndjson_items,
)
from ledger.ops.runtime import die_with_parent, tune_gc, yield_cpu_to_reads
from ledger.storage import payees, queries
from ledger.storage.queries import ledger_instant
from ledger.storage.store import AppendBatch, RejectRecord, Store
from ledger.storage.views import views_seq
from ledger.webhooks import endpoints as webhooks
from projections.balances import balances_digest
from projections.liabilities import is_prosumer
from projections.payouts import plan_csv, plan_jsonl

API_VERSION = "1"
BODY_MAX_BYTES = 16 * 1024 * 1024
# Each POST in flight holds its body (≤ 16 MiB) and its copy in the writer's
# queue; later POSTs wait here before their body is read (TCP pushes back).
POSTS_IN_FLIGHT_MAX = 4
PROJECTION_WAIT_MAX_S = 30.0
# Platforms the writer reports to the projector (one entry per batch); when
# full, the writer drops the report and the projector's full pass catches up.
APPENDED_QUEUE_MAX = 1024
PROJECTOR_DRAIN_MAX = 64
PROJECTOR_FULL_PASS_S = 1.0
PROJECTION_POLL_MIN_S = 0.002
PROJECTION_POLL_MAX_S = 0.05
LOG_PAGE_MAX = 10_000
REJECTS_PAGE_MAX = 10_000
EARNERS_MAX = 100
RATE_MINUTES_MAX = 24 * 60
# Seqs, sizes and ids in queries: far beyond any log, and small enough that
# `from_seq + limit` still fits the databases' 64-bit integers.
SEQ_MAX = 2**62
# Threads answering reads: below the read store's connection pool, so a
# request never waits for a connection (eventsourcing's SQLite pool holds
# 5 + 10 overflow; `Store` gives PostgreSQL 2 + 2).
READ_THREADS = {"sqlite": 12, "postgresql": 4}
# Connections and requests at once; beyond it uvicorn answers 503 at once.
CONNECTIONS_MAX = 256

STATIC_DIR = Path(__file__).parent / "static"
NDJSON = "application/x-ndjson"
# A liabilities export goes out this many leaves at a time.
LIABILITIES_CHUNK_LINES = 1000
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"

_PLATFORM_RE = re.compile(PLATFORM_PATTERN[1:-1])


# -- the writer process ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestJob:
    """One POST, as the front hands it to the writer."""

    platform: str
    ndjson: bool
    body: bytes
    token_id: str
    event_types: frozenset[str] | None  # None: every type may be posted


@dataclass(frozen=True, slots=True)
class IngestReply:
    status: int  # 200, or 400 / 403 / 413 for the whole request
    body: bytes  # the JSON response
    counts: dict[tuple[str, str], int]  # (outcome, code) -> events, for the metrics
    batch_seconds: list[float]  # time to decide and append each Ingestor batch
    head_seq: int  # the platform's log head after the request (0: nothing to project)


class RequestWriter:
    """Decides POSTed events, in the writer process."""

    def __init__(self, store: Store, appended: Any) -> None:
        self.store = store
        self.ingestor = Ingestor(store)
        self.appended = appended  # the projector's queue: platforms with new events

    def ingest(self, job: IngestJob) -> IngestReply:
        try:
            items = ndjson_items(job.body) if job.ndjson else array_items(job.body)
        except BodyError as e:
            return _error_reply(400, str(e))
        except BodyTooLarge as e:
            return _error_reply(413, str(e))
        if job.event_types is not None:
            for item in items:
                kind = item.envelope.type
                if kind in EVENT_TYPES and kind not in job.event_types:
                    return _error_reply(403, f"this token may not post {kind!r} events (item {item.number}); "
                                             f"allowed: {', '.join(sorted(job.event_types))}; nothing was ingested")
        now = ledger_time()
        outcomes: list[Outcome | None] = [None] * len(items)
        refused: list[RejectRecord] = []
        offered: list[tuple[int, Offered]] = []
        for i, item in enumerate(items):
            source = f"http:{job.token_id}:{item.number}"
            if item.envelope.platform == job.platform:
                offered.append((i, Offered(item.payload, source)))
                continue
            # Filed under the path's platform whatever the event claims: a sender
            # can only ever add to its own platform's rejects.
            event_id = item.envelope.event_id
            message = _foreign_message(item, job.platform)
            outcomes[i] = Outcome(REJECTED, event_id, job.platform, code=rules.INVALID, message=message)
            refused.append(RejectRecord(job.platform, event_id, rules.INVALID, message, item.payload, source, now))
        if refused:
            self.store.append(AppendBatch(rejects=refused))
        batch_seconds = []
        for start in range(0, len(offered), BATCH_MAX_EVENTS):
            chunk = offered[start:start + BATCH_MAX_EVENTS]
            started = time.perf_counter()
            decided = self.ingestor.ingest([o for _, o in chunk])
            batch_seconds.append(time.perf_counter() - started)
            with contextlib.suppress(queue.Full):  # full: the projector's periodic pass catches up
                self.appended.put_nowait(job.platform)
            for (i, _), outcome in zip(chunk, decided):
                outcomes[i] = outcome
        counts: Counter[tuple[str, str]] = Counter()
        results = []
        for outcome in outcomes:
            assert outcome is not None
            counts[(outcome.outcome, outcome.code or "")] += 1
            results.append(outcome.as_json())
        totals = Counter(outcome for outcome, _ in counts.elements())
        body = _dumps({"accepted": totals["accepted"], "duplicate": totals["duplicate"],
                       "rejected": totals["rejected"], "results": results})
        return IngestReply(200, body, dict(counts), batch_seconds, self.ingestor.head_seq(job.platform))


def _foreign_message(item: BodyItem, platform: str) -> str:
    """Why an item that does not carry the path's platform is invalid."""
    if item.envelope.platform is not None:
        return f"platform: {item.envelope.platform!r} is not the platform of the path ({platform!r})"
    try:
        parse_event(item.payload)
    except InvalidEvent as e:
        return e.message
    raise AssertionError("only events without the path's platform are refused here, and those are invalid")


def _error_reply(status: int, detail: str) -> IngestReply:
    return IngestReply(status, _dumps({"detail": detail}), {}, [], 0)


def _dumps(obj: object) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits (sums of money may be)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_writer: RequestWriter | None = None


def _writer_start(db_url: str, appended: Any, parent_pid: int) -> None:
    global _writer
    die_with_parent(parent_pid)
    tune_gc()
    yield_cpu_to_reads()
    _writer = RequestWriter(Store(db_url), appended)


def _writer_ready() -> bool:
    """Answers once the writer process has opened the store (its initializer ran)."""
    return _writer is not None


def _writer_ingest(job: IngestJob) -> IngestReply:
    assert _writer is not None
    return _writer.ingest(job)


# -- the projector process -------------------------------------------------------


def _project_until_stopped(db_url: str, stop: Any, appended: Any, parent_pid: int) -> None:
    """Project each platform the writer appended to as soon as it says so, and
    every platform once per `PROJECTOR_FULL_PASS_S` (other processes, such as
    `peerledger ingest` or a Kafka consumer, may append to the same database).

    Unlike `Projector.follow`, a pass for one platform does not list every
    platform of the log first: that scan grows with the log."""
    die_with_parent(parent_pid)
    tune_gc()
    yield_cpu_to_reads()
    with Store(db_url) as store:
        projector = Projector(store)
        projector.catch_up()
        last_full_pass = time.monotonic()
        while not stop.is_set():
            platforms = set()
            with contextlib.suppress(queue.Empty):
                platforms.add(appended.get(timeout=FOLLOW_POLL_MS / 1000))
                while len(platforms) < PROJECTOR_DRAIN_MAX:
                    platforms.add(appended.get_nowait())
            for platform in sorted(platforms):
                projector.advance(platform)
            if time.monotonic() - last_full_pass >= PROJECTOR_FULL_PASS_S:
                projector.catch_up()
                last_full_pass = time.monotonic()
        projector.catch_up()


# -- the deliverer process -------------------------------------------------------

# A stopping deliverer finishes its rounds in flight: at most one request timeout.
DELIVERER_STOP_SECONDS = 20.0


def _deliver_until_stopped(db_url: str, stop: Any, parent_pid: int) -> None:
    """`peerledger deliver --follow` as the service's child, until `stop` is set."""
    from ledger.webhooks.delivery import Deliverer

    die_with_parent(parent_pid)
    tune_gc()
    yield_cpu_to_reads()
    with Store(db_url) as store:
        Deliverer(store, follow=True).run(stop)


class Backend:
    """The front's state: its read store and its helper processes (the writer,
    the projector unless `projector` is false, the deliverer unless `deliverer` is)."""

    def __init__(self, db_url: str, metrics: HttpMetrics, projector: bool = True, deliverer: bool = True) -> None:
        self.db_url = db_url
        self.runs_projector = projector
        self.runs_deliverer = deliverer
        self.store = Store(db_url)
        create_tokens_table(self.store)
        create_audit_tables(self.store)
        payees.create_payees_table(self.store)
        webhooks.create_webhooks_tables(self.store)
        self.metrics = metrics
        self.flows = dashboard.FlowViews(self.store)
        self._ctx = multiprocessing.get_context("spawn")  # no inherited connections
        self._appended = self._ctx.Queue(APPENDED_QUEUE_MAX)
        self._stop = self._ctx.Event()
        self._projector: Any = None
        self._deliverer: Any = None
        self._executor: ProcessPoolExecutor | None = None
        self._warm: Any = None
        self.posts = asyncio.Semaphore(POSTS_IN_FLIGHT_MAX)

    def start(self) -> None:
        if self.runs_projector:
            self._start_projector()
        if self.runs_deliverer:
            self._start_deliverer()
        self._start_writer()

    def _start_deliverer(self) -> None:
        self._deliverer = self._ctx.Process(
            target=_deliver_until_stopped, args=(self.db_url, self._stop, os.getpid()),
            name="peerledger-deliverer", daemon=True)
        self._deliverer.start()

    def _start_projector(self) -> None:
        self._projector = self._ctx.Process(
            target=_project_until_stopped, args=(self.db_url, self._stop, self._appended, os.getpid()),
            name="peerledger-projector", daemon=True)
        self._projector.start()

    def _start_writer(self) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=1, mp_context=self._ctx, initializer=_writer_start, initargs=(self.db_url, self._appended, os.getpid()))
        self._warm = self._executor.submit(_writer_ready)

    def stop(self) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._projector is not None:
            self._projector.join(timeout=PROJECTION_WAIT_MAX_S)
            if self._projector.is_alive():
                self._projector.terminate()
        if self._deliverer is not None:
            self._deliverer.join(timeout=DELIVERER_STOP_SECONDS)
            if self._deliverer.is_alive():
                self._deliverer.terminate()  # a round in flight is sent again by the next deliverer
        self.store.close()

    def not_ready(self) -> str | None:
        """Why the service cannot take traffic now, or None."""
        if self._warm is None or not self._warm.done():
            return "the writer is starting"
        if self._warm.exception() is not None:
            return f"the writer failed to start: {self._warm.exception()}"
        if self.runs_projector and not self._projector.is_alive():
            return "the projector is not running"
        if self.runs_deliverer and not self._deliverer.is_alive():
            return "the webhook deliverer is not running"
        return None

    async def ingest(self, job: IngestJob) -> IngestReply:
        assert self._executor is not None
        if self.runs_projector and not self._projector.is_alive():
            self._start_projector()  # it died (and logged why): a new one resumes from its tracking
        if self.runs_deliverer and not self._deliverer.is_alive():
            self._start_deliverer()  # it died (and logged why): a new one resumes from the stored cursors
        try:
            return await asyncio.wrap_future(self._executor.submit(_writer_ingest, job))
        except BrokenProcessPool:
            # The writer died mid-request: the batches it committed are durable,
            # the rest never happened; a resend is safe (duplicates).
            self.metrics.writer_restarts.inc()
            self._start_writer()
            raise HTTPException(503, "the writer process died; resend the request (resends are idempotent)",
                                headers={"Retry-After": "1"}) from None


# -- authentication and tenancy --------------------------------------------------

bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer", bearerFormat="plt_<id>_<secret>",
    description="A token from `peerledger tokens create`; roles ingest, operator, auditor, admin.")

NOT_FOUND = "Not Found"  # Starlette's own body for an unknown route: a foreign platform looks the same


def _backend(request: Request) -> Backend:
    return request.app.state.backend


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    found = authenticate(_backend(request).store, credentials.credentials if credentials else None)
    if found is None:
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def principal(request: Request, credentials: Credentials) -> Principal:
    """Any valid token (401 otherwise)."""
    return _authenticated(request, credentials)


_query_names: dict[int, frozenset[str]] = {}


def _declared_query(dependant: Any) -> frozenset[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared_query(sub)
    return frozenset(names)


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (a typo such as
    `?asof=9` would otherwise silently answer for the live ledger)."""
    route = request.scope["route"]
    names = _query_names.get(id(route))
    if names is None:
        names = _query_names[id(route)] = _declared_query(route.dependant)
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise HTTPException(400, f"unknown query parameter {unknown[0]!r}")


PlatformId = Annotated[str, PathParam(description=f"the tenant, `{PLATFORM_PATTERN}`")]


def _tenant(platform: str, who: Principal) -> None:
    if not who.sees(platform) or not _PLATFORM_RE.fullmatch(platform):
        raise HTTPException(404, NOT_FOUND)


def _role(may: str, doing: str) -> Callable[..., Principal]:
    """A dependency: a token of the platform (404 otherwise) whose role has the
    permission `may` (403 otherwise, saying it may not `doing`)."""
    permitted = operator.attrgetter(may)

    # One dependency per check chain (not principal → role): FastAPI runs each
    # sync dependency in a worker thread, and every hop costs a read's latency.
    def check(platform: PlatformId, request: Request, credentials: Credentials) -> Principal:
        who = _authenticated(request, credentials)
        _tenant(platform, who)
        if not permitted(who):
            raise HTTPException(403, f"role {who.role} may not {doing}")
        return who

    return check


reader = _role("may_read", "read")
writer = _role("may_write", "post events")
payer = _role("may_pay", "plan payouts")
prover = _role("may_prove", "fetch balance proofs")
liabilities_reader = _role("may_export_liabilities", "read liabilities trees")
payee_manager = _role("may_pay", "manage payees")
webhook_manager = _role("may_manage_webhooks", "manage webhooks")


Reader = Annotated[Principal, Depends(reader)]
Payer = Annotated[Principal, Depends(payer)]
Prover = Annotated[Principal, Depends(prover)]
LiabilitiesReader = Annotated[Principal, Depends(liabilities_reader)]
PayeeManager = Annotated[Principal, Depends(payee_manager)]
WebhookManager = Annotated[Principal, Depends(webhook_manager)]


# -- documents only the HTTP API has ---------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "ready"]


class WhoAmI(BaseModel):
    token_id: str
    role: Literal["ingest", "operator", "auditor", "admin"]
    platform: str | None


class Platforms(BaseModel):
    platforms: list[str]


class FlowNode(BaseModel):
    id: str
    label: str
    column: int
    kind: Literal["sold", "pool", "work", "fee", "prosumer", "system", "other"]
    amount: int


class FlowLink(BaseModel):
    source: str
    target: str
    amount: int


class FlowPeriod(BaseModel):
    period: str
    currency: str
    realized: int
    values: int


class Flows(BaseModel):
    """Where the value realized in a period went: sold work → paying work → recipient."""

    platform: str
    seq: int
    period: str | None
    currency: str | None
    realized: int
    reversed: int
    values: int
    nodes: list[FlowNode]
    links: list[FlowLink]
    available: list[FlowPeriod]


class PoolListed(BaseModel):
    pool: str
    currency: str
    method: Literal["pro_rata", "user_centric"]
    funded: int
    closed: bool
    opened_seq: int


class Pools(BaseModel):
    """The platform's usage pools, the newest opened first."""

    platform: str
    pools: list[PoolListed]


class Ratio(BaseModel):
    """An exact ratio, and its decimal text rounded down (`projections.insights.ratio_doc`)."""

    exact: str
    decimal: str


class MethodFairness(BaseModel):
    """How one method shares a pool among the prosumers either method reaches (exact ratios)."""

    to_prosumers_minor: int
    paid: int
    gini: Ratio | None
    top_1pct_share: Ratio | None
    top_10pct_share: Ratio | None


class GainLose(BaseModel):
    gain: int
    lose: int
    same: int


class PoolRow(BaseModel):
    recipient: str | None = None
    work: str | None = None
    booked: int
    alternative: int


class PoolComparison(BaseModel):
    prosumers: int
    pro_rata: MethodFairness
    user_centric: MethodFairness
    under_other_method: GainLose = Field(description="prosumers who would get more, less or the same "
                                                     "under the other method than they were booked")
    recipients: list[PoolRow]
    works_used: int
    works: list[PoolRow] = Field(description="stage 1: minor units to each work under each method")


class PoolView(BaseModel):
    """A usage pool: its funding, and once closed its flows (the pool → its works,
    stage 1 → recipients, as booked) and the two methods compared."""

    platform: str
    pool: str
    currency: str
    method: Literal["pro_rata", "user_centric"]
    other_method: Literal["pro_rata", "user_centric"]
    funded: int
    funders: int
    opened_seq: int
    closed: bool
    closed_seq: int | None
    reversed: int
    nodes: list[FlowNode]
    links: list[FlowLink]
    comparison: PoolComparison | None


class Earner(BaseModel):
    prosumer: str
    earned: int
    reversed: int
    paid: int
    net: int


class Earners(BaseModel):
    platform: str
    period: str
    currency: str
    earners: list[Earner]


class PayeeDetails(BaseModel):
    """How to pay a prosumer: an IBAN (and maybe a BIC) or an e-mail, exactly one (`ledger.storage.payees`)."""

    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1, max_length=70, description="the account holder's name")
    iban: str | None = Field(None, max_length=64, description="paid by SEPA credit transfer")
    bic: str | None = Field(None, max_length=16, description="the IBAN's bank (optional)")
    email: str | None = Field(None, max_length=254, description="paid through a wallet provider (PayPal)")


class PayeeDoc(BaseModel):
    platform: str
    prosumer: str
    name: str
    method: Literal["sepa", "email"]
    iban: str | None
    bic: str | None
    email: str | None


class WebhookCreate(BaseModel):
    """A new webhook endpoint (`peerledger webhooks add`)."""

    model_config = {"extra": "forbid"}
    url: str = Field(max_length=webhooks.URL_MAX_CHARS, description="http(s)://host/…: where documents are POSTed")
    types: list[str] | None = Field(None, max_length=len(EVENT_TYPES),
                                    description="only documents of these event types (default every type)")
    from_seq: int | None = Field(None, ge=1, le=SEQ_MAX,
                                 description="send the documents from this seq on (default: those accepted from now)")


class WebhookReplay(BaseModel):
    model_config = {"extra": "forbid"}
    from_seq: int = Field(ge=1, le=SEQ_MAX, description="send the documents from this seq on again")


class WebhookDoc(BaseModel):
    endpoint_id: str
    platform: str
    url: str
    types: list[str]
    cursor_seq: int = Field(description="the seq up to which every document had its first attempt")
    created_at: str
    enabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None
    previous_secret_until: str | None


class WebhookCreated(WebhookDoc):
    secret: str = Field(description="whsec_…: shown once, the receiver verifies signatures with it")


class WebhookSecret(BaseModel):
    endpoint_id: str
    secret: str = Field(description="the new whsec_…, shown once")
    previous_secret_seconds: int = Field(description="how long the previous secret still signs beside it")


class WebhookAttempt(BaseModel):
    seq: int
    attempt: int
    at: str
    status: int | None
    error: str | None
    duration_seconds: float


class WebhookDeadLetter(BaseModel):
    seq: int
    attempts: int
    status: int | None
    error: str | None
    at: str


class RateMinute(BaseModel):
    minute: str
    accepted: int
    rejected: int


class IngestRate(BaseModel):
    platform: str
    minutes: list[RateMinute]


def _doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {400: "Bad request (a parameter or the body)", 401: "No, unknown or revoked bearer token",
             403: "The token's role lacks the right", 404: "Not found (also: another platform's resource)",
             413: "Body over 16 MiB or more than 10 000 events", 415: "Not application/json or application/x-ndjson",
             503: "Not ready, or the writer restarted: retry"}
    return {c: {"model": api.Error, "description": words[c]} for c in codes}


READ_ERRORS = _doc(400, 401, 403, 404)


def _json(obj: object, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(_dumps(obj), status_code=status, media_type=JSON_TYPE, headers=headers)


def _views_seq(backend: Backend, platform: str) -> dict[str, str]:
    return {"X-Ledger-Views-Seq": str(views_seq(backend.store, platform))}


def _as_of(backend: Backend, platform: str, as_of: int | None, as_of_time: str | None) -> int | None:
    if as_of is not None and as_of_time is not None:
        raise HTTPException(400, "give as_of or as_of_time, not both")
    if as_of_time is not None:
        try:
            as_of_time = ledger_instant(as_of_time)
        except (ValueError, OverflowError) as e:  # OverflowError: a year 1 or 9999 instant beyond UTC's range
            raise HTTPException(400, f"as_of_time: {e}") from None
    return queries.as_of_seq(backend.store, platform, as_of, as_of_time)


WebhookListLimit = Annotated[int, Query(ge=1, le=webhooks.LIST_LIMIT_MAX)]
AsOf = Annotated[int | None, Query(ge=0, le=SEQ_MAX, description="the state after the event at this seq (replays the log)")]
AsOfTime = Annotated[str | None, Query(
    max_length=64, pattern=AT_PATTERN, json_schema_extra={"format": "date-time"},
    description="RFC 3339 (ledger time): the state after the last event the ledger accepted at or before it")]
Period = Annotated[str, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="a UTC month, YYYY-MM")]
Currency = Annotated[str, Query(pattern=r"^[A-Z]{3}$")]


# -- the app ------------------------------------------------------------------------


def create_app(db_url: str, projector: bool = True, deliverer: bool = True) -> FastAPI:
    """The ASGI app on the database at `db_url`; its lifespan starts the
    writer, the projector (unless `projector` is false) and the webhook
    deliverer (unless `deliverer` is) and stops them on shutdown."""

    metrics = HttpMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(db_url, metrics, projector, deliverer)
        anyio.to_thread.current_default_thread_limiter().total_tokens = READ_THREADS[backend.store.dialect.name]
        backend.start()
        app.state.backend = backend
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(backend.stop)

    app = FastAPI(
        title="peerledger", version=API_VERSION, lifespan=lifespan, dependencies=[Depends(known_query)],
        description=(__doc__ or "").split("\n\n", 1)[1] if __doc__ else None,
        openapi_tags=[{"name": "events"}, {"name": "reads"}, {"name": "payouts"}, {"name": "webhooks"}, {"name": "audit"},
                      {"name": "dashboard"}, {"name": "service"}],
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors())
        return JSONResponse({"detail": problems or "bad request"}, status_code=400)

    @app.exception_handler(queries.NotFound)
    async def not_found(_request: Request, exc: queries.NotFound) -> Response:
        return _json({"detail": str(exc)}, status=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route of the path only;
            # a path served by two routes (PUT and DELETE of a payee) allows both.
            allowed = sorted({m for r in app.router.routes if getattr(r, "methods", None)
                              and r.path_regex.match(request.url.path) for m in r.methods})
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _json({"detail": str(exc.detail)}, headers=headers, status=exc.status_code)

    _events_routes(app)
    _read_routes(app)
    _payout_routes(app)
    _payee_routes(app)
    _webhook_routes(app)
    _audit_routes(app)
    _dashboard_routes(app)
    _service_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    # Installed last: the outermost layer, so it also counts the error handlers' answers.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _events_routes(app: FastAPI) -> None:
    # Any JSON value is a well-formed item: one that is not a valid event is
    # that item's `invalid` outcome, not a bad request.
    event_schema = {"description": "an event of EVENTS.md §1–2 (each item is validated by the ledger)"}

    @app.post(
        "/v1/platforms/{platform}/events", tags=["events"], response_model=api.IngestResponse,
        summary="Ingest events (JSON array or NDJSON)",
        responses={**_doc(400, 401, 403, 404, 413, 415, 503),
                   200: {"description": "Every event's outcome, in input order, even when some are rejected"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            JSON_TYPE: {"schema": {"type": "array", "items": event_schema,
                                   "description": f"at most {EVENTS_PER_REQUEST_MAX} events (else 413)"}},
            NDJSON: {"schema": {"type": "string", "description": "one event per line; blank lines are skipped"}},
        }}},
    )
    async def post_events(platform: PlatformId, request: Request,
                          who: Annotated[Principal, Depends(writer)]) -> Response:
        """Each event gets an outcome: `accepted` (with its `seq`), `duplicate`, or
        `rejected` with a code (EVENTS.md §4).  An event whose `platform` is not the
        path's is rejected `invalid`; so is an NDJSON line that is not JSON.  An
        operator token may post only payout.issued, payout.returned, policy.set, work.retracted,
        work.reinstated, work.reassigned, pool.opened and pool.closed: a request with any other type is
        refused whole (403) and nothing of it is ingested.  The answer comes after
        the events and the read models they change are durable (see the
        freshness guarantee)."""
        backend = _backend(request)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in (JSON_TYPE, NDJSON):
            raise HTTPException(415, f"send {JSON_TYPE} (an array of events) or {NDJSON} (one event per line)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > BODY_MAX_BYTES:
            raise HTTPException(413, f"body over {BODY_MAX_BYTES} bytes")
        async with backend.posts:
            body = bytearray()
            async for chunk in request.stream():
                if len(body) + len(chunk) > BODY_MAX_BYTES:
                    raise HTTPException(413, f"body over {BODY_MAX_BYTES} bytes")
                body += chunk
            backend.metrics.body_bytes.inc(len(body))
            reply = await backend.ingest(IngestJob(platform, media == NDJSON, bytes(body), who.token_id,
                                                   who.event_types))
        backend.metrics.count_events(reply.counts, reply.batch_seconds)
        return Response(reply.body, status_code=reply.status, media_type=JSON_TYPE)


def _read_routes(app: FastAPI) -> None:
    base = "/v1/platforms/{platform}"

    @app.get(base + "/balances", tags=["reads"], response_model=list[api.BalanceRow], responses=READ_ERRORS)
    def balances(platform: PlatformId, request: Request, _who: Reader,
                 currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
                 as_of: AsOf = None, as_of_time: AsOfTime = None) -> Response:
        """EVENTS.md §5 balances, as `peerledger balances --json`."""
        backend = _backend(request)
        headers = _views_seq(backend, platform)
        seq = _as_of(backend, platform, as_of, as_of_time)
        return _json(queries.balances_doc(backend.store, platform, currency, seq), headers)

    @app.get(base + "/digest", tags=["reads"], response_model=api.Digest, responses=READ_ERRORS)
    def digest(platform: PlatformId, request: Request, _who: Reader,
               as_of: AsOf = None, as_of_time: AsOfTime = None) -> Response:
        """The balances digest; `digest` is what `peerledger digest` prints."""
        backend = _backend(request)
        headers = _views_seq(backend, platform)
        seq = _as_of(backend, platform, as_of, as_of_time)
        rows = queries.balances_doc(backend.store, platform, None, seq)
        return _json({"platform": platform, "digest": balances_digest(rows), "as_of": seq}, headers)

    @app.get(base + "/values/{value}/explain", tags=["reads"],
             response_model=api.Explanation | api.PoolExplanation, responses=READ_ERRORS)
    def explain(platform: PlatformId, value: str, request: Request, _who: Reader,
                as_of: AsOf = None, as_of_time: AsOfTime = None) -> Response:
        """Why a value was split as it was, as `peerledger explain --json`: a sale's
        explanation, or a closed usage pool's (EVENTS.md §7: stage 1 to works, and
        what the other method would have allocated)."""
        backend = _backend(request)
        headers = _views_seq(backend, platform)
        ex = queries.explain_doc(backend.store, platform, value, _as_of(backend, platform, as_of, as_of_time))
        if ex is None:
            raise HTTPException(404, f"no value {value!r} in platform {platform!r}")
        return _json(ex, headers)

    @app.get(base + "/prosumers/{prosumer}/statement", tags=["reads"], response_model=api.Statement,
             responses=READ_ERRORS)
    def statement(platform: PlatformId, prosumer: str, request: Request, _who: Reader,
                  period: Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")] = None) -> Response:
        """A prosumer's figures by UTC month, as `peerledger statement --json`
        (no periods for a registered prosumer without bookings; 404 for one
        neither registered nor booked, or a period the platform booked nothing in)."""
        backend = _backend(request)
        headers = _views_seq(backend, platform)
        return _json(queries.statement_doc(backend.store, platform, prosumer, period), headers)

    @app.get(base + "/rejects", tags=["reads"], response_model=list[api.Reject], responses=READ_ERRORS)
    def rejects(platform: PlatformId, request: Request, _who: Reader,
                limit: Annotated[int, Query(ge=1, le=REJECTS_PAGE_MAX)] = 1000,
                after_id: Annotated[int, Query(ge=0, le=SEQ_MAX)] = 0,
                order: Literal["asc", "desc"] = "asc") -> Response:
        """Rejected events of the platform, as `peerledger rejects --json`: oldest
        first after `after_id` (page with the last `reject_id`), or with
        `order=desc` the newest first."""
        store = _backend(request).store
        if order == "asc":
            rows = store.rejects(platform, limit, after_id)
        else:
            rows = store.query(
                "SELECT reject_id, platform, event_id, code, message, raw, raw_truncated, source, received_at "
                "FROM peerledger_rejects WHERE platform = ? AND reject_id > ? ORDER BY reject_id DESC LIMIT ?",
                (platform, after_id, limit))
        return _json(api.reject_docs(rows))

    @app.get(
        base + "/log", tags=["reads"], responses={
            **READ_ERRORS,
            200: {"description": "Accepted events from `from_seq`, each exactly its canonical bytes "
                                 "(EVENTS.md §5): NDJSON when the request accepts application/x-ndjson, "
                                 "else a JSON array whose elements are those bytes",
                  "headers": {"X-Ledger-Next-Seq": {"schema": {"type": "integer"},
                                                    "description": "from_seq of the next page"}},
                  "content": {JSON_TYPE: {"schema": {"type": "array", "items": {"type": "object"}}},
                              NDJSON: {"schema": {"type": "string"}}}}})
    def log(platform: PlatformId, request: Request, _who: Reader,
            from_seq: Annotated[int, Query(ge=1, le=SEQ_MAX)] = 1,
            limit: Annotated[int, Query(ge=1, le=LOG_PAGE_MAX)] = 1000) -> Response:
        """The log, as `peerledger export` writes it (AUDIT.md §4), a page at a time."""
        store = _backend(request).store
        head = queries.log_head(store, platform)
        if from_seq > head + 1:  # head + 1 is the end of the log, where a follower waits
            raise queries.NotFound(f"platform {platform!r} has {head} events: from_seq {from_seq} is past its end")
        lines = [s.state for s in store.read_log(platform, after_seq=from_seq - 1, upto_seq=from_seq - 1 + limit)]
        headers = {"X-Ledger-Next-Seq": str(from_seq + len(lines))}
        if NDJSON in request.headers.get("accept", ""):
            return Response(b"".join(line + b"\n" for line in lines), media_type=NDJSON, headers=headers)
        return Response(b"[" + b",".join(lines) + b"]", media_type=JSON_TYPE, headers=headers)

    @app.get(
        base + "/bookings", tags=["reads"], responses={
            **READ_ERRORS,
            200: {"description": "The booking documents (EVENTS.md §9) from `from_seq`, in seq order, one per "
                                 "accepted event, each line its canonical bytes",
                  "headers": {"X-Ledger-Next-Seq": {"schema": {"type": "integer"},
                                                    "description": "from_seq of the next page"}},
                  "content": {NDJSON: {"schema": {"type": "string"}}}}})
    def bookings(platform: PlatformId, request: Request, _who: Reader,
                 from_seq: Annotated[int, Query(ge=1, le=SEQ_MAX)] = 1,
                 limit: Annotated[int, Query(ge=1, le=PAGE_DOCUMENTS)] = PAGE_DOCUMENTS) -> Response:
        """What the ledger booked, as `peerledger bookings` writes it: committed
        documents only; a follower asks again from `X-Ledger-Next-Seq`."""
        store = _backend(request).store
        head = queries.log_head(store, platform)
        if from_seq > head + 1:  # head + 1 is the end, where a follower waits
            raise queries.NotFound(f"platform {platform!r} has {head} events: from_seq {from_seq} is past its end")
        page = read_documents(store, platform, from_seq - 1, limit)
        headers = {"X-Ledger-Next-Seq": str(from_seq + len(page))}
        return Response(b"".join(d.body + b"\n" for d in page), media_type=NDJSON, headers=headers)


def _payout_routes(app: FastAPI) -> None:
    base = "/v1/platforms/{platform}"

    @app.get(
        base + "/payouts/plan", tags=["payouts"], responses={
            **_doc(400, 401, 403, 404),
            200: {"description": "The run's payout.issued events, one JSON object per line in canonical form, "
                                 "ready to POST to …/events (NDJSON) or to `peerledger ingest`; or, as CSV, "
                                 "the same run for a payment provider: prosumer, amount (minor units), "
                                 "currency, payout, reference",
                  "headers": {"X-Ledger-Run-Seq": {"schema": {"type": "integer"},
                                                   "description": "the log position whose balances the run pays"}},
                  "content": {NDJSON: {"schema": {"type": "string"}},
                              CSV_TYPE: {"schema": {"type": "string"}}}}})
    def payouts_plan(platform: PlatformId, request: Request, _who: Payer, currency: Currency,
                     min_balance: Annotated[int, Query(ge=1, le=MAX_AMOUNT,
                                                       description="pay balances of at least this many minor "
                                                                   "units; smaller ones carry forward")],
                     reference: Annotated[str | None, Query(max_length=MAX_TEXT,
                                                            description="copied into every payout")] = None,
                     at: Annotated[str | None, Query(
                         max_length=64, pattern=AT_PATTERN, json_schema_extra={"format": "date-time"},
                         description="the events' `at`; default the `at` of the log's head event")] = None,
                     output: Annotated[Literal["jsonl", "csv"] | None, Query(
                         alias="format",
                         description="jsonl or csv; default by the Accept header (text/csv), else jsonl")] = None,
                     ) -> Response:
        """A payout run, as `peerledger payouts plan` prints it: one payout.issued per
        prosumer whose balance in `currency` is at least `min_balance`, paying the whole
        balance, with ids derived from the run (its currency and the log's head), so
        that ingesting the same plan twice pays once.  Operator and admin tokens only."""
        store = _backend(request).store
        try:
            plan = queries.payout_plan(store, platform, currency, min_balance, reference, at)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        headers = {"X-Ledger-Run-Seq": str(plan.run.seq)}
        if output == "csv" or (output is None and CSV_TYPE in request.headers.get("accept", "")):
            return Response(plan_csv(plan), media_type=CSV_TYPE, headers=headers)
        return Response(plan_jsonl(plan), media_type=NDJSON, headers=headers)


def _payee_routes(app: FastAPI) -> None:
    """`peerledger payees` over HTTP, for operator and admin tokens: the
    details live outside the log (`ledger.storage.payees`) and are never logged."""
    base = "/v1/platforms/{platform}/payees"

    @app.get(base, tags=["payouts"], response_model=list[PayeeDoc], responses=READ_ERRORS)
    def payees_list(platform: PlatformId, request: Request, _who: PayeeManager) -> Response:
        """The platform's payees, every field, in prosumer id order."""
        return _json([p.as_json() for p in payees.list_payees(_backend(request).store, platform)])

    @app.put(base + "/{prosumer}", tags=["payouts"], response_model=PayeeDoc, responses=READ_ERRORS)
    def payee_set(platform: PlatformId, prosumer: str, details: PayeeDetails, request: Request,
                  _who: PayeeManager) -> Response:
        """Set (or replace) how a registered prosumer is paid; 400 names a bad field (an IBAN's
        check digits, a BIC, an e-mail's shape, both or neither of IBAN and e-mail)."""
        try:
            p = payees.payee(platform, prosumer, details.name, details.iban, details.bic, details.email)
            payees.set_payee(_backend(request).store, p)
        except payees.PayeeError as e:
            raise HTTPException(400, str(e)) from None
        return _json(p.as_json())

    @app.delete(base + "/{prosumer}", tags=["payouts"], status_code=204, responses=READ_ERRORS)
    def payee_delete(platform: PlatformId, prosumer: str, request: Request, _who: PayeeManager) -> Response:
        """Erase a prosumer's details (404 when there were none)."""
        if not payees.delete_payee(_backend(request).store, platform, prosumer):
            raise HTTPException(404, f"no payee {prosumer!r} on platform {platform!r}")
        return Response(status_code=204)


def _webhook_routes(app: FastAPI) -> None:
    """`peerledger webhooks` over HTTP, for operator and admin tokens
    (`ledger.webhooks.endpoints`).  An endpoint of another platform is a 404,
    as an unknown one; secrets appear only in the answers that made them."""
    base = "/v1/platforms/{platform}/webhooks"
    one = base + "/{endpoint_id}"

    def endpoint_of(request: Request, platform: str, endpoint_id: str) -> webhooks.Endpoint:
        found = webhooks.get_endpoint(_backend(request).store, endpoint_id) if webhooks.is_endpoint_id(
            endpoint_id) else None
        if found is None or found.platform != platform:
            raise HTTPException(404, f"no webhook endpoint {endpoint_id!r} on platform {platform!r}")
        return found

    @app.post(base, tags=["webhooks"], status_code=201, response_model=WebhookCreated, responses=READ_ERRORS)
    def webhook_add(platform: PlatformId, body: WebhookCreate, request: Request, _who: WebhookManager) -> Response:
        """Add an endpoint; the answer holds its secret, shown this once.  400 names a bad URL
        (http or https, a host, no credentials) or an unknown event type."""
        try:
            endpoint, secret = webhooks.add_endpoint(_backend(request).store, platform, body.url, body.types,
                                                     body.from_seq)
        except webhooks.WebhookError as e:
            raise HTTPException(400, str(e)) from None
        return _json({**endpoint.as_json(), "secret": secret}, status=201)

    @app.get(base, tags=["webhooks"], response_model=list[WebhookDoc], responses=READ_ERRORS)
    def webhook_list(platform: PlatformId, request: Request, _who: WebhookManager) -> Response:
        """The platform's endpoints, oldest first, without secrets."""
        return _json([e.as_json() for e in webhooks.list_endpoints(_backend(request).store, platform)])

    @app.get(one, tags=["webhooks"], response_model=WebhookDoc, responses=READ_ERRORS)
    def webhook_get(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager) -> Response:
        """One endpoint: its cursor, and whether (and why) it is disabled."""
        return _json(endpoint_of(request, platform, endpoint_id).as_json())

    @app.delete(one, tags=["webhooks"], status_code=204, responses=READ_ERRORS)
    def webhook_remove(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager) -> Response:
        """Remove an endpoint with its attempts, retries and dead letters."""
        endpoint_of(request, platform, endpoint_id)
        webhooks.remove_endpoint(_backend(request).store, endpoint_id)
        return Response(status_code=204)

    @app.post(one + "/rotate", tags=["webhooks"], response_model=WebhookSecret, responses=READ_ERRORS)
    def webhook_rotate(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager) -> Response:
        """A new secret, shown this once; the previous one signs beside it during the grace period."""
        endpoint_of(request, platform, endpoint_id)
        secret = webhooks.rotate_secret(_backend(request).store, endpoint_id)
        if secret is None:
            raise HTTPException(404, f"no webhook endpoint {endpoint_id!r} on platform {platform!r}")
        return _json({"endpoint_id": endpoint_id, "secret": secret,
                      "previous_secret_seconds": webhooks.ROTATION_GRACE_SECONDS})

    @app.post(one + "/enable", tags=["webhooks"], response_model=WebhookDoc, responses=READ_ERRORS)
    def webhook_enable(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager) -> Response:
        """Re-enable a disabled endpoint: it resumes at its cursor, its retries due at once."""
        endpoint_of(request, platform, endpoint_id)
        webhooks.enable_endpoint(_backend(request).store, endpoint_id)
        return _json(endpoint_of(request, platform, endpoint_id).as_json())

    @app.post(one + "/replay", tags=["webhooks"], response_model=WebhookDoc, responses=READ_ERRORS)
    def webhook_replay(platform: PlatformId, endpoint_id: str, body: WebhookReplay, request: Request,
                       _who: WebhookManager) -> Response:
        """Send the documents from `from_seq` on again (the cursor moves back, never forward)."""
        endpoint_of(request, platform, endpoint_id)
        webhooks.replay(_backend(request).store, endpoint_id, body.from_seq)
        return _json(endpoint_of(request, platform, endpoint_id).as_json())

    @app.get(one + "/attempts", tags=["webhooks"], response_model=list[WebhookAttempt], responses=READ_ERRORS)
    def webhook_attempts(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager,
                         limit: WebhookListLimit = 100) -> Response:
        """The endpoint's newest `limit` attempts, oldest first."""
        endpoint_of(request, platform, endpoint_id)
        return _json([a.as_json() for a in webhooks.list_attempts(_backend(request).store, endpoint_id, limit)])

    @app.get(one + "/dead-letters", tags=["webhooks"], response_model=list[WebhookDeadLetter],
             responses=READ_ERRORS)
    def webhook_dead_letters(platform: PlatformId, endpoint_id: str, request: Request, _who: WebhookManager,
                             limit: WebhookListLimit = webhooks.LIST_LIMIT_MAX) -> Response:
        """The documents that failed every attempt of the schedule, in seq order."""
        endpoint_of(request, platform, endpoint_id)
        return _json([x.as_json() for x in webhooks.list_dead_letters(_backend(request).store, endpoint_id, limit)])


def _audit_routes(app: FastAPI) -> None:
    base = "/v1/platforms/{platform}"

    @app.get(base + "/checkpoint", tags=["audit"], response_model=api.Checkpoint, responses=READ_ERRORS)
    def checkpoint(platform: PlatformId, request: Request, _who: Reader) -> Response:
        """The newest signed checkpoint (AUDIT.md §3).  Checkpoints are signed by
        `peerledger checkpoint`, where the signing key is: the server holds none."""
        found = list_checkpoints(_backend(request).store, platform, 1)
        if not found:
            raise HTTPException(404, f"platform {platform!r} has no checkpoint")
        return _json(found[0])

    @app.get(base + "/checkpoints", tags=["audit"], response_model=list[api.Checkpoint], responses=READ_ERRORS)
    def checkpoints(platform: PlatformId, request: Request, _who: Reader,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        """The newest `limit` checkpoints, oldest first (`peerledger checkpoints --json`)."""
        store = _backend(request).store
        queries.log_head(store, platform)
        return _json(list_checkpoints(store, platform, limit))

    @app.get(base + "/proofs/inclusion", tags=["audit"], response_model=api.InclusionProof, responses=READ_ERRORS)
    def inclusion(platform: PlatformId, request: Request, _who: Reader,
                  seq: Annotated[int, Query(ge=1, le=SEQ_MAX)],
                  tree_size: Annotated[int | None, Query(ge=1, le=SEQ_MAX)] = None) -> Response:
        """The audit path of the event at `seq` in the tree of `tree_size` events
        (default: the log's head), as `peerledger prove inclusion --json`."""
        store = _backend(request).store
        head = store.head(platform)
        size = head if tree_size is None else tree_size
        if max(seq, size) > head:
            raise HTTPException(404, f"platform {platform!r} has {head} events, not {max(seq, size)}")
        if seq > size:
            raise HTTPException(400, f"seq {seq} is not in the tree of size {size}")
        leaf, path = _tree(store, platform, lambda t: t.inclusion(seq, size))
        return _json(api.inclusion_doc(platform, seq, size, leaf, path))

    @app.get(base + "/proofs/consistency", tags=["audit"], response_model=api.ConsistencyProof,
             responses=READ_ERRORS)
    def consistency(platform: PlatformId, request: Request, _who: Reader,
                    first: Annotated[int, Query(ge=1, le=SEQ_MAX)],
                    second: Annotated[int | None, Query(ge=1, le=SEQ_MAX)] = None) -> Response:
        """That the tree of `second` events (default: the head) extends the tree of
        `first`, as `peerledger prove consistency --json`."""
        store = _backend(request).store
        head = store.head(platform)
        size = head if second is None else second
        if max(first, size) > head:
            raise HTTPException(404, f"platform {platform!r} has {head} events, not {max(first, size)}")
        if first > size:
            raise HTTPException(400, f"need first ≤ second, got {first} > {size}")
        path = _tree(store, platform, lambda t: t.consistency(first, size))
        return _json(api.consistency_doc(platform, first, size, path))


    @app.get(base + "/prosumers/{prosumer}/proof", tags=["audit"], response_model=api.BalanceProof,
             responses=READ_ERRORS)
    def balance_proof(platform: PlatformId, prosumer: str, request: Request, _who: Prover,
                      size: Annotated[int | None, Query(ge=1, le=SEQ_MAX, description="the checkpoint's size "
                                                        "(default: the newest checkpoint)")] = None,
                      with_bookings: Annotated[bool, Query(description="each booking with its event and the event's "
                                                                       "inclusion proof")] = False) -> Response:
        """A prosumer's balance proof against a signed checkpoint (AUDIT.md §5),
        as `peerledger prove balance --json`: the platform hands it to the
        prosumer, who checks it alone (`peerledger audit-proof`).  A few lookups
        in the checkpoint's kept tree; `with_bookings` reads the log's bookings
        up to the checkpoint's size."""
        if not is_prosumer(prosumer):
            raise HTTPException(400, f"{prosumer!r} is a system account; liabilities trees hold prosumers only")
        trees = stored_trees(_backend(request).store, platform, size)
        with _liabilities_mismatch():
            return _json({"checkpoint": trees.checkpoint, "proofs": trees.proofs(prosumer, with_bookings)})

    @app.get(base + "/liabilities", tags=["audit"], responses={
        **READ_ERRORS, 200: {"description": "The leaves of one currency's tree in leaf order, one canonical JSON "
                                            "object per line", "content": {NDJSON: {"schema": {"type": "string"}}}}})
    def liabilities(platform: PlatformId, request: Request, _who: LiabilitiesReader, currency: Currency,
                    size: Annotated[int | None, Query(ge=1, le=SEQ_MAX, description="the checkpoint's size "
                                                      "(default: the newest checkpoint)")] = None) -> Response:
        """The auditor's liabilities export (AUDIT.md §5), as `peerledger
        liabilities`: checked against the signed tree before the first line."""
        trees = stored_trees(_backend(request).store, platform, size)
        if currency not in trees.checkpoint["liabilities"]:
            raise HTTPException(404, f"the checkpoint at size {trees.checkpoint['size']} has no {currency} tree")
        with _liabilities_mismatch():
            trees.check(currency)  # before the first byte: never an export of leaves that were changed

        def chunks() -> Iterator[bytes]:
            page: list[bytes] = []
            for line in trees.lines(currency):
                page.append(line + b"\n")
                if len(page) >= LIABILITIES_CHUNK_LINES:
                    yield b"".join(page)
                    page = []
            yield b"".join(page)

        return StreamingResponse(chunks(), media_type=NDJSON)


@contextlib.contextmanager
def _liabilities_mismatch() -> Iterator[None]:
    try:
        yield
    except LiabilitiesMismatch as e:  # the balances no longer give the signed trees: the ledger is damaged
        raise HTTPException(500, str(e)) from None


def _tree(store: Store, platform: str, proof: Any) -> Any:
    try:
        return proof(StoredTree(store, platform))
    except TreeError as e:  # a node the proof needs is not stored (yet): the audit trail is behind
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None


def _dashboard_routes(app: FastAPI) -> None:
    base = "/v1/platforms/{platform}"

    @app.get("/dashboard", tags=["dashboard"], response_class=HTMLResponse,
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
    def dashboard_page() -> HTMLResponse:
        """The dashboard (no token needed to load it: its data calls carry one)."""
        return HTMLResponse((STATIC_DIR / "dashboard.html").read_text(encoding="utf-8"))

    @app.get(base + "/flows", tags=["dashboard"], response_model=Flows, responses=READ_ERRORS)
    def flows(platform: PlatformId, request: Request, _who: Reader,
              period: Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")] = None,
              currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None) -> Response:
        """Where the value realized in a period went (`ledger.http.dashboard`); by default
        the latest period with sales, in its currency with the most value."""
        return _json(_backend(request).flows.flows(platform, period, currency))

    @app.get(base + "/pools", tags=["dashboard"], response_model=Pools, responses=READ_ERRORS)
    def pools(platform: PlatformId, request: Request, _who: Reader,
              limit: Annotated[int, Query(ge=1, le=dashboard.POOLS_LISTED)] = dashboard.POOLS_LISTED) -> Response:
        """The platform's usage pools, the newest opened first."""
        backend = _backend(request)
        queries.log_head(backend.store, platform)
        return _json(dashboard.pools_doc(backend.store, platform, limit), _views_seq(backend, platform))

    @app.get(base + "/pools/{pool}", tags=["dashboard"], response_model=PoolView, responses=READ_ERRORS)
    def pool(platform: PlatformId, pool: str, request: Request, _who: Reader) -> Response:
        """One usage pool (`ledger.http.dashboard.pool_doc`): once closed, where its money
        went (the pool → its largest works → its largest recipients, as booked) and the
        two methods side by side, recipient by recipient and work by work."""
        backend = _backend(request)
        return _json(dashboard.pool_doc(backend.store, platform, pool), _views_seq(backend, platform))

    @app.get(base + "/earners", tags=["dashboard"], response_model=Earners, responses=READ_ERRORS)
    def earners(platform: PlatformId, request: Request, _who: Reader, period: Period, currency: Currency,
                limit: Annotated[int, Query(ge=1, le=EARNERS_MAX)] = 10) -> Response:
        """The prosumers who earned most in a period and currency."""
        backend = _backend(request)
        top = dashboard.top_earners(backend.store, platform, period, currency, limit)
        return _json({"platform": platform, "period": period, "currency": currency, "earners": top},
                     _views_seq(backend, platform))

    @app.get(base + "/ingest-rate", tags=["dashboard"], response_model=IngestRate, responses=READ_ERRORS)
    def ingest_rate(platform: PlatformId, request: Request, _who: Reader,
                    minutes: Annotated[int, Query(ge=1, le=RATE_MINUTES_MAX)] = 60) -> Response:
        """Accepted and rejected events per minute of ledger time, oldest first,
        the current minute last."""
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        first = now - timedelta(minutes=minutes - 1)
        counts = dashboard.ingest_rate(_backend(request).store, platform, first.strftime("%Y-%m-%dT%H:%M"))
        labels = [(first + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M") for i in range(minutes)]
        return _json({"platform": platform, "minutes": [
            {"minute": m, "accepted": counts["accepted"].get(m, 0), "rejected": counts["rejected"].get(m, 0)}
            for m in labels]})

    @app.get("/v1/whoami", tags=["dashboard"], response_model=WhoAmI, responses=_doc(401))
    def whoami(who: Annotated[Principal, Depends(principal)]) -> Response:
        """The token's id, role and platform (null: every platform)."""
        return _json({"token_id": who.token_id, "role": who.role, "platform": who.platform})

    @app.get("/v1/platforms", tags=["dashboard"], response_model=Platforms, responses=_doc(401))
    def platforms(request: Request, who: Annotated[Principal, Depends(principal)]) -> Response:
        """The platforms this token sees: an admin's, every platform with events."""
        if who.platform is not None:
            return _json({"platforms": [who.platform]})
        return _json({"platforms": _backend(request).store.platforms()})


def _service_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["service"], response_model=Health)
    def healthz() -> Response:
        """The process answers (liveness)."""
        return _json({"status": "ok"})

    @app.get("/readyz", tags=["service"], response_model=Health, responses=_doc(503))
    def readyz(request: Request) -> Response:
        """The database answers and the writer and projector are running."""
        backend = _backend(request)
        try:
            backend.store.query("SELECT 1")
        except Exception as e:  # any driver error means: not reachable
            return _json({"detail": f"database unreachable: {type(e).__name__}"}, status=503)
        problem = backend.not_ready()
        if problem is not None:
            return _json({"detail": problem}, status=503)
        return _json({"status": "ready"})

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    def metrics(request: Request) -> Response:
        """Prometheus metrics (`ledger.http.metrics`); no tenant appears in them."""
        return Response(_backend(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with our 400 in place of its 422 (we answer 400 for
    every bad parameter) and without the schemas only the 422 used."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                      tags=app.openapi_tags)
    for path in doc["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


def _exit_0(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(db_url: str, host: str, port: int, log_level: str = "info", access_log: bool = True,
          projector: bool = True, deliverer: bool = True) -> None:
    """Run the service until SIGINT/SIGTERM (uvicorn, one front process)."""
    import signal

    import uvicorn

    # SIGTERM/SIGINT end the process with status 0, like every other
    # peerledger process (supervisors, `peerledger cluster`, read a non-zero
    # exit as a crash): before uvicorn takes the signals over, at once
    # (nothing has started); after its graceful shutdown, uvicorn restores
    # this handler and raises the signal again, which would otherwise end
    # the process "killed by SIGTERM" (143).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_0)
    uvicorn.run(create_app(db_url, projector, deliverer), host=host, port=port, log_level=log_level, access_log=access_log,
                limit_concurrency=CONNECTIONS_MAX, timeout_graceful_shutdown=int(PROJECTION_WAIT_MAX_S),
                server_header=False)

