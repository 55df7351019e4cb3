"""Reads that combine Redis and the store, and reads from the store alone.

A snapshot trims persisted steps from the Redis journal, so the live journey
is the stored steps plus the journal's tail, merged by journal id.
"""

from __future__ import annotations

from typing import Any

from ..counters import Counters
from ..errors import NotFound
from ..stores import ReportStore
from ..stores.base import merge_steps
from .snapshot import journey_from_doc, report_from_doc


def stored_report(store: ReportStore, tenant: str, campaign: str, job: str | None) -> dict[str, Any]:
    doc = store.campaign_report(tenant, campaign, job)
    if doc is None:
        what = f"job {job!r} of campaign {campaign!r}" if job else f"campaign {campaign!r}"
        raise NotFound(f"no snapshot of {what} for tenant {tenant!r}")
    return report_from_doc(doc)


def stored_journey(store: ReportStore, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
    doc = store.journey(tenant, campaign, job, user)
    if doc is None:
        raise NotFound(f"no snapshot of user {user!r} in job {job!r} of campaign {campaign!r}")
    return journey_from_doc(doc)


def live_journey(counters: Counters, store: ReportStore | None, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
    """Summary from Redis; path = stored steps + the journal's unpersisted tail."""
    doc = store.journey(tenant, campaign, job, user) if store is not None else None
    try:
        live = counters.journey(tenant, campaign, job, user, with_ids=True)
    except NotFound:
        if doc is None:
            raise
        return journey_from_doc(doc)
    ordered = merge_steps((doc or {}).get("journey_path", []), live["journey_path"])
    live["journey_path"] = [{k: s[k] for k in ("node", "choice", "ts")} for s in ordered]
    return live
