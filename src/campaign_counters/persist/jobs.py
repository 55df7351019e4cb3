"""RQ entry points of the snapshot jobs, and the tick that enqueues them.

Jobs take only ids as arguments: URLs (which may hold passwords) come from
the worker's environment, so they are never stored in the queue or logged
in job descriptions.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from ..config import QUEUE_NAME, Config
from ..counters import Counters
from ..counters import maintenance as m
from ..stores import ReportStore, open_store
from ..errors import SnapshotRefused
from .dashboard import publish_operations
from .durable import check_redis
from .snapshot import snapshot_campaign

log = logging.getLogger(__name__)

RETRY_INTERVALS = [5, 30, 120]


@lru_cache(maxsize=1)
def job_context() -> tuple[Counters, ReportStore, int]:
    """The worker's Redis client, report store and retention, from its environment (made once)."""
    cfg = Config.from_env()
    return Counters(cfg.redis), open_store(cfg.store), cfg.retention_seconds


def snapshot_job(tenant: str, campaign: str) -> dict[str, Any]:
    """RQ entry point: persist one campaign (raises so that RQ retries; a refusal is a result, not a failure)."""
    counters, store, retention = job_context()
    check_redis(counters, store)
    try:
        result = snapshot_campaign(counters, store, campaign, retention=retention)
    except SnapshotRefused as exc:
        log.error("%s", exc)
        return {"tenant": tenant, "campaign": campaign, "refused": exc.reason}
    if result.tenant != tenant:
        log.warning("snapshot of %s: tenant is %s, job said %s", campaign, result.tenant, tenant)
    return result.as_dict()


def snapshot_job_id(campaign: str) -> str:
    return f"cc-snapshot-{campaign}"


def enqueue_snapshot(queue: Any, tenant: str, campaign: str) -> bool:
    """Enqueue unless a snapshot of this campaign is already queued or running."""
    from rq import Retry
    from rq.exceptions import DuplicateJobError

    try:
        queue.enqueue(
            snapshot_job, tenant, campaign,
            job_id=snapshot_job_id(campaign), unique=True,
            retry=Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS)),
            result_ttl=0, failure_ttl=60, job_timeout=1800,
            description=f"snapshot {tenant}/{campaign}",
        )
    except DuplicateJobError:
        return False
    return True


def tick_snapshots(counters: Counters, queue: Any) -> list[str]:
    """Enqueue a snapshot for every campaign with unpersisted changes; publish the operations figures."""
    enqueued = []
    dirty = counters.run(m.dirty_campaigns(counters))
    for campaign, tenant, pending in dirty:
        if tenant is None or pending <= 0:
            continue
        if enqueue_snapshot(queue, tenant, campaign):
            enqueued.append(campaign)
    publish_operations(counters, dirty)
    return enqueued


def make_queue(url: str) -> Any:
    import redis
    from rq import Queue

    return Queue(QUEUE_NAME, connection=redis.Redis.from_url(url))
