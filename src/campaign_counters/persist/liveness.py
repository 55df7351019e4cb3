"""A job whose worker died is run again within a minute: short heartbeats, and a sweep on every tick.

RQ keeps each running job's execution in the queue's StartedJobRegistry
with an expiry that the worker's heartbeats push forward. When the whole
worker dies (SIGKILL, the OOM killer, a lost host) the job stays `started`,
its deterministic id refuses a new enqueue, and nothing runs it until the
expiry has passed *and* someone calls `StartedJobRegistry.cleanup()`, which
RQ's own workers do every 10 minutes (stock heartbeats also last 90 s). So:

1. `HeartbeatWorker` beats every `HEARTBEAT` seconds and lets an execution
   expire `GRACE` seconds after a missed beat: at most 15 s after a death;
2. the scheduler's tick calls `requeue_abandoned`: RQ's own cleanup (a job
   with retries left is retried, else moved to the failed registry), then a
   retried job goes back on the queue at once rather than after its retry
   interval, where any free worker takes it.

Death to re-run: at most 15 s to expire, plus one tick (10 s by default),
plus the wait for the dead run's snapshot lease (at most 30 s after its last
renewal): under 60 s. Workers must run as `campaign-counters worker` (a stock
`rq worker` keeps the 90 s expiry). `job_states` is what `health` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rq import Worker
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus

HEARTBEAT = 5  # seconds between a busy worker's heartbeats (RQ: 30)
GRACE = 10  # seconds a missed heartbeat is tolerated before the job counts as abandoned (RQ: 60)
LISTED = 20  # jobs listed per state by `job_states`


class HeartbeatWorker(Worker):
    """An RQ worker whose running job is seen abandoned at most HEARTBEAT + GRACE seconds after its death."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("job_monitoring_interval", HEARTBEAT)
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Seconds until this job's execution expires unless a heartbeat renews it."""
        return int(self.job_monitoring_interval) + GRACE


@dataclass
class Abandoned:
    """Jobs found abandoned by one sweep: back on the queue, or failed (no retries left)."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def requeue_abandoned(queue: Any) -> Abandoned:
    """Hand the jobs of dead workers back to the queue now (RQ's cleanup, then no retry wait)."""
    started, scheduled = queue.started_job_registry, queue.scheduled_job_registry
    expired = sorted(set(started.get_expired_job_ids()))
    out = Abandoned()
    if not expired:
        return out
    started.cleanup()
    for job_id in expired:
        if job_id in scheduled:
            try:
                scheduled.requeue(job_id)
            except InvalidJobOperation:  # RQ's scheduler moved it to the queue meanwhile
                pass
    for job_id, job in zip(expired, Job.fetch_many(expired, connection=queue.connection)):
        status = job.get_status(refresh=False) if job is not None else None
        if status == JobStatus.QUEUED:
            out.requeued.append(job_id)
        elif status == JobStatus.FAILED:
            out.failed.append(job_id)
    return out


def job_states(queue: Any, limit: int = LISTED) -> dict[str, Any]:
    """Started, failed and abandoned jobs (ids and details, at most `limit` each); `ok` when none is abandoned."""
    conn = queue.connection
    abandoned = sorted(set(queue.started_job_registry.get_expired_job_ids()))
    started_ids = queue.started_job_registry.get_job_ids(cleanup=False)
    failed_ids = queue.failed_job_registry.get_job_ids(cleanup=False)
    started = []
    for job_id, job in zip(started_ids[:limit], Job.fetch_many(started_ids[:limit], connection=conn)):
        started.append({"id": job_id, "worker": job.worker_name if job else None,
                        "started_at": job.started_at.isoformat() if job and job.started_at else None,
                        "abandoned": job_id in abandoned})
    failed = []
    for job_id, job in zip(failed_ids[:limit], Job.fetch_many(failed_ids[:limit], connection=conn)):
        result = job.latest_result() if job else None
        error = ((result.exc_string or "") if result is not None else "").strip().splitlines()
        failed.append({"id": job_id, "error": error[-1] if error else None})
    out = {
        "ok": not abandoned,
        "started": started, "failed": failed, "abandoned": abandoned[:limit],
        "counts": {"started": len(started_ids), "failed": len(failed_ids), "abandoned": len(abandoned)},
    }
    if abandoned:
        out["problem"] = ("jobs of dead workers are still marked started: the scheduler's next tick re-queues "
                          "them (is `campaign-counters scheduler` running?)")
    return out
