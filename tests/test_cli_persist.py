"""Persistence through the CLI: snapshot, --from-store, the scheduler and an RQ worker process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from oracle import expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from cli_helpers import embedded_servers, jsonl, no_server_left, run_cli
from servers import wait_for


def test_snapshot_then_from_store_equals_live(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    events = random_events(OFFER_SCRIPT, 60, seed=12)
    cli("record", jsonl(tmp_path, events))
    assert cli("report", "--tenant", T, "--campaign", C, "--from-store").exit_code == 4  # nothing persisted yet
    res = cli("snapshot")
    assert res.exit_code == 0, res.stderr
    done = json.loads(res.stdout)
    assert [d["campaign"] for d in done] == [C] and done[0]["steps"] > 0
    for job in ([], ["--job", "job-1"], ["--job", "job-2"]):
        live = json.loads(cli("report", "--tenant", T, "--campaign", C, *job).stdout)
        stored = json.loads(cli("report", "--tenant", T, "--campaign", C, *job, "--from-store").stdout)
        assert stored == live
    user = next(e["user"] for e in events if e["type"] == "interaction" and e["job"] == "job-1")
    args = ["journey", "--tenant", T, "--campaign", C, "--job", "job-1", "--user", user]
    live = json.loads(cli(*args).stdout)
    assert live["journey_path"]  # steps now come from the store, the journal was trimmed
    assert json.loads(cli(*args, "--from-store").stdout) == live
    assert json.loads(cli("snapshot").stdout) == []  # nothing pending any more


def test_snapshot_of_one_campaign_and_tenant_filter(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", jsonl(tmp_path, random_events(OFFER_SCRIPT, 5, seed=1)))
    assert json.loads(cli("snapshot", "--tenant", "other").stdout) == []
    assert cli("snapshot", "--tenant", "other", "--campaign", C).exit_code == 4
    assert len(json.loads(cli("snapshot", "--campaign", C).stdout)) == 1


def test_snapshot_with_the_store_down_is_a_clear_error(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", jsonl(tmp_path, random_events(OFFER_SCRIPT, 5, seed=1)))
    res = cli("snapshot", "--store-url", "mongodb://u:topsecret@127.0.0.1:1/db?serverSelectionTimeoutMS=100")
    assert res.exit_code == 5
    assert "report store" in res.stderr and "topsecret" not in res.stderr
    assert json.loads(cli("snapshot", "--enqueue").stdout)["enqueued"] == [C]  # still pending in Redis


def test_scheduler_and_worker_processes_on_the_embedded_redis(tmp_path, script_file):
    home = tmp_path / "home"
    events = random_events(OFFER_SCRIPT, 40, seed=13)
    assert run_cli(home, "script", "load", "--tenant", T, "--campaign", C, script_file).returncode == 0
    assert run_cli(home, "record", "-", input="".join(json.dumps(e) + "\n" for e in events)).returncode == 0
    res = run_cli(home, "scheduler", "--once")
    assert res.returncode == 0 and "1 snapshot(s) enqueued" in res.stderr
    res = run_cli(home, "worker", "--burst")
    assert res.returncode == 0, res.stderr
    stored = run_cli(home, "report", "--tenant", T, "--campaign", C, "--from-store")
    assert stored.returncode == 0, stored.stderr
    assert metrics_of(json.loads(stored.stdout)) == expected_report(events, OFFER_SCRIPT)
    assert "0 snapshot(s) enqueued" in run_cli(home, "scheduler", "--once").stderr


def test_health(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    events = random_events(OFFER_SCRIPT, 5, seed=1)
    intruder = dict(events[0], tenant="intruder", id="x")
    negative, stringly = dict(events[1], ts=-1), dict(events[2], ts="now")
    cli("record", jsonl(tmp_path, events + [intruder, negative, stringly]))
    res = cli("health")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and out["redis"]["ok"] and out["store"]["ok"] and out["queue"]["ok"]
    assert out["pending_snapshots"]["campaigns"] == 1
    assert out["rejected_events"] == {"total": 3, "by_campaign": {C: 1}, "by_reason": {"other_tenant": 1},
                                      "by_field": {"ts": 2}}
    cli("snapshot")
    assert json.loads(cli("health").stdout)["pending_snapshots"]["campaigns"] == 0
    res = cli("health", "--store-url", "mongodb://u:pw9@127.0.0.1:1/db?serverSelectionTimeoutMS=100")
    assert res.exit_code == 5 and "pw9" not in res.stdout
    assert json.loads(res.stdout)["store"]["ok"] is False


def test_worker_takes_rq_worker_flags_and_logs_to_stderr(tmp_path, script_file):
    home = tmp_path / "home"
    assert run_cli(home, "script", "load", "--tenant", T, "--campaign", C, script_file).returncode == 0
    events = random_events(OFFER_SCRIPT, 10, seed=3)
    assert run_cli(home, "record", "-", input="".join(json.dumps(e) + "\n" for e in events)).returncode == 0
    assert run_cli(home, "snapshot", "--enqueue").returncode == 0
    res = run_cli(home, "worker", "--burst", "--name", "cc-test-worker", "--max-jobs", "1", "--logging-level", "debug")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # logs are messages: stderr
    assert "Worker cc-test-worker" in res.stderr and "Job OK" in res.stderr
    assert run_cli(home, "report", "--tenant", T, "--campaign", C, "--from-store").returncode == 0
    quiet = run_cli(home, "worker", "--burst", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and " INFO " not in quiet.stderr
    verbose = run_cli(home, "worker", "--burst", "-v")
    assert verbose.returncode == 0 and " DEBUG " in verbose.stderr
    assert no_server_left(home) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find the embedded server")
def test_sigterm_stops_the_scheduler_and_its_embedded_redis(tmp_path):
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_COUNTERS_")},
           "CAMPAIGN_COUNTERS_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "campaign_counters", "scheduler", "--interval", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: embedded_servers(home), 60, "the scheduler's embedded Redis")
        aof = home / "redis.aof"
        wait_for(lambda: aof.exists() and aof.stat().st_size > 0, 30, "the scheduler's first writes")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert no_server_left(home, wait=10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in embedded_servers(home):  # only this test's server: never leave one behind
            os.kill(pid, signal.SIGTERM)

