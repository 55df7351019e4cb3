"""The dashboards' read model: how its figures are computed, kept, capped, expired and replaced."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from campaign_counters import Counters
from campaign_counters.config import ENV_DASHBOARD_DAYS, ENV_DASHBOARD_ENTRIES, dashboard_history
from campaign_counters.counters import dashboard as d
from campaign_counters.counters.keys import DASHBOARD_ROUTE
from campaign_counters.errors import ValidationError
from campaign_counters.nightly.dashboard import nightly_overdue, publish_tenants
from campaign_counters.persist.dashboard import operations_figures, publish_campaign, scope_figures, text
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.stores import open_store
from scenarios import OFFER_SCRIPT, C, T, ev, random_events

NO_REJECTIONS = {"by_field": {}, "by_campaign": {}}


@pytest.fixture
def counters(redis_url):
    c = Counters(redis_url)
    c.load_script(T, C, OFFER_SCRIPT)
    yield c
    c.close()


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/reports.db")


def test_figures_are_written_as_text_that_parses_back_to_the_same_number():
    for number in (1 / 3 * 100, 74.31693989071039, 0.1 + 0.2, 1e-7, 100.0, 2 ** 53 + 1.0):
        assert float(text(number)) == number
    assert text(1859) == "1859" and text(0) == "0"


def test_a_report_without_completions_leaves_its_average_out(counters):
    counters.record(ev("sent", "u1", 10))
    figures = scope_figures(counters.report(T, C), "now")
    assert "avg_completion_time" not in figures.metrics and "avg_completion_time" not in figures.series
    assert figures.metrics["sent_users_count"] == "1" and figures.nodes["reached"]["start"] == "1"


def test_the_rejection_rate_is_averaged_over_the_window_since_the_figures_then():
    inputs = d.OpsInputs(memory=[], spool={}, earlier=(1_000_000, {"rejected_total": "4"}))
    ops, reasons = operations_figures([], {"by_field": {"ts": 6}, "by_campaign": {"c": 4}}, inputs, 1_120_000)
    assert ops["rejected_total"] == "10" and ops["rejected_per_minute"] == "3.0"  # 6 more in 2 minutes
    assert reasons == {"invalid ts": "6", "refused c": "4"}
    reset = d.OpsInputs(memory=[], spool={}, earlier=(1_000_000, {"rejected_total": "40"}))
    assert operations_figures([], NO_REJECTIONS, reset, 1_120_000)[0]["rejected_per_minute"] == "0.0"


def test_memory_is_the_fullest_nodes_and_headroom_the_smallest():
    nodes = [{"used_memory": 50, "maxmemory": 100, "total_system_memory": 10_000},
             {"used_memory": 90, "maxmemory": 0, "total_system_memory": 1000},  # no maxmemory: the machine's
             {"used_memory": 700, "maxmemory": 1000, "total_system_memory": 10_000}]
    ops, _ = operations_figures([("c", "t", 1)] * 3, NO_REJECTIONS,
                                d.OpsInputs(nodes, {"a": "5", "b": " 7", "c": "lost"}, None), 0)
    assert (ops["memory_used_pct"], ops["memory_used_bytes"], ops["memory_limit_bytes"]) == ("70.0", "700", "1000")
    assert ops["memory_headroom_bytes"] == "50" and ops["pending_snapshots"] == "3"
    assert ops["spool_depth"] == "12"  # what is not a count is not counted


@pytest.mark.parametrize("local, last_day, overdue", [
    ("2026-03-10T00:59", "2026-03-08", False),  # before 01:00 the check of the 9th is not due yet
    ("2026-03-10T01:00", "2026-03-08", True),
    ("2026-03-10T01:00", "2026-03-09", False),
    ("2026-03-10T23:00", None, True),  # never checked
])
def test_a_nightly_check_is_overdue_after_one_in_the_morning_local_time(local, last_day, overdue):
    tz = ZoneInfo("America/New_York")
    now = datetime.fromisoformat(local).replace(tzinfo=tz).astimezone(timezone.utc)
    assert nightly_overdue({"day": last_day} if last_day else None, tz, now) is overdue


def test_time_series_keep_at_most_the_configured_entries_and_age(counters, raw):
    key = counters.keys.dashboard_series(C)
    raw.xadd(key, {"sent_users_count": "0"}, id="1000-0")  # an entry from 1970: older than any cap
    cap = d.SeriesCap(entries=2, days=1)
    for user in ("u1", "u2", "u3"):
        counters.record(ev("sent", user, 10))
        publish_campaign(counters, T, C, [counters.report(T, C)], cap=cap)
    assert [e[1][b"sent_users_count"] for e in raw.xrange(key)] == [b"2", b"3"]
    assert publish_campaign(counters, T, C, [counters.report(T, C)], cap=cap) == []  # unchanged: no entry


def test_stream_caps_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_DASHBOARD_ENTRIES, "500")
    monkeypatch.setenv(ENV_DASHBOARD_DAYS, "0.5")
    assert dashboard_history() == (500, 0.5)
    for bad in ("0", "-3", "many", "inf", "nan"):
        monkeypatch.setenv(ENV_DASHBOARD_DAYS, bad)
        with pytest.raises(ValidationError) as err:
            dashboard_history()
        assert err.value.field == ENV_DASHBOARD_DAYS


def test_dashboard_keys_expire_with_a_completed_campaign_and_stay_when_it_runs_again(counters, store, raw):
    counters.record_many(random_events(OFFER_SCRIPT, 20, seed=1))
    counters.record(ev("status", ts=99, job=None, status="COMPLETED"))
    snapshot_campaign(counters, store, C, retention=3600)
    keys = raw.keys(counters.keys.campaign(C) + "dash*")
    assert len(keys) == 3 * 6 + 1  # (hash, 4 node hashes, series) per scope, and the jobs
    assert all(0 < raw.ttl(k) <= 3600 for k in keys)
    assert raw.hget(counters.keys.dashboard_campaigns(T), C) == b"COMPLETED"
    counters.record(ev("status", ts=100, job=None, status="RUNNING"))
    snapshot_campaign(counters, store, C, retention=3600)
    assert all(raw.ttl(k) == -1 for k in raw.keys(counters.keys.campaign(C) + "dash*"))


def test_campaigns_whose_keys_expired_are_unlisted(counters, store, raw):
    counters.record(ev("sent", "u1", 10))
    snapshot_campaign(counters, store, C)
    publish_tenants(counters, {T: ZoneInfo("UTC")}, every=0)
    assert raw.hkeys(counters.keys.dashboard_campaigns(T)) == [C.encode()]
    raw.delete(*raw.keys(counters.keys.campaign(C) + "dash*"))  # as their TTL would
    publish_tenants(counters, {T: ZoneInfo("UTC")}, every=0)
    assert raw.hkeys(counters.keys.dashboard_campaigns(T)) == []


def test_a_republished_hash_loses_the_fields_that_are_gone(counters, raw):
    key = counters.keys.dashboard_overview(T, d.TODAY)
    counters.run(d.replace_hashes(counters, DASHBOARD_ROUTE, {key: {"a": "1", "b": "2"}}))
    counters.run(d.replace_hashes(counters, DASHBOARD_ROUTE, {key: {"b": "3", "c": "4"}}))
    assert raw.hgetall(key) == {b"b": b"3", b"c": b"4"}
    counters.run(d.replace_hashes(counters, DASHBOARD_ROUTE, {key: {}}))
    assert not raw.exists(key)


def test_an_overview_of_the_same_period_replaces_the_published_one_an_older_one_does_not(counters, raw):
    key = counters.keys.dashboard_overview(T, "daily")
    assert counters.run(d.write_overview(counters, T, "daily", {"report_date": "2026-01-02", "x": "1"}))
    assert counters.run(d.write_overview(counters, T, "daily", {"report_date": "2026-01-02", "y": "2"}))
    assert not counters.run(d.write_overview(counters, T, "daily", {"report_date": "2026-01-01", "x": "9"}))
    assert raw.hgetall(key) == {b"report_date": b"2026-01-02", b"y": b"2"}


def test_analysis_keys_are_published_for_shown_scopes_and_expire_with_the_campaign(counters, store, raw):
    from campaign_counters.persist.analysis import live_analyses, persist_analysis
    from campaign_counters.persist.dashboard import publish_analyses

    counters.record_many(random_events(OFFER_SCRIPT, 20, seed=1))
    analyses = live_analyses(counters, T, C)
    assert publish_analyses(counters, analyses) == 0  # never snapshotted: no dashboard shows it
    assert raw.keys(counters.keys.campaign(C) + "dash*") == []
    snapshot_campaign(counters, store, C)
    assert persist_analysis(store, analyses, counters) == 3
    keys = raw.keys(counters.keys.campaign(C) + "dash:*:analysis:*")
    assert sum(k.endswith((b":summary", b":heatmap")) for k in keys) == 3 * 2
    assert all(raw.ttl(k) == -1 for k in keys)
    counters.record(ev("status", ts=99, job=None, status="COMPLETED"))
    snapshot_campaign(counters, store, C, retention=3600)  # the snapshot gives them the campaign's lifetime
    assert all(0 < raw.ttl(k) <= 3600 for k in keys)
    assert persist_analysis(store, analyses, counters) == 3  # published again later: still expiring
    assert set(raw.keys(counters.keys.campaign(C) + "dash:*:analysis:*")) == set(keys)
    assert all(0 < raw.ttl(k) <= 3600 for k in keys)
    counters.record(ev("status", ts=100, job=None, status="RUNNING"))
    snapshot_campaign(counters, store, C, retention=3600)
    assert all(raw.ttl(k) == -1 for k in keys)
