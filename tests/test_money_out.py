"""Money out (issue 20): payees, payout files, reconciliation, money as people read it.

One test per rule, with worked numbers.  The story: alice and bob share a
contribution 3:1 and it sells for 2 000.00 EUR (200 000 cents): alice earns
1 500.00, bob 500.00.  Run "2026-11" pays both (payout:EUR:4:alice,
payout:EUR:4:bob).  Bob's bank bounces his transfer (AC04, account closed):
reconciled and ingested, bob's balance is 500.00 EUR again, alice's 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from sepaxml import validation as sepaxml_validation

from ledger.contract.money import format_money, major_units
from ledger.ingest.files import ingest_paths
from ledger.payments.files import Debtor, PayoutFileError, pain001, paypal_csv, run_ids
from ledger.payments.reconcile import ReportError, parse_report, reconcile
from ledger.storage.payees import PayeeError, delete_payee, list_payees, payee, payees_of, set_payee
from ledger.storage.queries import issued_payouts
from ledger.storage.store import Store
from ledger.storage.views import read_balances

P = "p"
RUN = "2026-11"
ALICE_IBAN = "DE89370400440532013000"
BOB_IBAN = "FR1420041010050500013M02606"
DEBTOR = Debtor("Platform GmbH", "DE02120300000000202051", "BYLADEM1001")
XSD = Path(sepaxml_validation.__file__).parent / "schemas" / "pain.001.001.09.xsd"
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PEERLEDGER_DB"}


def ev(kind: str, eid: str, data: dict[str, Any], platform: str = P, at: str = "2026-11-02T00:00:00Z") -> dict:
    return {"v": 1, "id": eid, "platform": platform, "type": kind, "at": at, "data": data}


def story(platform: str = P, currency: str = "EUR") -> list[dict[str, Any]]:
    return [
        ev("prosumer.registered", "r1", {"prosumer": "alice"}, platform),
        ev("prosumer.registered", "r2", {"prosumer": "bob"}, platform),
        ev("contribution.recorded", "c1", {"work": "c1", "authors": {"alice": 3, "bob": 1}}, platform),
        ev("value.realized", "s1", {"value": "v1", "work": "c1", "amount": 200000, "currency": currency}, platform),
        *(ev("payout.issued", f"payout:{currency}:4:{who}", {"payout": f"payout:{currency}:4:{who}", "prosumer": who,
                                                            "amount": amount, "currency": currency,
                                                            "reference": RUN}, platform)
          for who, amount in (("alice", 150000), ("bob", 50000))),
    ]


def ingest(store: Store, tmp_path: Path, events: list[dict[str, Any]], name: str = "in.jsonl") -> dict[str, Any]:
    path = tmp_path / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return ingest_paths(store, [str(path)], show_progress=False)


def balance(store: Store, who: str, platform: str = P) -> tuple[int, int]:
    row = next(r for r in read_balances(store, platform, None) if r["account"] == who)
    return row["paid"], row["balance"]


@pytest.fixture
def ledger(db_url: str, tmp_path: Path):
    """The story on both backends, alice and bob with IBANs."""
    with Store(db_url) as store:
        assert ingest(store, tmp_path, story())["accepted"] == 6
        set_payee(store, payee(P, "alice", "Alice Müller", ALICE_IBAN))
        set_payee(store, payee(P, "bob", "Bob", BOB_IBAN, "BNPAFRPPXXX"))
        yield store


def run_file(store: Store, platform: str = P, **kw: Any) -> bytes:
    events = issued_payouts(store, platform, RUN)
    return pain001(platform, RUN, events, payees_of(store, platform, {e["data"]["prosumer"] for e in events}),
                   DEBTOR, **kw)


# -- money as people read it ------------------------------------------------------------


def test_money_is_shown_in_major_units_with_the_iso_4217_exponent():
    assert format_money(130657, "EUR") == "1,306.57 EUR"
    assert format_money(10641, "JPY") == "10,641 JPY"
    assert format_money(1234, "BHD") == "1.234 BHD"
    assert format_money(-50000, "EUR") == "-500.00 EUR"


def test_iso_4217_not_cldr_decides_the_exponent():
    assert format_money(1000, "IQD") == "1.000 IQD"  # CLDR would show 0 digits: 1,000 IQD, 1000 times too much


def test_an_unknown_currency_stays_in_minor_units():
    assert format_money(130657, "XYZ") == "130,657 minor units of XYZ"
    with pytest.raises(ValueError, match="XYZ"):
        major_units(130657, "XYZ")


def test_money_formatting_is_exact_for_amounts_no_float_can_hold():
    assert format_money(2**63 - 1, "EUR") == "92,233,720,368,547,758.07 EUR"


# -- payees -------------------------------------------------------------------------


def test_a_payee_is_stored_outside_the_log_and_erased_by_delete(ledger: Store):
    assert [(p.prosumer, p.iban, p.bic) for p in list_payees(ledger, P)] == [
        ("alice", ALICE_IBAN, None), ("bob", BOB_IBAN, "BNPAFRPPXXX")]
    assert delete_payee(ledger, P, "bob") and not delete_payee(ledger, P, "bob")
    assert [p.prosumer for p in list_payees(ledger, P)] == ["alice"]
    log = b"".join(e.state for e in ledger.read_log(P))
    assert ALICE_IBAN.encode() not in log and b"M\xc3\xbcller" not in log


def test_setting_a_payee_again_replaces_the_details(ledger: Store):
    set_payee(ledger, payee(P, "bob", "Bob B.", email="bob@example.com"))
    [bob] = [p for p in list_payees(ledger, P) if p.prosumer == "bob"]
    assert (bob.name, bob.iban, bob.bic, bob.email) == ("Bob B.", None, None, "bob@example.com")


def test_an_iban_is_stored_compact_and_checked():
    assert payee(P, "alice", "A", "de89 3704 0044 0532 0130 00").iban == ALICE_IBAN


@pytest.mark.parametrize("bad, message", [
    ("DE89370400440532013001", "checksum"),  # one digit off: ISO 7064 check digits fail
    ("DE8937040044053201300", "length"),  # a German IBAN has 22 characters
    ("XX89370400440532013000", "country"),
])
def test_a_bad_iban_is_refused(bad: str, message: str):
    with pytest.raises(PayeeError, match=f"(?i)iban.*{message}"):
        payee(P, "alice", "A", bad)


def test_a_bad_bic_is_refused():
    with pytest.raises(PayeeError, match="bic"):
        payee(P, "alice", "A", ALICE_IBAN, "DEUT")


@pytest.mark.parametrize("bad", ["alice", "alice@", "@example.com", "a b@example.com", "=cmd@example.com"])
def test_an_email_is_sanity_checked(bad: str):
    with pytest.raises(PayeeError, match="email"):
        payee(P, "alice", "A", email=bad)


def test_a_payee_has_an_iban_or_an_email_never_both():
    with pytest.raises(PayeeError, match="exactly one"):
        payee(P, "alice", "A", ALICE_IBAN, email="a@example.com")


def test_a_payee_must_be_a_registered_prosumer(ledger: Store):
    with pytest.raises(PayeeError, match="not registered"):
        set_payee(ledger, payee(P, "carol", "Carol", ALICE_IBAN))


# -- pain.001 -----------------------------------------------------------------------


def test_a_pain001_file_is_valid_against_the_official_xsd(ledger: Store):
    xmlschema.XMLSchema(str(XSD)).validate(run_file(ledger).decode())


def test_a_pain001_file_has_the_ledgers_count_and_control_sum_and_payout_ids(ledger: Store):
    doc = xmlschema.XMLSchema(str(XSD)).to_dict(run_file(ledger).decode())
    header, [block] = doc["CstmrCdtTrfInitn"]["GrpHdr"], doc["CstmrCdtTrfInitn"]["PmtInf"]
    assert (header["NbOfTxs"], str(header["CtrlSum"])) == ("2", "2000.00")
    assert (header["MsgId"], block["PmtInfId"]) == run_ids(P, RUN)
    assert header["CreDtTm"] == "2026-11-02T00:00:00"  # the run's events' `at`, never the wall clock
    txs = [(t["PmtId"]["EndToEndId"], str(t["Amt"]["InstdAmt"]["$"]), t["CdtrAcct"]["Id"]["IBAN"])
           for t in block["CdtTrfTxInf"]]
    assert txs == [("payout:EUR:4:alice", "1500.00", ALICE_IBAN), ("payout:EUR:4:bob", "500.00", BOB_IBAN)]
    assert block["ReqdExctnDt"]["Dt"] == "2026-11-02"


def test_writing_a_run_twice_gives_the_same_bytes(ledger: Store):
    assert run_file(ledger) == run_file(ledger)


def test_the_execution_date_can_be_chosen(ledger: Store):
    from datetime import date

    assert b"<Dt>2026-12-01</Dt>" in run_file(ledger, execution_date=date(2026, 12, 1))


def test_a_payee_without_details_or_paid_by_email_stops_the_sepa_file_naming_each(ledger: Store):
    delete_payee(ledger, P, "alice")
    set_payee(ledger, payee(P, "bob", "Bob", email="bob@example.com"))
    with pytest.raises(PayoutFileError) as e:
        run_file(ledger)
    assert e.value.problems == [
        "payout 'payout:EUR:4:alice': prosumer 'alice' has no payee details (peerledger payees set)",
        "payout 'payout:EUR:4:bob': prosumer 'bob' is paid by e-mail, this file needs an IBAN"]


def test_sepa_pays_euro_only(db_url: str, tmp_path: Path):
    with Store(db_url) as store:
        ingest(store, tmp_path, story(currency="USD"))
        set_payee(store, payee(P, "alice", "Alice", ALICE_IBAN))
        set_payee(store, payee(P, "bob", "Bob", BOB_IBAN))
        with pytest.raises(PayoutFileError, match="payout:USD:4:alice' is in USD: SEPA pays EUR only.*bob"):
            run_file(store)


def test_a_payout_id_longer_than_an_end_to_end_id_is_an_error_naming_it():
    long_id = "payout:EUR:4:" + "a" * 30
    events = [ev("payout.issued", long_id, {"payout": long_id, "prosumer": "alice", "amount": 1, "currency": "EUR"})]
    with pytest.raises(PayoutFileError, match=f"payout id '{long_id}' cannot be a SEPA EndToEndId"):
        pain001(P, RUN, events, {"alice": payee(P, "alice", "A", ALICE_IBAN)}, DEBTOR)


# -- PayPal -------------------------------------------------------------------------


def test_a_paypal_file_has_email_amount_in_major_units_currency_id_note_wallet(ledger: Store):
    set_payee(ledger, payee(P, "alice", "Alice", email="alice@example.com"))
    set_payee(ledger, payee(P, "bob", "Bob", email="bob@example.com"))
    events = issued_payouts(ledger, P, RUN)
    data = paypal_csv(RUN, events, payees_of(ledger, P, {"alice", "bob"}))
    assert data == (b"alice@example.com,1500.00,EUR,alice,payout payout:EUR:4:alice: 2026-11,PAYPAL\r\n"
                    b"bob@example.com,500.00,EUR,bob,payout payout:EUR:4:bob: 2026-11,PAYPAL\r\n")


def test_a_paypal_file_needs_emails_not_ibans(ledger: Store):
    with pytest.raises(PayoutFileError, match="alice' is paid by IBAN, this file needs an e-mail.*bob"):
        paypal_csv(RUN, issued_payouts(ledger, P, RUN), payees_of(ledger, P, {"alice", "bob"}))


def test_a_paypal_file_holds_one_currency_and_at_most_5000_rows():
    who = {"a": payee(P, "a", "A", email="a@example.com")}
    rows = [{"data": {"payout": f"x{i}", "prosumer": "a", "amount": 1, "currency": "EUR"}} for i in range(5001)]
    with pytest.raises(PayoutFileError, match="5,001 payouts: a PayPal file holds at most 5,000"):
        paypal_csv(RUN, rows, who)
    rows[0]["data"]["currency"] = "JPY"
    with pytest.raises(PayoutFileError, match="EUR, JPY: a PayPal file holds one currency"):
        paypal_csv(RUN, rows[:2], who)


# -- reports as a bank sends them ---------------------------------------------------------


def pain002(items: list[tuple[str, str]], msg_id: str = "BANK-STS-0001", version: str = "10",
            orgnl_msg_id: str | None = None, group_status: str = "PART") -> bytes:
    orgnl = orgnl_msg_id or run_ids(P, RUN)[0]
    txs = "".join(
        f"<TxInfAndSts><StsId>S{i}</StsId><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>RJCT</TxSts>"
        f"<StsRsnInf><Rsn><Cd>{code}</Cd></Rsn><AddtlInf>Konto erloschen</AddtlInf></StsRsnInf></TxInfAndSts>"
        for i, (e2e, code) in enumerate(items))
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.{version}"><CstmrPmtStsRpt>'
            f"<GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-11-04T09:30:00</CreDtTm></GrpHdr>"
            f"<OrgnlGrpInfAndSts><OrgnlMsgId>{orgnl}</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>"
            f"<GrpSts>{group_status}</GrpSts></OrgnlGrpInfAndSts>"
            f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{run_ids(P, RUN)[1]}</OrgnlPmtInfId>{txs}</OrgnlPmtInfAndSts>"
            f"</CstmrPmtStsRpt></Document>").encode()


def camt054(returns: list[tuple[str, str, str]], msg_id: str = "BANK-NTF-0001", version: str = "08") -> bytes:
    entries = "".join(
        f'<Ntry><NtryRef>R{i}</NtryRef><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
        f"<Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-11-05</Dt></BookgDt><ValDt><Dt>2026-11-05</Dt></ValDt>"
        f"<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd><SubFmlyCd>RRTN</SubFmlyCd></Fmly></Domn></BkTxCd>"
        f"<NtryDtls><TxDtls><Refs><PmtInfId>{run_ids(P, RUN)[1]}</PmtInfId><EndToEndId>{e2e}</EndToEndId></Refs>"
        f'<Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
        f"<RtrInf><Rsn><Cd>{code}</Cd></Rsn><AddtlInf>RETURN</AddtlInf></RtrInf></TxDtls></NtryDtls></Ntry>"
        for i, (e2e, amount, code) in enumerate(returns))
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.{version}"><BkToCstmrDbtCdtNtfctn>'
            f"<GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-11-05T18:00:00+01:00</CreDtTm></GrpHdr>"
            f"<Ntfctn><Id>N1</Id><CreDtTm>2026-11-05T18:00:00+01:00</CreDtTm>"
            f"<Acct><Id><IBAN>{DEBTOR.iban}</IBAN></Id></Acct>{entries}</Ntfctn>"
            f"</BkToCstmrDbtCdtNtfctn></Document>").encode()


def book(store: Store, tmp_path: Path, report: bytes, name: str = "ret.jsonl") -> dict[str, Any]:
    """Reconcile and ingest through the real ingest path."""
    return ingest(store, tmp_path, reconcile(store, P, report).events, name)


# -- reconciliation ---------------------------------------------------------------------


def test_a_pain002_rejection_books_the_payout_back(ledger: Store, tmp_path: Path):
    assert balance(ledger, "bob") == (50000, 0)
    result = reconcile(ledger, P, pain002([("payout:EUR:4:bob", "AC04")]))
    [event] = result.events
    assert event["type"] == "payout.returned" and event["data"]["payout"] == "payout:EUR:4:bob"
    assert event["at"] == "2026-11-04T09:30:00Z"  # the report's time; no offset given: UTC
    assert event["data"]["reason"] == "AC04 closed account number Konto erloschen (pain.002 BANK-STS-0001)"
    assert ingest(ledger, tmp_path, result.events)["accepted"] == 1
    assert balance(ledger, "bob") == (0, 50000) and balance(ledger, "alice") == (150000, 0)


def test_a_camt054_return_books_the_payout_back(ledger: Store, tmp_path: Path):
    result = reconcile(ledger, P, camt054([("payout:EUR:4:alice", "1500.00", "AC01")]))
    assert result.counts()["returned"] == 1 and result.events[0]["at"] == "2026-11-05T00:00:00Z"  # booking date
    assert book(ledger, tmp_path, camt054([("payout:EUR:4:alice", "1500.00", "AC01")]))["accepted"] == 1
    assert balance(ledger, "alice") == (0, 150000)


@pytest.mark.parametrize("version", ["03", "10", "12"])
def test_common_pain002_versions_are_read(version: str):
    report = parse_report(pain002([("payout:EUR:4:bob", "AC04")], version=version))
    assert [(i.end_to_end_id, i.reason_code) for i in report.items] == [("payout:EUR:4:bob", "AC04")]


@pytest.mark.parametrize("version", ["02", "08", "10"])
def test_common_camt054_versions_are_read(version: str):
    report = parse_report(camt054([("payout:EUR:4:bob", "500.00", "AC04")], version=version))
    assert [(i.end_to_end_id, i.amount_minor) for i in report.items] == [("payout:EUR:4:bob", 50000)]


def test_reconciling_a_report_twice_gives_the_same_events_and_returns_once(ledger: Store, tmp_path: Path):
    report = pain002([("payout:EUR:4:bob", "AC04")])
    first = reconcile(ledger, P, report).events
    assert book(ledger, tmp_path, report, "1.jsonl")["accepted"] == 1
    again = reconcile(ledger, P, report)
    assert again.events == first and again.counts()["booked_before"] == 1
    summary = book(ledger, tmp_path, report, "2.jsonl")
    assert (summary["accepted"], summary["duplicate"]) == (0, 1)
    assert balance(ledger, "bob") == (0, 50000)


def test_a_payout_returned_by_another_report_is_already_returned(ledger: Store, tmp_path: Path):
    book(ledger, tmp_path, pain002([("payout:EUR:4:bob", "AC04")]))
    later = reconcile(ledger, P, camt054([("payout:EUR:4:bob", "500.00", "AC04")]))
    assert later.events == [] and later.counts()["already_returned"] == 1


def test_a_payout_unknown_to_the_ledger_is_reported_not_booked(ledger: Store):
    result = reconcile(ledger, P, pain002([("payout:EUR:4:nobody", "AC01")]))
    assert result.events == [] and result.counts()["unknown"] == 1


def test_a_report_amount_different_from_the_payout_is_reported_not_booked(ledger: Store):
    result = reconcile(ledger, P, camt054([("payout:EUR:4:bob", "499.00", "AC04")]))
    assert result.events == [] and result.counts()["amount_different"] == 1
    assert (result.items[0]["amount"], result.items[0]["ledger_amount"]) == (49900, 50000)


def test_a_duplicate_report_item_books_once(ledger: Store):
    result = reconcile(ledger, P, pain002([("payout:EUR:4:bob", "AC04"), ("payout:EUR:4:bob", "AC04")]))
    assert len(result.events) == 1 and result.counts()["duplicate_item"] == 1


def test_a_report_about_another_platforms_file_is_refused(ledger: Store, tmp_path: Path):
    ingest(ledger, tmp_path, story("q"), "q.jsonl")  # q has payouts with the very same ids
    report = pain002([("payout:EUR:4:bob", "AC04")]).replace(run_ids(P, RUN)[1].encode(), run_ids("q", RUN)[1].encode())
    result = reconcile(ledger, P, report)
    assert result.events == [] and result.counts()["other_platform"] == 1


def test_a_payout_only_another_platform_issued_is_other_platform(ledger: Store, tmp_path: Path):
    q = [*story("q")[:4], ev("payout.issued", "qpay", {"payout": "qpay", "prosumer": "bob", "amount": 10,
                                                       "currency": "EUR"}, "q")]
    ingest(ledger, tmp_path, q, "q.jsonl")
    result = reconcile(ledger, P, pain002([("qpay", "AC04")], orgnl_msg_id="SOMEONE-ELSE"))
    assert result.events == [] and result.counts()["other_platform"] == 1


def test_a_group_level_rejection_returns_every_payout_of_the_run(ledger: Store, tmp_path: Path):
    result = reconcile(ledger, P, pain002([], group_status="RJCT"))
    assert sorted(e["data"]["payout"] for e in result.events) == ["payout:EUR:4:alice", "payout:EUR:4:bob"]
    assert book(ledger, tmp_path, pain002([], group_status="RJCT"))["accepted"] == 2
    assert balance(ledger, "alice") == (0, 150000) and balance(ledger, "bob") == (0, 50000)


def test_accepted_items_are_not_returns(ledger: Store):
    report = pain002([("payout:EUR:4:bob", "AC04")]).replace(b"<TxSts>RJCT", b"<TxSts>ACSC")
    assert reconcile(ledger, P, report).items == []


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10">&lol3;</Document>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"><CstmrPmtStsRpt><GrpHdr><MsgId>&xxe;</MsgId>
</GrpHdr></CstmrPmtStsRpt></Document>"""


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_hostile_xml_is_refused(hostile: bytes):
    with pytest.raises(ReportError, match="DTD or entities"):
        parse_report(hostile)


def test_a_report_too_large_or_of_another_kind_is_refused():
    with pytest.raises(ReportError, match="over"):
        parse_report(b" " * (32 * 1024 * 1024 + 1))
    with pytest.raises(ReportError, match="not a pain.002 or camt.054"):
        parse_report(b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>')
    with pytest.raises(ReportError, match="not well-formed"):
        parse_report(b"<Document")


# -- the command line and the HTTP API -------------------------------------------------------


def cli(db: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args, "--db", db], capture_output=True, text=True,
                          input=stdin, env=BASE_ENV, timeout=120)


def test_the_operator_runs_plan_file_reconcile_ingest_from_the_command_line(sqlite_url: str, tmp_path: Path):
    events = tmp_path / "story.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in story()[:4]))
    assert cli(sqlite_url, "ingest", str(events)).returncode == 0
    plan = cli(sqlite_url, "payouts", "plan", "--platform", P, "--currency", "EUR", "--min-balance", "100",
               "--reference", RUN)
    assert "2,000.00 EUR in all" in plan.stderr
    assert cli(sqlite_url, "ingest", "-", stdin=plan.stdout).returncode == 0
    assert cli(sqlite_url, "payees", "set", "--platform", P, "--prosumer", "alice", "--name", "Alice",
               "--iban", "DE89370400440532013001").returncode == 2  # a bad check digit
    for who, iban in (("alice", ALICE_IBAN), ("bob", BOB_IBAN)):
        assert cli(sqlite_url, "payees", "set", "--platform", P, "--prosumer", who, "--name", who.title(),
                   "--iban", iban).returncode == 0
    listed = cli(sqlite_url, "payees", "list", "--platform", P)
    assert "DE89 **** **** 3000" in listed.stdout and ALICE_IBAN not in listed.stdout
    assert json.loads(cli(sqlite_url, "payees", "list", "--platform", P, "--json").stdout)[0]["iban"] == ALICE_IBAN
    out = tmp_path / "run.xml"
    args = ("payouts", "file", "--platform", P, "--reference", RUN, "--format", "pain.001", "--debtor-name",
            DEBTOR.name, "--debtor-iban", DEBTOR.iban, "--output", str(out))
    r = cli(sqlite_url, *args)
    assert r.returncode == 0, r.stderr
    xmlschema.XMLSchema(str(XSD)).validate(str(out))
    first = out.read_bytes()
    assert cli(sqlite_url, *args).returncode == 0 and out.read_bytes() == first
    report = tmp_path / "pain002.xml"
    report.write_bytes(pain002([("payout:EUR:4:bob", "AC04")]))
    rec = cli(sqlite_url, "payouts", "reconcile", "--platform", P, str(report), "--json")
    assert rec.returncode == 0 and json.loads(rec.stderr)["returned"] == 1
    assert json.loads(cli(sqlite_url, "ingest", "-", "--json", stdin=rec.stdout).stdout)["accepted"] == 1
    assert json.loads(cli(sqlite_url, "ingest", "-", "--json", stdin=rec.stdout).stdout)["duplicate"] == 1
    balances = cli(sqlite_url, "balances", "--platform", P)
    assert "500.00 EUR" in balances.stdout
    bob = [r for r in json.loads(cli(sqlite_url, "balances", "--platform", P, "--json").stdout)
           if r["account"] == "bob"]
    assert bob == [{"account": "bob", "currency": "EUR", "earned": 50000, "reversed": 0, "paid": 0,
                    "balance": 50000}]  # JSON stays in minor units


def test_a_file_that_cannot_be_written_leaves_no_file_and_exits_non_zero(sqlite_url: str, tmp_path: Path):
    events = tmp_path / "story.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in story()))
    assert cli(sqlite_url, "ingest", str(events)).returncode == 0
    out = tmp_path / "run.csv"
    r = cli(sqlite_url, "payouts", "file", "--platform", P, "--reference", RUN, "--format", "paypal-csv",
            "--output", str(out))
    assert r.returncode == 1 and "alice" in r.stderr and "bob" in r.stderr
    assert not out.exists() and not Path(f"{out}.partial").exists()
    r = cli(sqlite_url, "payouts", "file", "--platform", P, "--reference", "no-such-run", "--format", "paypal-csv")
    assert r.returncode == 4


def test_the_http_api_manages_payees_for_operators(tmp_path: Path):
    from http_helpers import make_token, running_server

    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Store(db) as store:
        ingest(store, tmp_path, story())
    operator, ingester = make_token(db, "operator", P), make_token(db, "ingest", P)
    with running_server(db, tmp_path) as server, server.client(operator) as c:
        base = f"/v1/platforms/{P}/payees"
        r = c.put(f"{base}/alice", json={"name": "Alice", "iban": "DE89 3704 0044 0532 0130 00"})
        assert r.status_code == 200 and r.json()["iban"] == ALICE_IBAN
        assert c.put(f"{base}/bob", json={"name": "Bob", "iban": "DE89370400440532013001"}).status_code == 400
        assert [p["prosumer"] for p in c.get(base).json()] == ["alice"]
        with server.client(ingester) as other:
            assert other.get(base).status_code == 403
        assert c.delete(f"{base}/alice").status_code == 204
        assert c.delete(f"{base}/alice").status_code == 404
        assert c.get(base).json() == []
        assert ALICE_IBAN not in server.log()  # never in the logs
        assert c.get("/metrics").status_code == 200
        assert "DE89" not in c.get("/metrics").text and "Alice" not in c.get("/metrics").text  # nor in the metrics
