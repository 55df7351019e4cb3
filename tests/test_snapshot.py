"""Snapshots: the store equals live, re-runs and crashes change nothing, scheduling is bounded."""

from __future__ import annotations

import time

import mongomock_ng
import pytest
import redis
from rq import Queue, SimpleWorker

from campaign_counters import BackendError, Counters, TenantMismatch
from campaign_counters.counters import maintenance as m
from campaign_counters.stores import open_store
from campaign_counters.persist.jobs import enqueue_snapshot, snapshot_job_id
from campaign_counters.persist.jobs import tick_snapshots as tick
from campaign_counters.stores.mongo import MongoStore
from campaign_counters.persist.snapshot import report_from_doc, snapshot_campaign
from campaign_counters.stores import ReportStore
from campaign_counters.persist.views import live_journey, stored_journey, stored_report
from scenarios import C, OFFER_SCRIPT, T, ev, random_events


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/reports.db")
    else:
        s = MongoStore("mongodb://mock/cc", client=mongomock_ng.MongoClient())
    yield s
    s.close()


@pytest.fixture
def counters(redis_url):
    c = Counters(redis_url)
    yield c
    c.close()


def seed(counters, campaign=C, users=150, seed_=4):
    counters.load_script(T, campaign, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, users, seed=seed_, campaign=campaign)
    counters.record_many(events)
    return events


VOLATILE = ("snapshot_at", "campaign_id", "updated_at")


def all_docs(store, campaign):
    """Every document of a campaign, without what differs between two campaigns
    recorded at different times (ids, timestamps of writing, journal ids)."""
    reports = [{k: v for k, v in d.items() if k not in VOLATILE} for d in store.campaign_reports(T, campaign)]
    journeys = {}
    for job in ("job-1", "job-2"):
        for u in range(200):
            doc = store.journey(T, campaign, job, f"user-{u}")
            if doc:
                doc["journey_path"] = [{k: v for k, v in s.items() if k != "sid"} for s in doc["journey_path"]]
                journeys[(job, u)] = {k: v for k, v in doc.items() if k not in VOLATILE}
    return reports, journeys


def test_from_store_equals_live(counters, store):
    events = seed(counters)
    users = sorted({e["user"] for e in events})
    before = {(j, u): live_journey(counters, lambda: store, T, C, j, u)
              for j in ("job-1", "job-2") for u in users[:40] if any(e["user"] == u and e["job"] == j for e in events)}
    result = snapshot_campaign(counters, store, C, batch=40)
    assert result.batches > 3 and result.reports == 3
    for job in (None, "job-1", "job-2"):
        assert stored_report(store, T, C, job) == counters.report(T, C, job)
    for (job, user), want in before.items():
        assert stored_journey(store, T, C, job, user) == want
        assert live_journey(counters, lambda: store, T, C, job, user) == want
    assert counters.run(m.pending_since(counters, C)) == 0


def test_second_snapshot_changes_nothing(counters, store):
    seed(counters)
    snapshot_campaign(counters, store, C)
    first = all_docs(store, C)
    again = snapshot_campaign(counters, store, C)
    assert again.steps == 0
    assert all_docs(store, C) == first


def test_users_seen_before_the_first_snapshot_are_persisted_again_by_the_second(counters, store):
    counters.load_script(T, C, OFFER_SCRIPT)
    counters.record_many([ev("sent", "u1", 10), ev("sent", "u2", 11)])
    first = snapshot_campaign(counters, store, C)
    assert (first.journeys, first.users) == (2, 2)
    counters.record_many([ev("interaction", "u1", 20, target="ask", choice="go"),
                          ev("interaction", "u1", 30, target="bye", choice="no")])
    second = snapshot_campaign(counters, store, C)
    assert (second.journeys, second.users, second.steps) == (1, 1, 2)
    assert stored_journey(store, T, C, "job-1", "u1") == live_journey(counters, lambda: store, T, C, "job-1", "u1")
    assert [s["node"] for s in stored_journey(store, T, C, "job-1", "u1")["journey_path"]] == ["ask", "bye"]


def test_the_summary_counts_journeys_per_user_and_job_and_users_once(counters, store):
    counters.load_script(T, C, OFFER_SCRIPT)
    counters.record_many([ev("sent", f"u{i}", i) for i in range(200)] + [ev("sent", "u0", 5, job="job-2")])
    result = snapshot_campaign(counters, store, C)
    assert (result.journeys, result.users) == (201, 200)
    assert result.as_dict()["users"] == 200


class Crash(Exception):
    pass


class CrashingStore(ReportStore):
    """The real store, but the process 'dies' at a chosen journey write."""

    def __init__(self, inner, at_call, after_write):
        self.inner, self.at_call, self.after_write, self.calls = inner, at_call, after_write, 0
        self.url = inner.url

    def upsert_journeys(self, docs):
        self.calls += 1
        if self.calls == self.at_call:
            if self.after_write:
                self.inner.upsert_journeys(docs)  # acknowledged, but the trim never happens
            raise Crash()
        self.inner.upsert_journeys(docs)

    def __getattribute__(self, name):
        if name in ("upsert_journeys", "inner", "at_call", "after_write", "calls", "url"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    upsert_campaign_reports = campaign_report = campaign_reports = journey = delete_journeys = None
    upsert_overview = overview = insert_reconcile = reconcile_reports = ping = None
    journey_lengths = put_state = state = states = delete_state = None


@pytest.mark.parametrize("after_write", [True, False], ids=["between-write-and-trim", "between-batches"])
def test_crash_then_resume_gives_identical_documents(counters, store, after_write):
    seed(counters, "clean")
    seed(counters, "crashy")
    snapshot_campaign(counters, store, "clean", batch=50)
    with pytest.raises(Crash):
        snapshot_campaign(counters, CrashingStore(store, at_call=3, after_write=after_write), "crashy", batch=50)
    assert counters.run(m.pending_since(counters, "crashy")) > 0  # still marked for the next tick
    snapshot_campaign(counters, store, "crashy", batch=50)
    clean, crashy = all_docs(store, "clean"), all_docs(store, "crashy")
    assert crashy == clean
    assert len(clean[1]) > 100


def test_changes_during_a_snapshot_stay_marked(counters, store):
    seed(counters)
    start = counters.run(m.begin_snapshot(counters, C))
    counters.record(ev("sent", "late-user", 5))
    assert counters.run(m.end_snapshot(counters, C, start.rgen))
    assert counters.run(m.pending_since(counters, C)) > 0
    assert counters.run(m.changed_users(counters, C)) == []  # the frozen log is gone...
    assert counters.run(m.begin_snapshot(counters, C)).pending_since > 0
    assert counters.run(m.changed_users(counters, C)) == ["late-user"]  # ...the late user is in the next one
    snapshot_campaign(counters, store, C)
    assert counters.run(m.pending_since(counters, C)) == 0
    assert counters.run(m.dirty_campaigns(counters)) == []
    assert stored_journey(store, T, C, "job-1", "late-user")["journey_path"] == []


def test_a_user_changed_after_each_snapshot_is_persisted_by_the_next(counters, store):
    """Users logged before the first snapshot are logged again after it (the generation moves from 0 to 1)."""
    counters.load_script(T, C, OFFER_SCRIPT)
    steps = [ev("sent", "u", 1, id="s")] + [ev("interaction", "u", 2 + i, target=t, choice=ch, id=f"i{i}")
                                           for i, (t, ch) in enumerate([("ask", "go"), ("send_offer", "yes"),
                                                                        ("done", "ok")])]
    for n, step in enumerate(steps):
        counters.record(step)
        snapshot_campaign(counters, store, C)
        assert stored_journey(store, T, C, "job-1", "u") == live_journey(counters, lambda: store, T, C, "job-1", "u")
        assert stored_journey(store, T, C, "job-1", "u")["total_interactions"] == n


def test_tick_enqueues_at_most_one_job_per_campaign(counters, redis_url):
    campaigns = [f"camp-{i}" for i in range(20)]
    events = []
    for i, camp in enumerate(campaigns):
        counters.load_script(T, camp, OFFER_SCRIPT)
    per = 100_000 // 20
    for i, camp in enumerate(campaigns):
        for k in range(per // 2):
            events.append(ev("targeted", f"u{k}", 1, campaign=camp))
            events.append(ev("sent", f"u{k}", 2, campaign=camp))
    res = counters.record_many(events)
    assert res.accepted == 100_000
    queue = Queue("cc-test", connection=redis.Redis.from_url(redis_url))
    assert sorted(tick(counters, queue)) == sorted(campaigns)
    assert len(queue) == 20
    counters.record(ev("sent", "more", 3, campaign="camp-0"))
    assert tick(counters, queue) == []  # already queued: nothing new
    assert len(queue) == 20
    assert {j.id for j in queue.jobs} == {snapshot_job_id(c) for c in campaigns}


def test_worker_retries_when_the_store_is_down(counters, redis_url, tmp_path, monkeypatch):
    from campaign_counters.persist import jobs

    seed(counters, users=30)
    store_path = tmp_path / "reports.db"
    monkeypatch.setenv("CAMPAIGN_COUNTERS_REDIS_URL", redis_url)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_STORE_URL", "mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=100")
    monkeypatch.setattr(jobs, "RETRY_INTERVALS", [1, 1, 1])
    jobs.job_context.cache_clear()
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("cc-test", connection=conn)
    journal_before = conn.xlen(f"cc:v2:{{{C}}}:jr:job-1")
    assert enqueue_snapshot(queue, T, C)
    assert not enqueue_snapshot(queue, T, C)  # one pending job per campaign
    SimpleWorker([queue], connection=conn).work(burst=True)
    job = queue.fetch_job(snapshot_job_id(C))
    assert job is not None and job.retries_left == 2  # failed once, scheduled to retry
    assert job.id in queue.scheduled_job_registry.get_job_ids()
    assert conn.xlen(f"cc:v2:{{{C}}}:jr:job-1") == journal_before  # Redis untouched
    assert counters.run(m.pending_since(counters, C)) > 0
    monkeypatch.setenv("CAMPAIGN_COUNTERS_STORE_URL", f"sqlite:///{store_path}")
    jobs.job_context.cache_clear()
    time.sleep(1.2)
    SimpleWorker([queue], connection=conn).work(burst=True, with_scheduler=True)
    assert counters.run(m.pending_since(counters, C)) == 0
    assert stored_report(open_store(f"sqlite:///{store_path}"), T, C, None) == counters.report(T, C)
    assert conn.xlen(f"cc:v2:{{{C}}}:jr:job-1") == 0
    jobs.job_context.cache_clear()


def test_completed_campaign_gets_a_retention_ttl_after_its_final_snapshot(counters, store, raw):
    seed(counters, users=20)
    counters.record(ev("status", ts=99, job=None, status="COMPLETED"))
    result = snapshot_campaign(counters, store, C, retention=3600)
    assert result.expired
    for key in raw.scan_iter(f"cc:v2:{{{C}}}:*"):
        if b":id:" in key or b":d:" in key:
            continue
        assert 0 < raw.ttl(key) <= 3600, key
    assert report_from_doc(store.campaign_report(T, C, None))["status"] == "COMPLETED"


def test_snapshot_of_unknown_campaign(counters, store):
    from campaign_counters import NotFound

    with pytest.raises(NotFound):
        snapshot_campaign(counters, store, "nope")


def test_store_error_is_a_backend_error(counters):
    seed(counters, users=5)
    bad = open_store("mongodb://u:pw@127.0.0.1:1/db?serverSelectionTimeoutMS=100")
    with pytest.raises(BackendError) as info:
        snapshot_campaign(counters, bad, C)
    assert "pw@" not in str(info.value)


def test_an_expired_campaign_stays_bound_to_its_tenant_and_closed(counters, store, raw):
    seed(counters, users=20)
    counters.record(ev("status", ts=99, job=None, status="COMPLETED"))
    snapshot_campaign(counters, store, C, retention=1)
    stored = store.campaign_reports(T, C)
    time.sleep(1.2)
    assert not [k for k in raw.scan_iter(f"cc:v2:{{{C}}}:*") if b":id:" not in k and b":d:" not in k]
    late = ev("interaction", "user-1", 2e9, target="ask", choice="go")
    res = counters.record_many([late])
    assert res.rejected == 1 and res.rejections[0].field == "campaign" and "closed" in res.rejections[0].reason
    with pytest.raises(TenantMismatch):
        counters.record(dict(late, tenant="tenant-b"))
    with pytest.raises(TenantMismatch):
        counters.load_script("tenant-b", C, OFFER_SCRIPT)
    assert counters.run(m.dirty_campaigns(counters)) == []  # nothing to snapshot over the stored reports
    assert store.campaign_reports(T, C) == stored
    assert counters.run(m.rejected_counts(counters))["by_campaign"] == {C: 2}
    counters.load_script(T, C, OFFER_SCRIPT)  # the owner reopens it: counting starts again
    assert counters.record(late) == "applied"
    assert counters.report(T, C)["total_interactions"] == 1


def test_a_campaign_that_runs_again_loses_its_retention_ttl(counters, store, raw):
    seed(counters, users=10)

    def ttls():
        return {raw.ttl(k) > 0 for k in raw.scan_iter(f"cc:v2:{{{C}}}:*") if b":id:" not in k and b":d:" not in k}

    counters.record(ev("status", ts=200, job=None, status="COMPLETED"))
    assert snapshot_campaign(counters, store, C, retention=3600).expired and ttls() == {True}
    counters.record(ev("status", ts=100, job=None, status="RUNNING"))  # older than COMPLETED: still done
    assert snapshot_campaign(counters, store, C, retention=3600).expired and ttls() == {True}
    counters.record(ev("status", ts=300, job=None, status="RUNNING"))  # it runs again
    assert not snapshot_campaign(counters, store, C, retention=3600).expired
    assert ttls() == {False}
    assert counters.report(T, C)["status"] == "RUNNING"
    counters.record(ev("status", ts=400, job=None, status="COMPLETED"))
    assert snapshot_campaign(counters, store, C, retention=3600).expired and ttls() == {True}


def test_journeys_from_single_calls_and_bulk_batches_page_alike(counters, store):
    """Users logged by single calls and by bulk calls alike, persisted in small pages."""
    from oracle import expected_journey

    counters.load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 40, seed=11)
    for e in events[:60]:
        counters.record(e)  # the chat service: one event per call
    counters.record_many(events[60:120])
    for e in events[120:150]:
        counters.record(e)
    counters.record_many(events[150:])
    pairs = {(e["job"], e["user"]) for e in events}
    live = {p: counters.journey(T, C, *p) for p in pairs}
    result = snapshot_campaign(counters, store, C, batch=7)
    users = {e["user"] for e in events}
    assert result.batches == -(-len(users) // 7) and result.journeys == len(pairs)
    for job, user in pairs:
        want = expected_journey(events, OFFER_SCRIPT, job, user)
        assert {k: live[(job, user)][k] for k in want} == want
        assert {k: stored_journey(store, T, C, job, user)[k] for k in want} == want
