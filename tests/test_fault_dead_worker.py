"""Fault: a whole worker process is killed (SIGKILL by PID) in the middle of a snapshot.

Real `campaign-counters worker` and `scheduler` processes. The killed job
shows as started, then abandoned in `health` (not ok); the scheduler's tick
hands it to the other worker, and the documents it writes are exact (the
oracle), all within 60 s of the death.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import redis
from rq import Queue, Worker

from campaign_counters import Counters
from campaign_counters.config import QUEUE_NAME
from campaign_counters.counters import maintenance as m
from campaign_counters.persist.jobs import snapshot_job_id
from campaign_counters.persist.snapshot import journey_from_doc
from campaign_counters.persist.views import stored_report
from campaign_counters.stores import open_store
from cli_helpers import run_cli
from oracle import expected_journey, expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from servers import CliProcess, cli_env, wait_for

JOB = snapshot_job_id(C)


@pytest.fixture
def processes():
    started: list[CliProcess] = []
    yield started
    for proc in started:
        proc.stop()


def health(env):
    res = run_cli(env["CAMPAIGN_COUNTERS_HOME"], "health", env=env)
    return res.returncode, json.loads(res.stdout)


def test_a_snapshot_whose_worker_was_killed_is_rerun_by_another_worker_within_60s(redis_url, tmp_path, processes):
    db = tmp_path / "reports.db"
    env = cli_env(CAMPAIGN_COUNTERS_REDIS_URL=redis_url, CAMPAIGN_COUNTERS_STORE_URL=f"sqlite:///{db}",
                  CAMPAIGN_COUNTERS_HOME=str(tmp_path / "home"))
    events = random_events(OFFER_SCRIPT, 400, seed=51)
    counters = Counters(redis_url)
    counters.load_script(T, C, OFFER_SCRIPT)
    counters.record_many(events)
    open_store(f"sqlite:///{db}").close()  # the schema exists
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url))

    blocker = sqlite3.connect(db)  # a store that stalls: the snapshot blocks on its first write
    blocker.execute("BEGIN IMMEDIATE")
    assert run_cli(env["CAMPAIGN_COUNTERS_HOME"], "snapshot", "--enqueue", env=env).returncode == 0
    first = CliProcess(env, "worker", log=str(tmp_path / "worker-1.log"))
    processes.append(first)
    wait_for(lambda: JOB in queue.started_job_registry.get_job_ids(cleanup=False), 30, "the first worker to start")
    second = CliProcess(env, "worker", log=str(tmp_path / "worker-2.log"))
    processes.append(second)
    wait_for(lambda: len(Worker.all(queue=queue)) == 2, 30, "the second worker to register")
    time.sleep(1)  # the snapshot has read Redis and waits for the store

    first.kill()  # SIGKILL the worker and its work horse, by PID
    died = time.monotonic()
    blocker.rollback()
    blocker.close()

    code, out = health(env)
    assert [j["id"] for j in out["jobs"]["started"]] == [JOB]  # still marked started
    code, out = wait_for(lambda: (lambda h: h if h[1]["jobs"]["abandoned"] else None)(health(env)), 25,
                         "health to see the job abandoned")
    assert time.monotonic() - died < 20  # expires HEARTBEAT + GRACE (15 s) after the last heartbeat
    assert code == 1 and out["ok"] is False and out["jobs"]["abandoned"] == [JOB]
    assert "scheduler" in out["jobs"]["problem"]

    scheduler = CliProcess(env, "scheduler", log=str(tmp_path / "scheduler.log"))  # every 10 s, as deployed
    processes.append(scheduler)

    def done():
        return (counters.run(m.pending_since(counters, C)) == 0 and not queue.started_job_registry.get_job_ids()
                and JOB not in queue.get_job_ids())

    wait_for(done, max(1.0, 60 - (time.monotonic() - died)), "another worker to re-run the snapshot",
             every=0.2)
    assert time.monotonic() - died < 60
    assert "1 re-queued ['cc-snapshot-camp-1']" in scheduler.output()
    assert JOB in second.output()

    store = open_store(f"sqlite:///{db}")
    for job in (None, "job-1", "job-2"):
        assert metrics_of(stored_report(store, T, C, job)) == expected_report(events, OFFER_SCRIPT, job)
    pairs = {(e["job"], e["user"]) for e in events}
    for job, user in sorted(pairs):
        got = journey_from_doc(store.journey(T, C, job, user))
        assert {k: got[k] for k in ("journey_path", "completed", "exit_node", "completion_time",
                                    "total_interactions")} == expected_journey(events, OFFER_SCRIPT, job, user)
    code, out = health(env)
    assert out["jobs"]["ok"] and out["jobs"]["abandoned"] == [] and out["jobs"]["started"] == []
    counters.close()


def test_the_sweep_requeues_abandoned_jobs_at_once_or_fails_those_without_retries(redis_url):
    from rq import Retry
    from rq.executions import Execution
    from rq.job import JobStatus

    from campaign_counters.persist.liveness import job_states, requeue_abandoned

    conn = redis.Redis.from_url(redis_url)
    queue = Queue("cc-sweep-test", connection=conn)
    retried = queue.enqueue("campaign_counters.persist.jobs.snapshot_job", "t", "c", job_id="with-retries",
                            retry=Retry(max=3, interval=[30, 60, 120]))
    once = queue.enqueue("campaign_counters.persist.jobs.snapshot_job", "t", "d", job_id="no-retries")
    for job in (retried, once):  # what a worker does when it starts a job, then dies
        queue.remove(job)
        with conn.pipeline() as pipe:
            job.set_status(JobStatus.STARTED, pipeline=pipe)
            Execution.create(job, ttl=1, pipeline=pipe, worker_name="dead-worker")
            pipe.execute()
    assert requeue_abandoned(queue).requeued == []  # not expired yet
    time.sleep(2.1)
    states = job_states(queue)
    assert states["ok"] is False and states["abandoned"] == ["no-retries", "with-retries"]
    assert sorted((j["id"], j["abandoned"]) for j in states["started"]) == [("no-retries", True),
                                                                           ("with-retries", True)]
    swept = requeue_abandoned(queue)
    assert (swept.requeued, swept.failed) == (["with-retries"], ["no-retries"])
    assert queue.get_job_ids() == ["with-retries"]  # now, not in 30 s
    states = job_states(queue)
    assert states["ok"] and states["started"] == [] and [j["id"] for j in states["failed"]] == ["no-retries"]
    assert "AbandonedJobError" in states["failed"][0]["error"]
    assert requeue_abandoned(queue).requeued == []
