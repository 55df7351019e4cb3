"""The nightly job: at 00:00 in each tenant's timezone, check and summarise the day that ended.

Neither rq-scheduler's cron nor RQ's CronScheduler takes a timezone, so the
scheduler ticks (every few seconds) and asks `due`: for each tenant, which
local days have ended since the last one scheduled. Each becomes a *pending
night* (kept in Redis) and stays pending until a run completes it: its
recompute ran over a history and neither the repair nor the overviews were
refused. A run without a history, a refused one, or a failed one records
why and leaves the night pending; the tick enqueues it again at most every
`RETRY_SECONDS` (one RQ job id per tenant and day; a finished attempt's job
is replaced), while the night is within `CATCH_UP_DAYS` of the tenant's
today. `nights_health` names the nights missed; `campaign-counters nightly`
runs one by hand. Everything a run writes is an upsert: a re-run changes
nothing.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..config import repair_at_night
from ..connection import redact
from ..counters import Counters
from ..counters import maintenance as m
from ..errors import Refused
from ..persist.dashboard import publish_nightly_run
from ..persist.analysis import persist_analysis
from ..persist.jobs import job_context
from ..stores import ReportStore
from ..timezones import UTC, zone_or_utc
from .dashboard import publish_tenants
from . import approximation
from .history import open_history
from .overview import overviews, store_overviews
from .reconcile import reconcile

log = logging.getLogger(__name__)

ENV_HISTORY = "CAMPAIGN_COUNTERS_HISTORY"
CATCH_UP_DAYS = 7
RETRY_SECONDS = 900  # between two attempts at a pending night
OVERDUE = timedelta(hours=6)  # a pending night not attempted this long after it ended is missed


def due(tenants: dict[str, ZoneInfo], scheduled: dict[str, date], now: datetime,
        catch_up: int = CATCH_UP_DAYS) -> list[tuple[str, date]]:
    """(tenant, local day) pairs whose local midnight has passed and were not scheduled yet."""
    out = []
    for tenant, tz in sorted(tenants.items()):
        ended = now.astimezone(tz).date() - timedelta(days=1)
        first = scheduled[tenant] + timedelta(days=1) if tenant in scheduled else ended
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


def first_catch_up_day(tz: ZoneInfo, now: datetime, catch_up: int = CATCH_UP_DAYS) -> date:
    """The oldest local day the tick still attempts: `catch_up` days back from the last one that ended."""
    return now.astimezone(tz).date() - timedelta(days=catch_up)


def tick_nightly(counters: Counters, queue: Any, now: datetime | None = None,
                 retry_after: float = RETRY_SECONDS) -> list[tuple[str, date]]:
    """Make every night whose local midnight passed pending, and enqueue each pending night that may be
    attempted now; returns what was enqueued."""
    now = now or datetime.now(timezone.utc)
    tenants = {t: zone_or_utc(z) for t, z in counters.run(m.all_tenants(counters)).items()}
    scheduled = {t: date.fromisoformat(d) for t, d in counters.run(m.nightly_scheduled(counters)).items()}
    counters.run(m.schedule_nights(counters, [(t, d.isoformat()) for t, d in due(tenants, scheduled, now)]))
    enqueued = []
    for tenant, day_iso, _, _ in counters.run(m.pending_nights(counters, due_by=now.timestamp())):
        day = date.fromisoformat(day_iso)
        if day < first_catch_up_day(tenants.get(tenant, UTC), now):
            continue  # too old to catch up by itself: health names it
        if _enqueue_night(counters, queue, tenant, day):
            enqueued.append((tenant, day))
        counters.run(m.defer_night(counters, tenant, day_iso, now.timestamp() + retry_after))
    publish_tenants(counters, tenants, now)
    return enqueued


def _enqueue_night(counters: Counters, queue: Any, tenant: str, day: date) -> bool:
    """Enqueue a night's job unless one is queued or running; the job of an attempt that ended is replaced."""
    from rq.exceptions import DuplicateJobError, NoSuchJobError
    from rq.job import Job, JobStatus

    job_id = nightly_job_id(tenant, day)
    for _ in range(2):
        try:
            queue.enqueue(nightly_job, tenant, day.isoformat(), job_id=job_id, unique=True,
                          result_ttl=86400, failure_ttl=7 * 86400, job_timeout=3600,
                          description=f"nightly {tenant} {day.isoformat()}")
            return True
        except DuplicateJobError:
            try:
                job = Job.fetch(job_id, connection=queue.connection)
            except NoSuchJobError:
                continue  # it expired meanwhile
            ended = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
            if job.get_status() not in ended or not counters.run(m.night_pending(counters, tenant, day.isoformat())):
                return False  # still queued or running, or it completed the night meanwhile
            job.delete()
    return False


def run_night(counters: Counters, store: ReportStore, history_src: str | None, tenant: str, day: date, *,
              repair: bool = False, force: bool = False) -> dict[str, Any]:
    """Reconcile the campaigns of a tenant's local day, then write the overviews that close with it;
    the reconcile's record carries each overview's measured HyperLogLog error (`approximation`), and the
    journey analyses it checked are stored (those of repaired campaigns wait for the next check).

    The night is marked done (`"done": true`) only when both ran over a
    history and neither was refused; otherwise the reason is recorded for
    `health` (`"skipped"` or `"refused"` in the result) and the night stays
    pending. Other errors are recorded too, then raised.
    """
    tz = counters.run(counters.plan_timezone(tenant))
    out: dict[str, Any] = {"tenant": tenant, "date": day.isoformat(), "timezone": str(tz), "done": False}
    if not history_src:
        why = f"no history: set {ENV_HISTORY} to a JSON Lines file or a mongodb:// URL"
        log.warning("nightly %s %s: %s; the night stays pending", tenant, day, why)
        _note(counters, tenant, day, "skipped", why)
        out["skipped"] = why
        return out
    try:
        history = open_history(history_src)
        docs = [doc for period in periods_ending(day) for doc in overviews(history, tenant, period, [day], tz)]
        measured = [approximation.measure(counters, doc) for doc in docs]  # before a repair rebuilds them
        result = reconcile(counters, store, history, tenant, day=day, tz=tz, repair=repair, force=force,
                           approximation=measured)
        out["reconcile"] = {**result.output(), "drift": len(result.drift), "invariants": len(result.invariants),
                            "after_repair": None if result.after_repair is None else len(result.after_repair)}
        publish_nightly_run(counters, tenant, day.isoformat(), result.output())
        store_overviews(store, docs, counters, force=force)
        persist_analysis(store, [a for a in result.analyses if a["campaign"] not in result.repaired], counters)
        out["overviews"] = periods_ending(day)
    except Refused as exc:
        log.warning("nightly %s %s refused, the night stays pending: %s", tenant, day, exc)
        _note(counters, tenant, day, "refused", str(exc))
        out["refused"] = str(exc)
        return out
    except Exception as exc:
        try:
            _note(counters, tenant, day, "failed", f"{type(exc).__name__}: {redact(str(exc))}")
        except Exception:  # noqa: BLE001 - Redis itself may be what failed; the job fails either way
            pass
        raise
    counters.run(m.complete_night(counters, tenant, day.isoformat()))
    out["done"] = True
    return out


def _note(counters: Counters, tenant: str, day: date, state: str, reason: str) -> None:
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    counters.run(m.note_night(counters, tenant, day.isoformat(),
                              json.dumps({"state": state, "reason": reason, "at": at})))


def nightly_job(tenant: str, day_iso: str) -> dict[str, Any]:
    """RQ entry point: `run_night` with the worker's history source and repair setting."""
    counters, store, _ = job_context()
    return run_night(counters, store, os.environ.get(ENV_HISTORY), tenant, date.fromisoformat(day_iso),
                     repair=repair_at_night())


def nights_health(counters: Counters, now: datetime | None = None) -> dict[str, Any]:
    """Pending nights; not ok when one was attempted without completing, is overdue, or is too old to retry."""
    now = now or datetime.now(timezone.utc)
    tenants = {t: zone_or_utc(z) for t, z in counters.run(m.all_tenants(counters)).items()}
    missed, pending = [], []
    for tenant, day_iso, _, outcome in counters.run(m.pending_nights(counters)):
        tz, day = tenants.get(tenant, UTC), date.fromisoformat(day_iso)
        entry: dict[str, Any] = {"tenant": tenant, "date": day_iso}
        ended = datetime.combine(day + timedelta(days=1), dtime(), tz)
        by_hand = f"campaign-counters nightly --tenant {tenant} --date {day_iso} --history SRC"
        if day < first_catch_up_day(tz, now):
            entry.update(json.loads(outcome) if outcome else {"state": "not run"})
            entry["fix"] = f"older than {CATCH_UP_DAYS} days, no longer retried: run `{by_hand}`"
        elif outcome:
            entry.update(json.loads(outcome))
            entry["fix"] = f"retried every {RETRY_SECONDS // 60} min once the cause is fixed, or run `{by_hand}`"
        elif now - ended > OVERDUE:
            late = int((now - ended).total_seconds() // 3600)
            entry.update(state="not run", fix=f"not checked {late} h after it ended: are `campaign-counters "
                                              "scheduler` and `campaign-counters worker` running?")
        else:
            pending.append(entry)
            continue
        missed.append(entry)
    return {"ok": not missed, "missed": missed, "pending": pending}
