"""The JSON documents of the ledger: what `peerledger … --json` prints and the
HTTP API (`ledger.http.app`) returns, defined once.

The pydantic models below are the contract: the HTTP API declares them as its
response models (they make `/openapi.json`), and the tests check the CLI's
`--json` output against the same models.  The shaping functions build the
documents from the store and are called by both the CLI and the HTTP API, so
the two cannot drift apart.

Money is in integer minor units and may exceed 64 bits (sums of amounts up to
2^63 − 1); shares are exact fractions written as decimal strings
(`"3/5"`), never floats.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

# A prosumer id, value id or event id (EVENTS.md §1).
ID_DESCRIPTION = "an id `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BalanceRow(_Doc):
    """One (account, currency) of EVENTS.md §5: figures in minor units."""

    account: str = Field(description="a prosumer id, `@platform` or `@unattributed`")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    earned: int
    reversed: int = Field(description="signed sum of bookings from value.reversed (usually ≤ 0)")
    paid: int
    balance: int = Field(description="earned + reversed − paid")


class Digest(_Doc):
    """The balances digest (EVENTS.md §5); `peerledger digest` prints `digest` alone."""

    platform: str
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    as_of: int | None = Field(description="the seq the digest was replayed to, or null for the live ledger")


class PathShare(_Doc):
    works: list[str] = Field(description="the works the value passed through, sold work first")
    recipient: str
    share: str = Field(description="exact fraction of the whole value, after the fee")


class Explanation(_Doc):
    """Why a value was split as it was (`peerledger explain --json`)."""

    value: str
    work: str
    amount: int
    currency: str
    fee_bps: int
    seq: int = Field(description="the seq of the value.realized event")
    shares: dict[str, str] = Field(description="recipient → exact share, summing to 1")
    allocation: dict[str, int] = Field(description="recipient → minor units booked (largest remainder)")
    reversed: int = Field(description="minor units reversed so far")
    paths: list[PathShare] = Field(description="the largest paths (bounded)")
    paths_truncated: bool
    works_reached: int
    work_inflows: dict[str, str] = Field(description="work → exact share of the value reaching it (bounded)")


PoolMethod = Literal["pro_rata", "user_centric"]


class PoolAlternative(_Doc):
    """What the other method would have allocated (EVENTS.md §7): shown, never booked."""

    method: PoolMethod
    works: dict[str, int] = Field(description="stage 1 under this method: work → minor units")
    allocation: dict[str, int] = Field(description="recipient → minor units this method would have booked")


class PoolSplit(_Doc):
    """How a closed pool was split: its method, stage 1 and the alternative."""

    method: PoolMethod
    works: dict[str, int] = Field(description="stage 1: work → minor units ({} when nothing was used)")
    alternative: PoolAlternative


class PoolExplanation(_Doc):
    """Why a closed usage pool was split as it was (EVENTS.md §7; `peerledger explain --json`
    of a pool): a pool is a value of its total funding, whose shares mix its works'."""

    value: str = Field(description="the pool's id")
    amount: int = Field(description="X, the pool's total funding")
    currency: str
    shares: dict[str, str] = Field(description="recipient → exact share S, fee included, summing to 1 ({} when X = 0)")
    allocation: dict[str, int] = Field(description="recipient → minor units booked at the close, before any refund")
    reversed: int = Field(description="minor units refunded so far")
    pool: PoolSplit


class StatementPeriod(_Doc):
    period: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="UTC month of the bookings' `at`")
    currency: str
    earned: int
    reversed: int
    paid: int
    net: int = Field(description="earned + reversed − paid in this period")


class Statement(_Doc):
    """A prosumer's statement by UTC month (`peerledger statement --json`)."""

    platform: str
    prosumer: str
    periods: list[StatementPeriod]


class Reject(_Doc):
    """A rejected event as kept by the ledger (`peerledger rejects --json`)."""

    reject_id: int
    platform: str | None
    id: str | None = Field(description="the event's id when it could be read")
    code: str
    message: str
    raw: str = Field(description="the raw line (UTF-8, invalid bytes replaced), at most 64 KiB")
    raw_truncated: bool
    source: str = Field(description="file:line, or http:<token id>:<item> for HTTP")
    received_at: str


class IngestResult(_Doc):
    """One event's outcome (EVENTS.md §4); `seq` only when accepted, `code` and
    `message` only when rejected."""

    id: str | None
    outcome: Literal["accepted", "duplicate", "rejected"]
    seq: int | None = Field(default=None, ge=1)
    code: Literal["invalid", "conflict", "unknown_reference", "already_exists",
                  "insufficient_balance", "over_reversal", "invalid_state"] | None = None
    message: str | None = None


class IngestResponse(_Doc):
    """Outcome of an HTTP POST of events: counts, then one result per event in input order."""

    accepted: int
    duplicate: int
    rejected: int
    results: list[IngestResult]


class IngestSummary(_Doc):
    """`peerledger ingest --json`."""

    accepted: int
    duplicate: int
    rejected: int
    rejected_by_code: dict[str, int]


class InclusionProof(_Doc):
    """AUDIT.md §2 (`peerledger prove inclusion --json`)."""

    platform: str
    seq: int
    tree_size: int
    leaf_hash: str
    path: list[str]


class ConsistencyProof(_Doc):
    """AUDIT.md §2 (`peerledger prove consistency --json`)."""

    platform: str
    first: int
    second: int
    path: list[str]


class LiabilitiesTree(_Doc):
    """What a checkpoint signs of one currency's liabilities tree (AUDIT.md §5)."""

    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    total: int = Field(ge=0, description="the sum of the positive prosumer balances, minor units")
    accounts: int = Field(ge=0, description="leaves: prosumer accounts with a row, zero and negative included")


class Checkpoint(_Doc):
    """A signed tree head, AUDIT.md §3 (`peerledger checkpoint --json`);
    checkpoints signed since AUDIT.md revision 1.1 carry `liabilities`."""

    platform: str
    size: int
    root: str
    balances_digest: str
    issued_at: str
    key_id: str
    liabilities: dict[str, LiabilitiesTree] | None = Field(
        default=None, description="one tree per currency with a prosumer row (absent on older checkpoints)")
    signature: str


class LiabilitiesLeaf(_Doc):
    account: str
    balance: int
    currency: str
    salt: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int


class PathStep(_Doc):
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    sum: int = Field(ge=0)


class BookingInclusion(_Doc):
    leaf_hash: str
    path: list[str]


class ProvenBooking(_Doc):
    """One of the prosumer's bookings (EVENTS.md §9) with its event and the
    event's RFC 9162 inclusion proof at the checkpoint's size."""

    seq: int = Field(ge=1)
    column: Literal["earned", "reversed", "paid"]
    amount: int
    event: dict[str, Any]
    inclusion: BookingInclusion


class LeafProof(_Doc):
    leaf: LiabilitiesLeaf
    index: int = Field(ge=0)
    leaves: int = Field(ge=1)
    path: list[PathStep]
    bookings: list[ProvenBooking] | None = Field(default=None, description="with `with_bookings` only")


class BalanceProof(_Doc):
    """A prosumer's balance proof (AUDIT.md §5): the signed checkpoint and, per
    currency, the prosumer's leaf and its siblings' hashes and sums."""

    checkpoint: Checkpoint
    proofs: list[LeafProof]


class Error(_Doc):
    """Every 4xx/5xx answer of the HTTP API."""

    detail: str


# -- shaping shared by the CLI and the HTTP API (from rows; `ledger.storage.queries` reads them) --------------------------------


def reject_docs(rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """`Store.rejects` rows as Reject documents."""
    return [
        {"reject_id": int(rid), "platform": p, "id": eid, "code": code, "message": msg,
         "raw": bytes(raw).decode("utf-8", "replace"), "raw_truncated": bool(trunc),
         "source": src, "received_at": at}
        for rid, p, eid, code, msg, raw, trunc, src, at in rows
    ]


def inclusion_doc(platform: str, seq: int, tree_size: int, leaf: bytes, path: Sequence[bytes]) -> dict[str, Any]:
    return {"platform": platform, "seq": seq, "tree_size": tree_size, "leaf_hash": leaf.hex(),
            "path": [h.hex() for h in path]}


def consistency_doc(platform: str, first: int, second: int, path: Sequence[bytes]) -> dict[str, Any]:
    return {"platform": platform, "first": first, "second": second, "path": [h.hex() for h in path]}
