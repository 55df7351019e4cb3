"""One contract suite for every report store: SQLite (real); MongoDB through mongomock-ng, or a
real server when CAMPAIGN_COUNTERS_TEST_MONGO_URL is set; and MongoDB's wire protocol served by
nx-27017 on a loopback port, so the real PyMongo driver, BSON and network are exercised too
(its deviations from MongoDB are named in tests/wire_mongo.py and marked where met)."""

from __future__ import annotations

import os
import uuid

import pytest

from campaign_counters import BackendError, ValidationError
from campaign_counters.stores import open_store
from campaign_counters.stores.mongo import MongoStore
from wire_mongo import DEVIATIONS

MONGO_URL = os.environ.get("CAMPAIGN_COUNTERS_TEST_MONGO_URL")


def _server_store(base_url):
    db = f"cc_test_{uuid.uuid4().hex[:8]}"
    s = open_store(f"{base_url.rstrip('/')}/{db}")
    yield s
    s.client.drop_database(db)
    s.close()


@pytest.fixture(params=["sqlite", "mongo", "wire"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/reports.db")
        yield s
        s.close()
    elif request.param == "wire":
        for mark in request.node.iter_markers("wire_deviation"):
            request.applymarker(pytest.mark.xfail(reason=DEVIATIONS[mark.args[0]], strict=False))
        yield from _server_store(request.getfixturevalue("wire_mongo").url)
    elif MONGO_URL:
        yield from _server_store(MONGO_URL)
    else:
        mongomock_ng = pytest.importorskip("mongomock_ng")
        s = MongoStore("mongodb://mock/cc_test", client=mongomock_ng.MongoClient())
        yield s


def report(job, n, tenant="t1", campaign="c1"):
    return {
        "tenant_id": tenant, "campaign_id": campaign, "job_id": job,
        "target_users_count": n, "sent_users_count": n, "node_analytics": {"a": {"reached_count": n, "choices": {"x": 1}}},
        "funnel_data": [{"node": "a", "reached_count": n, "conversion_rate": 100.0, "drop_off_rate": 0.0}],
        "status": "RUNNING", "updated_at": "2026-01-01T00:00:00.000Z", "snapshot_at": "2026-01-01T00:00:01.000Z",
    }


def journey(user, steps, completed=False, job="j1"):
    return {
        "tenant_id": "t1", "campaign_id": "c1", "job_id": job, "user_id": user,
        "journey_path": [{"node": n, "choice": ch, "ts": ts} for n, ch, ts in steps],
        "completed": completed, "exit_node": "end" if completed else None,
        "completion_time": 5.0 if completed else None, "total_interactions": len(steps),
        "snapshot_at": "2026-01-01T00:00:01.000Z",
    }


def test_campaign_reports_upsert_replaces_by_natural_key(store):
    store.upsert_campaign_reports([report(None, 1), report("j1", 1), report("j2", 2)])
    store.upsert_campaign_reports([report(None, 5), report("j1", 7)])
    assert store.campaign_report("t1", "c1", None)["target_users_count"] == 5
    assert store.campaign_report("t1", "c1", "j1") == report("j1", 7)
    assert store.campaign_report("t1", "c1", "j2")["target_users_count"] == 2
    assert [d["job_id"] for d in store.campaign_reports("t1", "c1")] == [None, "j1", "j2"]
    assert store.campaign_report("t1", "c1", "j3") is None


def test_tenants_are_separate(store):
    store.upsert_campaign_reports([report(None, 1, tenant="t1"), report(None, 9, tenant="t2", campaign="c9")])
    assert store.campaign_report("t2", "c1", None) is None
    assert store.campaign_report("t1", "c9", None) is None
    assert store.campaign_reports("t2", "c1") == []


@pytest.mark.wire_deviation("bool-set")
def test_a_journey_is_written_whole(store):
    store.upsert_journeys([journey("u1", [("a", "x", 10.0), ("b", "y", 20.0)])])
    store.upsert_journeys([journey("u1", [("a", "x", 10.0), ("c", None, 15.0), ("b", "y", 20.0)], completed=True)])
    doc = store.journey("t1", "c1", "j1", "u1")
    assert [s["node"] for s in doc["journey_path"]] == ["a", "c", "b"]
    assert doc["completed"] is True and doc["exit_node"] == "end" and doc["total_interactions"] == 3
    # the same journey again (a retried snapshot): nothing duplicated
    store.upsert_journeys([journey("u1", [("a", "x", 10.0), ("c", None, 15.0), ("b", "y", 20.0)], completed=True)])
    assert store.journey("t1", "c1", "j1", "u1") == doc
    assert store.journey("t1", "c1", "j2", "u1") is None
    assert store.journey_lengths("t1", "c1", "j1", ["u1", "nobody"]) == {"u1": 3}


def test_journey_without_steps(store):
    store.upsert_journeys([journey("u2", [])])
    doc = store.journey("t1", "c1", "j1", "u2")
    assert doc["journey_path"] == [] and doc["completed"] is False


def test_steps_keep_the_order_they_were_written_in(store):
    """Ties in time keep their arrival order, as the live journey gives it."""
    store.upsert_journeys([journey("u1", [("z", None, 1.0), ("a", None, 1.0), ("b", None, 1.0)])])
    assert [s["node"] for s in store.journey("t1", "c1", "j1", "u1")["journey_path"]] == ["z", "a", "b"]


def test_durable_state_by_kind_and_key(store):
    store.put_state("owner", "c1", {"tenant": "t1"})
    store.put_state("owner", "c2", {"tenant": "t2"})
    store.put_state("owner", "c1", {"tenant": "t1", "script_sha": "abc"})
    store.put_state("epoch", "current", {"value": "e1"})
    assert store.states("owner") == {"c1": {"tenant": "t1", "script_sha": "abc"}, "c2": {"tenant": "t2"}}
    assert store.state("epoch", "current") == {"value": "e1"} and store.state("epoch", "other") is None
    store.delete_state("owner", "c2")
    store.delete_state("owner", "never-there")
    assert list(store.states("owner")) == ["c1"]


def test_overview_upsert(store):
    doc = {"tenant_id": "t1", "report_type": "daily", "report_date": "2026-01-02", "campaigns_count": 3}
    store.upsert_overview(doc)
    store.upsert_overview({**doc, "campaigns_count": 4})
    assert store.overview("t1", "daily", "2026-01-02")["campaigns_count"] == 4
    assert store.overview("t1", "weekly", "2026-01-02") is None


def test_reconcile_reports_newest_first(store):
    for i in range(3):
        store.insert_reconcile({"tenant_id": "t1", "created_at": f"2026-01-0{i + 1}T00:00:00Z", "drift": [i]})
    store.insert_reconcile({"tenant_id": "t2", "created_at": "2026-01-09T00:00:00Z", "drift": []})
    got = store.reconcile_reports("t1", limit=2)
    assert [d["drift"] for d in got] == [[2], [1]]


def test_ping(store):
    store.ping()


def test_bad_store_url():
    with pytest.raises(ValidationError) as info:
        open_store("postgres://x/y")
    assert info.value.field == "store-url"


def test_unreachable_mongo_is_a_backend_error_without_password():
    s = open_store("mongodb://user:s3cret@127.0.0.1:1/db?serverSelectionTimeoutMS=200")
    with pytest.raises(BackendError) as info:
        s.upsert_campaign_reports([report(None, 1)])
    assert "s3cret" not in str(info.value)


def test_delete_journeys_of_one_campaign(store):
    store.upsert_journeys([journey("u1", [("a", None, 1.0)]), journey("u2", [("a", None, 1.0)])])
    other = dict(journey("u1", [("x", None, 1.0)]), campaign_id="c2")
    store.upsert_journeys([other])
    store.delete_journeys("t1", "c1")
    assert store.journey("t1", "c1", "j1", "u1") is None and store.journey("t1", "c1", "j1", "u2") is None
    assert store.journey("t1", "c2", "j1", "u1")["journey_path"][0]["node"] == "x"
    store.upsert_journeys([journey("u1", [("b", None, 2.0)])])
    assert [s["node"] for s in store.journey("t1", "c1", "j1", "u1")["journey_path"]] == ["b"]


def test_sqlite_files_of_earlier_versions_are_migrated(tmp_path):
    """Steps were keyed by journal entry id; opening the file keeps them, in arrival order."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE journey_steps (tenant_id TEXT NOT NULL, campaign_id TEXT NOT NULL, job_id TEXT NOT NULL,
            user_id TEXT NOT NULL, sid TEXT NOT NULL, node TEXT, choice TEXT, ts REAL NOT NULL,
            PRIMARY KEY (tenant_id, campaign_id, job_id, user_id, sid)) WITHOUT ROWID;
        CREATE TABLE user_journeys (tenant_id TEXT NOT NULL, campaign_id TEXT NOT NULL, job_id TEXT NOT NULL,
            user_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (tenant_id, campaign_id, job_id, user_id)) WITHOUT ROWID;
    """)
    db.executemany("INSERT INTO journey_steps VALUES ('t1', 'c1', 'j1', 'u1', ?, ?, NULL, ?)",
                   [("10-1.0", "b", 5.0), ("9-0.2", "a", 5.0), ("11-0.0", "c", 1.0)])
    db.execute("""INSERT INTO user_journeys VALUES ('t1', 'c1', 'j1', 'u1', '{"total_interactions": 3}')""")
    db.commit()
    db.close()
    s = open_store(f"sqlite:///{path}")
    assert [x["node"] for x in s.journey("t1", "c1", "j1", "u1")["journey_path"]] == ["c", "a", "b"]
    s.close()


HEX = "64f1c0ffee0123456789abcd"  # an ObjectId as FPTChat's campaign ids are


@pytest.mark.wire_deviation("objectid-equality")
def test_an_objectid_campaign_reads_back_as_the_same_string(store):
    store.upsert_campaign_reports([report(None, 1, campaign=HEX), report("j1", 2, campaign=HEX)])
    store.upsert_campaign_reports([report("j1", 3, campaign=HEX)])
    assert store.campaign_report("t1", HEX, "j1") == report("j1", 3, campaign=HEX)
    assert [(d["job_id"], d["campaign_id"]) for d in store.campaign_reports("t1", HEX)] == [(None, HEX), ("j1", HEX)]
    upper = HEX.upper()  # not what str(ObjectId) gives: an id of its own, kept as a string
    store.upsert_campaign_reports([report(None, 9, campaign=upper)])
    assert store.campaign_report("t1", upper, None)["target_users_count"] == 9
    assert store.campaign_report("t1", HEX, None)["target_users_count"] == 1
    store.upsert_journeys([dict(journey("u1", [("a", None, 1.5)]), campaign_id=HEX)])
    assert store.journey("t1", HEX, "j1", "u1")["campaign_id"] == HEX
    store.delete_journeys("t1", HEX)
    assert store.journey("t1", HEX, "j1", "u1") is None


def test_step_times_keep_their_milliseconds(store):
    store.upsert_journeys([journey("u1", [("b", None, 0.001), ("a", "x", 1_700_000_000.123)])])
    assert [s["ts"] for s in store.journey("t1", "c1", "j1", "u1")["journey_path"]] == [0.001, 1_700_000_000.123]


def overview_doc(day, tz, start, end, **counts):
    return {"tenant_id": "t1", "report_type": "daily", "report_date": day, "timezone": tz,
            "window_start": start, "window_end": end, "computed_at": "2026-03-30T00:00:05.000Z", **counts}


def test_overviews_of_local_days_read_back_in_their_timezone(store):
    berlin = overview_doc("2026-03-29", "Europe/Berlin", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00",
                          campaigns_count=2)  # the day clocks go forward: 23 hours
    store.upsert_overview(berlin)
    assert store.overview("t1", "daily", "2026-03-29") == berlin
    # local midnights of neighbouring days, 2 h apart in UTC, in the two extreme timezones
    west = overview_doc("2026-01-01", "Etc/GMT+12", "2026-01-01T00:00:00-12:00", "2026-01-02T00:00:00-12:00",
                        campaigns_count=1)
    east = overview_doc("2026-01-02", "Pacific/Kiritimati", "2026-01-02T00:00:00+14:00",
                        "2026-01-03T00:00:00+14:00", campaigns_count=3)
    store.upsert_overview(west)
    store.upsert_overview(east)
    assert store.overview("t1", "daily", "2026-01-01") == west
    assert store.overview("t1", "daily", "2026-01-02") == east
    assert store.overview("t1", "daily", "2026-01-03") is None


def test_reconcile_reports_read_back_as_written(store):
    doc = {"tenant_id": "t1", "created_at": "2026-01-01T00:00:00.250Z", "date": "2025-12-31", "until": None,
           "timezone": "UTC", "campaigns": [HEX, "c1"], "checked": 3, "repaired": [HEX],
           "drift": [{"campaign": HEX, "job": None, "metric": "total_interactions", "expected": 2, "actual": 1,
                      "source": "live"}]}
    store.insert_reconcile(doc)
    assert store.reconcile_reports("t1") == [doc]
