"""Reconciliation: a bank's report of bounced transfers, as `payout.returned` events.

`peerledger payouts reconcile --platform P FILE` reads one of

* a **pain.002** customer payment status report
  (`urn:iso:std:iso:20022:tech:xsd:pain.002.001.NN`): rejected items, at
  transaction level (`TxInfAndSts` with `TxSts` RJCT), payment information
  level (`PmtInfSts` RJCT) or group level (`GrpSts` RJCT: the whole file);
* a **camt.054** debit/credit notification
  (`urn:iso:std:iso:20022:tech:xsd:camt.054.001.NN`): returned transfers,
  the entries' transaction details that carry return information (`RtrInf`);

tells which by the root's namespace (any version: the elements read have the
same names in all of them), and matches each item to its payout by the
original `EndToEndId`, which our pain.001 files set to the payout id
(`ledger.payments.files`).  A rejection of a whole file or payment block
names no EndToEndId: its `OrgnlMsgId` (or `OrgnlPmtInfId`) is one of our
run ids, and every payout of that run is rejected.

Each item ends in one outcome:

| outcome | when | event |
|---|---|---|
| `returned` | a payout of the platform, not returned yet, same amount and currency (when the report gives them) | yes |
| `booked_before` | this very item's event was ingested already | yes, again: ingesting it is a `duplicate` |
| `already_returned` | the payout was returned by another event | no |
| `amount_different` | the report's amount or currency is not the payout's | no: an operator looks |
| `other_platform` | the item names a file of another platform, or a payout only another platform issued | no |
| `unknown` | no platform issued a payout with that id | no |
| `duplicate_item` | the report names the payout a second time | no |

`matched` counts items that found a payout of the platform.  Events are
ready for `peerledger ingest`: the id is derived from the report item
(``returned:<payout>:<12 hex of SHA-256 of (kind, report MsgId, EndToEndId)>``),
`at` is the item's booking date (camt.054) or the report's creation time
(pain.002; a time without an offset is taken as UTC), and `reason` is the
ISO 20022 reason code with its name, the bank's text and the report's id.
So reconciling the same report twice prints the same events, and ingesting
them twice returns each payout once.

Hostile input is refused before it is parsed: at most `REPORT_MAX_BYTES`, and
`defusedxml` forbids any DTD, so entity expansion (billion laughs) and
external entities (files, network) never happen.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from ledger.contract.money import exponent
from ledger.contract.schema import MAX_TEXT, at_error
from ledger.payments.files import id_platform_tag, platform_tag, run_ids
from ledger.storage.queries import issued_payouts, payout_platforms
from ledger.storage.store import KNOWN_IDS_MAX, Store

REPORT_MAX_BYTES = 32 * 1024 * 1024
PAIN_002 = "pain.002"
CAMT_054 = "camt.054"
_NAMESPACE_RE = re.compile(r"\{urn:iso:std:iso:20022:tech:xsd:(pain\.002|camt\.054)\.001\.\d{2}\}Document")
RETURNED_ID_PREFIX = "returned"
OUTCOMES = ("returned", "booked_before", "already_returned", "amount_different", "other_platform", "unknown",
            "duplicate_item")
# The ISO 20022 external status reason codes banks use most for rejected
# and returned credit transfers (ExternalStatusReason1Code / ExternalReturnReason1Code).
REASONS = {
    "AC01": "incorrect account number", "AC04": "closed account number", "AC06": "blocked account",
    "AC13": "invalid debtor account type", "AG01": "transaction forbidden", "AG02": "invalid bank operation code",
    "AM04": "insufficient funds", "AM05": "duplication", "BE04": "missing creditor address",
    "CNOR": "creditor bank is not registered", "DNOR": "debtor bank is not registered",
    "FF01": "invalid file format", "MD07": "end customer deceased", "MS02": "not specified reason customer generated",
    "MS03": "not specified reason agent generated", "RC01": "bank identifier incorrect",
    "RR01": "missing debtor account or identification", "RR02": "missing debtor name or address",
    "RR03": "missing creditor name or address", "RR04": "regulatory reason", "TM01": "cut off time",
}


class ReportError(ValueError):
    """A file that is not a report we can read (too large, not XML, hostile, another kind)."""


@dataclass(frozen=True, slots=True)
class ReportItem:
    """One rejected or returned transfer as the report states it."""

    end_to_end_id: str | None  # None: a whole file or payment block (see `file_id`)
    file_id: str | None  # the original MsgId or PmtInfId, when the report gives one
    amount_minor: int | None
    currency: str | None
    reason_code: str | None
    reason_text: str | None
    at: str  # RFC 3339, UTC


@dataclass(frozen=True, slots=True)
class Report:
    kind: str  # pain.002 or camt.054
    msg_id: str
    items: tuple[ReportItem, ...]


@dataclass(slots=True)
class Reconciliation:
    """What `reconcile` found: the events to ingest and, per item, its outcome."""

    platform: str
    kind: str
    msg_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = {o: 0 for o in OUTCOMES}
        for item in self.items:
            c[item["outcome"]] += 1
        return c

    def as_json(self) -> dict[str, Any]:
        counts = self.counts()
        matched = sum(counts[o] for o in ("returned", "booked_before", "already_returned", "amount_different"))
        return {"platform": self.platform, "report": {"kind": self.kind, "msg_id": self.msg_id},
                "items": len(self.items), "matched": matched, **counts, "events": len(self.events),
                "details": self.items}


# -- reading a report --------------------------------------------------------------


def parse_report(data: bytes) -> Report:
    """A pain.002 or camt.054 (any version), parsed safely; ReportError otherwise."""
    if len(data) > REPORT_MAX_BYTES:
        raise ReportError(f"report over {REPORT_MAX_BYTES} bytes")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as e:
        raise ReportError(f"refused: the report declares a DTD or entities ({type(e).__name__})") from None
    except SafeET.ParseError as e:
        raise ReportError(f"not well-formed XML: {e}") from None
    m = _NAMESPACE_RE.fullmatch(root.tag)
    if m is None:
        raise ReportError(f"not a pain.002 or camt.054 document: root {root.tag!r}")
    ns = root.tag[1:].split("}", 1)[0]
    x = _Reader(ns)
    header = x.find(root, "*/GrpHdr")
    msg_id = x.text(header, "MsgId") if header is not None else None
    if not msg_id:
        raise ReportError("the report has no GrpHdr/MsgId")
    created = _instant(x.text(header, "CreDtTm"))
    items = _pain002_items(x, root, created) if m.group(1) == PAIN_002 else _camt054_items(x, root, created)
    return Report(m.group(1), msg_id, tuple(items))


class _Reader:
    """Finds by local names in the document's one namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def path(self, p: str) -> str:
        return "/".join(s if s in ("*", ".") else f"{{{self.ns}}}{s}" for s in p.split("/"))

    def find(self, node: Element | None, p: str) -> Element | None:
        return None if node is None else node.find(self.path(p))

    def all(self, node: Element | None, p: str) -> list[Element]:
        return [] if node is None else node.findall(self.path(p))

    def text(self, node: Element | None, p: str) -> str | None:
        found = self.find(node, p)
        return found.text.strip() if found is not None and found.text else None

    def amount(self, node: Element | None, p: str) -> tuple[int | None, str | None]:
        """(minor units, currency) of an amount element with `Ccy`, or (None, None)."""
        found = self.find(node, p)
        if found is None or not found.text:
            return None, None
        currency = found.get("Ccy")
        digits = exponent(currency or "")
        try:
            value = Decimal(found.text.strip())
        except InvalidOperation:
            raise ReportError(f"not an amount: {found.text.strip()!r}") from None
        if digits is None or value != value.quantize(Decimal(1).scaleb(-digits)):
            raise ReportError(f"amount {found.text.strip()} {currency} is not in {currency}'s minor units")
        return int(value.scaleb(digits)), currency

    def reason(self, node: Element | None) -> tuple[str | None, str | None]:
        code = self.text(node, "Rsn/Cd") or self.text(node, "Rsn/Prtry")
        return code, self.text(node, "AddtlInf")


def _instant(text: str | None) -> str:
    """An ISO 20022 date or date-time as the ledger's `at` (UTC, `Z`)."""
    if not text:
        raise ReportError("the report has no creation time (GrpHdr/CreDtTm)")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if len(text) > 10 else text + "T00:00:00")
    except ValueError:
        raise ReportError(f"not an ISO 20022 date-time: {text!r}") from None
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    at = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if at_error(at) is not None:
        raise ReportError(f"not a date-time the ledger can book: {text!r}")
    return at


def _pain002_items(x: _Reader, root: Element, created: str) -> list[ReportItem]:
    items = []
    group = x.find(root, "*/OrgnlGrpInfAndSts")
    if x.text(group, "GrpSts") == "RJCT":
        code, text = x.reason(x.find(group, "StsRsnInf"))
        items.append(ReportItem(None, x.text(group, "OrgnlMsgId"), None, None, code, text, created))
    for block in x.all(root, "*/OrgnlPmtInfAndSts"):
        block_code, block_text = x.reason(x.find(block, "StsRsnInf"))
        if x.text(block, "PmtInfSts") == "RJCT":
            items.append(ReportItem(None, x.text(block, "OrgnlPmtInfId"), None, None, block_code, block_text,
                                    created))
        for tx in x.all(block, "TxInfAndSts"):
            if x.text(tx, "TxSts") != "RJCT":
                continue  # accepted, pending, …: not a return
            code, text = x.reason(x.find(tx, "StsRsnInf"))
            amount, currency = x.amount(tx, "OrgnlTxRef/Amt/InstdAmt")
            items.append(ReportItem(x.text(tx, "OrgnlEndToEndId"), x.text(block, "OrgnlPmtInfId"), amount,
                                    currency, code or block_code, text or block_text, created))
    return items


def _camt054_items(x: _Reader, root: Element, created: str) -> list[ReportItem]:
    items = []
    for entry in x.all(root, "*/Ntfctn/Ntry"):
        booked = x.text(entry, "BookgDt/DtTm") or x.text(entry, "BookgDt/Dt")
        at = _instant(booked) if booked else created
        details = x.all(entry, "NtryDtls/TxDtls")
        for tx in details:
            returned = x.find(tx, "RtrInf")
            if returned is None:
                continue  # an ordinary booking, not a return
            code, text = x.reason(returned)
            amount, currency = x.amount(tx, "Amt")
            if amount is None:
                amount, currency = x.amount(tx, "AmtDtls/TxAmt/Amt")
            if amount is None:
                amount, currency = x.amount(tx, "AmtDtls/InstdAmt/Amt")
            if amount is None and len(details) == 1:
                amount, currency = x.amount(entry, "Amt")
            file_id = x.text(tx, "Refs/PmtInfId") or x.text(tx, "Refs/MsgId")
            items.append(ReportItem(x.text(tx, "Refs/EndToEndId"), file_id, amount, currency, code, text, at))
    return items


# -- matching it with the ledger ----------------------------------------------------


def returned_event_id(kind: str, msg_id: str, payout: str) -> str:
    """The `payout.returned` event id of one report item (see the module docstring).

    >>> returned_event_id("pain.002", "BANK-0001", "payout:EUR:42:alice")
    'returned:payout:EUR:42:alice:64b968c92f33'
    """
    digest = hashlib.sha256(f"{kind}\0{msg_id}\0{payout}".encode("utf-8")).hexdigest()[:12]
    return f"{RETURNED_ID_PREFIX}:{payout}:{digest}"


def _reason(report: Report, item: ReportItem) -> str:
    parts = [item.reason_code or "no reason code"]
    if item.reason_code in REASONS:
        parts[0] += f" {REASONS[item.reason_code]}"
    if item.reason_text:
        parts.append(item.reason_text)
    parts.append(f"({report.kind} {report.msg_id})")
    text = " ".join(" ".join(parts).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def reconcile(store: Store, platform: str, data: bytes) -> Reconciliation:
    """Parse a report and match every item with the platform's payouts."""
    report = parse_report(data)
    result = Reconciliation(platform, report.kind, report.msg_id)
    ours = platform_tag(platform)
    items = _expand(store, platform, report.items)
    records = store.state.payouts(platform, sorted({i.end_to_end_id for i in items if i.end_to_end_id}))
    elsewhere = payout_platforms(store, sorted({i.end_to_end_id for i in items
                                                if i.end_to_end_id and i.end_to_end_id not in records}))
    event_ids = {i.end_to_end_id: returned_event_id(report.kind, report.msg_id, i.end_to_end_id)
                 for i in items if i.end_to_end_id in records}
    wanted = sorted(set(event_ids.values()))
    known: dict[str, bytes] = {}
    for i in range(0, len(wanted), KNOWN_IDS_MAX):
        known |= store.known_ids(platform, wanted[i:i + KNOWN_IDS_MAX])
    seen: set[str] = set()
    for item in items:
        payout = item.end_to_end_id
        detail: dict[str, Any] = {"payout": payout, "file_id": item.file_id, "amount": item.amount_minor,
                                  "currency": item.currency, "reason_code": item.reason_code}
        tag = id_platform_tag(item.file_id)
        record = records.get(payout) if payout else None
        if payout is None:
            outcome = "other_platform" if tag not in (None, ours) else "unknown"
        elif payout in seen:
            outcome = "duplicate_item"
        elif (tag is not None and tag != ours) or (record is None and payout in elsewhere):
            outcome = "other_platform"
        elif record is None:
            outcome = "unknown"
        elif item.amount_minor is not None and (item.amount_minor, item.currency) != (record.amount_minor,
                                                                                       record.currency):
            outcome = "amount_different"
            detail["ledger_amount"], detail["ledger_currency"] = record.amount_minor, record.currency
        elif event_ids[payout] in known:
            outcome = "booked_before"
        elif record.returned_seq:
            outcome = "already_returned"
        else:
            outcome = "returned"
        if payout is not None:
            seen.add(payout)
        if outcome in ("returned", "booked_before"):
            event = {"v": 1, "id": event_ids[payout], "platform": platform, "type": "payout.returned",
                     "at": item.at, "data": {"payout": payout, "reason": _reason(report, item)}}
            result.events.append(event)
            detail["event"] = event["id"]
        detail["outcome"] = outcome
        result.items.append(detail)
    return result


def _expand(store: Store, platform: str, items: tuple[ReportItem, ...]) -> list[ReportItem]:
    """Whole-file and whole-block rejections of our own runs as one item per
    payout of the run; the rest as they are."""
    if all(i.end_to_end_id is not None for i in items):
        return list(items)
    runs: dict[str, str] = {}  # MsgId and PmtInfId -> reference
    events = issued_payouts(store, platform)
    for reference in sorted({e["data"]["reference"] for e in events if "reference" in e["data"]}):
        for file_id in run_ids(platform, reference):
            runs[file_id] = reference
    expanded: list[ReportItem] = []
    for item in items:
        reference = runs.get(item.file_id or "")
        if item.end_to_end_id is not None or reference is None:
            expanded.append(item)
            continue
        for e in events:
            d = e["data"]
            if d.get("reference") == reference:
                expanded.append(ReportItem(d["payout"], item.file_id, None, None, item.reason_code,
                                           item.reason_text, item.at))
    return expanded


__all__ = ["OUTCOMES", "Reconciliation", "Report", "ReportError", "ReportItem", "parse_report", "reconcile",
           "returned_event_id"]
