"""Statement periods: the UTC calendar month of an event's `at` (EVENTS.md §3)."""

from __future__ import annotations

from datetime import datetime, timedelta


def utc_instant(at: str) -> datetime:
    """The naive UTC datetime of `at`, an RFC 3339 date-time in the schema's form
    (`YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`; fractions do not change the month).

    Fixed positions instead of `datetime.fromisoformat`: the schema admits
    fractions of any length, which fromisoformat does not.
    """
    local = datetime(int(at[0:4]), int(at[5:7]), int(at[8:10]), int(at[11:13]), int(at[14:16]), int(at[17:19]))
    if at[-1] == "Z":
        return local
    offset = timedelta(minutes=int(at[-5:-3]) * 60 + int(at[-2:]))
    return local - offset if at[-6] == "+" else local + offset


def utc_month(at: str) -> str:
    """"YYYY-MM" of the instant `at` in UTC.

    "2026-11-02T08:00:00+01:00" is 07:00 UTC on 2 November: "2026-11";
    "2026-11-01T00:30:00+01:00" is still October in UTC: "2026-10".
    """
    if at.endswith(("Z", "+00:00", "-00:00")):
        return at[:7]  # already UTC: no arithmetic on the hot path
    instant = utc_instant(at)
    return f"{instant.year:04d}-{instant.month:02d}"
