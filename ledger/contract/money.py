"""Money as people read it: minor units shown in the currency's major unit.

The ledger counts integers of minor units (EVENTS.md §1: cents for USD, yen
for JPY); every JSON document, CSV for tools and the spec's documents stay in
minor units.  Only faces a person reads (the CLI's tables, the dashboard,
reports on stderr) show amounts through `format_money`, so that 130657 EUR
cents read as ``1,306.57 EUR``.

The exponent comes from the ISO 4217 table itself (the maintained `iso4217`
package ships the list published by the maintenance agency), not from CLDR
(`babel`): CLDR's digits are display conventions that differ from ISO 4217
for some currencies (IQD has 3 minor digits in ISO 4217 and 0 in CLDR), and
the ledger's minor units are ISO 4217's.  A code that is not in the table,
or has no minor unit (``N.A.``: gold, test codes), cannot be converted and is
shown as it is counted: ``130657 minor units of XYZ``.

Only integer arithmetic is used (`divmod` by a power of ten): never floats.

>>> format_money(130657, "EUR"), format_money(10641, "JPY"), format_money(1234, "BHD")
('1,306.57 EUR', '10,641 JPY', '1.234 BHD')
>>> format_money(-5, "USD"), format_money(130657, "XYZ")
('-0.05 USD', '130,657 minor units of XYZ')
>>> major_units(130657, "EUR"), major_units(7, "KWD")
('1306.57', '0.007')
"""

from __future__ import annotations

from functools import lru_cache

import iso4217


@lru_cache(maxsize=None)
def exponent(currency: str) -> int | None:
    """ISO 4217 minor unit digits of `currency` (2 for EUR, 0 for JPY, 3 for
    BHD), or None for a code the table lacks or gives no minor unit."""
    try:
        return iso4217.Currency(currency).exponent
    except ValueError:
        return None


def _split(amount_minor: int, digits: int) -> tuple[str, int, str]:
    """(sign, whole major units, fraction digits) of an integer amount."""
    assert type(amount_minor) is int, "money is integers of minor units"
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**digits)
    return sign, whole, str(fraction).zfill(digits) if digits else ""


def major_units(amount_minor: int, currency: str) -> str:
    """The amount in major units as a plain decimal (``1306.57``), the form
    payment files want; ValueError for a currency without an ISO 4217 exponent."""
    digits = exponent(currency)
    if digits is None:
        raise ValueError(f"currency {currency!r} has no ISO 4217 minor unit: cannot write it in major units")
    sign, whole, fraction = _split(amount_minor, digits)
    return f"{sign}{whole}" + (f".{fraction}" if digits else "")


def format_money(amount_minor: int, currency: str) -> str:
    """The amount as a person reads it, with thousands separators and the code."""
    digits = exponent(currency)
    if digits is None:
        return f"{amount_minor:,} minor units of {currency}"
    sign, whole, fraction = _split(amount_minor, digits)
    return f"{sign}{whole:,}" + (f".{fraction}" if digits else "") + f" {currency}"


__all__ = ["exponent", "format_money", "major_units"]
