"""Overview reports (DESIGN 3.4): exact from history, or approximate "today so far".

Exact overviews stream the history once for any number of periods and are
upserted by (tenant, type, date), so recomputing one changes nothing.  The
live variant reads the per-day HyperLogLogs (about 0.8% error) and says so.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from ..counters import Counters
from ..counters import maintenance as m
from ..persist.dashboard import publish_overviews
from ..stores import ReportStore
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
    computed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [dict(truths[k].document(), computed_at=computed_at) for k in sorted(truths)]


def store_overviews(store: ReportStore, docs: Iterable[dict[str, Any]], counters: Counters | None = None) -> None:
    """Upsert overview documents (keyed by tenant, type and date: storing one again changes nothing);
    with `counters`, also publish each period's latest figures for the tenant dashboard."""
    docs = list(docs)
    for doc in docs:
        store.upsert_overview(doc)
    if counters is not None:
        publish_overviews(counters, docs)


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
