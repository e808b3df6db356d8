"""The demo's bank: payee details for the demo's prosumers, and the pain.002
status report a bank sends when it rejects some transfers of a pain.001 file.

Made up, but in the shape real banks send (ISO 20022 pain.002.001.10,
transaction-level rejections with reason codes), so that `peerledger demo`
shows a run paid, bounced and booked back through the real reconciliation.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from schwifty import IBAN

from ledger.payments.files import run_ids
from ledger.storage.payees import Payee, payee

DEMO_BANK_CODE = "37040044"  # a German bank code: its IBANs have valid check digits


def demo_payee(platform: str, prosumer: str, n: int) -> Payee:
    """A payee with a generated (valid) German IBAN, the n-th account at the demo bank."""
    iban = str(IBAN.generate("DE", bank_code=DEMO_BANK_CODE, account_code=str(1_000_000 + n)))
    return payee(platform, prosumer, f"Prosumer {prosumer}", iban)


def rejection_report(platform: str, reference: str, rejected: Sequence[tuple[str, str]], msg_id: str,
                     created: str) -> bytes:
    """A pain.002.001.10 rejecting the transfers `rejected` ((EndToEndId, reason code) pairs)
    of the run's pain.001 file."""
    file_msg_id, pmt_inf_id = run_ids(platform, reference)
    txs = "".join(
        f"<TxInfAndSts><OrgnlEndToEndId>{escape(e2e)}</OrgnlEndToEndId><TxSts>RJCT</TxSts>"
        f"<StsRsnInf><Rsn><Cd>{code}</Cd></Rsn></StsRsnInf></TxInfAndSts>" for e2e, code in rejected)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"><CstmrPmtStsRpt>'
            f"<GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>{created}</CreDtTm></GrpHdr>"
            f"<OrgnlGrpInfAndSts><OrgnlMsgId>{file_msg_id}</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>"
            f"<GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>"
            f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{pmt_inf_id}</OrgnlPmtInfId>{txs}</OrgnlPmtInfAndSts>"
            "</CstmrPmtStsRpt></Document>\n").encode("utf-8")
