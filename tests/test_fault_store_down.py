"""Fault: one side down. Live reads that do not need the report store serve from Redis alone;
`health` reports each side even when the other is down; compose exposes nothing unauthenticated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from campaign_counters.cli import main
from cli_helpers import jsonl
from oracle import expected_journey, expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from servers import RedisServer

MONGO_DOWN = "mongodb://u:s3cret@127.0.0.1:1/reports?serverSelectionTimeoutMS=300"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_server():
    with RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "noeviction") as server:
        yield server


@pytest.fixture
def run(redis_server, tmp_path):
    def invoke(*args, store=f"sqlite:///{tmp_path}/reports.db"):
        env = {"CAMPAIGN_COUNTERS_REDIS_URL": redis_server.url, "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "home"),
               "CAMPAIGN_COUNTERS_STORE_URL": store}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def broken_sqlite(tmp_path):
    """A store URL SQLite cannot open: a directory where the file should be."""
    (tmp_path / "broken.db").mkdir(exist_ok=True)
    return f"sqlite:///{tmp_path}/broken.db"


def subset(journey):
    """The fields the oracle computes."""
    return {k: journey[k] for k in ("journey_path", "completed", "exit_node", "completion_time", "total_interactions")}


def interacting_user(events, job="job-1"):
    return next(e["user"] for e in events if e["type"] == "interaction" and e["job"] == job)


def test_live_reads_serve_from_redis_when_the_store_is_down(run, tmp_path, script_file):
    events = random_events(OFFER_SCRIPT, 50, seed=41)
    run("script", "load", "--tenant", T, "--campaign", C, script_file)
    run("record", jsonl(tmp_path, events))
    user = interacting_user(events)
    args = ["journey", "--tenant", T, "--campaign", C, "--job", "job-1", "--user", user]
    res = run(*args, store=MONGO_DOWN)
    assert res.exit_code == 0, res.stderr
    assert "s3cret" not in res.stderr  # the live journey needs no store: Redis holds every step
    assert subset(json.loads(res.stdout)) == expected_journey(events, OFFER_SCRIPT, "job-1", user)
    report = run("report", "--tenant", T, "--campaign", C, store=MONGO_DOWN)
    assert report.exit_code == 0 and metrics_of(json.loads(report.stdout)) == expected_report(events, OFFER_SCRIPT)
    res = run(*args, "--from-store", store=MONGO_DOWN)
    assert res.exit_code == 5 and "s3cret" not in res.stderr


def test_with_the_store_gone_after_a_snapshot_the_live_journey_is_still_whole(run, tmp_path, script_file):
    events = random_events(OFFER_SCRIPT, 50, seed=42)
    user = interacting_user(events)
    mine = [e for e in events if e.get("user") == user and e["job"] == "job-1"]
    first = [e for e in events if e not in mine] + mine[:2]  # the user's first two events
    later = mine[2:]
    run("script", "load", "--tenant", T, "--campaign", C, script_file)
    run("record", jsonl(tmp_path, first, "first.jsonl"))
    assert run("snapshot").exit_code == 0  # persists the user's early steps (Redis keeps them too)
    run("record", jsonl(tmp_path, later, "later.jsonl"))
    args = ["journey", "--tenant", T, "--campaign", C, "--job", "job-1", "--user", user]
    whole = expected_journey(events, OFFER_SCRIPT, "job-1", user)
    assert subset(json.loads(run(*args).stdout)) == whole
    res = run(*args, store=broken_sqlite(tmp_path))
    assert res.exit_code == 0, res.stderr
    assert subset(json.loads(res.stdout)) == whole  # every step, though the store is gone


def test_health_reports_each_side_when_the_other_is_down(run, redis_server, tmp_path, script_file):
    run("script", "load", "--tenant", T, "--campaign", C, script_file)
    for store in (MONGO_DOWN, broken_sqlite(tmp_path)):
        res = run("health", store=store)
        assert res.exit_code == 5
        out = json.loads(res.stdout)
        assert out["store"]["ok"] is False and "s3cret" not in res.stdout
        assert out["redis"]["ok"] is True and out["memory"]["ok"] is True and out["queue"]["ok"] is True
    run("snapshot")  # the SQLite file now exists
    redis_server.kill()  # SIGKILL by PID
    res = run("health")
    assert res.exit_code == 5
    out = json.loads(res.stdout)
    assert out["redis"]["ok"] is False and out["store"]["ok"] is True and out["queue"]["ok"] is False


compose = shutil.which("docker-compose")


@pytest.mark.skipif(compose is None, reason="docker-compose is not installed")
def test_compose_binds_to_loopback_and_takes_passwords_from_the_environment():
    def config(**env):
        return subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                              text=True, timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})

    res = config()
    assert res.returncode != 0 and "set REDIS_PASSWORD" in res.stderr
    res = config(REDIS_PASSWORD="r3d1s", MONGO_ROOT_PASSWORD="m0ng0")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "127.0.0.1:6379:6379" in text and "127.0.0.1:27017:27017" in text
    assert "0.0.0.0" not in text and "- 6379:6379" not in text
    assert "CAMPAIGN_COUNTERS_REDIS_URL: redis://:r3d1s@redis:6379/0" in text
    assert "mongodb://root:m0ng0@mongo:27017/reports?authSource=admin" in text
    assert "MONGO_INITDB_ROOT_PASSWORD: m0ng0" in text
    assert "--maxmemory-policy" in text and "noeviction" in text and "--requirepass" in text
    assert "MAXMEMORY: 1gb" in text
    wide = config(REDIS_PASSWORD="r", MONGO_ROOT_PASSWORD="m", CAMPAIGN_COUNTERS_BIND="0.0.0.0",
                  CAMPAIGN_COUNTERS_MAXMEMORY="4gb").stdout
    assert "0.0.0.0:6379:6379" in wide and "MAXMEMORY: 4gb" in wide
