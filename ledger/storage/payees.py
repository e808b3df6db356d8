"""Payees: the personal details a transfer needs, kept outside the log.

The log is immutable and every auditor gets a copy of it (AUDIT.md §4), so a
prosumer's name, IBAN or e-mail never goes into an event: it lives in this
table, which an operator manages (`peerledger payees set | list | delete`,
the HTTP API's `…/payees`) and which a payout file joins with the run's
`payout.issued` events (`ledger.payments.files`).  Deleting a payee erases
the details entirely (a right to erasure the log could not honour, and need
not: it never held them).

A payee is paid either by SEPA credit transfer (an IBAN, optionally a BIC)
or through a wallet provider such as PayPal (an e-mail), never both: one row
says one way to pay.  IBANs are checked with `schwifty` (the country's length
and format, the ISO 7064 check digits) and stored in their compact form; a
BIC is checked the same way; an e-mail only for its shape (a mailbox is
proved by paying it).  The name is what the bank shows the recipient (SEPA
allows 70 characters).

These details are never logged nor counted in metrics; `payees list` shows
them to the operator who asked (the human table masks the IBAN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, Sequence

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from ledger.contract.schema import ID_PATTERN, PLATFORM_PATTERN
from ledger.storage.store import Store

# Bump when the statements change: existing databases then run them once more.
PAYEES_SCHEMA_VERSION = 1
NAME_MAX_CHARS = 70  # SEPA's Nm (Max70Text)
EMAIL_MAX_CHARS = 254  # RFC 5321's path limit less the angle brackets
# One @, something before it (starting with a letter or digit: no `=`
# or `+` that a spreadsheet opening a payout file would run as a formula), a dotted domain after it, no spaces: a shape
# check only (RFC 5322's full grammar accepts addresses no provider takes).
_EMAIL_RE = re.compile(r"[A-Za-z0-9][^@\s]*@[^@\s.]+(\.[^@\s.]+)+")
_ID_RE = re.compile(ID_PATTERN[1:-1])
_PLATFORM_RE = re.compile(PLATFORM_PATTERN[1:-1])


class PayeeError(ValueError):
    """Details that cannot be stored; the message names the field."""


@dataclass(frozen=True, slots=True)
class Payee:
    """How to pay one prosumer of one platform: an IBAN (and maybe a BIC) or an e-mail."""

    platform: str
    prosumer: str
    name: str
    iban: str | None = None  # compact: DE89370400440532013000
    bic: str | None = None
    email: str | None = None

    @property
    def method(self) -> str:
        return "sepa" if self.iban else "email"

    def as_json(self) -> dict[str, Any]:
        """Every field: for tools (`payees list --json`, the HTTP API)."""
        return {"platform": self.platform, "prosumer": self.prosumer, "name": self.name, "method": self.method,
                "iban": self.iban, "bic": self.bic, "email": self.email}


def masked_iban(iban: str) -> str:
    """An IBAN as a human table shows it: country and check digits, the last
    four characters, stars between.

    >>> masked_iban("DE89370400440532013000")
    'DE89 **** **** 3000'
    """
    return f"{iban[:4]} **** **** {iban[-4:]}"


def payee(platform: str, prosumer: str, name: str, iban: str | None = None, bic: str | None = None,
          email: str | None = None) -> Payee:
    """A validated payee; PayeeError naming the first bad field."""
    if not _PLATFORM_RE.fullmatch(platform):
        raise PayeeError(f"platform: not a platform id: {platform!r}")
    if not _ID_RE.fullmatch(prosumer) or prosumer.startswith("@"):
        raise PayeeError(f"prosumer: not a prosumer id: {prosumer!r}")
    name = " ".join(name.split())
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise PayeeError(f"name: 1 to {NAME_MAX_CHARS} characters, got {len(name)}")
    if (iban is None) == (email is None):
        raise PayeeError("give an IBAN (SEPA transfer) or an e-mail (wallet provider), exactly one")
    if bic is not None and iban is None:
        raise PayeeError("bic: only with an IBAN")
    if iban is not None:
        iban = checked_iban(iban)
    if bic is not None:
        bic = checked_bic(bic)
    if email is not None and (len(email) > EMAIL_MAX_CHARS or not _EMAIL_RE.fullmatch(email)):
        raise PayeeError("email: not an e-mail address")
    return Payee(platform, prosumer, name, iban, bic, email)


def checked_iban(text: str, field: str = "iban") -> str:
    """`text` as a compact IBAN (spaces dropped, upper case); PayeeError when
    its country's length or format or its check digits are wrong."""
    try:
        return IBAN(text).compact
    except SchwiftyException as e:
        raise PayeeError(f"{field}: not a valid IBAN ({e})") from None


def checked_bic(text: str, field: str = "bic") -> str:
    """`text` as a BIC (8 or 11 characters, a known country); PayeeError otherwise."""
    try:
        return str(BIC(text))
    except SchwiftyException as e:
        raise PayeeError(f"{field}: not a valid BIC ({e})") from None


def create_payees_table(store: Store) -> None:
    store.ensure_schema("payees", PAYEES_SCHEMA_VERSION, [
        "CREATE TABLE IF NOT EXISTS peerledger_payees (platform TEXT NOT NULL, prosumer TEXT NOT NULL, "
        "name TEXT NOT NULL, iban TEXT, bic TEXT, email TEXT, PRIMARY KEY (platform, prosumer))"])


def set_payee(store: Store, p: Payee) -> None:
    """Store `p`, replacing the prosumer's earlier details (see `set_payees`)."""
    set_payees(store, [p])


def set_payees(store: Store, payees: Sequence[Payee]) -> None:
    """Store every payee of `payees` in one transaction, replacing earlier
    details.  Each prosumer must be registered on its platform (PayeeError
    otherwise, and nothing is stored): details for nobody would wait for a
    payout that never comes."""
    create_payees_table(store)
    for platform in sorted({p.platform for p in payees}):
        named = sorted({p.prosumer for p in payees if p.platform == platform})
        known = set(store.state.prosumers(platform, named))
        missing = [x for x in named if x not in known]
        if missing:
            raise PayeeError(f"prosumer {missing[0]!r} is not registered on platform {platform!r}")
    with store.transaction(commit=True) as c:
        for p in payees:
            c.execute(store.dialect.sql(
                "INSERT INTO peerledger_payees (platform, prosumer, name, iban, bic, email) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, prosumer) DO UPDATE SET name = excluded.name, "
                "iban = excluded.iban, bic = excluded.bic, email = excluded.email"),
                (p.platform, p.prosumer, p.name, p.iban, p.bic, p.email))


_COLUMNS = "platform, prosumer, name, iban, bic, email"


def list_payees(store: Store, platform: str) -> list[Payee]:
    """The platform's payees in prosumer id order."""
    create_payees_table(store)
    rows = store.query(f"SELECT {_COLUMNS} FROM peerledger_payees WHERE platform = ? ORDER BY prosumer",
                       (platform,))
    return [Payee(*row) for row in rows]


def payees_of(store: Store, platform: str, prosumers: Collection[str]) -> dict[str, Payee]:
    """prosumer -> payee for those of `prosumers` that have details."""
    wanted = set(prosumers)
    return {p.prosumer: p for p in list_payees(store, platform) if p.prosumer in wanted}


def delete_payee(store: Store, platform: str, prosumer: str) -> bool:
    """Erase a prosumer's details; False when there were none."""
    create_payees_table(store)
    with store.transaction(commit=True) as c:
        c.execute(store.dialect.sql(
            "DELETE FROM peerledger_payees WHERE platform = ? AND prosumer = ? RETURNING prosumer"),
            (platform, prosumer))
        return bool(c.fetchall())


__all__ = ["Payee", "PayeeError", "checked_bic", "checked_iban", "create_payees_table", "delete_payee", "list_payees", "masked_iban", "payee",
           "payees_of", "set_payee", "set_payees"]
