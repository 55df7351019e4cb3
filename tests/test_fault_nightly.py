"""Fault: the nightly check cannot run (no history configured) or is refused (a partial history).

Real `scheduler --once` and `worker --burst` processes. The night stays
pending, `health` names it (exit 1), and it is caught up once a history is
configured: the overview and the repaired counts then match the naive
computations exactly.
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import redis
from rq import Queue

from campaign_counters import Counters
from campaign_counters.config import QUEUE_NAME
from campaign_counters.nightly import schedule as nightly
from campaign_counters.stores import open_store
from cli_helpers import jsonl, run_cli
from oracle import expected_report, metrics_of
from scenarios import OFFER_SCRIPT, random_events
from servers import cli_env
from test_overview import METRICS, naive_overview

UTC = timezone.utc
TENANT, CAMPAIGN, ZONE = "t-ber", "c-night", "Europe/Berlin"


def yesterday_events(seed):
    tz = ZoneInfo(ZONE)
    day = datetime.now(tz).date() - timedelta(days=1)
    start = datetime.combine(day, time(), tz).timestamp()
    events = random_events(OFFER_SCRIPT, 60, seed=seed, campaign=CAMPAIGN, tenant=TENANT, t0=start)
    return day, [e for e in events if e["ts"] < start + 86000]  # all within that local day


def setup(redis_url, tmp_path, events, keep=1.0):
    c = Counters(redis_url)
    c.set_timezone(TENANT, ZONE)
    c.load_script(TENANT, CAMPAIGN, OFFER_SCRIPT)
    rng = random.Random(5)
    c.record_many([e for e in events if rng.random() < keep])
    env = cli_env(CAMPAIGN_COUNTERS_REDIS_URL=redis_url, CAMPAIGN_COUNTERS_STORE_URL=f"sqlite:///{tmp_path}/r.db",
                  CAMPAIGN_COUNTERS_HOME=str(tmp_path / "home"))
    return c, env


def cli(env, *args, **extra):
    return run_cli(env["CAMPAIGN_COUNTERS_HOME"], *args, env={**env, **extra})


def health(env):
    res = cli(env, "health")
    return res.returncode, json.loads(res.stdout)


def test_a_night_without_history_stays_pending_and_is_caught_up_once_one_is_configured(redis_url, tmp_path):
    day, events = yesterday_events(seed=61)
    c, env = setup(redis_url, tmp_path, events, keep=0.8)  # the realtime path lost a fifth
    res = cli(env, "scheduler", "--once")
    assert f"1 nightly job(s) [{TENANT} {day}]" in res.stderr, res.stderr
    res = cli(env, "worker", "--burst")
    assert res.returncode == 0 and "the night stays pending" in res.stderr
    code, out = health(env)
    assert code == 1 and out["ok"] is False and out["nightly"]["ok"] is False
    [missed] = out["nightly"]["missed"]
    assert (missed["tenant"], missed["date"], missed["state"]) == (TENANT, day.isoformat(), "skipped")
    assert "CAMPAIGN_COUNTERS_HISTORY" in missed["reason"]
    assert "0 nightly job(s)" in cli(env, "scheduler", "--once").stderr  # retried every 15 minutes, not every tick

    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url))
    later = datetime.now(UTC) + timedelta(seconds=nightly.RETRY_SECONDS + 60)
    assert nightly.tick_nightly(c, queue, later) == [(TENANT, day)]  # the finished attempt's job is replaced
    history = jsonl(tmp_path, events, "history.jsonl")
    res = cli(env, "worker", "--burst", CAMPAIGN_COUNTERS_HISTORY=history, CAMPAIGN_COUNTERS_REPAIR="1")
    assert res.returncode == 0, res.stderr
    code, out = health(env)
    assert out["nightly"] == {"ok": True, "missed": [], "pending": []}, out["nightly"]

    store = open_store(f"sqlite:///{tmp_path}/r.db")
    doc = store.overview(TENANT, "daily", day.isoformat())
    naive = naive_overview(events, TENANT, {day}, ZoneInfo(ZONE))
    assert {k: doc[k] for k in METRICS} == {k: naive[k] for k in METRICS}
    check = store.reconcile_reports(TENANT)[0]
    assert check["repaired"] == [CAMPAIGN] and check["after_repair"] == [] and check["drift"]
    assert metrics_of(c.report(TENANT, CAMPAIGN)) == expected_report(events, OFFER_SCRIPT)
    assert nightly.tick_nightly(c, queue, later + timedelta(hours=1)) == []  # done: never enqueued again
    c.close()


def test_a_refused_night_is_named_by_health_and_can_be_run_by_hand(redis_url, tmp_path):
    day, events = yesterday_events(seed=62)
    c, env = setup(redis_url, tmp_path, events)
    partial = jsonl(tmp_path, [e for e in events if e["job"] == "job-1"], "partial.jsonl")
    full = jsonl(tmp_path, events, "full.jsonl")
    cli(env, "scheduler", "--once")
    res = cli(env, "worker", "--burst", CAMPAIGN_COUNTERS_HISTORY=partial, CAMPAIGN_COUNTERS_REPAIR="1")
    assert res.returncode == 0 and "refused" in res.stderr
    code, out = health(env)
    [missed] = out["nightly"]["missed"]
    assert code == 1 and missed["state"] == "refused" and f"campaign {CAMPAIGN!r}" in missed["reason"]
    assert f"campaign-counters nightly --tenant {TENANT} --date {day}" in missed["fix"]
    assert metrics_of(c.report(TENANT, CAMPAIGN)) == expected_report(events, OFFER_SCRIPT)  # not wiped

    res = cli(env, "nightly", "--tenant", TENANT, "--date", day.isoformat(), "--history", partial, "--repair")
    assert res.returncode == 2 and "refused" in res.stderr
    res = cli(env, "nightly", "--tenant", TENANT, "--date", day.isoformat(), "--history", full, "--repair")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["done"] is True
    assert health(env)[1]["nightly"]["ok"] is True
    assert metrics_of(c.report(TENANT, CAMPAIGN)) == expected_report(events, OFFER_SCRIPT)
    c.close()


def test_a_night_older_than_the_catch_up_window_is_not_retried_but_named(redis_url):
    c = Counters(redis_url)
    c.set_timezone(TENANT, ZONE)
    queue = Queue("cc-nightly-test", connection=redis.Redis.from_url(redis_url))
    first = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert nightly.tick_nightly(c, queue, first) == [(TENANT, date(2026, 11, 1))]
    queue.empty()  # its job never ran (no worker)
    later = datetime(2026, 11, 11, 0, 30, tzinfo=UTC)  # 01:30 in Berlin: the scheduler was down 8.5 days
    got = nightly.tick_nightly(c, queue, later)
    assert got == [(TENANT, date(2026, 11, 4) + timedelta(days=i)) for i in range(nightly.CATCH_UP_DAYS)]
    status = nightly.nights_health(c, later)
    assert status["ok"] is False
    states = {n["date"]: (n["state"], n["fix"].split(":")[0]) for n in status["missed"]}
    assert states.pop("2026-11-01") == ("not run", f"older than {nightly.CATCH_UP_DAYS} days, no longer retried")
    late = {f"2026-11-0{d}": ("not run", f"not checked {24 * (10 - d) + 1} h after it ended") for d in range(4, 10)}
    assert states == late  # more than 6 h late
    assert status["pending"] == [{"tenant": TENANT, "date": "2026-11-10"}]  # ended 1.5 h ago: not missed yet
    c.close()
