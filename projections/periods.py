"""Statement periods: the UTC calendar month of an event's `at` (EVENTS.md §3)."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_month(at: str) -> str:
    """"YYYY-MM" of the instant `at` (an RFC 3339 date-time the schema accepted).

    "2026-11-02T08:00:00+01:00" is 07:00 UTC on 2 November: "2026-11";
    "2026-11-01T00:30:00+01:00" is still October in UTC: "2026-10".
    """
    if at.endswith(("Z", "+00:00", "-00:00")):
        return at[:7]  # already UTC: skip the parse on the hot path
    instant = datetime.fromisoformat(at).astimezone(timezone.utc)
    return f"{instant.year:04d}-{instant.month:02d}"
