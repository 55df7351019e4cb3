"""Fault: Redis runs out of memory, or may evict keys.

Real redis-server processes started with each configuration. Under
`noeviction` an OOM refuses whole script calls, so re-recording the input
once memory is back counts every event exactly once (checked against the
oracle); `health` says what is wrong and exits non-zero. The embedded server
is started with maxmemory and noeviction.
"""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from campaign_counters.cli import main
from cli_helpers import jsonl, run_cli
from oracle import expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from servers import RedisServer


@pytest.fixture
def run(tmp_path):
    def invoke(url, *args):
        env = {"CAMPAIGN_COUNTERS_REDIS_URL": url, "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "home"),
               "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/reports.db"}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl"])
def test_health_is_not_ok_under_an_evicting_policy(run, policy):
    with RedisServer("--maxmemory", "64mb", "--maxmemory-policy", policy) as server:
        res = run(server.url, "health")
        assert res.exit_code == 1, res.output
        out = json.loads(res.stdout)
        assert out["ok"] is False and out["redis"]["ok"] is True
        memory = out["memory"]
        assert memory["ok"] is False and memory["policy"] == policy and memory["max_bytes"] == 64 * 2**20
        assert memory["problems"] == [f"maxmemory-policy is {policy}: Redis may evict keys and counts go wrong "
                                      "silently; set it to noeviction"]


def test_health_is_ok_under_noeviction_with_room(run):
    with RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "noeviction") as server:
        res = run(server.url, "health")
        assert res.exit_code == 0, res.output
        memory = json.loads(res.stdout)["memory"]
        assert memory["ok"] and memory["policy"] == "noeviction" and memory["problems"] == []
        assert 0 < memory["used_bytes"] < 0.9 * memory["max_bytes"]


def test_out_of_memory_refuses_whole_calls_and_rerecording_counts_each_event_once(run, tmp_path, script_file):
    events = random_events(OFFER_SCRIPT, 3000, seed=31)
    path = jsonl(tmp_path, events)
    with RedisServer("--maxmemory", "1500kb", "--maxmemory-policy", "noeviction") as server:
        assert run(server.url, "script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
        res = run(server.url, "record", path, "--chunk", "500")
        assert res.exit_code == 5
        assert "OOM" in res.stderr and "not recorded (first: line" in res.stderr
        partial = json.loads(res.stdout)
        assert 0 < partial["accepted"] < len(events)
        res = run(server.url, "health")
        assert res.exit_code == 1
        memory = json.loads(res.stdout)["memory"]
        assert memory["ok"] is False and memory["used_percent"] > 90
        assert any("% of maxmemory" in p for p in memory["problems"])
        # Redis 6.2 counts a refusal inside a script as a script error, a plain write's as OOM
        with server.client() as c, pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(100_000):
                c.set(f"filler-{i}", "x" * 100)
        memory = json.loads(run(server.url, "health").stdout)["memory"]
        assert memory["oom_rejections"] >= 1
        assert any("refused for lack of memory" in p for p in memory["problems"])

        with server.client() as c:
            for key in c.scan_iter("filler-*"):
                c.delete(key)
            c.config_set("maxmemory", "256mb")
        res = run(server.url, "record", path)
        assert res.exit_code == 0, res.stderr
        again = json.loads(res.stdout)
        assert again["accepted"] + again["duplicates"] == len(events)
        assert again["accepted"] + partial["accepted"] == len({e["id"] for e in events})  # each applied once
        for job in (None, "job-1", "job-2"):
            args = ["--job", job] if job else []
            report = json.loads(run(server.url, "report", "--tenant", T, "--campaign", C, *args).stdout)
            assert metrics_of(report) == expected_report(events, OFFER_SCRIPT, job)
        memory = json.loads(run(server.url, "health").stdout)["memory"]
        assert memory["used_percent"] < 90 and memory["oom_rejections"] >= 1 and not memory["ok"]
        with server.client() as c:
            c.config_resetstat()
        assert run(server.url, "health").exit_code == 0


def test_the_embedded_server_runs_with_maxmemory_and_noeviction(tmp_path):
    for home in ("home", "other"):
        (tmp_path / home).mkdir()  # health creates no data directory: it reports a missing one
    res = run_cli(tmp_path / "home", "health", env={"CAMPAIGN_COUNTERS_MAXMEMORY": "48mb"})
    assert res.returncode == 0, res.stderr
    memory = json.loads(res.stdout)["memory"]
    assert (memory["policy"], memory["max_bytes"]) == ("noeviction", 48 * 2**20)
    res = run_cli(tmp_path / "other", "health")
    assert json.loads(res.stdout)["memory"]["max_bytes"] == 2**30  # the default, 1gb
    res = run_cli(tmp_path / "third", "health", env={"CAMPAIGN_COUNTERS_MAXMEMORY": "lots"})
    assert res.returncode == 2
    assert "CAMPAIGN_COUNTERS_MAXMEMORY: must be a size like 512mb or 2gb, not 'lots'" in res.stderr


def test_memory_is_checked_on_every_cluster_node(cluster_url, redis_cluster):
    from campaign_counters import Counters
    from campaign_counters.health import health

    counters = Counters(cluster_url)
    node = redis_cluster.client(redis_cluster.ports[1])
    try:
        out = health(counters, None, None)["memory"]
        assert out["ok"] and sorted(out["nodes"]) == sorted(f"127.0.0.1:{p}" for p in redis_cluster.ports)
        node.config_set("maxmemory-policy", "allkeys-lru")
        out = health(counters, None, None)["memory"]
        assert out["ok"] is False and out["nodes"][f"127.0.0.1:{redis_cluster.ports[1]}"]["policy"] == "allkeys-lru"
        assert out["problems"] == [f"maxmemory-policy is allkeys-lru on 127.0.0.1:{redis_cluster.ports[1]}: Redis "
                                   "may evict keys and counts go wrong silently; set it to noeviction"]
    finally:
        node.config_set("maxmemory-policy", "noeviction")
        counters.close()
