"""Nightly reconcile: find drift against the history, repair it atomically, come back clean."""

from __future__ import annotations

import json
import random
from datetime import date

import mongomock_ng
import pytest

from campaign_counters import Counters, TenantMismatch
from campaign_counters.stores import open_store
from campaign_counters.nightly.history import JsonlHistory, MongoHistory
from campaign_counters.nightly.reconcile import compare, reconcile
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.persist.views import stored_report
from oracle import expected_report, metrics_of
from scenarios import OFFER_SCRIPT, random_events

T = "tenant-a"


@pytest.fixture
def counters(redis_url):
    c = Counters(redis_url)
    yield c
    c.close()


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/reports.db")
    yield s
    s.close()


def write_history(tmp_path, events):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return JsonlHistory(str(path))


def scenario(counters, campaigns=("c-1", "c-2"), users=80, drop=0.1, seed=3):
    """History has every event; the realtime path lost some and saw one stray extra."""
    rng = random.Random(seed)
    history, recorded = [], []
    for i, campaign in enumerate(campaigns):
        counters.load_script(T, campaign, OFFER_SCRIPT)
        events = random_events(OFFER_SCRIPT, users, seed=seed + i, campaign=campaign, tenant=T)
        history += events
        recorded += [e for e in events if rng.random() > drop]
    counters.record_many(recorded)
    return history, recorded


def test_reconcile_finds_drift_repairs_it_and_comes_back_clean(counters, store, tmp_path):
    history, recorded = scenario(counters)
    for campaign in ("c-1", "c-2"):
        snapshot_campaign(counters, store, campaign)
    source = write_history(tmp_path, history)
    first = reconcile(counters, store, source, T)
    assert first.checked == 6  # 2 campaigns x (2 jobs + total)
    assert first.drift and {d["source"] for d in first.drift} == {"live", "snapshot"}
    sample = next(d for d in first.drift if d["metric"] == "total_interactions" and d["job"] is None)
    mine = [e for e in history if e["campaign"] == sample["campaign"]]
    assert sample["expected"] == expected_report(mine, OFFER_SCRIPT)["total_interactions"]
    assert sample["actual"] == expected_report([e for e in recorded if e["campaign"] == sample["campaign"]],
                                               OFFER_SCRIPT)["total_interactions"]
    fixed = reconcile(counters, store, source, T, repair=True)
    assert fixed.repaired == ["c-1", "c-2"] and fixed.after_repair == []
    assert fixed.drift == first.drift  # what the repair changed, from what to what
    for campaign in ("c-1", "c-2"):
        mine = [e for e in history if e["campaign"] == campaign]
        for job in (None, "job-1", "job-2"):
            assert metrics_of(counters.report(T, campaign, job)) == expected_report(mine, OFFER_SCRIPT, job)
            assert metrics_of(stored_report(store, T, campaign, job)) == expected_report(mine, OFFER_SCRIPT, job)
    again = reconcile(counters, store, source, T)
    assert again.drift == [] and again.repaired == []
    from campaign_counters.counters import maintenance as m

    days = sorted({counters.local_day(T, int(e["ts"] * 1000)) for e in history})
    assert sum(counters.run(m.tenant_day_users(counters, T, d)) for d in days) == pytest.approx(
        len({(counters.local_day(T, int(e["ts"] * 1000)), e["user"]) for e in history}), rel=0.05)
    assert not [k for k in counters.run(m.registry(counters.shadow()))]  # no shadow left behind
    assert [(r["drift"] == [], r["after_repair"]) for r in store.reconcile_reports(T)] == \
        [(True, None), (False, []), (False, None)]


def test_repair_keeps_status_and_later_events_still_count(counters, store, tmp_path):
    history, _ = scenario(counters, campaigns=("c-1",), drop=0.3)
    counters.record({"type": "status", "tenant": T, "campaign": "c-1", "ts": 5, "status": "RUNNING"})
    source = write_history(tmp_path, history)
    reconcile(counters, store, source, T, repair=True)
    assert counters.report(T, "c-1")["status"] == "RUNNING"
    extra = {"type": "sent", "tenant": T, "campaign": "c-1", "job": "job-1", "user": "late", "ts": 1.7e9, "id": "late"}
    counters.record(extra)
    assert metrics_of(counters.report(T, "c-1")) == expected_report(history + [extra], OFFER_SCRIPT)


def test_date_selects_the_campaigns_of_that_local_day(counters, tmp_path):
    history, _ = scenario(counters, campaigns=("c-1",), drop=0.0)
    late = random_events(OFFER_SCRIPT, 10, seed=50, campaign="c-late", tenant=T, t0=1_800_000_000)
    counters.load_script(T, "c-late", OFFER_SCRIPT)
    source = write_history(tmp_path, history + late)
    day = date(2027, 1, 15)  # 1_800_000_000 is 2027-01-15 in UTC
    result = reconcile(counters, None, source, T, day=day)
    assert result.campaigns == ["c-late"]
    assert result.drift  # nothing of c-late was recorded live


def test_repair_never_touches_another_tenants_campaign(counters, tmp_path):
    counters.load_script("owner", "c-1", OFFER_SCRIPT)
    counters.record({"type": "sent", "tenant": "owner", "campaign": "c-1", "job": "j", "user": "u", "ts": 1})
    before = counters.report("owner", "c-1")
    source = write_history(tmp_path, random_events(OFFER_SCRIPT, 5, seed=1, campaign="c-1", tenant=T))
    with pytest.raises(TenantMismatch):
        reconcile(counters, None, source, T, repair=True)
    after = counters.report("owner", "c-1")
    assert metrics_of(after) == metrics_of(before)


def test_mongo_history_mapping_on_mongomock(counters, tmp_path):
    from bson import ObjectId
    from datetime import datetime, timezone

    client = mongomock_ng.MongoClient()
    coll = client["fptchat"]["NotificationHistory"]
    camp = ObjectId()
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    docs = [
        {"tenant_id": T, "campaign_id": camp, "job_id": "j1", "user_id": "u1", "first_message": True, "created_at": t0},
        {"tenant_id": T, "campaign_id": camp, "job_id": "j1", "user_id": "u1", "interaction_user": True,
         "answer_target": "ask", "selected_action": "go", "answer_title": "Go!", "created_at": t0.replace(minute=5)},
        {"tenant_id": T, "campaign_id": camp, "job_id": "j1", "user_id": "u2", "created_at": t0},
        {"tenant_id": "other", "campaign_id": camp, "job_id": "j1", "user_id": "u3", "first_message": True, "created_at": t0},
        {"tenant_id": T, "campaign_id": camp, "job_id": "j1", "user_id": "u4", "first_message": True,
         "created_at": datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)},
    ]
    coll.insert_many(docs)
    source = MongoHistory("mongodb://x/fptchat", client=client)
    reports = []
    events = list(source.events(T, progress=lambda *r: reports.append(r)))
    assert reports == [(4, 4, "documents")]  # counted on the server with the same filter
    assert [(e.type, e.user) for e in events] == [("sent", "u1"), ("interaction", "u1"), ("targeted", "u2"), ("sent", "u4")]
    assert events[1].target == "ask" and events[1].choice == "go" and events[1].title == "Go!"
    assert events[0].campaign == str(camp) and events[0].id == f"{docs[0]['_id']}:sent"
    assert events[1].ts == t0.timestamp() + 300
    day = list(source.events(T, {str(camp)}, int(t0.timestamp() * 1000), int(t0.timestamp() * 1000) + 86_400_000))
    assert [e.user for e in day] == ["u1", "u1", "u2"]
    renamed = MongoHistory("mongodb://x/fptchat", client=client, mapping={"sent": "interaction_user"})
    assert [e.type for e in renamed.events(T)][:2] == ["targeted", "sent"]


def test_compare_treats_missing_counts_as_zero():
    a = {"total_interactions": 2, "node_analytics": {"x": {"reached_count": 1, "choices": {"c": 1}}},
         "avg_completion_time": None}
    b = {"total_interactions": 2, "node_analytics": {"x": {"reached_count": 1, "choices": {}}},
         "avg_completion_time": None}
    assert compare(a, b) == [("node_analytics.x.choices.c", 1, 0)]
    assert compare(a, a) == []
