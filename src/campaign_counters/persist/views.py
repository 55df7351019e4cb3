"""Reads that combine Redis and the store, and reads from the store alone.

Live journeys come from Redis whole (a user's record holds every step), so
they need the store only for a user whose live data expired after the
campaign completed; an unreachable store then makes the read fail, never
one Redis can answer alone.
"""

from __future__ import annotations

from typing import Any

from ..counters import Counters
from ..errors import BackendError, NotFound
from ..stores import ReportStore
from .snapshot import journey_from_doc, report_from_doc


def stored_report(store: ReportStore, tenant: str, campaign: str, job: str | None) -> dict[str, Any]:
    """The last snapshot of a campaign (or job) report. NotFound when there is none."""
    doc = store.campaign_report(tenant, campaign, job)
    if doc is None:
        what = f"job {job!r} of campaign {campaign!r}" if job else f"campaign {campaign!r}"
        raise NotFound(f"no snapshot of {what} for tenant {tenant!r}")
    return report_from_doc(doc)


def stored_journey(store: ReportStore, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
    """The last snapshot of a user's journey. NotFound when there is none."""
    doc = store.journey(tenant, campaign, job, user)
    if doc is None:
        raise NotFound(f"no snapshot of user {user!r} in job {job!r} of campaign {campaign!r}")
    return journey_from_doc(doc)


def live_journey(counters: Counters, open_store: Any, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
    """A user's journey from Redis; from the store (`open_store()`, None: none) when Redis has none of it."""
    try:
        return counters.journey(tenant, campaign, job, user)
    except NotFound as live_missing:
        try:
            store = open_store()
        except BackendError as exc:
            raise NotFound(f"{live_missing} in Redis, and the report store is unavailable ({exc})") from None
        if store is None:
            raise
        return stored_journey(store, tenant, campaign, job, user)
