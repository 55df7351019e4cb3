"""A script replaced mid-campaign: node analytics per version the users saw, checked and repaired by version."""

from __future__ import annotations

import random
import time

import pytest

from campaign_counters import Counters
from campaign_counters.counters import maintenance as m
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.reconcile import reconcile
from campaign_counters.persist.analysis import live_analysis
from cli_helpers import jsonl
from oracle import expected_report
from scenarios import C, OFFER_SCRIPT, T, random_events

# v2 asks a survey question between "ask" and the offer
SURVEY_SCRIPT = {
    "nodes": [*OFFER_SCRIPT["nodes"][:2], {"id": "survey", "type": "question"}, *OFFER_SCRIPT["nodes"][2:]],
    "edges": [
        {"source": "start", "target": "ask", "label": "go"},
        {"source": "ask", "target": "survey", "label": "yes"},
        {"source": "survey", "target": "send_offer", "label": "sure"},
        {"source": "ask", "target": "bye", "label": "no"},
        {"source": "send_offer", "target": "done", "label": "ok"},
    ],
}


@pytest.fixture
def counters(request):
    url = request.getfixturevalue("redis_url")
    c = Counters(url)
    yield c
    c.close()


def without_node(events):
    return [{k: v for k, v in e.items() if k != "node"} for e in events]


def two_versions(counters, kept=1.0):
    """Users of v1 (events before v2 was loaded, in time and in arrival), then users of v2; the live path
    records a share `kept` of them."""
    rng = random.Random(5)
    counters.load_script(T, C, OFFER_SCRIPT)
    now = time.time()
    first = without_node(random_events(OFFER_SCRIPT, 120, seed=31, t0=now - 3 * 86400))
    counters.record_many([e for e in first if rng.random() < kept])
    counters.load_script(T, C, SURVEY_SCRIPT)
    second = without_node(random_events(SURVEY_SCRIPT, 90, seed=32, t0=time.time() + 60))
    for e in second:
        e["user"], e["id"] = "v2-" + e["user"], "v2-" + e["id"]
    counters.record_many([e for e in second if rng.random() < kept])
    return first, second


def test_node_analytics_per_version_the_users_saw(counters):
    first, second = two_versions(counters)
    result = live_analysis(counters, T, C)
    v1, v2 = result["versions"]
    assert (v1["version"], v2["version"]) == (1, 2) and v1["loaded_at"] < v2["loaded_at"]
    for version, events, script in ((v1, first, OFFER_SCRIPT), (v2, second, SURVEY_SCRIPT)):
        want = expected_report(events, script)
        assert version["users"] == want["target_users_count"]
        assert version["node_analytics"] == want["node_analytics"]
        assert version["funnel_data"] == want["funnel_data"]
    assert "survey" not in v1["node_analytics"] and v2["node_analytics"]["survey"]["reached_count"] > 0
    overall = counters.report(T, C)["node_analytics"]  # the report: totals over the versions
    for node, facts in overall.items():
        parts = [v["node_analytics"].get(node, {"reached_count": 0}) for v in (v1, v2)]
        assert facts["reached_count"] == sum(p["reached_count"] for p in parts)


def test_reconcile_reads_each_event_with_its_version(counters, tmp_path):
    first, second = two_versions(counters)
    assert reconcile(counters, None, JsonlHistory(jsonl(tmp_path, first + second)), T).drift == []


def test_a_repair_replays_each_versions_events_with_its_script(counters, tmp_path):
    first, second = two_versions(counters, kept=0.5)
    found = reconcile(counters, None, JsonlHistory(jsonl(tmp_path, first + second)), T, repair=True)
    assert found.drift and found.repaired == [C] and found.after_repair == []
    v1, v2 = live_analysis(counters, T, C)["versions"]
    assert v1["node_analytics"] == expected_report(first, OFFER_SCRIPT)["node_analytics"]
    assert v2["node_analytics"] == expected_report(second, SURVEY_SCRIPT)["node_analytics"]


def test_versions_expire_with_the_campaign_and_reloading_the_same_script_adds_none(counters, raw):
    two_versions(counters)
    counters.load_script(T, C, SURVEY_SCRIPT)  # the latest already: no new version
    versions = counters.run(m.script_versions(counters, C))
    assert len(versions) == 2 and versions[-1][1] == counters.run(counters.plan_graph(T, C)).sha
    meta = counters.run(m.campaign_meta(counters, C))
    counters.run(m.expire_campaign(counters, C, list(meta.jobs), 3600))
    (versions_key,) = raw.keys(f"*{{{C}}}:versions")
    assert 0 < raw.ttl(versions_key) <= 3600
