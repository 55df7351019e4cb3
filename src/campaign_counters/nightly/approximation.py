"""How far the live HyperLogLog uniques were from the exact ones: the number behind "approximate".

The live overview (`overview --live`, the tenant dashboard's "today so far")
counts unique users with per-day HyperLogLogs. For every overview the night
writes, the same HyperLogLogs are counted over the overview's window (the
union of its days, per campaign, summed over the tenant's live campaigns as
the exact overview sums its campaigns) and set against the exact figures:

    relative_error = (approximate - exact) / exact      (null when exact is 0)

It is measured before any repair, so it carries both the estimator's error
and any users the live path missed. Per-day HyperLogLogs expire after
`Settings.day_ttl` (40 days): a window reaching further back reads as fewer.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from ..counters import Counters
from ..counters import maintenance as m
from ..timezones import parse_zone
from .recompute import window

UNIQUES = ("total_target_users", "total_sent_users", "total_interacted_users")


def window_days(doc: dict[str, Any]) -> list[str]:
    """The local days (YYYYMMDD) of an overview's window."""
    _, start, end = window(doc["report_type"], date.fromisoformat(doc["report_date"]), parse_zone(doc["timezone"]))
    days, day = [], start.date()
    while day < end.date():
        days.append(day.strftime("%Y%m%d"))
        day += timedelta(days=1)
    return days


def relative_error(approximate: float, exact: float) -> float | None:
    """(approximate - exact) / exact; None when exact is 0."""
    return (approximate - exact) / exact if exact else None


def measure(counters: Counters, doc: dict[str, Any]) -> dict[str, Any]:
    """An overview's unique users, live estimate against exact: {report_type, report_date, uniques: {metric:
    {exact, approximate, relative_error}}}."""
    campaigns = counters.run(m.tenant_campaigns(counters, doc["tenant_id"]))
    rows = counters.run(m.window_users(counters, sorted(campaigns), window_days(doc)))
    uniques = {}
    for i, metric in enumerate(UNIQUES, start=1):
        approximate = sum(r[i] for r in rows)
        uniques[metric] = {"exact": doc[metric], "approximate": approximate,
                           "relative_error": relative_error(approximate, doc[metric])}
    return {"report_type": doc["report_type"], "report_date": doc["report_date"], "uniques": uniques}
