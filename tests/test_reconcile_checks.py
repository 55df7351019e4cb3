"""Reconcile checks the order of user counts, and the night measures the live HyperLogLogs' error."""

from __future__ import annotations

import random
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from campaign_counters import Counters
from campaign_counters.nightly import schedule as nightly
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.reconcile import reconcile
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.stores import open_store
from campaign_counters.stores.mongo import MongoStore
from cli_helpers import jsonl
from oracle import expected_report
from scenarios import OFFER_SCRIPT, ev, random_events

T, C = "tenant-a", "camp-1"
CHAIN = ["completed_users_count", "interacted_users_count", "sent_users_count", "target_users_count"]


@pytest.fixture
def counters(redis_url):
    c = Counters(redis_url)
    yield c
    c.close()


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/reports.db")
    else:
        mongomock_ng = pytest.importorskip("mongomock_ng")
        s = MongoStore("mongodb://mock/cc_test", client=mongomock_ng.MongoClient())
    yield s
    s.close()


def breaks(report, **where):
    """Links of the chain a report breaks, computed here."""
    out = []
    for small, big in zip(CHAIN, CHAIN[1:]):
        if report[small] > report[big]:
            out.append({**where, "rule": f"{small} <= {big}", "values": [report[small], report[big]]})
    return out


def key(e):
    return (e["campaign"], e["job"] or "", e["source"], e["rule"])


def test_reconcile_names_every_broken_count_order_and_where(counters, raw, store, tmp_path):
    counters.load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 60, seed=5)
    # answers from users never sent the first message: the data itself breaks interacted <= sent
    events += [ev("interaction", f"orphan-{i}", 1_700_000_100 + i, "job-3", target="ask", choice="go", id=f"o{i}")
               for i in range(3)]
    counters.record_many(events)
    history = JsonlHistory(jsonl(tmp_path, events))
    first = reconcile(counters, store, history, T)
    want = []
    for job in (None, "job-1", "job-2", "job-3"):
        truth = expected_report(events, OFFER_SCRIPT, job)
        for source in ("history", "live"):
            want += breaks(truth, campaign=C, job=job, source=source)
    assert want and sorted(first.invariants, key=key) == sorted(want, key=key)
    assert {(b["job"], b["rule"]) for b in want} >= {("job-3", "interacted_users_count <= sent_users_count")}
    assert first.drift == []

    # the counters alone break it: completed raised past interacted in job-1 (and so in the total)
    (counters_key,) = raw.keys(f"*{{{C}}}*c:job-1")
    raw.hincrby(counters_key, "completed", 1000)
    second = reconcile(counters, store, history, T)
    live = [b for b in second.invariants if b["source"] == "live"]
    for job in (None, "job-1"):
        truth = dict(expected_report(events, OFFER_SCRIPT, job))
        truth["completed_users_count"] += 1000
        assert [b for b in live if b["job"] == job] == breaks(truth, campaign=C, job=job, source="live")
    assert any(d["metric"] == "completed_users_count" for d in second.drift)  # a counters' break is drift too
    stored = store.reconcile_reports(T)
    assert [len(r["invariants"]) for r in stored] == [len(second.invariants), len(first.invariants)]
    assert sorted(stored[0]["invariants"], key=key) == sorted(second.invariants, key=key)


BERLIN = ZoneInfo("Europe/Berlin")


def dst_week_events():
    """Two campaigns' users on the Saturday and Sunday the clocks go back in Berlin (2026-10-25)."""
    t0 = datetime(2026, 10, 24, 6, 0, tzinfo=BERLIN).timestamp()
    return [e for i, camp in enumerate(("ber-a", "ber-b"))
            for e in random_events(OFFER_SCRIPT, 400, seed=20 + i, campaign=camp, tenant="t-ber", t0=t0)]


def exact_uniques(events, dates):
    """Per campaign, distinct users (any / sent / interacted) whose events fall on these Berlin dates; summed."""
    seen, per = set(), {}
    for e in events:
        if (e["campaign"], e["id"]) in seen:
            continue
        seen.add((e["campaign"], e["id"]))
        if datetime.fromtimestamp(e["ts"], BERLIN).date() not in dates:
            continue
        c = per.setdefault(e["campaign"], (set(), set(), set()))
        c[0].add(e["user"])
        if e["type"] == "sent":
            c[1].add(e["user"])
        if e["type"] == "interaction":
            c[2].add(e["user"])
    return [sum(len(c[i]) for c in per.values()) for i in range(3)]


def hll_uniques(raw, dates):
    """PFCOUNT of each campaign's day HyperLogLogs over the dates (their union), summed over campaigns."""
    out = []
    for kind in "asi":
        total = 0
        for camp in ("ber-a", "ber-b"):
            keys = [k for d in dates for k in raw.keys(f"*{{{camp}}}*d:{d:%Y%m%d}:{kind}")]
            total += raw.pfcount(*keys) if keys else 0
        out.append(total)
    return out


@pytest.mark.parametrize("kept", [1.0, 0.7])
def test_night_records_the_hyperloglog_error_of_every_overview_it_writes(counters, raw, store, tmp_path, kept):
    events = dst_week_events()
    counters.set_timezone("t-ber", "Europe/Berlin")
    for camp in ("ber-a", "ber-b"):
        counters.load_script("t-ber", camp, OFFER_SCRIPT)
    rng = random.Random(4)
    recorded = [e for e in events if rng.random() < kept]  # the live path may have missed some
    counters.record_many(recorded)
    history = jsonl(tmp_path, events)
    for camp in ("ber-a", "ber-b"):
        snapshot_campaign(counters, store, camp)
    out = nightly.run_night(counters, store, history, "t-ber", date(2026, 10, 25))
    assert out["done"] is True and out["overviews"] == ["daily", "weekly"]  # a Sunday closes the week
    for camp in ("ber-a", "ber-b"):  # the night stores the journey analyses it checked (live: what was recorded)
        users = {e["user"] for e in recorded if e["campaign"] == camp}
        assert store.campaign_report("t-ber", camp, None)["analysis"]["users"] == len(users)
    doc = store.reconcile_reports("t-ber")[0]
    measured = {(m["report_type"], m["report_date"]): m["uniques"] for m in doc["approximation"]}
    assert set(measured) == {("daily", "2026-10-25"), ("weekly", "2026-10-19")}
    for (period, first), dates in ((("daily", "2026-10-25"), [date(2026, 10, 25)]),
                                   (("weekly", "2026-10-19"), [date(2026, 10, 19 + i) for i in range(7)])):
        exact = exact_uniques(events, set(dates))
        approx = hll_uniques(raw, dates)
        overview = store.overview("t-ber", period, first)
        for i, metric in enumerate(("total_target_users", "total_sent_users", "total_interacted_users")):
            got = measured[(period, first)][metric]
            assert got["exact"] == exact[i] == overview[metric] and got["approximate"] == approx[i]
            assert got["relative_error"] == pytest.approx((approx[i] - exact[i]) / exact[i], abs=1e-15)
            if kept == 1.0:
                assert abs(got["relative_error"]) < 0.03  # the estimator alone
            else:
                assert got["relative_error"] < -0.03  # and the users the live path missed
