"""Payout files: a run's `payout.issued` events as a bank or PayPal takes them.

A run is the set of `payout.issued` events of one platform whose `reference`
equals the run's (`peerledger payouts plan --reference RUN`, then ingest).
A file is that run *as issued*: every one of its payouts, returned since or
not, in log order, joined with each prosumer's payee details
(`ledger.storage.payees`).  Nothing in it comes from the wall clock, so
writing the same run twice gives the same bytes:

* **pain.001.001.09** (ISO 20022 customer credit transfer initiation, the
  version the EPC's SEPA rulebooks use since 2023), built with `sepaxml` and
  validated against the official XSD it ships before a byte is written.
  One payment information block (`PmtInf`, batch booking) for the run.
  `MsgId` and `PmtInfId` are derived from (platform, reference) (`run_ids`),
  `CreDtTm` is the latest `at` of the run's events (UTC), the requested
  execution date is that day unless `--execution-date` says otherwise, and
  `EndToEndId` is the payout id, which the bank hands back in its reports:
  reconciliation (`ledger.payments.reconcile`) matches on it.  `NbOfTxs` and
  `CtrlSum` are the run's count and total, checked against the ledger's
  after the file is built.
* **PayPal Payouts CSV** (the file PayPal's Payouts Web upload takes): no
  header row; per payout the recipient's e-mail, the amount in major units
  with the currency's ISO 4217 exponent and a dot (`1306.57`), the currency,
  a customer id (the prosumer id when it fits PayPal's 30 characters, else
  empty), a note naming the payout id, and the wallet `PAYPAL`.  One
  currency per file and at most 5 000 rows, as PayPal requires: a larger run
  is refused (split it into runs of at most 5 000 payees).

Anything that would make a wrong or partial file is a `PayoutFileError`
listing every offender (a payee without details, a payee of the wrong kind,
a currency SEPA cannot pay, a payout id SEPA cannot carry), and no file is
written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sepaxml import SepaTransfer

from ledger.contract.money import exponent, major_units
from ledger.storage.payees import Payee

PAIN_001 = "pain.001.001.09"
PAIN_001_NS = f"urn:iso:std:iso:20022:tech:xsd:{PAIN_001}"
SEPA_CURRENCY = "EUR"
SEPA_ID_MAX_CHARS = 35  # Max35Text: MsgId, PmtInfId, EndToEndId
# The EPC's SEPA character set for references (no leading or double `/`).
_SEPA_ID_RE = re.compile(r"(?!/)(?!.*//)[A-Za-z0-9/?:().,'+ -]{1,35}")
# SEPA's largest amount, 999 999 999.99 EUR (EPC rulebook AT-04).
SEPA_AMOUNT_MAX_MINOR = 99_999_999_999
REMITTANCE_MAX_CHARS = 140
PAYPAL_ROWS_MAX = 5000
PAYPAL_CUSTOMER_ID_MAX_CHARS = 30
PAYPAL_NOTE_MAX_CHARS = 400
PAYPAL_WALLET = "PAYPAL"
FORMATS = ("pain.001", "paypal-csv")


class PayoutFileError(ValueError):
    """A run that cannot be written as asked; `problems` names every offender."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Debtor:
    """The account the platform pays from (pain.001's `Dbtr`)."""

    name: str
    iban: str
    bic: str | None = None


def platform_tag(platform: str) -> str:
    """8 hex characters naming the platform inside a file's ids, so a bank
    report about another platform's file is recognised (`reconcile`)."""
    return hashlib.sha256(platform.encode("utf-8")).hexdigest()[:8]


def run_ids(platform: str, reference: str) -> tuple[str, str]:
    """(MsgId, PmtInfId) of the run's pain.001: ``PL`` or ``PI``, the platform's
    tag, 24 hex characters of SHA-256 of (platform, reference): 34 characters,
    the same every time the run is written.

    >>> run_ids("demo", "2026-11")
    ('PL2a97516cfc470a5b710927ab6de94246', 'PI2a97516cfc470a5b710927ab6de94246')
    """
    run = hashlib.sha256(f"peerledger run\0{platform}\0{reference}".encode("utf-8")).hexdigest()[:24]
    tag = platform_tag(platform)
    return f"PL{tag}{run}", f"PI{tag}{run}"


_OUR_ID_RE = re.compile(r"P[LI]([0-9a-f]{8})[0-9a-f]{24}")


def id_platform_tag(file_id: str | None) -> str | None:
    """The platform tag in one of our MsgIds or PmtInfIds, None for any other id."""
    m = _OUR_ID_RE.fullmatch(file_id or "")
    return m.group(1) if m else None


def _utc(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(timezone.utc)


def _payees_problems(events: Sequence[Mapping[str, Any]], payees: Mapping[str, Payee], needs: str) -> list[str]:
    """Every payout whose prosumer lacks details, or has the wrong kind (`needs`: iban or email)."""
    problems = []
    for e in events:
        d = e["data"]
        p = payees.get(d["prosumer"])
        if p is None:
            problems.append(f"payout {d['payout']!r}: prosumer {d['prosumer']!r} has no payee details "
                            f"(peerledger payees set)")
        elif getattr(p, needs) is None:
            problems.append(f"payout {d['payout']!r}: prosumer {d['prosumer']!r} is paid by "
                            f"{'e-mail' if needs == 'iban' else 'IBAN'}, this file needs an "
                            f"{'IBAN' if needs == 'iban' else 'e-mail'}")
    return problems


def pain001(platform: str, reference: str, events: Sequence[Mapping[str, Any]], payees: Mapping[str, Payee],
            debtor: Debtor, execution_date: date | None = None) -> bytes:
    """The run as a pain.001.001.09 file, validated against the official XSD."""
    problems = _payees_problems(events, payees, "iban")
    for e in events:
        d = e["data"]
        if d["currency"] != SEPA_CURRENCY:
            problems.append(f"payout {d['payout']!r} is in {d['currency']}: SEPA pays {SEPA_CURRENCY} only")
        if not _SEPA_ID_RE.fullmatch(d["payout"]):
            problems.append(f"payout id {d['payout']!r} cannot be a SEPA EndToEndId (at most "
                            f"{SEPA_ID_MAX_CHARS} characters of the SEPA set)")
        if d["amount"] > SEPA_AMOUNT_MAX_MINOR:
            problems.append(f"payout {d['payout']!r} of {d['amount']} minor units is over SEPA's largest amount")
    if problems:
        raise PayoutFileError(problems)
    assert events, "a run without payouts has no file"
    msg_id, pmt_inf_id = run_ids(platform, reference)
    created = max(_utc(e["at"]) for e in events)
    config: dict[str, Any] = {"name": debtor.name, "IBAN": debtor.iban, "batch": True, "currency": SEPA_CURRENCY}
    if debtor.bic:
        config["BIC"] = debtor.bic
    transfer = _RunTransfer(config, schema=PAIN_001, clean=True)
    transfer.run_header = (msg_id, pmt_inf_id, created.strftime("%Y-%m-%dT%H:%M:%S"))
    when = execution_date or created.date()
    for e in events:
        d = e["data"]
        p = payees[d["prosumer"]]
        payment: dict[str, Any] = {"name": p.name, "IBAN": p.iban, "amount": d["amount"], "execution_date": when,
                                   "endtoend_id": d["payout"], "description": reference[:REMITTANCE_MAX_CHARS]}
        if p.bic:
            payment["BIC"] = p.bic
        transfer.add_payment(payment)
    xml = transfer.export(validate=True, pretty_print=True)
    _check_totals(xml, events)
    return xml


class _RunTransfer(SepaTransfer):  # type: ignore[misc]
    """`sepaxml.SepaTransfer` with the run's ids and time instead of the random
    ids and wall clock sepaxml draws while it builds the nodes."""

    run_header: tuple[str, str, str]  # MsgId, PmtInfId, CreDtTm

    def _finalize_batch(self) -> None:
        super()._finalize_batch()
        msg_id, pmt_inf_id, created = self.run_header
        header = self._xml.find("CstmrCdtTrfInitn/GrpHdr")
        header.find("MsgId").text = msg_id
        header.find("CreDtTm").text = created
        for node in self._xml.iter("PmtInfId"):
            node.text = pmt_inf_id


def _check_totals(xml: bytes, events: Sequence[Mapping[str, Any]]) -> None:
    """The file's count and control sums are the ledger's (sepaxml adds them up itself)."""
    root = ET.fromstring(xml)  # our own bytes, just built
    ns = {"p": PAIN_001_NS}
    total = major_units(sum(e["data"]["amount"] for e in events), SEPA_CURRENCY)
    for block in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        node = root.find(block, ns)
        assert node is not None
        assert node.findtext("p:NbOfTxs", namespaces=ns) == str(len(events)), "pain.001 count differs from the run"
        assert node.findtext("p:CtrlSum", namespaces=ns) == total, "pain.001 control sum differs from the run"


def paypal_csv(reference: str, events: Sequence[Mapping[str, Any]], payees: Mapping[str, Payee]) -> bytes:
    """The run as a PayPal Payouts CSV file (see the module docstring)."""
    problems = _payees_problems(events, payees, "email")
    currencies = sorted({e["data"]["currency"] for e in events})
    if len(currencies) > 1:
        problems.append(f"the run pays {', '.join(currencies)}: a PayPal file holds one currency")
    for c in currencies:
        if exponent(c) is None:
            problems.append(f"currency {c} has no ISO 4217 minor unit: PayPal cannot be told its amount")
    if len(events) > PAYPAL_ROWS_MAX:
        problems.append(f"the run has {len(events):,} payouts: a PayPal file holds at most {PAYPAL_ROWS_MAX:,}; "
                        f"plan smaller runs")
    if problems:
        raise PayoutFileError(problems)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for e in events:
        d = e["data"]
        customer = d["prosumer"] if len(d["prosumer"]) <= PAYPAL_CUSTOMER_ID_MAX_CHARS else ""
        note = f"payout {d['payout']}: {reference}"[:PAYPAL_NOTE_MAX_CHARS]
        writer.writerow((payees[d["prosumer"]].email, major_units(d["amount"], d["currency"]), d["currency"],
                         customer, note, PAYPAL_WALLET))
    return out.getvalue().encode("utf-8")


__all__ = ["FORMATS", "Debtor", "PayoutFileError", "id_platform_tag", "pain001", "paypal_csv", "platform_tag",
           "run_ids"]
