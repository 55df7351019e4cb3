"""Overviews per tenant timezone, checked against a naive computation in the test."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from campaign_counters import Counters
from campaign_counters.stores import open_store
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.overview import overviews, today_so_far
from campaign_counters.nightly.overview import store_overviews as persist
from campaign_counters.nightly.recompute import window
from cli_helpers import jsonl

BERLIN = ZoneInfo("Europe/Berlin")


def naive_overview(events, tenant, dates, tz):
    """Events whose local date is in `dates`; statuses up to the window's end."""
    seen, kept = set(), []
    for e in events:
        if e.get("id") is not None:
            if (e["campaign"], e["id"]) in seen:
                continue
            seen.add((e["campaign"], e["id"]))
        if e["tenant"] == tenant:
            kept.append(e)
    inside = [e for e in kept if datetime.fromtimestamp(e["ts"], tz).date() in dates]
    end = max(dates) + timedelta(days=1)
    per = {}
    for e in inside:
        c = per.setdefault(e["campaign"], {"u": set(), "s": set(), "i": set(), "n": 0})
        if e["type"] == "status":
            continue
        c["u"].add(e["user"])
        if e["type"] == "sent":
            c["s"].add(e["user"])
        if e["type"] == "interaction":
            c["i"].add(e["user"])
            c["n"] += 1
    latest = {}
    for e in kept:
        if e["type"] == "status" and datetime.fromtimestamp(e["ts"], tz).date() < end and e["campaign"] in per:
            if e["campaign"] not in latest or e["ts"] >= latest[e["campaign"]][0]:
                latest[e["campaign"]] = (e["ts"], e["status"])
    sent = sum(len(c["s"]) for c in per.values())
    inter = sum(len(c["i"]) for c in per.values())
    return {
        "campaigns_count": len(per),
        "total_target_users": sum(len(c["u"]) for c in per.values()),
        "total_sent_users": sent,
        "total_interacted_users": inter,
        "total_interactions": sum(c["n"] for c in per.values()),
        "avg_interaction_rate": inter / sent * 100 if sent else 0.0,
        "campaigns_completed": sum(1 for _, s in latest.values() if s == "COMPLETED"),
        "campaigns_running": sum(1 for _, s in latest.values() if s == "RUNNING"),
        "campaigns_error": sum(1 for _, s in latest.values() if s == "ERROR"),
    }


def events_around(tenant, tz, days, seed, campaigns=("a", "b", "c")):
    """Events clustered around local midnights (±90 min), duplicates, statuses, shuffled."""
    rng = random.Random(seed)
    out = []
    n = 0
    for d in days:
        midnight = datetime.combine(d, datetime.min.time(), tz).timestamp()
        for _ in range(60):
            camp = rng.choice(campaigns)
            user = f"u{rng.randint(0, 40)}"
            ts = midnight + rng.randint(-5400, 5400) + rng.random()
            kind = rng.choice(["targeted", "sent", "interaction", "interaction"])
            n += 1
            ev = {"type": kind, "tenant": tenant, "campaign": f"{tenant}-{camp}", "job": "j1", "user": user,
                  "ts": ts, "id": f"{tenant}-{n}"}
            if kind == "interaction":
                ev.update(target="ask", choice="go")
            out.append(ev)
            if rng.random() < 0.1:
                out.append(dict(ev))
        for camp in campaigns:
            status = rng.choice(["RUNNING", "COMPLETED", "ERROR"])
            out.append({"type": "status", "tenant": tenant, "campaign": f"{tenant}-{camp}", "status": status,
                        "ts": midnight + rng.randint(-3600, 3600), "id": f"{tenant}-st-{d}-{camp}"})
    rng.shuffle(out)
    return out


METRICS = ["campaigns_count", "total_target_users", "total_sent_users", "total_interacted_users",
           "total_interactions", "avg_interaction_rate", "campaigns_completed", "campaigns_running", "campaigns_error"]


@pytest.mark.parametrize("tz_name", ["Europe/Berlin", "Asia/Ho_Chi_Minh", "America/New_York", "UTC"])
def test_daily_weekly_monthly_match_the_naive_computation(tmp_path, tz_name):
    tz = ZoneInfo(tz_name)
    days = [date(2026, 10, 24) + timedelta(days=i) for i in range(12)]  # DST end in Europe on 2026-10-25
    events = events_around("t1", tz, days, seed=7) + events_around("t2", tz, days[:3], seed=8)
    source = JsonlHistory(jsonl(tmp_path, events))
    for period in ("daily", "weekly", "monthly"):
        docs = overviews(source, "t1", period, days, tz)
        for doc in docs:
            first = date.fromisoformat(doc["report_date"])
            if period == "daily":
                dates = {first}
            elif period == "weekly":
                dates = {first + timedelta(days=i) for i in range(7)}
            else:
                dates = {d for d in (first + timedelta(days=i) for i in range(31)) if d.month == first.month}
            want = naive_overview(events, "t1", dates, tz)
            assert {k: doc[k] for k in METRICS} == pytest.approx(want), (period, doc["report_date"])
        if period == "weekly":
            # the week of Mon 2026-10-26 .. Sun 2026-11-01 crosses the month boundary
            assert [d["report_date"] for d in docs] == ["2026-10-19", "2026-10-26", "2026-11-02"]


def test_dst_day_is_25_hours_in_berlin():
    first, start, end = window("daily", date(2026, 10, 25), BERLIN)
    assert end.timestamp() - start.timestamp() == 25 * 3600
    assert start.astimezone(timezone.utc).hour == 22  # 00:00 CEST is 22:00 UTC the day before
    _, wstart, wend = window("weekly", date(2026, 10, 25), BERLIN)
    assert wstart.date() == date(2026, 10, 19) and wend.timestamp() - wstart.timestamp() == 7 * 86400 + 3600


def test_overviews_are_upserted(tmp_path):
    events = events_around("t1", BERLIN, [date(2026, 3, 3)], seed=1)
    source = JsonlHistory(jsonl(tmp_path, events))
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    docs = overviews(source, "t1", "daily", [date(2026, 3, 3)], BERLIN)
    persist(store, docs)
    persist(store, overviews(source, "t1", "daily", [date(2026, 3, 3)], BERLIN))
    got = store.overview("t1", "daily", "2026-03-03")
    assert {k: got[k] for k in METRICS} == {k: docs[0][k] for k in METRICS}
    assert got["timezone"] == "Europe/Berlin"


def test_today_so_far_is_close_to_exact(redis_url):
    c = Counters(redis_url)
    c.set_timezone("t1", "Asia/Ho_Chi_Minh")
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    now = datetime.now(timezone.utc)
    ts = now.timestamp()  # the same instant as `now`: never on the other side of a local midnight
    events = []
    for camp in ("x", "y"):
        for u in range(3000):
            events.append({"type": "sent", "tenant": "t1", "campaign": camp, "job": "j", "user": f"u{u}", "ts": ts})
            if u % 3 == 0:
                events.append({"type": "interaction", "tenant": "t1", "campaign": camp, "job": "j", "user": f"u{u}",
                               "ts": ts, "target": "n"})
    c.record_many(events)
    c.record({"type": "sent", "tenant": "t2", "campaign": "other", "job": "j", "user": "z", "ts": ts})
    doc = today_so_far(c, "t1", tz, now)
    assert doc["approximate"] is True and doc["campaigns_count"] == 2
    assert doc["total_interactions"] == 2000  # exact: a counter, not a HyperLogLog
    assert doc["total_sent_users"] == pytest.approx(6000, rel=0.03)
    assert doc["total_interacted_users"] == pytest.approx(2000, rel=0.03)
    assert doc["report_date"] == now.astimezone(tz).date().isoformat()
    assert doc["distinct_users"] == pytest.approx(3000, rel=0.03)  # the same users in both campaigns
