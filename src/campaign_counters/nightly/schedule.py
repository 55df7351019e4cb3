"""The nightly job: at 00:00 in each tenant's timezone, check and summarise the day that ended.

Neither rq-scheduler's cron nor RQ's CronScheduler takes a timezone, so the
scheduler ticks (every few seconds) and asks `due`: for each tenant, which
local days have ended since the last one it handled.  Missed nights are
caught up (up to `CATCH_UP_DAYS`), each (tenant, day) gets one RQ job with a
deterministic id, and everything the job writes is an upsert: a re-run
changes nothing.
"""

from __future__ import annotations

import logging
import os
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..counters import Counters
from ..counters import maintenance as m
from ..persist.dashboard import publish_nightly_run
from ..persist.jobs import job_context
from ..timezones import zone_or_utc
from .dashboard import publish_tenants
from .history import open_history
from .overview import overviews, store_overviews
from .reconcile import reconcile

log = logging.getLogger(__name__)

ENV_HISTORY = "CAMPAIGN_COUNTERS_HISTORY"
ENV_REPAIR = "CAMPAIGN_COUNTERS_REPAIR"
CATCH_UP_DAYS = 7


def due(tenants: dict[str, ZoneInfo], done: dict[str, date], now: datetime,
        catch_up: int = CATCH_UP_DAYS) -> list[tuple[str, date]]:
    """(tenant, local day) pairs whose local midnight has passed and were not handled yet."""
    out = []
    for tenant, tz in sorted(tenants.items()):
        ended = now.astimezone(tz).date() - timedelta(days=1)
        first = done[tenant] + timedelta(days=1) if tenant in done else ended
        first = max(first, ended - timedelta(days=catch_up - 1))
        day = first
        while day <= ended:
            out.append((tenant, day))
            day += timedelta(days=1)
    return out


def periods_ending(day: date) -> list[str]:
    """Which overviews close with `day`: daily always, weekly on Sundays, monthly on month ends."""
    out = ["daily"]
    if day.weekday() == 6:
        out.append("weekly")
    if (day + timedelta(days=1)).day == 1:
        out.append("monthly")
    return out


def nightly_job_id(tenant: str, day: date) -> str:
    return f"cc-nightly-{tenant}-{day.isoformat()}"


def tick_nightly(counters: Counters, queue: Any, now: datetime | None = None) -> list[tuple[str, date]]:
    """Enqueue the nightly job of every tenant whose midnight passed; returns what was enqueued."""
    from rq.exceptions import DuplicateJobError

    now = now or datetime.now(timezone.utc)
    tenants = {t: zone_or_utc(z) for t, z in counters.run(m.all_tenants(counters)).items()}
    done = {t: date.fromisoformat(d) for t, d in counters.run(m.nightly_done(counters)).items()}
    enqueued = []
    for tenant, day in due(tenants, done, now):
        try:
            queue.enqueue(nightly_job, tenant, day.isoformat(), job_id=nightly_job_id(tenant, day), unique=True,
                          result_ttl=86400, failure_ttl=7 * 86400, job_timeout=3600,
                          description=f"nightly {tenant} {day.isoformat()}")
            enqueued.append((tenant, day))
        except DuplicateJobError:
            pass
        counters.run(m.mark_nightly_done(counters, tenant, day.isoformat()))
    publish_tenants(counters, tenants, now)
    return enqueued


def nightly_job(tenant: str, day_iso: str) -> dict[str, Any]:
    """RQ entry point: reconcile the campaigns of that day, then write the overviews that close."""
    counters, store, _ = job_context()
    source = os.environ.get(ENV_HISTORY)
    day = date.fromisoformat(day_iso)
    tz = counters.run(counters.plan_timezone(tenant))
    out: dict[str, Any] = {"tenant": tenant, "date": day_iso, "timezone": str(tz)}
    if not source:
        log.warning("nightly %s %s: no %s configured, only the schedule advanced", tenant, day_iso, ENV_HISTORY)
        out["skipped"] = f"set {ENV_HISTORY} to a JSON Lines file or a mongodb:// URL"
        return out
    history = open_history(source)
    result = reconcile(counters, store, history, tenant, day=day, tz=tz,
                       repair=os.environ.get(ENV_REPAIR, "") in ("1", "true", "yes"))
    out["reconcile"] = {**result.output(), "drift": len(result.drift)}
    publish_nightly_run(counters, tenant, day_iso, result.output())
    for period in periods_ending(day):
        store_overviews(store, overviews(history, tenant, period, [day], tz), counters)
    out["overviews"] = periods_ending(day)
    return out
