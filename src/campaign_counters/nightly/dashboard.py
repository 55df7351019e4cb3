"""What the tenant and operations dashboards show of each tenant: today so far, and its nightly check.

Published by the scheduler's tick (at most once a minute): today's
approximate figures from the HyperLogLogs, each tenant's latest nightly
check (written by the nightly job), and whether a check is overdue: the job
of a local day must have run by 01:00 local time of the next day.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..counters import Counters
from ..counters import dashboard as d
from ..counters import maintenance as m
from ..persist.dashboard import text
from ..reports import iso_ms
from .overview import today_so_far

DEADLINE = time(1, 0)  # a local day's nightly check must have run by this local time of the next day
EVERY = 60.0  # seconds between two publications of the tenant figures


def nightly_overdue(run: dict[str, str] | None, tz: ZoneInfo, now: datetime) -> bool:
    """True when the last local day whose deadline has passed was not checked (`run`: its latest check)."""
    local = now.astimezone(tz)
    due = local.date() - timedelta(days=1 if local.time() >= DEADLINE else 2)
    return run is None or run.get("day", "") < due.isoformat()


def publish_tenants(counters: Counters, tenants: dict[str, ZoneInfo], now: datetime | None = None,
                    every: float = EVERY) -> dict[str, Any] | None:
    """Publish each tenant's today-so-far and nightly figures; None when done less than `every` s ago."""
    now = now or datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    last = counters.run(d.tenants_published_ms(counters))
    if last is not None and 0 <= now_ms - last < every * 1000:
        return None
    owners = counters.run(m.registry(counters))
    today = {}
    for tenant, tz in sorted(tenants.items()):
        campaigns = sorted(c for c, t in owners.items() if t == tenant)
        figures = today_so_far(counters, tenant, tz, now, campaigns)
        today[tenant] = {name: text(figures[name]) for name in d.TODAY_FIELDS if name in figures}
        today[tenant]["published_at"] = iso_ms(now_ms) or ""
    runs = counters.run(d.nightly_runs(counters, sorted(tenants)))
    overdue = sorted(t for t, tz in tenants.items() if nightly_overdue(runs.get(t), tz, now))
    drift = sorted(t for t, run in runs.items() if int(run.get("drift", 0)) > 0)
    nightly = {name: {t: run[name] for t, run in runs.items() if name in run} for name in d.NIGHTLY_SUMMARY}
    ops = {"nightly_overdue_tenants": text(len(overdue)), "drift_tenants": text(len(drift)),
           "tenants_published_ms": text(now_ms)}
    counters.run(d.write_tenants(counters, today, nightly, ops))
    for tenant in sorted(tenants):
        counters.run(d.prune_campaigns(counters, tenant))
    return {"today": today, "overdue": overdue, "drift": drift}
