"""Snapshot one campaign from Redis into the report store.

Order of work, chosen so that a crash at any point is harmless:

1. note how many changes are pending for the campaign;
2. for each job, read the journal a page at a time, write the touched users'
   journeys in batches (absolute summaries, steps keyed by journal id), and
   only after the store acknowledged the whole page, trim it from the journal;
3. write every job's report and the campaign total (absolute values);
4. subtract the noted changes from the campaign's change mark.

Re-running after a crash re-reads the untrimmed page and rewrites the same
documents; steps merge by id, so nothing is duplicated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..counters import Counters
from ..counters import maintenance as m
from ..counters.records import UserState, find_record, journey_step
from ..errors import NotFound
from ..reports import iso_ms
from ..stores import ReportStore
from .dashboard import publish_campaign

log = logging.getLogger(__name__)

REPORT_KEYS = {"tenant": "tenant_id", "campaign": "campaign_id", "job": "job_id"}
BATCH = 20_000  # journal steps per store write: fewer, larger commits (each one is synced to disk)


@dataclass
class SnapshotResult:
    tenant: str
    campaign: str
    reports: int = 0
    journeys: int = 0
    steps: int = 0
    batches: int = 0
    expired: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    return {
        "tenant": doc["tenant_id"], "campaign": doc["campaign_id"], "job": doc["job_id"], "user": doc["user_id"],
        "journey_path": [{k: s[k] for k in ("node", "choice", "ts")} for s in doc["journey_path"]],
        "completed": doc["completed"], "exit_node": doc["exit_node"],
        "completion_time": doc["completion_time"], "total_interactions": doc["total_interactions"],
    }


def _now_iso() -> str:
    return iso_ms(int(time.time() * 1000)) or ""


def snapshot_campaign(
    counters: Counters,
    store: ReportStore,
    campaign: str,
    *,
    batch: int = BATCH,
    retention: int | None = None,
    progress: Callable[[SnapshotResult], None] | None = None,
) -> SnapshotResult:
    """Persist one campaign; safe to repeat and to resume after a crash."""
    started = time.monotonic()
    seen = counters.run(m.pending_changes(counters, campaign))
    meta = counters.run(m.campaign_meta(counters, campaign))
    if meta.tenant is None:
        raise NotFound(f"campaign {campaign!r} has no data in Redis")
    result = SnapshotResult(meta.tenant, campaign)
    snapshot_at = _now_iso()
    for job, ji in sorted(meta.jobs.items()):
        count = 1
        while True:
            page = counters.run(counters.plan_journal_page(campaign, job, "-", count))
            if page.last is None:
                break
            for start in range(0, len(page.steps), batch):
                docs = _journey_docs(counters, meta, job, ji, page.steps[start:start + batch], snapshot_at)
                store.upsert_journeys(docs)
                result.batches += 1
                result.journeys += len(docs)
                result.steps += sum(len(d["journey_path"]) for d in docs)
                if progress:
                    progress(result)
            counters.run(m.trim_journal(counters, campaign, job, page.last))
            count = page.next_count(batch)
    docs = []
    for job in [None, *sorted(meta.jobs)]:
        try:
            docs.append(report_doc(counters.report(meta.tenant, campaign, job), snapshot_at))
        except NotFound:
            continue  # a job known only from a status event has no counters yet
    store.upsert_campaign_reports(docs)
    result.reports = len(docs)
    counters.run(m.settle(counters, campaign, seen))
    if retention is not None and meta.completed_at is not None:
        counters.run(m.expire_campaign(counters, campaign, list(meta.jobs), retention))
        result.expired = True
    elif meta.expiring and meta.completed_at is None:
        counters.run(m.keep_campaign(counters, campaign, list(meta.jobs)))
    publish_campaign(counters, meta.tenant, campaign, docs, retention if result.expired else None)
    result.seconds = time.monotonic() - started
    log.info("snapshot %s/%s: %d reports, %d journeys, %d steps in %.2fs",
             meta.tenant, campaign, result.reports, result.journeys, result.steps, result.seconds)
    return result


def _journey_docs(counters: Counters, meta: m.CampaignMeta, job: str, ji: int,
                  steps: list[dict[str, Any]], snapshot_at: str) -> list[dict[str, Any]]:
    users = list(dict.fromkeys(e["user"] for e in steps))
    raws = counters.run(m.user_records(counters, meta.campaign, users))
    paths: dict[str, list[dict[str, Any]]] = {u: [] for u in users}
    for e in steps:
        if e["type"] == "i":
            paths[e["user"]].append(journey_step(e, with_id=True))
    docs = []
    for user, raw in zip(users, raws):
        record = find_record(raw, ji)
        if record is None:
            continue  # the user's keys expired or were repaired away
        docs.append({
            "tenant_id": meta.tenant, "campaign_id": meta.campaign, "job_id": job, "user_id": user,
            "journey_path": paths[user],
            **UserState.from_record(record).summary(meta.names),
            "snapshot_at": snapshot_at,
        })
    return docs
