"""Bad input and configuration on the command line: one line naming what and why, the documented exit code."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from campaign_counters import Counters
from campaign_counters.cli import main
from cli_helpers import jsonl
from scenarios import C, OFFER_SCRIPT, T, ev


@pytest.mark.parametrize("variable,value", [
    ("CAMPAIGN_COUNTERS_RETENTION", "abc"), ("CAMPAIGN_COUNTERS_RETENTION", "1.5"),
    ("CAMPAIGN_COUNTERS_RETENTION", "0"), ("CAMPAIGN_COUNTERS_RETENTION", "-5"),
    ("CAMPAIGN_COUNTERS_REPAIR", "maybe"), ("CAMPAIGN_COUNTERS_DASHBOARD_DAYS", "-1"),
    ("CAMPAIGN_COUNTERS_DASHBOARD_ENTRIES", "many"), ("CAMPAIGN_COUNTERS_MAXMEMORY", "lots"),
    ("CAMPAIGN_COUNTERS_HISTORY_MAPPING", "[1]"), ("CAMPAIGN_COUNTERS_STORE_URL", "postgres://db/x"),
    ("CAMPAIGN_COUNTERS_STORE_URL", "sqlite://"), ("CAMPAIGN_COUNTERS_QUEUE_URL", "http://q"),
])
def test_every_environment_variable_is_checked_before_any_command(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    for args in (["report", "--tenant", T, "--campaign", C], ["tenant", "set-tz", "--tenant", T, "--tz", "UTC"]):
        res = CliRunner().invoke(main, args, env={variable: value, "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "h")})
        assert res.exit_code == 2, (variable, value, res.output)
        assert res.stderr.startswith(f"error: {variable}: ") and len(res.stderr.splitlines()) == 1
        assert isinstance(res.exception, SystemExit)  # no traceback
    assert not (tmp_path / "h").exists()  # nothing was started or created


def test_good_environment_values_pass(cli, monkeypatch):
    for variable, value in [("CAMPAIGN_COUNTERS_RETENTION", "3600"), ("CAMPAIGN_COUNTERS_REPAIR", "off"),
                            ("CAMPAIGN_COUNTERS_DASHBOARD_DAYS", "1.5")]:
        monkeypatch.setenv(variable, value)
    assert cli("tenant", "set-tz", "--tenant", T, "--tz", "UTC").exit_code == 0


@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_script_that_is_not_utf8_is_a_clear_error(redis_url, tmp_path, from_stdin):
    raw = json.dumps(OFFER_SCRIPT).replace("start", "d\u00e9part").encode("latin-1")
    path = tmp_path / "latin1.json"
    path.write_bytes(raw)
    args = ("script", "load", "--tenant", T, "--campaign", C, "-" if from_stdin else str(path))
    res = CliRunner().invoke(main, list(args), input=raw if from_stdin else None,
                             env={"CAMPAIGN_COUNTERS_REDIS_URL": redis_url,
                                  "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/r.db"})
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert res.stderr.startswith("error: file: ") and "not valid UTF-8 (byte " in res.stderr


def test_a_utf8_script_with_a_byte_order_mark_loads(cli, tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(OFFER_SCRIPT).encode())
    assert cli("script", "load", "--tenant", T, "--campaign", C, str(path)).exit_code == 0


@pytest.mark.parametrize("args", [
    ["snapshot", "--tenant", "a b"], ["snapshot", "--campaign", "x/y"], ["report", "--tenant", "a b", "--campaign", C],
    ["journey", "--tenant", T, "--campaign", C, "--job", "j 1", "--user", "u"],
    ["reconcile", "--tenant", T, "--history", "h.jsonl", "--campaign", "a b"],
    ["overview", "--tenant", "t" * 51, "--live"], ["tenant", "set-tz", "--tenant", "a b", "--tz", "UTC"],
])
def test_ids_on_the_command_line_are_checked_like_event_fields(cli, args):
    res = cli(*args)
    assert res.exit_code == 2 and res.stdout == ""
    field = next(a for a, b in zip(args, args[1:]) if b in ("a b", "x/y", "j 1", "t" * 51)).lstrip("-")
    assert res.stderr.startswith(f"error: {field}: must be 1-")


def test_reconcile_of_a_campaign_with_no_data_anywhere_is_not_found(cli, script_file, tmp_path):
    history = jsonl(tmp_path, [ev("sent", "u1", 10)])
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", history)
    res = cli("reconcile", "--tenant", T, "--history", history, "--campaign", "nope")
    assert res.exit_code == 4 and res.stdout == "" and "'nope'" in res.stderr and "has no data" in res.stderr
    res = cli("reconcile", "--tenant", T, "--history", history, "--campaign", C)
    assert res.exit_code == 0 and json.loads(res.stdout)["checked"] == 2  # the campaign total and job-1


@pytest.mark.parametrize("args", [["tenant", "set-tz", "--tenant", T, "--tz", "UTC"], ["record", "-"],
                                  ["script", "load", "--tenant", T, "--campaign", C, "SCRIPT"]])
def test_commands_that_print_json_take_format(cli, script_file, args):
    args = [script_file if a == "SCRIPT" else a for a in args]
    res = cli(*args, "--format", "csv", input=json.dumps(ev("sent", "u1", 1)) + "\n")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[0] == "key,value" and len(res.stdout.splitlines()) > 2


def test_options_are_listed_only_where_they_are_used():
    def options(*command):
        return CliRunner().invoke(main, [*command, "--help"]).output

    assert "--queue-url" not in options("report") and "--queue-url" not in options("record")
    assert "--queue-url" in options("worker") and "--queue-url" in options("health")
    assert "--store-url" not in options("bench") and "--store-url" in options("report")
    assert "node_analytics" not in options("health") and "node_analytics" not in options("bench")
    assert "node_analytics" in options("report")


def test_python_dash_m_runs_the_command_line():
    res = subprocess.run([sys.executable, "-m", "campaign_counters", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("campaign-counters, version ")


def test_ctrl_c_during_record_says_what_was_recorded_and_how_to_resume(redis_url, tmp_path):
    Counters(redis_url).load_script(T, C, OFFER_SCRIPT)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(ev("sent", f"u{i}", i, id=f"e{i}")) + "\n" for i in range(10)))
    env = {**os.environ, "CAMPAIGN_COUNTERS_REDIS_URL": redis_url,
           "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/r.db"}
    # the file's 10 lines, then the stdin of a process that keeps writing: record waits for more input
    proc = subprocess.Popen(f"cat {events}; sleep 60", shell=True, stdout=subprocess.PIPE)
    rec = subprocess.Popen([sys.executable, "-m", "campaign_counters", "record", "--chunk", "5", "-"],
                           stdin=proc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        counters, deadline = Counters(redis_url), time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if counters.report(T, C)["sent_users_count"] == 10:
                    break
            except Exception:  # noqa: BLE001 - not recorded yet
                pass
            time.sleep(0.1)
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=30)
    finally:
        for p in (rec, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rec.returncode == 130
    assert "Aborted!" not in err and "Traceback" not in err
    assert "interrupted: lines 1-10 were recorded (10 events accepted)" in err
    assert "skip the first 10 lines" in err
    assert json.loads(out) == {"accepted": 10, "duplicates": 0, "rejected": 0}


def test_the_demo_hint_is_a_command_that_runs_as_printed(redis_url, tmp_path):
    env = {"CAMPAIGN_COUNTERS_REDIS_URL": redis_url, "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/r.db"}
    res = CliRunner().invoke(main, ["demo", "--users", "50"], env=env)
    hint = next(line for line in res.stderr.splitlines() if line.startswith("next: ")).removeprefix("next: ")
    words = shlex.split(hint)
    assert words[0] == "campaign-counters" or os.path.isabs(words[0])  # never a bare name that is not on PATH
    done = subprocess.run(words, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    assert "funnel_data" in done.stdout
