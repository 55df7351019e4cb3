"""Fault: a wrong history (empty, partial, binary) given to a repair or an overview.

Each write that would lose numbers is refused with exit 2 and a message
naming the campaign or the tenant's window; Redis and the store keep exactly
what they had (checked against the oracle). `--force` still writes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from campaign_counters.stores import open_store
from cli_helpers import jsonl
from oracle import expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events

UTC = timezone.utc


@pytest.fixture
def loaded(cli, script_file, tmp_path):
    """A campaign recorded live (every event) and snapshotted; returns its events."""
    events = random_events(OFFER_SCRIPT, 120, seed=21)
    assert cli("script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
    assert cli("record", jsonl(tmp_path, events, "live.jsonl")).exit_code == 0
    assert cli("snapshot").exit_code == 0
    return events


def store_of(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/reports.db")


def live_and_stored(cli, job=None):
    args = ["--tenant", T, "--campaign", C] + (["--job", job] if job else [])
    live = json.loads(cli("report", *args).stdout)
    stored = json.loads(cli("report", *args, "--from-store").stdout)
    return metrics_of(live), metrics_of(stored)


def assert_untouched(cli, tmp_path, events):
    for job in (None, "job-1", "job-2"):
        live, stored = live_and_stored(cli, job)
        assert live == stored == expected_report(events, OFFER_SCRIPT, job)
    assert store_of(tmp_path).reconcile_reports(T) == []  # not even the check was recorded


def test_repair_from_an_empty_history_is_refused_and_changes_nothing(cli, loaded, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = cli("reconcile", "--tenant", T, "--campaign", C, "--history", str(empty), "--repair")
    assert res.exit_code == 2, res.stderr
    assert res.stdout == ""
    assert f"refused: history: the history has no events for campaign {C!r} of tenant {T!r}" in res.stderr
    expected = expected_report(loaded, OFFER_SCRIPT)
    assert f"target_users_count {expected['target_users_count']} -> 0 (campaign total, live)" in res.stderr
    assert "--force" in res.stderr and "Traceback" not in res.stderr
    assert_untouched(cli, tmp_path, loaded)
    # without --campaign the tenant's live campaigns are checked too: same refusal
    res = cli("reconcile", "--tenant", T, "--history", str(empty), "--repair")
    assert res.exit_code == 2 and "has no events for campaign" in res.stderr
    assert_untouched(cli, tmp_path, loaded)


def test_repair_from_a_partial_history_is_refused_and_forced_only_on_request(cli, loaded, tmp_path):
    only_job_1 = [e for e in loaded if e.get("job") == "job-1"]
    partial = jsonl(tmp_path, only_job_1, "partial.jsonl")
    res = cli("reconcile", "--tenant", T, "--campaign", C, "--history", partial, "--repair")
    assert res.exit_code == 2
    assert f"the history would shrink campaign {C!r}" in res.stderr
    users = expected_report(loaded, OFFER_SCRIPT)["target_users_count"]
    kept = expected_report(only_job_1, OFFER_SCRIPT)["target_users_count"]
    assert f"target_users_count {users} -> {kept} (campaign total, live)" in res.stderr
    assert_untouched(cli, tmp_path, loaded)
    # a check without --repair writes no counts: it reports the drift and records the check
    res = cli("reconcile", "--tenant", T, "--campaign", C, "--history", partial)
    assert res.exit_code == 1 and json.loads(res.stdout)["after_repair"] is None
    # forced: the history is declared right (here: the last 40 users never existed)
    fewer = [e for e in loaded if int(e["user"].split("-")[1]) < 80]
    res = cli("reconcile", "--tenant", T, "--campaign", C, "--history", jsonl(tmp_path, fewer, "fewer.jsonl"),
              "--repair", "--force")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["repaired"] == [C] and out["after_repair"] == []
    total = next(d for d in out["drift"] if d["job"] is None and d["metric"] == "target_users_count"
                 and d["source"] == "live")
    assert (total["actual"], total["expected"]) == (users, expected_report(fewer, OFFER_SCRIPT)["target_users_count"])
    for job in (None, "job-1", "job-2"):
        live, stored = live_and_stored(cli, job)
        assert live == stored == expected_report(fewer, OFFER_SCRIPT, job)


def test_a_repair_keeps_the_drift_it_found_and_checks_again_separately(cli, script_file, tmp_path):
    events = random_events(OFFER_SCRIPT, 80, seed=22)
    lost = {id(e) for e in events[::7]}  # the realtime path missed every 7th event
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", jsonl(tmp_path, [e for e in events if id(e) not in lost], "live.jsonl"))
    cli("snapshot")
    before = metrics_of(json.loads(cli("report", "--tenant", T, "--campaign", C).stdout))
    res = cli("reconcile", "--tenant", T, "--history", jsonl(tmp_path, events, "full.jsonl"), "--repair")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    truth = expected_report(events, OFFER_SCRIPT)
    assert out["after_repair"] == [] and out["repaired"] == [C]
    by_metric = {(d["job"], d["metric"], d["source"]): (d["actual"], d["expected"]) for d in out["drift"]}
    assert by_metric[(None, "total_interactions", "live")] == (before["total_interactions"], truth["total_interactions"])
    assert by_metric[(None, "total_interactions", "snapshot")] == (before["total_interactions"],
                                                                  truth["total_interactions"])
    doc = store_of(tmp_path).reconcile_reports(T)[0]
    assert doc["drift"] == out["drift"] and doc["after_repair"] == [] and doc["repaired"] == [C]
    live, stored = live_and_stored(cli)
    assert live == stored == truth


def day_of(events):
    return datetime.fromtimestamp(min(e["ts"] for e in events), UTC).date()


def test_overview_from_an_empty_or_binary_history_keeps_the_stored_one(cli, loaded, tmp_path):
    day = day_of(loaded).isoformat()
    args = ["overview", "--tenant", T, "--period", "daily", "--date", day]
    res = cli(*args, "--history", jsonl(tmp_path, loaded, "full.jsonl"))
    assert res.exit_code == 0, res.stderr
    good = json.loads(res.stdout)
    assert good["campaigns_count"] == 1 and good["total_target_users"] > 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 64 + T.encode() + b"\xff\xfe\n" + bytes(range(255, -1, -1)) * 64)
    for src in (empty, binary):
        res = cli(*args, "--history", str(src))
        assert res.exit_code == 2, res.stderr
        assert f"the history has no events for the daily overview of tenant {T!r} for {day}" in res.stderr
        assert f"total_target_users {good['total_target_users']} -> 0 (stored overview)" in res.stderr
        stored = store_of(tmp_path).overview(T, "daily", day)
        assert {k: stored[k] for k in good if k != "computed_at"} == {k: good[k] for k in good if k != "computed_at"}
    res = cli(*args, "--history", jsonl(tmp_path, loaded[: len(loaded) // 2], "half.jsonl"))
    assert res.exit_code == 2 and "the history would shrink the daily overview" in res.stderr
    res = cli(*args, "--history", str(empty), "--force")
    assert res.exit_code == 0 and store_of(tmp_path).overview(T, "daily", day)["campaigns_count"] == 0


def test_first_overview_from_an_empty_history_is_refused_when_redis_has_that_day(cli, loaded, tmp_path):
    day = day_of(loaded)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = cli("overview", "--tenant", T, "--date", day.isoformat(), "--history", str(empty))
    assert res.exit_code == 2
    interactions = sum(1 for e in {e["id"]: e for e in loaded}.values()
                       if e["type"] == "interaction" and datetime.fromtimestamp(e["ts"], UTC).date() == day)
    assert f"total_interactions {interactions} -> 0 (live counters)" in res.stderr
    assert "campaigns_count 1 -> 0 (live counters)" in res.stderr
    assert store_of(tmp_path).overview(T, "daily", day.isoformat()) is None
    # a day without live data and without a stored overview: nothing to lose, stored as zeros
    res = cli("overview", "--tenant", T, "--date", "2020-01-01", "--history", str(empty))
    assert res.exit_code == 0 and json.loads(res.stdout)["campaigns_count"] == 0
