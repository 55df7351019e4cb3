"""The journey analysis (`campaign_counters.analysis`) of a live campaign, on demand, from its users' records.

Not kept up to date by the record script (its cost per event stays as it
is) nor by snapshots: it is computed when asked, by scanning the campaign's
users hash (HSCAN pages of `PAGE` users, one round trip each) and folding each
record as it comes. Cost: O(users x their steps) time in the caller; memory
O(nodes^2 + buckets) for the analysis plus the names of the users seen
(a scan may return a user twice); Redis answers each page in O(page).
With `persist`, the result is stored in the campaign's CampaignReports
documents (field `analysis`), where snapshots keep it until the next
analysis replaces it.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from ..analysis import DEFAULT_WINDOW_S, Analysis, ScriptVersion, Visit
from ..counters import Counters
from ..counters import maintenance as m
from ..counters.records import UserState, user_jobs
from ..errors import NotFound, ValidationError
from ..reports import iso_ms
from ..script import parse_script
from ..stores import ReportStore

PAGE = 2000


def user_visits(counters: Counters, campaign: str,
                page: int = PAGE) -> Iterator[tuple[str, dict[str, Visit]]]:
    """Each user with its visits (job -> Visit) from the users hash, a page at a time, each user once
    (HSCAN may return a user twice when the hash is resized during the scan: the names seen are kept)."""
    meta = counters.run(m.campaign_meta(counters, campaign))
    jobs = {ji: job for job, ji in meta.jobs.items()}
    names = dict(meta.names)
    seen: set[str] = set()
    cursor = 0
    while True:
        cursor, rows = counters.run(m.scan_user_records(counters, campaign, cursor, page))
        states: list[tuple[str, str, UserState]] = []
        for user, raw in rows:
            if user in seen:
                continue
            seen.add(user)
            for record in user_jobs(raw):
                if not record[0]:
                    continue  # the campaign-wide record of a user in several jobs: visits hold it all
                if record[0] not in jobs:
                    jobs = {ji: job for job, ji in counters.run(m.campaign_meta(counters, campaign)).jobs.items()}
                job = jobs.get(record[0])
                if job is not None:
                    states.append((user, job, UserState.from_record(record)))
        wanted = set().union(*(set(s.reached) | s.node_indexes() for _, _, s in states)) if states else set()
        if not wanted <= names.keys():
            names.update(counters.run(counters.plan_node_names(campaign, wanted - names.keys())))
        by_user: dict[str, dict[str, Visit]] = {}
        for user, job, state in states:
            by_user.setdefault(user, {})[job] = state.visit(names)
        yield from by_user.items()
        if cursor == 0:
            return


def campaign_versions(counters: Counters, campaign: str) -> list[ScriptVersion]:
    """The scripts the campaign ran, oldest first, numbered from 1 (none known: [])."""
    loads = counters.run(m.script_versions(counters, campaign))
    return [ScriptVersion(i, at, sha, parse_script(raw)) for i, (at, sha, raw) in enumerate(loads, start=1) if raw]


def live_analyses(counters: Counters, tenant: str, campaign: str, jobs: list[str | None] | None = None, *,
                  now_ms: int | None = None, window_s: int = DEFAULT_WINDOW_S,
                  page: int = PAGE) -> list[dict[str, Any]]:
    """The analyses of some scopes of a campaign (job ids, None: the campaign total; default: the total and
    every job) from Redis at `now_ms` (default: now), in one scan of its users.

    NotFound for another tenant's campaign or a job without events;
    ValidationError (field `window`) for a window that is not positive.
    """
    if window_s <= 0:
        raise ValidationError("window", "must be a positive number of seconds")
    graph = counters.run(counters.plan_graph(tenant, campaign))  # NotFound: another tenant's
    tz = counters.run(counters.plan_timezone(tenant))
    known = counters.run(m.campaign_meta(counters, campaign)).jobs
    scopes = [None, *sorted(known)] if jobs is None else list(jobs)
    for job in scopes:
        if job is not None and job not in known:
            raise NotFound(f"job {job!r} of campaign {campaign!r} has no data")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    versions = campaign_versions(counters, campaign)
    folds = {job: Analysis(graph, now_ms, window_s * 1000, tz, versions=versions) for job in scopes}
    for _, visits in user_visits(counters, campaign, page):
        for job, fold in folds.items():
            if job is None:
                fold.add_user(visits.values())
            elif job in visits:
                fold.add_user([visits[job]])
    return [{"tenant": tenant, "campaign": campaign, "job": job, "now": iso_ms(now_ms),
             "inactivity_window": window_s, **fold.result()} for job, fold in folds.items()]


def live_analysis(counters: Counters, tenant: str, campaign: str, job: str | None = None, **options: Any
                  ) -> dict[str, Any]:
    """The analysis of a campaign (or one job) from Redis; raises as `live_analyses`."""
    return live_analyses(counters, tenant, campaign, [job], **options)[0]


def persist_analysis(store: ReportStore, analyses: list[dict[str, Any]]) -> int:
    """Store analyses in their CampaignReports documents (field `analysis`); returns how many were stored.

    A scope without a stored report (never snapshotted) is skipped: snapshot first.
    """
    stored = 0
    for a in analyses:
        doc = store.campaign_report(a["tenant"], a["campaign"], a["job"])
        if doc is None:
            continue
        doc["analysis"] = {k: v for k, v in a.items() if k not in ("tenant", "campaign", "job")}
        store.upsert_campaign_reports([doc])
        stored += 1
    return stored
