"""Fault: Redis restarted without its data, and another tenant trying to claim a campaign.

A redis-server with persistence off, started by the test, holds a campaign
recorded and snapshotted into a SQLite store; it is killed (SIGKILL, by its
PID) and started again, empty, on the same socket. `health` says so and
what to run; the next writer restores scripts, campaign owners and
timezones from the store; snapshots refuse to move the stored reports
backwards; `reconcile --repair` brings back the truth; nobody else can claim
the campaign. A closed campaign whose keys are gone (expired, or deleted
with its registry entry: only the store knows its owner) cannot be claimed
by a repair either. Numbers are checked against the independent oracle.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from campaign_counters import Counters
from campaign_counters.cli import main
from campaign_counters.counters import Settings
from campaign_counters.counters import maintenance as m
from campaign_counters.errors import BackendError, SnapshotRefused
from campaign_counters.persist import durable
from campaign_counters.persist.snapshot import journey_from_doc, report_from_doc, snapshot_campaign
from campaign_counters.stores import open_store
from cli_helpers import jsonl
from oracle import expected_journey, expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from servers import RedisServer, wait_for

ZONE = "Asia/Ho_Chi_Minh"
JOBS = (None, "job-1", "job-2")


@pytest.fixture
def server():
    with RedisServer("--maxmemory", "128mb", "--maxmemory-policy", "noeviction") as s:
        yield s


@pytest.fixture
def run(server, tmp_path):
    """The CLI on the test's server and a SQLite store (stdout and stderr apart)."""

    def invoke(*args, **env):
        env = {"CAMPAIGN_COUNTERS_REDIS_URL": server.url, "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "home"),
               "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/reports.db", **env}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/reports.db")
    yield s
    s.close()


def stored_metrics(store, job=None):
    return metrics_of(report_from_doc(store.campaign_report(T, C, job)))


def stored_journeys(store, events):
    return {(e["job"], e["user"]): store.journey(T, C, e["job"], e["user"]) for e in events if e["type"] != "status"}


def restart_empty(server) -> None:
    """SIGKILL the server by its PID and start it again on the same socket: persistence is off, so it is empty."""
    server.kill()
    server.start()
    assert server.client().dbsize() == 0


@pytest.fixture
def lost(server, run, store, tmp_path, script_file):
    """A campaign recorded (events A) and snapshotted, a chat client that saw Redis's epoch, then Redis
    restarted without its data. Events B come after the restart."""
    events = random_events(OFFER_SCRIPT, 160, seed=91, dup_rate=0.1)
    cut = len(events) * 6 // 10
    a, b = events[:cut], events[cut:]
    assert run("script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
    assert run("tenant", "set-tz", "--tenant", T, "--tz", ZONE).exit_code == 0
    assert run("record", jsonl(tmp_path, a, "a.jsonl")).exit_code == 0
    assert run("snapshot").exit_code == 0
    for job in JOBS:
        assert stored_metrics(store, job) == expected_report(a, OFFER_SCRIPT, job)
    chat = Counters(server.url)
    chat.initialize()
    restart_empty(server)
    yield SimpleNamespace(all=events, a=a, b=b, chat=chat, journeys=stored_journeys(store, a),
                          history=jsonl(tmp_path, events, "history.jsonl"))
    chat.close()


def test_health_says_redis_lost_its_data_and_what_to_run(lost, run, server):
    res = run("health")
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)["redis_data"]
    assert data["ok"] is False and data["problem"] == "Redis lost its data" and data["epoch"] == ""
    assert "campaign-counters snapshot" in data["action"]
    # a chat client that saw the epoch before writes nothing into the empty Redis
    result = lost.chat.record_many(lost.b[:50])
    assert result.accepted == 0 and result.unsent == 50 and result.outcomes == ["unsent"] * 50
    with pytest.raises(BackendError):
        lost.chat.record(lost.b[0])
    assert server.client().dbsize() == 0


def test_the_next_writer_restores_scripts_owners_and_timezones(lost, run, server, tmp_path):
    res = run("record", jsonl(tmp_path, lost.b, "b.jsonl"))
    assert res.exit_code == 0, res.output
    assert "Redis holds no epoch marker" in res.stderr and "flagged: " + C in res.stderr
    check = Counters(server.url)
    assert check.run(check.plan_timezone(T)) == ZoneInfo(ZONE)
    assert check.run(m.registry_owner(check, C)) == T
    want = expected_report(lost.b, OFFER_SCRIPT)
    assert want["completed_users_count"] > 0
    assert metrics_of(check.report(T, C)) == want  # the script came back: completions count
    # the chat client meets the new epoch, takes it and records again (its events count once)
    assert lost.chat.record_many(lost.b).duplicates == len(lost.b)
    assert metrics_of(check.report(T, C)) == want
    check.close()
    res = run("health")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["redis_data"]["ok"] is True and out["redis_data"]["last_loss"]["reason"].startswith("Redis holds no")
    assert out["reconcile_needed"]["ok"] is False and list(out["reconcile_needed"]["campaigns"]) == [C]
    assert out["reconcile_needed"]["action"] == f"campaign-counters reconcile --tenant {T} --history SRC --repair"


def assert_stored_as_before(store, lost):
    for job in JOBS:
        assert stored_metrics(store, job) == expected_report(lost.a, OFFER_SCRIPT, job)
    assert stored_journeys(store, lost.a) == lost.journeys


def test_snapshots_never_shrink_the_stored_reports(lost, run, server, store, tmp_path):
    # a library client that never checked Redis against the store begins a new epoch and records B;
    # its snapshot would lower the stored counts: refused, the campaign flagged
    fresh = Counters(server.url)
    assert fresh.record_many(lost.b).accepted > 0
    with pytest.raises(SnapshotRefused) as refused:
        snapshot_campaign(fresh, store, C)
    assert "would lower target_users_count of the campaign total from" in refused.value.reason
    assert durable.flag_of(store, C)["kind"] == "shrink"
    assert_stored_as_before(store, lost)
    res = run("health")  # looks only: restores nothing
    out = json.loads(res.stdout)
    assert res.exit_code == 1 and out["redis_data"]["problem"] == "Redis was replaced or restored"
    assert "would lower target_users_count" in out["reconcile_needed"]["campaigns"][C]
    # the next writer sees another epoch than the store's: Redis restored, the campaign flagged for reconcile
    res = run("snapshot")
    assert res.exit_code == 2, res.output
    assert "another epoch marker" in res.stderr and "flagged for reconcile" in res.stderr
    assert f"reconcile --tenant {T} --campaign {C} --history SRC --repair" in res.stderr
    assert durable.flag_of(store, C)["kind"] == durable.REDIS_LOST
    assert_stored_as_before(store, lost)
    # the scheduler's snapshot jobs refuse it too, until a repair
    assert run("snapshot", "--campaign", C).exit_code == 2
    assert_stored_as_before(store, lost)
    fresh.close()


def test_rerecording_and_repair_restore_the_exact_truth_without_duplicate_steps(lost, run, server, store, tmp_path):
    again = lost.b + lost.a[: len(lost.a) // 2]  # after the restart: B, and half of A sent again
    assert run("record", jsonl(tmp_path, again, "again.jsonl")).exit_code == 0
    res = run("record", jsonl(tmp_path, again, "again.jsonl"))  # and all of it once more
    assert res.exit_code == 0 and json.loads(res.stdout)["accepted"] == 0
    check = Counters(server.url)
    for job, user in sorted({(e["job"], e["user"]) for e in again}):
        want = expected_journey(again, OFFER_SCRIPT, job, user)
        live = check.journey(T, C, job, user)
        assert {k: live[k] for k in want} == want, (job, user)  # each step once
    res = run("reconcile", "--tenant", T, "--history", lost.history, "--repair")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["repaired"] == [C] and out["after_repair"] == []
    assert durable.flags(store) == {}
    for job in JOBS:
        want = expected_report(lost.all, OFFER_SCRIPT, job)
        assert metrics_of(check.report(T, C, job)) == want
        assert stored_metrics(store, job) == want
    for job, user in sorted({(e["job"], e["user"]) for e in lost.all}):
        want = expected_journey(lost.all, OFFER_SCRIPT, job, user)
        live, stored = check.journey(T, C, job, user), journey_from_doc(store.journey(T, C, job, user))
        assert {k: live[k] for k in want} == want == {k: stored[k] for k in want}, (job, user)
    res = run("health")
    assert res.exit_code == 0, res.stdout
    check.close()


def test_another_tenant_cannot_claim_the_campaign_after_the_restart(lost, run, server, store, tmp_path,
                                                                    script_file):
    evil = [dict(e, tenant="evil") for e in lost.b]
    careful = Counters(server.url, settings=Settings(init_epoch=False))  # a chat client that starts no epoch
    assert careful.record_many(evil).unsent == len(evil) and server.client().dbsize() == 0
    careful.close()
    res = run("record", jsonl(tmp_path, evil, "evil.jsonl"))  # the first writer: Redis is restored first
    assert res.exit_code == 3 and json.loads(res.stdout)["accepted"] == 0
    assert "another tenant" in res.stderr
    res = run("script", "load", "--tenant", "evil", "--campaign", C, script_file)
    assert res.exit_code == 4 and "has no data" in res.stderr  # as `report` says: nothing reveals the campaign
    history = jsonl(tmp_path, [dict(e, tenant="evil") for e in lost.all], "evil-history.jsonl")
    for extra in ((), ("--force",), ("--campaign", C)):
        res = run("reconcile", "--tenant", "evil", "--history", history, "--repair", *extra)
        assert res.exit_code == 4 and "another tenant" in res.stderr, (extra, res.output)
    check = Counters(server.url)
    assert check.run(m.registry_owner(check, C)) == T and durable.owner_of(store, C) == T
    assert run("report", "--tenant", "evil", "--campaign", C).exit_code == 4
    assert store.reconcile_reports("evil") == [] and store.campaign_reports("evil", C) == []
    assert_stored_as_before(store, lost)
    # the owner's counters hold nothing of evil's events
    assert metrics_of(check.report(T, C)) == expected_report([], OFFER_SCRIPT)
    check.close()


# -- point 4: a closed campaign whose keys are gone --------------------------------------------------


@pytest.mark.parametrize("gone", ["expired", "deleted"])
def test_a_closed_campaign_cannot_be_claimed_by_a_repair(run, server, store, tmp_path, script_file, gone):
    """Expired: its keys reached their retention TTL (the registry still binds it). Deleted: its keys and
    its registry entry are gone, only the report store knows its owner."""
    events = random_events(OFFER_SCRIPT, 60, seed=93)
    done = {"type": "status", "tenant": T, "campaign": C, "ts": 2e9, "status": "COMPLETED"}
    assert run("script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
    assert run("record", jsonl(tmp_path, events + [done], "owner.jsonl")).exit_code == 0
    assert run("snapshot", CAMPAIGN_COUNTERS_RETENTION="1").exit_code == 0
    raw = server.client()
    if gone == "deleted":
        counters = Counters(server.url)
        counters.run(m.drop_campaign(counters, C))
        counters.close()
    wait_for(lambda: not raw.exists(f"cc:v2:{{{C}}}:m", f"cc:v2:{{{C}}}:u"), 10, "the campaign's keys to expire")
    left = sorted(raw.scan_iter("*"))  # day HyperLogLogs keep their own TTL
    bound = T if gone == "expired" else None
    check = Counters(server.url)
    assert check.run(m.registry_owner(check, C)) == bound and durable.owner_of(store, C) == T
    stored = store.campaign_reports(T, C)
    journeys = stored_journeys(store, events)
    assert {d["job_id"]: metrics_of(report_from_doc(d)) for d in stored} == {
        job: expected_report(events, OFFER_SCRIPT, job) for job in JOBS}
    history = jsonl(tmp_path, [dict(e, tenant="evil") for e in events], "evil.jsonl")
    for extra in (("--campaign", C), ("--campaign", C, "--force"), ()):
        res = run("reconcile", "--tenant", "evil", "--history", history, "--repair", *extra)
        assert res.exit_code == 4, (extra, res.output)
        assert f"campaign: {C!r} belongs to another tenant" in res.stderr and res.stdout == ""
    res = run("script", "load", "--tenant", "evil", "--campaign", C, script_file)
    assert res.exit_code == 4 and "has no data" in res.stderr  # as `report` says: nothing reveals the campaign
    # nothing changed: the same keys in Redis (no shadow left behind), binding and documents
    assert sorted(raw.scan_iter("*")) == left
    assert check.run(m.registry_owner(check, C)) == bound and durable.owner_of(store, C) == T
    assert store.campaign_reports(T, C) == stored and stored_journeys(store, events) == journeys
    assert store.campaign_reports("evil", C) == [] and store.reconcile_reports("evil") == []
    assert durable.flags(store) == {}
    check.close()
