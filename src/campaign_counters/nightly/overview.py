"""Overview reports (docs/metrics.md, Overviews): exact from history, or approximate "today so far".

Exact overviews stream the history once for any number of periods and are
upserted by (tenant, type, date), so recomputing one changes nothing.  The
live variant reads the per-day HyperLogLogs (about 0.8% error) and says so.

Before storing, each overview is checked (`guard`) against the stored one
and against Redis's exact per-day interaction counts and per-day users: an
overview with smaller counts, or one from a history with no events in a
window that has data (an empty, binary or wrong history), is refused and
nothing is stored, unless forced.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from ..counters import Counters
from ..counters import maintenance as m
from ..persist.dashboard import publish_overviews
from ..reports import iso_ms
from ..stores import ReportStore
from ..timezones import parse_zone
from . import guard
from .history import HistorySource, Progress
from .recompute import OverviewTruth, window


def overviews(history: HistorySource, tenant: str, period: str, days: Iterable[date], tz: ZoneInfo,
              progress: Progress | None = None) -> list[dict[str, Any]]:
    """Exact overviews of the periods holding `days`, from one pass over the history."""
    truths: dict[date, OverviewTruth] = {}
    for day in days:
        first, _, _ = window(period, day, tz)
        truths.setdefault(first, OverviewTruth(tenant, period, first, tz))
    if not truths:
        return []
    end_ms = max(t.end_ms for t in truths.values())
    for ev in history.events(tenant, None, None, end_ms, progress=progress):
        for truth in truths.values():
            truth.add(ev)
    computed_at = iso_ms(int(time.time() * 1000))  # the package's one text form of an instant
    return [dict(truths[k].document(), computed_at=computed_at) for k in sorted(truths)]


OVERVIEW_COUNTS = ("campaigns_count", "total_target_users", "total_sent_users", "total_interacted_users",
                   "total_interactions")


def store_overviews(store: ReportStore, docs: Iterable[dict[str, Any]], counters: Counters | None = None,
                    *, force: bool = False) -> None:
    """Upsert overview documents (keyed by tenant, type and date: storing one again changes nothing);
    with `counters`, also publish each period's latest figures for the tenant dashboard.

    Raises `Refused` before storing any when one would lose numbers held by
    the store or (with `counters`) by Redis, unless `force`.
    """
    docs = list(docs)
    if not force:
        for doc in docs:
            found = guard.losses(doc, _stored_counts(store, doc), OVERVIEW_COUNTS, "stored overview")
            if counters is not None:
                found += guard.losses(doc, live_window_counts(counters, doc), ("campaigns_count", "total_interactions"),
                                      "live counters")
            subject = (f"the {doc['report_type']} overview of tenant {doc['tenant_id']!r} for {doc['report_date']} "
                       f"({doc['window_start']} to {doc['window_end']})")
            guard.refuse(subject, found, empty=doc["campaigns_count"] == 0, tenant=doc["tenant_id"])
    for doc in docs:
        store.upsert_overview(doc)
    if counters is not None:
        publish_overviews(counters, docs)


def _stored_counts(store: ReportStore, doc: dict[str, Any]) -> dict[str, Any] | None:
    return store.overview(doc["tenant_id"], doc["report_type"], doc["report_date"])


def live_window_counts(counters: Counters, doc: dict[str, Any]) -> dict[str, int]:
    """What Redis knows of an overview's window: campaigns with users, and interactions (exact per day)."""
    tenant = doc["tenant_id"]
    _, start, end = window(doc["report_type"], date.fromisoformat(doc["report_date"]), parse_zone(doc["timezone"]))
    campaigns = counters.run(m.tenant_campaigns(counters, tenant))
    active: set[str] = set()
    interactions = 0
    day = start.date()
    while campaigns and day < end.date():
        for campaign, users, _, _, n in counters.run(m.day_counts(counters, campaigns, day.strftime("%Y%m%d"))):
            if users:
                active.add(campaign)
            interactions += n
        day += timedelta(days=1)
    return {"campaigns_count": len(active), "total_interactions": interactions}


def today_so_far(counters: Counters, tenant: str, tz: ZoneInfo, now: datetime | None = None,
                 campaigns: list[str] | None = None) -> dict[str, Any]:
    """Approximate daily overview of the tenant's current local day, from Redis alone
    (`campaigns`: the tenant's, when the caller has read them already)."""
    today = (now or datetime.now(timezone.utc)).astimezone(tz).date()
    if campaigns is None:
        campaigns = counters.run(m.tenant_campaigns(counters, tenant))
    rows = [r for r in counters.run(m.day_counts(counters, campaigns, today.strftime("%Y%m%d"))) if r[1]]
    sent = sum(r[2] for r in rows)
    interacted = sum(r[3] for r in rows)
    distinct = counters.run(m.tenant_day_users(counters, tenant, today.strftime("%Y%m%d"), campaigns))
    return {
        "tenant_id": tenant, "report_type": "daily", "report_date": today.isoformat(), "timezone": str(tz),
        "approximate": True,
        "note": "today so far, from HyperLogLogs (about 1% error); status counts need the nightly run",
        "campaigns_count": len(rows),
        "total_target_users": sum(r[1] for r in rows),
        "total_sent_users": sent,
        "total_interacted_users": interacted,
        "total_interactions": sum(r[4] for r in rows),
        "avg_interaction_rate": interacted / sent * 100 if sent else 0.0,
        "distinct_users": distinct,
    }
