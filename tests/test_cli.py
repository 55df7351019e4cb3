"""The CLI end to end: CliRunner against the test Redis, and real processes on the embedded default."""

from __future__ import annotations

import csv
import io
import json
import os
import signal

import pytest
from click.testing import CliRunner

from campaign_counters.cli import main
from oracle import expected_report, metrics_of
from cli_helpers import embedded_servers, jsonl, no_server_left, run_cli
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
    lines: list[bytes] = [json.dumps(e).encode() for e in good]
    # (line number in the final file, raw line, field the CLI must name); inserted in ascending order
    bad = [
        (3, b"{not json", "line"),
        (5, b'"a JSON string, not an object"', "event"),
        (10, json.dumps(ev("sent", "u", -1)).encode(), "ts"),
        (11, b'{"type": "sent", "user": "caf\xe9"}', "line"),  # Latin-1, not UTF-8
        (25, json.dumps({"type": "sent"}).encode(), "tenant"),
        (30, json.dumps(ev("sent", "u", 1, tenant="intruder")).encode(), "campaign"),
    ]
    for number, raw, _ in bad:
        lines.insert(number - 1, raw)
    lines.insert(7 - 1, b"   ")  # a blank line: skipped, but it still counts in the numbering
    expected = {n + (n >= 7): field for n, _, field in bad}
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = cli("record", str(path))
    assert res.exit_code == 3
    dupes = len(good) - len({e["id"] for e in good})
    assert json.loads(res.stdout) == {"accepted": len(good) - dupes, "duplicates": dupes, "rejected": len(bad)}
    named = [line.split(": ", 2) for line in res.stderr.splitlines() if line.startswith("line ")]
    assert [(int(where.split()[1]), field) for where, field, _ in named] == sorted(expected.items())
    assert all(reason for _, _, reason in named)
    assert "line 3: line: not valid JSON" in res.stderr and "not valid UTF-8" in res.stderr
    assert "ts: must be >= 0" in res.stderr and "tenant: is required" in res.stderr
    assert "another tenant" in res.stderr
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
    assert res.exit_code == 4 and res.stdout == ""  # as for report: nothing says the campaign exists
    report = cli("report", "--tenant", "someone-else", "--campaign", C).stderr
    unknown = cli("report", "--tenant", "someone-else", "--campaign", "never-seen").stderr
    assert res.stderr.strip() and report.startswith(res.stderr.strip())
    assert report.replace(C, "X") == unknown.replace("never-seen", "X")  # another tenant's = an unknown campaign


def test_bad_ids_are_usage_errors(cli):
    res = cli("report", "--tenant", "bad tenant", "--campaign", C)
    assert res.exit_code == 2 and "tenant:" in res.stderr


def test_unreachable_redis_exits_5_without_the_password(tmp_path):
    for args in (["report", "--tenant", T, "--campaign", C], ["record", "-"]):
        res = CliRunner().invoke(main, [*args, "--redis-url", "redis://:secret-pw@127.0.0.1:1/0"],
                                 input=json.dumps(ev("sent", "u", 1)) + "\n", catch_exceptions=False)
        assert res.exit_code == 5, res.output
        assert "secret-pw" not in res.output and "redis://:***@127.0.0.1:1/0" in res.stderr
        assert "Traceback" not in res.output


def test_unusable_home_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    res = CliRunner().invoke(main, ["report", "--tenant", T, "--campaign", C],
                             env={"CAMPAIGN_COUNTERS_REDIS_URL": None,
                                  "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "a-file" / "home")})
    assert res.exit_code == 5 and isinstance(res.exception, SystemExit)  # not a traceback
    assert "a-file" in res.stderr and res.stdout == ""


def test_demo_is_idempotent_and_matches_its_events(cli):
    from campaign_counters.cli.demo import CAMPAIGN, JOBS, TENANT, demo_events, demo_script

    events = list(demo_events(300, 5))
    distinct = len({e["id"] for e in events})
    assert distinct < len(events)  # the demo sends a few events twice
    first = cli("demo", "--users", "300", "--seed", "5")
    assert first.exit_code == 0, first.stderr
    assert f"{distinct:,} events recorded, {len(events) - distinct:,} duplicates ignored" in first.stderr
    assert "report --tenant demo --campaign demo-campaign --job" in first.stderr  # the hint, on stderr
    again = cli("demo", "--users", "300", "--seed", "5")
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert (a["tenant"], a["campaign"], a["job"]) == (TENANT, CAMPAIGN, None)
    assert a["target_users_count"] == 300
    assert metrics_of(a) == expected_report(events, demo_script())
    assert {k: v for k, v in a.items() if k != "updated_at"} == {k: v for k, v in b.items() if k != "updated_at"}
    assert f"0 events recorded, {len(events):,} duplicates ignored" in again.stderr
    for job in JOBS:
        res = cli("report", "--tenant", TENANT, "--campaign", CAMPAIGN, "--job", job)
        assert metrics_of(json.loads(res.stdout)) == expected_report(events, demo_script(), job=job)
    other = json.loads(cli("demo", "--users", "300", "--seed", "6").stdout)
    assert other["total_interactions"] > a["total_interactions"]  # another seed adds new events


def test_demo_script_shape():
    from campaign_counters.cli.demo import demo_script
    from oracle import graph_facts

    script = demo_script()
    nodes, start, ends, _, edges, _ = graph_facts(script)
    assert 6 <= len(nodes) <= 8 and len(ends) == 2 and "send_offer" in nodes and "send_offer" not in ends
    assert [n["type"] for n in script["nodes"]].count("start") == 1 and all(label for _, _, label in edges)


@pytest.mark.parametrize("command", [[], ["script", "load"], ["record"], ["report"], ["journey"], ["demo"],
                                     ["snapshot"], ["worker"], ["scheduler"], ["reconcile"], ["overview"],
                                     ["tenant", "set-tz"], ["health"], ["bench"], ["nightly"]])
def test_help(command):
    res = CliRunner().invoke(main, [*command, "--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and len(res.output) > 200
    if command and command != ["tenant"]:
        assert "CAMPAIGN_COUNTERS_REDIS_URL" in res.output and "CAMPAIGN_COUNTERS_HOME" in res.output
    if command in (["report"], ["journey"], ["demo"]):
        assert "--format" in res.output and "dotted" in res.output  # the CSV shape is documented


def test_group_help_documents_exit_codes():
    out = CliRunner().invoke(main, ["--help"]).output
    for code in ("0 ok", "1 drift", "2 bad input", "3 some input lines", "4 not found", "5 Redis"):
        assert code in " ".join(out.split()), code


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find the embedded server")
def test_record_then_report_in_separate_processes_on_the_embedded_redis(tmp_path, script_file):
    home = tmp_path / "home"
    try:
        res = run_cli(home, "script", "load", "--tenant", T, "--campaign", C, script_file)
        assert res.returncode == 0, res.stderr
        events = random_events(OFFER_SCRIPT, 30, seed=8)
        res = run_cli(home, "record", "-", input="".join(json.dumps(e) + "\n" for e in events))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["accepted"] == len({e["id"] for e in events})
        # the server stopped with the process: the next one starts a new server from the files in home
        assert no_server_left(home) == []
        assert (home / "redis.aof").stat().st_size > 0
        res = run_cli(home, "report", "--tenant", T, "--campaign", C)
        assert res.returncode == 0, res.stderr
        assert metrics_of(json.loads(res.stdout)) == expected_report(events, OFFER_SCRIPT)
        res = run_cli(home, "report", "--tenant", T, "--campaign", C, "--job", "job-2", "--format", "csv")
        rows = dict(csv.reader(io.StringIO(res.stdout)))
        assert rows["sent_users_count"] == str(expected_report(events, OFFER_SCRIPT, job="job-2")["sent_users_count"])
        assert no_server_left(home) == []
    finally:
        for pid in embedded_servers(home):  # only servers of this test's home: never leave one behind
            os.kill(pid, signal.SIGTERM)


def test_bench_measures_and_leaves_nothing_behind(cli, raw):
    cli("tenant", "set-tz", "--tenant", "someone", "--tz", "UTC")
    before = set(raw.scan_iter())
    res = cli("bench", "--events", "3000", "--calls", "200")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["record_many"]["events"] == 3000
    assert out["record_many"]["accepted"] + out["record_many"]["duplicates"] == 3000
    assert out["record_many"]["events_per_s"] > 0
    for kind in ("record", "async_record"):
        assert out[kind]["calls"] == 200 and 0 < out[kind]["p50_ms"] <= out[kind]["p99_ms"] <= out[kind]["max_ms"]
    assert set(raw.scan_iter()) == before  # every key and index entry of its campaigns is gone
    assert raw.hgetall("cc:v2:registry") == {}
    kept = json.loads(cli("bench", "--events", "1000", "--calls", "100", "--keep").stdout)
    assert len(kept["campaigns"]) == 3 and set(raw.hgetall("cc:v2:registry")) == {c.encode() for c in kept["campaigns"]}
