"""Snapshot one campaign from Redis into the report store.

Order of work, chosen so that a crash at any point is harmless:

1. take the campaign's lease (a snapshot or repair of it already running:
   skip; the campaign stays marked and the next tick tries again). The
   lease expires `LEASE_MS` after its last renewal, so a dead worker holds
   it up no longer than that;
2. refuse a campaign flagged for reconcile (Redis lost its data);
3. refuse when a stored user count or interaction count would shrink
   (checked before any journey is written: data Redis lost shows in its
   counts);
4. freeze the change log: events recorded from now on log their users for
   the next snapshot;
5. for the users the frozen log lists, a page at a time: read their
   records, write their journeys whole (summary and every step), after
   checking that no stored journey would lose steps;
6. write every job's report and the campaign total (absolute values), after
   checking the counts again;
7. drop the frozen log, unless a repair swapped in new state meanwhile
   (its own snapshot persists the campaign); clear the campaign's mark
   unless events arrived meanwhile.

A refusal (2, 3, 5, 6) flags the campaign for reconcile and writes nothing
more: stored reports never move backwards. Re-running after a crash reads
the frozen log again and rewrites the same documents.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..counters import Counters
from ..counters import maintenance as m
from ..counters.records import UserState, user_jobs
from ..errors import NotFound, SnapshotRefused
from ..reports import iso_ms
from ..stores import ReportStore
from . import durable
from .dashboard import publish_campaign

log = logging.getLogger(__name__)

REPORT_KEYS = {"tenant": "tenant_id", "campaign": "campaign_id", "job": "job_id"}
BATCH = 20_000  # users per page: fewer, larger commits (each one is synced to disk)
LEASE_MS = 30_000  # how long a snapshot's lease lasts without renewal (each page renews it)
MONOTONIC = ("target_users_count", "sent_users_count", "interacted_users_count", "completed_users_count",
             "total_interactions")


@dataclass
class SnapshotResult:
    tenant: str
    campaign: str
    reports: int = 0
    journeys: int = 0  # one per user and job
    users: int = 0  # distinct users whose journeys were written
    steps: int = 0
    batches: int = 0
    expired: bool = False
    skipped: str | None = None  # why nothing was written (another snapshot or repair holds the campaign)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "skipped" or v}


def report_doc(report: dict[str, Any], snapshot_at: str) -> dict[str, Any]:
    """A live report as a CampaignReports document (seed field names)."""
    doc = {REPORT_KEYS.get(k, k): v for k, v in report.items()}
    doc["snapshot_at"] = snapshot_at
    return doc


def report_from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document back in the JSON shape of a live report."""
    back = {v: k for k, v in REPORT_KEYS.items()}
    return {back.get(k, k): v for k, v in doc.items() if k not in ("snapshot_at", "_id")}


def journey_from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored journey in the JSON shape of a live one."""
    return {
        "tenant": doc["tenant_id"], "campaign": doc["campaign_id"], "job": doc["job_id"], "user": doc["user_id"],
        "journey_path": [{k: s[k] for k in ("node", "choice", "ts")} for s in doc["journey_path"]],
        "completed": doc["completed"], "exit_node": doc["exit_node"],
        "completion_time": doc["completion_time"], "total_interactions": doc["total_interactions"],
    }


def _now_iso() -> str:
    return iso_ms(int(time.time() * 1000)) or ""


@dataclass
class Lease:
    """The campaign's lease while this snapshot (or repair) holds it."""

    counters: Counters
    campaign: str
    token: str = field(default_factory=lambda: secrets.token_hex(8))

    def take(self) -> bool:
        return self.counters.run(m.take_lease(self.counters, self.campaign, self.token, LEASE_MS))

    def renew(self) -> None:
        if not self.counters.run(m.renew_lease(self.counters, self.campaign, self.token, LEASE_MS)):
            raise SnapshotRefused(self.campaign, "its lease expired while it ran (a page took over "
                                                 f"{LEASE_MS // 1000} s): nothing was lost, the next tick runs it again")

    def release(self) -> None:
        self.counters.run(m.release_lease(self.counters, self.campaign, self.token))


def snapshot_campaign(
    counters: Counters,
    store: ReportStore,
    campaign: str,
    *,
    batch: int = BATCH,
    retention: int | None = None,
    progress: Callable[[SnapshotResult], None] | None = None,
    lease: Lease | None = None,
) -> SnapshotResult:
    """Persist one campaign; safe to repeat and to resume after a crash.

    Raises SnapshotRefused (after flagging the campaign) when persisting
    would shrink stored numbers, NotFound when Redis has nothing of it.
    `lease`: one the caller (a repair) already holds; its snapshot writes
    the rebuilt state whatever was stored (the repair was checked, or forced).
    """
    started = time.monotonic()
    meta = counters.run(m.campaign_meta(counters, campaign))
    if meta.tenant is None:
        raise NotFound(f"campaign {campaign!r} has no data in Redis")
    result = SnapshotResult(meta.tenant, campaign)
    own = lease is None
    lease = lease or Lease(counters, campaign)
    if own and not lease.take():
        result.skipped = "another snapshot or a repair of this campaign is running"
        return result
    try:
        docs = _persist(counters, store, meta, result, batch, lease, progress, guard=own)
    finally:
        if own:
            lease.release()
    if retention is not None and meta.completed_at is not None:
        counters.run(m.expire_campaign(counters, campaign, list(meta.jobs), retention))
        result.expired = True
    elif meta.expiring and meta.completed_at is None:
        counters.run(m.keep_campaign(counters, campaign, list(meta.jobs)))
    durable.remember_campaign(counters, store, meta, expiring=result.expired)
    publish_campaign(counters, meta.tenant, campaign, docs, retention if result.expired else None)
    result.seconds = time.monotonic() - started
    log.info("snapshot %s/%s: %d reports, %d journeys, %d steps in %.2fs",
             meta.tenant, campaign, result.reports, result.journeys, result.steps, result.seconds)
    return result


def _persist(counters: Counters, store: ReportStore, meta: m.CampaignMeta, result: SnapshotResult, batch: int,
             lease: Lease, progress: Callable[[SnapshotResult], None] | None, guard: bool) -> list[dict[str, Any]]:
    """Steps 2-7 of the module doc; returns the report documents written."""
    campaign = meta.campaign
    flagged = durable.flag_of(store, campaign) if guard else None
    if flagged:
        raise SnapshotRefused(campaign, f"it is flagged for reconcile since {flagged['since']} "
                                        f"({flagged['reason']}); run `campaign-counters reconcile --tenant "
                                        f"{meta.tenant} --campaign {campaign} --history SRC --repair`")
    if guard:  # before any journey is written: a Redis that lost data shows in its counts first
        _refuse_smaller_reports(store, meta, _report_docs(counters, meta, _now_iso()))
    start = counters.run(m.begin_snapshot(counters, campaign))
    snapshot_at = _now_iso()
    users = counters.run(m.changed_users(counters, campaign))
    result.users = len(users)
    for first in range(0, len(users), batch):
        docs = _journey_docs(counters, meta, users[first:first + batch], snapshot_at)
        if guard:
            _refuse_shorter_journeys(store, meta, docs)
        store.upsert_journeys(docs)
        lease.renew()
        result.batches += 1
        result.journeys += len(docs)
        result.steps += sum(len(d["journey_path"]) for d in docs)
        if progress:
            progress(result)
    docs = _report_docs(counters, meta, snapshot_at)
    if guard:
        _refuse_smaller_reports(store, meta, docs)
    _keep_analysis(store, meta, docs)
    store.upsert_campaign_reports(docs)
    result.reports = len(docs)
    counters.run(m.end_snapshot(counters, campaign, start.rgen))
    return docs


def _report_docs(counters: Counters, meta: m.CampaignMeta, snapshot_at: str) -> list[dict[str, Any]]:
    """The campaign total's and every job's live report as documents."""
    docs = []
    for job in [None, *sorted(meta.jobs)]:
        try:
            docs.append(report_doc(counters.report(meta.tenant or "", meta.campaign, job), snapshot_at))
        except NotFound:
            continue  # a job known only from a status event has no counters yet
    return docs


def _keep_analysis(store: ReportStore, meta: m.CampaignMeta, docs: list[dict[str, Any]]) -> None:
    """Carry each scope's stored journey analysis over: only the next analysis replaces it (persist.analysis)."""
    stored = {d["job_id"]: d.get("analysis") for d in store.campaign_reports(meta.tenant or "", meta.campaign)}
    for doc in docs:
        if stored.get(doc["job_id"]) is not None:
            doc["analysis"] = stored[doc["job_id"]]


def _refuse(store: ReportStore, meta: m.CampaignMeta, why: str) -> SnapshotRefused:
    reason = f"persisting it would {why}; the stored reports are kept and the campaign is flagged for reconcile"
    durable.flag(store, meta.campaign, meta.tenant or "", "shrink", reason)
    log.error("snapshot of %s refused: %s", meta.campaign, reason)
    return SnapshotRefused(meta.campaign, reason)


def _refuse_smaller_reports(store: ReportStore, meta: m.CampaignMeta, docs: list[dict[str, Any]]) -> None:
    stored = {d["job_id"]: d for d in store.campaign_reports(meta.tenant or "", meta.campaign)}
    for doc in docs:
        before = stored.get(doc["job_id"])
        if before is None:
            continue
        for metric in MONOTONIC:
            if (doc.get(metric) or 0) < (before.get(metric) or 0):
                scope = f"job {doc['job_id']}" if doc["job_id"] else "the campaign total"
                raise _refuse(store, meta, f"lower {metric} of {scope} from {before[metric]} to {doc[metric]}")


def _refuse_shorter_journeys(store: ReportStore, meta: m.CampaignMeta, docs: list[dict[str, Any]]) -> None:
    by_job: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_job.setdefault(doc["job_id"], []).append(doc)
    for job, part in by_job.items():
        stored = store.journey_lengths(meta.tenant or "", meta.campaign, job, [d["user_id"] for d in part])
        for doc in part:
            if len(doc["journey_path"]) < stored.get(doc["user_id"], 0):
                raise _refuse(store, meta, f"drop journey steps of user {doc['user_id']} in job {job} "
                                           f"({stored[doc['user_id']]} stored, {len(doc['journey_path'])} live)")


def _journey_docs(counters: Counters, meta: m.CampaignMeta, users: list[str], snapshot_at: str) -> list[dict[str, Any]]:
    """Journey documents of these users in every job they have events in."""
    raws = counters.run(m.user_records(counters, meta.campaign, users))
    jobs = {ji: job for job, ji in meta.jobs.items()}
    states: list[tuple[str, str, UserState]] = []
    for user, raw in zip(users, raws):
        for record in user_jobs(raw):  # none: the user's keys expired or were repaired away
            if not record[0]:
                continue  # the user's campaign-wide record: no journey of its own
            job = jobs.get(record[0])
            if job is None:
                meta = counters.run(m.campaign_meta(counters, meta.campaign))  # a job that began meanwhile
                jobs = {ji: j for j, ji in meta.jobs.items()}
                job = jobs.get(record[0])
            if job is not None:
                states.append((user, job, UserState.from_record(record)))
    wanted = set().union(*(s.node_indexes() for _, _, s in states)) if states else set()
    names = meta.names
    if not wanted <= names.keys():  # nodes allocated since the meta was read
        names = {**names, **counters.run(counters.plan_node_names(meta.campaign, wanted - names.keys()))}
    return [{
        "tenant_id": meta.tenant, "campaign_id": meta.campaign, "job_id": job, "user_id": user,
        **state.journey(names),
        "snapshot_at": snapshot_at,
    } for user, job, state in states]
