"""Every definition of docs/metrics.md on hand-built scenarios and generated ones.

Expected values come from tests/oracle.py (naive sets) or are worked out by
hand in the test; the live counters must agree exactly.
"""

from __future__ import annotations

import random

import pytest

from oracle import expected_journey, expected_report, metrics_of
from scenarios import BRANCH_SCRIPT, C, OFFER_SCRIPT, T, ev, random_events


async def load(api, script=OFFER_SCRIPT, campaign=C, tenant=T):
    await api.load_script(tenant, campaign, script)


async def test_counts_rates_and_completion_by_hand(api):
    await load(api)
    events = [
        ev("targeted", "u1", 100), ev("sent", "u1", 101),
        ev("interaction", "u1", 110, target="ask", choice="go"),
        ev("interaction", "u1", 120, target="send_offer", choice="yes"),
        ev("interaction", "u1", 131, target="done", choice="ok"),
        ev("targeted", "u2", 100), ev("sent", "u2", 102),
        ev("interaction", "u2", 112, target="ask", choice="go"),
        ev("interaction", "u2", 122, target="bye", choice="no"),
        ev("targeted", "u3", 100),
        ev("sent", "u4", 105),
    ]
    res = await api.record_many(events)
    assert (res.accepted, res.duplicates, res.rejected) == (len(events), 0, 0)
    rep = await api.report(T, C)
    assert rep["target_users_count"] == 4
    assert rep["sent_users_count"] == 3
    assert rep["interacted_users_count"] == 2
    assert rep["completed_users_count"] == 2  # done and bye are end nodes; send_offer is not
    assert rep["total_interactions"] == 5
    assert rep["interaction_rate"] == pytest.approx(200 / 3)
    assert rep["completion_rate"] == pytest.approx(200 / 3)
    assert rep["avg_completion_time"] == pytest.approx(((131 - 101) + (122 - 102)) / 2)
    na = rep["node_analytics"]
    assert na["start"] == {"reached_count": 3, "choices": {"go": 2}}
    assert na["ask"] == {"reached_count": 2, "choices": {"no": 1, "yes": 1}}
    assert na["send_offer"] == {"reached_count": 1, "choices": {"ok": 1}}
    funnel = {f["node"]: f for f in rep["funnel_data"]}
    assert [f["node"] for f in rep["funnel_data"]] == ["start", "ask", "send_offer", "bye", "done"]
    assert funnel["start"]["drop_off_rate"] == pytest.approx(100 / 3)  # u4 never went on
    assert funnel["ask"]["drop_off_rate"] == 0.0
    assert funnel["send_offer"]["conversion_rate"] == pytest.approx(100 / 3)
    assert funnel["done"]["drop_off_rate"] == 0.0
    assert metrics_of(rep) == expected_report(events, OFFER_SCRIPT)


async def test_send_offer_is_not_an_end(api):
    await load(api)
    events = [ev("sent", "u1", 1), ev("interaction", "u1", 2, target="ask"),
              ev("interaction", "u1", 3, target="send_offer", choice="yes")]
    await api.record_many(events)
    rep = await api.report(T, C)
    assert rep["completed_users_count"] == 0
    assert rep["avg_completion_time"] is None
    journey = await api.journey(T, C, "job-1", "u1")
    assert journey["completed"] is False and journey["exit_node"] is None


async def test_duplicates_by_id_are_applied_once(api):
    await load(api)
    events = [
        ev("sent", "u1", 1, id="a"), ev("sent", "u1", 1, id="a"),
        ev("interaction", "u1", 5, target="ask", choice="go", id="b"),
        ev("interaction", "u1", 5, target="ask", choice="go", id="b"),
        ev("interaction", "u1", 6, target="ask", choice="go"),  # no id: a second interaction
        ev("sent", "u2", 1, id="a"),  # same id reused for another user: still a duplicate
    ]
    res = await api.record_many(events)
    assert (res.accepted, res.duplicates) == (3, 3)
    rep = await api.report(T, C)
    assert rep["total_interactions"] == 2
    assert rep["sent_users_count"] == 1
    assert rep["node_analytics"]["start"]["choices"] == {"go": 2}
    assert metrics_of(rep) == expected_report(events, OFFER_SCRIPT)
    again = await api.record_many(events[:4])
    assert again.duplicates == 4 and again.accepted == 0
    assert metrics_of(await api.report(T, C)) == metrics_of(rep)


async def test_out_of_order_events_give_the_same_report(api):
    await load(api)
    base = [
        ev("targeted", "u1", 90), ev("sent", "u1", 100), ev("sent", "u1", 95),
        ev("interaction", "u1", 130, target="ask", choice="go"),
        ev("interaction", "u1", 160, target="bye", choice="no"),
        ev("interaction", "u1", 150, target="done", choice="ok"),  # earlier end node
        ev("interaction", "u2", 50, target="ask", choice="go"),  # no sent at all
        ev("interaction", "u2", 70, target="bye", choice="no"),
        ev("targeted", "u2", 40),
    ]
    reports = []
    rng = random.Random(7)
    for k in range(4):
        events = [dict(e, campaign=f"perm-{k}") for e in base]
        rng.shuffle(events)
        await load(api, campaign=f"perm-{k}")
        await api.record_many(events)
        reports.append(metrics_of(await api.report(T, f"perm-{k}")))
    assert all(r == reports[0] for r in reports)
    # u1: earliest end 150 (done) - earliest sent 95; u2: 70 - earliest event 40
    assert reports[0]["avg_completion_time"] == pytest.approx(((150 - 95) + (70 - 40)) / 2)
    assert reports[0] == expected_report(base, OFFER_SCRIPT)
    journey = await api.journey(T, "perm-0", "job-1", "u1")
    assert journey["exit_node"] == "done"
    assert [s["ts"] for s in journey["journey_path"]] == [130, 150, 160]


async def test_missing_node_is_resolved_from_the_script(api):
    await load(api, BRANCH_SCRIPT)
    events = [
        ev("sent", "u1", 1),
        ev("interaction", "u1", 2, target="a", choice="x"),  # only s leads to a
        ev("interaction", "u1", 3, target="shared", choice="p"),  # a and b lead here: label p -> a
        ev("sent", "u2", 1),
        ev("interaction", "u2", 2, target="shared", choice="zzz"),  # ambiguous: not attributed
        ev("interaction", "u2", 3, target="shared", choice="q", node="b"),  # explicit node
    ]
    await api.record_many(events)
    rep = await api.report(T, C)
    na = rep["node_analytics"]
    assert na["s"]["choices"] == {"x": 1}
    assert na["a"] == {"reached_count": 1, "choices": {"p": 1}}
    assert na["b"] == {"reached_count": 1, "choices": {"q": 1}}
    assert na["shared"]["reached_count"] == 2
    assert metrics_of(rep) == expected_report(events, BRANCH_SCRIPT)


async def test_end_type_node_with_outgoing_edges(api):
    await load(api, BRANCH_SCRIPT)
    events = [
        ev("sent", "u1", 10),
        ev("interaction", "u1", 20, target="a", choice="x"),
        ev("interaction", "u1", 30, target="stop", choice="quit"),
        ev("interaction", "u1", 40, target="more", choice="again"),
        ev("sent", "u2", 10),
        ev("interaction", "u2", 25, target="a", choice="x"),
        ev("interaction", "u2", 35, target="stop", choice="quit"),
    ]
    await api.record_many(events)
    rep = await api.report(T, C)
    assert rep["completed_users_count"] == 2
    assert rep["avg_completion_time"] == pytest.approx(((30 - 10) + (35 - 10)) / 2)
    funnel = {f["node"]: f for f in rep["funnel_data"]}
    assert funnel["stop"]["drop_off_rate"] == 0.0  # an end node never drops off
    assert funnel["a"]["drop_off_rate"] == 0.0
    assert funnel["s"]["drop_off_rate"] == 0.0
    assert rep["node_analytics"]["stop"]["choices"] == {"again": 1}
    assert metrics_of(rep) == expected_report(events, BRANCH_SCRIPT)


async def test_user_in_two_jobs_counts_once_in_the_campaign(api):
    await load(api)
    events = [
        ev("sent", "u1", 100, job="j1"),
        ev("interaction", "u1", 110, job="j1", target="ask", choice="go"),
        ev("sent", "u1", 200, job="j2"),
        ev("interaction", "u1", 230, job="j2", target="bye", choice="no"),
        ev("sent", "u2", 300, job="j2"),
    ]
    await api.record_many(events)
    total = await api.report(T, C)
    j1, j2 = await api.report(T, C, "j1"), await api.report(T, C, "j2")
    assert (j1["sent_users_count"], j2["sent_users_count"], total["sent_users_count"]) == (1, 2, 2)
    assert (j1["completed_users_count"], j2["completed_users_count"], total["completed_users_count"]) == (0, 1, 1)
    assert total["total_interactions"] == 2
    # campaign: u1 ends at 230, earliest sent over both jobs is 100
    assert total["avg_completion_time"] == pytest.approx(130)
    assert j2["avg_completion_time"] == pytest.approx(30)
    assert total["node_analytics"]["start"]["reached_count"] == 2
    assert j1["job"] == "j1" and total["job"] is None
    for job in ("j1", "j2", None):
        got = metrics_of(await api.report(T, C, job))
        assert got == expected_report(events, OFFER_SCRIPT, job)


async def test_status_latest_by_time_and_job_fallback(api):
    await load(api)
    await api.record_many([
        ev("sent", "u1", 5),
        ev("status", ts=20, job=None, status="COMPLETED"),
        ev("status", ts=10, job=None, status="RUNNING"),  # older, arrives later
        ev("status", ts=15, job="job-1", status="RUNNING"),
    ])
    total = await api.report(T, C)
    assert total["status"] == "COMPLETED"
    assert (await api.report(T, C, "job-1"))["status"] == "RUNNING"
    assert total["updated_at"].endswith("Z")


async def test_events_before_the_script_still_count_users(api):
    events = [ev("sent", "u1", 1), ev("interaction", "u1", 2, target="ask", choice="go")]
    await api.record_many(events)
    rep = await api.report(T, C)
    assert (rep["sent_users_count"], rep["interacted_users_count"]) == (1, 1)
    assert rep["funnel_data"] == []
    assert rep["node_analytics"]["ask"]["reached_count"] == 1


@pytest.mark.parametrize("chunk,script_batch", [(5000, 500), (37, 5)], ids=["one-chunk", "many-chunks"])
async def test_generated_campaign_matches_the_oracle(api, chunk, script_batch):
    """Many chunks: each is validated while Redis runs the previous one's calls."""
    from dataclasses import replace

    await load(api)
    api.settings = replace(api.settings, chunk=chunk, script_batch=script_batch)
    events = random_events(OFFER_SCRIPT, 300, seed=11)
    bad = [{"type": "sent", "tenant": T}, ev("interaction", "u1", -5, target="ask")]
    res = await api.record_many(events[:100] + bad + events[100:])
    assert res.rejected == 2 and [r.index for r in res.rejections] == [100, 101]
    assert res.accepted + res.duplicates == len(events)
    for job in (None, "job-1", "job-2"):
        assert metrics_of(await api.report(T, C, job)) == expected_report(events, OFFER_SCRIPT, job)
    for user in ("user-0", "user-1", "user-7", "user-42"):
        for job in ("job-1", "job-2"):
            mine = [e for e in events if e["user"] == user and e["job"] == job]
            if not mine:
                continue
            got = await api.journey(T, C, job, user)
            want = expected_journey(events, OFFER_SCRIPT, job, user)
            assert {k: got[k] for k in want} == want


async def test_journey_of_unknown_user_is_not_found(api):
    from campaign_counters import NotFound

    await load(api)
    await api.record_many([ev("sent", "u1", 1)])
    with pytest.raises(NotFound):
        await api.journey(T, C, "job-1", "nobody")
    with pytest.raises(NotFound):
        await api.report(T, C, "no-such-job")


async def test_script_reload_keeps_indexes_and_classifies_later_events(api):
    """Replacing a script applies to later events; earlier counts stay consistent."""
    await load(api)
    first = [ev("sent", "u1", 1), ev("interaction", "u1", 2, target="ask", choice="go"),
             ev("interaction", "u1", 3, target="send_offer", choice="yes")]
    await api.record_many(first)
    changed = {
        "nodes": OFFER_SCRIPT["nodes"] + [{"id": "extra", "type": "end"}],
        "edges": OFFER_SCRIPT["edges"][:3] + [{"source": "send_offer", "target": "extra", "label": "more"}],
    }
    await api.load_script(T, C, changed)  # done is now unreachable; extra is an end
    later = [ev("sent", "u2", 1), ev("interaction", "u2", 2, target="ask", choice="go"),
             ev("interaction", "u2", 3, target="send_offer", choice="yes"),
             ev("interaction", "u2", 4, target="extra", choice="more")]
    await api.record_many(later)
    rep = await api.report(T, C)
    assert rep["completed_users_count"] == 1
    assert rep["node_analytics"]["send_offer"] == {"reached_count": 2, "choices": {"more": 1}}
    assert rep["node_analytics"]["extra"]["reached_count"] == 1
    assert [f["node"] for f in rep["funnel_data"]] == ["start", "ask", "send_offer", "bye", "extra", "done"]
    assert metrics_of(rep) == expected_report(first + later, changed)


async def test_many_jobs_and_multi_job_users_sum_correctly(api):
    await load(api)
    events = random_events(OFFER_SCRIPT, 200, seed=21, jobs=("a", "b", "c", "d"))
    await api.record_many(events)
    for job in (None, "a", "b", "c", "d"):
        assert metrics_of(await api.report(T, C, job)) == expected_report(events, OFFER_SCRIPT, job)
