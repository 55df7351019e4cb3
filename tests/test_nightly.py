"""The nightly schedule per tenant timezone (fake clock), and the CLI of the nightly side."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import redis
from rq import Queue, SimpleWorker

from campaign_counters import Counters
from campaign_counters.nightly import schedule as nightly
from campaign_counters.stores import open_store
from cli_helpers import jsonl
from oracle import expected_report, metrics_of
from scenarios import OFFER_SCRIPT, random_events

UTC = timezone.utc
ZONES = {"t-hcm": "Asia/Ho_Chi_Minh", "t-ber": "Europe/Berlin", "t-ny": "America/New_York"}


def setup_tenants(c):
    for tenant, tz in ZONES.items():
        c.set_timezone(tenant, tz)
        c.record({"type": "sent", "tenant": tenant, "campaign": f"{tenant}-c", "job": "j", "user": "u", "ts": 1})


def test_due_days_follow_each_tenants_midnight():
    tz = {t: ZoneInfo(z) for t, z in ZONES.items()}
    now = datetime(2026, 10, 25, 17, 30, tzinfo=UTC)  # 00:30 in Ho Chi Minh City, 18:30/13:30 elsewhere
    got = nightly.due(tz, {t: date(2026, 10, 23) for t in tz}, now)
    # Ho Chi Minh City is already at 00:30 on the 26th: two days are due there; one elsewhere
    assert sorted(got) == [("t-ber", date(2026, 10, 24)), ("t-hcm", date(2026, 10, 24)),
                           ("t-hcm", date(2026, 10, 25)), ("t-ny", date(2026, 10, 24))]
    later = datetime(2026, 10, 25, 17, 30, tzinfo=UTC) + timedelta(hours=6)  # 00:30 Berlin (after DST end)
    done = {"t-hcm": date(2026, 10, 24), "t-ber": date(2026, 10, 24), "t-ny": date(2026, 10, 24)}
    assert nightly.due(tz, done, later) == [("t-ber", date(2026, 10, 25)), ("t-hcm", date(2026, 10, 25))]


def test_periods_closing_on_a_day():
    assert nightly.periods_ending(date(2026, 11, 1)) == ["daily", "weekly"]  # a Sunday
    assert nightly.periods_ending(date(2026, 10, 31)) == ["daily", "monthly"]
    assert nightly.periods_ending(date(2026, 5, 31)) == ["daily", "weekly", "monthly"]
    assert nightly.periods_ending(date(2026, 11, 3)) == ["daily"]


def test_scheduler_ticks_under_a_fake_clock(redis_url):
    c = Counters(redis_url)
    setup_tenants(c)
    queue = Queue("cc-nightly-test", connection=redis.Redis.from_url(redis_url))
    start = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    enqueued = []
    for minutes in range(0, 3 * 24 * 60, 10):  # three days, a tick every 10 minutes
        now = start + timedelta(minutes=minutes)
        for tenant, day in nightly.tick_nightly(c, queue, now):
            local = now.astimezone(ZoneInfo(ZONES[tenant]))
            enqueued.append((tenant, day))
            assert local.date() - timedelta(days=1) == day  # the day that just ended, locally
            assert local.hour == 0 or minutes == 0  # right after local midnight (or the first tick)
    for tenant in ZONES:
        days = [d for t, d in enqueued if t == tenant]
        assert days == sorted(set(days))  # once per night
        assert len(days) in (3, 4)
    assert len(queue) == len(enqueued)
    assert nightly.tick_nightly(c, queue, start + timedelta(days=3)) == []  # a re-run enqueues nothing


def test_scheduler_catches_up_missed_nights(redis_url):
    c = Counters(redis_url)
    setup_tenants(c)
    queue = Queue("cc-nightly-test", connection=redis.Redis.from_url(redis_url))
    first = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    nightly.tick_nightly(c, queue, first)
    got = nightly.tick_nightly(c, queue, first + timedelta(days=4))  # the scheduler was down for 4 days
    for tenant in ZONES:
        assert [d for t, d in got if t == tenant] == [date(2026, 11, 2) + timedelta(days=i) for i in range(4)]
    long_gap = nightly.tick_nightly(c, queue, first + timedelta(days=40))  # catch-up is bounded
    assert len([d for t, d in long_gap if t == "t-ber"]) == nightly.CATCH_UP_DAYS


def scenario_events():
    """Two tenants in different zones; events near their midnights; duplicates; shuffled."""
    out = []
    for tenant, tz in (("t-hcm", "Asia/Ho_Chi_Minh"), ("t-ber", "Europe/Berlin")):
        midnight = datetime(2026, 10, 25, tzinfo=ZoneInfo(tz)).timestamp()
        out += random_events(OFFER_SCRIPT, 60, seed=len(tenant), campaign=f"{tenant}-c", tenant=tenant,
                             t0=midnight - 43200)
    random.Random(4).shuffle(out)
    return out


def test_reconcile_and_overview_from_the_cli(cli, tmp_path, redis_url):
    events = scenario_events()
    c = Counters(redis_url)
    for tenant, tz in (("t-hcm", "Asia/Ho_Chi_Minh"), ("t-ber", "Europe/Berlin")):
        c.set_timezone(tenant, tz)
        c.load_script(tenant, f"{tenant}-c", OFFER_SCRIPT)
    rng = random.Random(9)
    c.record_many([e for e in events if rng.random() > 0.15])  # the realtime path dropped some
    history = jsonl(tmp_path, events)
    res = cli("reconcile", "--tenant", "t-ber", "--history", history, "--date", "2026-10-25")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["checked"] == 3 and out["drift"] and out["repaired"] == []
    assert cli("reconcile", "--tenant", "t-ber", "--history", history, "--until", "2026-10-25").exit_code == 2
    res = cli("reconcile", "--tenant", "t-ber", "--history", history, "--date", "2026-10-01", "--until", "2026-10-20")
    assert res.exit_code == 0 and json.loads(res.stdout)["checked"] == 0  # no event in those local days
    res = cli("reconcile", "--tenant", "t-ber", "--history", history, "--date", "2026-10-01", "--until", "2026-10-31")
    assert res.exit_code == 1 and json.loads(res.stdout)["checked"] == 3
    res = cli("reconcile", "--tenant", "t-ber", "--history", history, "--date", "2026-10-25", "--repair")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["repaired"] == ["t-ber-c"]
    assert cli("reconcile", "--tenant", "t-ber", "--history", history).exit_code == 0
    mine = [e for e in events if e["tenant"] == "t-ber"]
    assert metrics_of(json.loads(cli("report", "--tenant", "t-ber", "--campaign", "t-ber-c").stdout)) == \
        expected_report(mine, OFFER_SCRIPT)
    assert cli("reconcile", "--tenant", "t-hcm", "--history", history).exit_code == 1  # untouched tenant
    res = cli("overview", "--tenant", "t-ber", "--period", "weekly", "--date", "2026-10-25", "--history", history)
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["report_date"] == "2026-10-19" and doc["timezone"] == "Europe/Berlin"
    stored = open_store(f"sqlite:///{tmp_path}/reports.db").overview("t-ber", "weekly", "2026-10-19")
    assert stored["total_target_users"] == doc["total_target_users"] > 0
    res = cli("overview", "--tenant", "t-ber", "--date", "2026-10-20", "--until", "2026-10-26", "--history", history)
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 7
    assert "reading history (bytes)" in res.stderr and "stored 7 daily overview(s)" in res.stderr
    assert cli("overview", "--tenant", "t-ber").exit_code == 2  # no history, no --live
    live = json.loads(cli("overview", "--tenant", "t-ber", "--live").stdout)
    assert live["approximate"] is True


def test_nightly_job_runs_in_a_worker(redis_url, tmp_path, monkeypatch):
    from campaign_counters.persist import jobs

    events = scenario_events()
    history = jsonl(tmp_path, events)
    c = Counters(redis_url)
    c.set_timezone("t-ber", "Europe/Berlin")
    c.load_script("t-ber", "t-ber-c", OFFER_SCRIPT)
    c.record_many([e for e in events if e["tenant"] == "t-ber"][::2])
    monkeypatch.setenv("CAMPAIGN_COUNTERS_REDIS_URL", redis_url)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_STORE_URL", f"sqlite:///{tmp_path}/n.db")
    monkeypatch.setenv("CAMPAIGN_COUNTERS_HISTORY", history)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_REPAIR", "1")
    jobs.job_context.cache_clear()
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("cc-nightly-test", connection=conn)
    got = nightly.tick_nightly(c, queue, datetime(2026, 10, 25, 23, 5, tzinfo=UTC))  # 00:05 Berlin on Monday the 26th
    assert ("t-ber", date(2026, 10, 25)) in got
    SimpleWorker([queue], connection=conn).work(burst=True)
    store = open_store(f"sqlite:///{tmp_path}/n.db")
    assert store.overview("t-ber", "daily", "2026-10-25")["campaigns_count"] == 1
    assert store.overview("t-ber", "weekly", "2026-10-19") is not None  # Sunday closed the week
    assert store.reconcile_reports("t-ber")[0]["repaired"] == ["t-ber-c"]
    mine = [e for e in events if e["tenant"] == "t-ber"]
    assert metrics_of(c.report("t-ber", "t-ber-c")) == expected_report(mine, OFFER_SCRIPT)
    jobs.job_context.cache_clear()


def test_history_reports_how_far_it_read(tmp_path):
    from campaign_counters.nightly.history import JsonlHistory

    events = scenario_events()
    path = jsonl(tmp_path, events * 40)  # enough lines for several reports
    reports = []
    got = list(JsonlHistory(path).events("t-ber", progress=lambda done, total, unit: reports.append((done, total, unit))))
    size = (tmp_path / "events.jsonl").stat().st_size
    assert len(got) == 40 * len([e for e in events if e["tenant"] == "t-ber"])
    assert len(reports) > 2 and reports[-1] == (size, size, "bytes")
    assert [d for d, _, _ in reports] == sorted(d for d, _, _ in reports)
