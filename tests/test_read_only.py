"""Where data lives: SQLite URLs as SQLAlchemy reads them, readers that create nothing, the home said aloud."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest
from click.testing import CliRunner

from campaign_counters import ValidationError
from campaign_counters.cli import main
from campaign_counters.connection import redact
from campaign_counters.stores import open_store
from cli_helpers import embedded_servers, jsonl, run_cli
from scenarios import C, T, ev


def invoke(*args, **env):
    """The CLI in-process with exactly these CAMPAIGN_COUNTERS_* variables."""
    clean = {k: None for k in os.environ if k.startswith("CAMPAIGN_COUNTERS_")}
    return CliRunner().invoke(main, list(args), env={**clean, **env})


def test_three_slashes_are_relative_and_four_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    open_store("sqlite:///sub/rel.db").close()
    assert (tmp_path / "sub" / "rel.db").is_file()
    open_store(f"sqlite:///{tmp_path}/abs.db").close()  # f"sqlite:///{absolute}" is four slashes
    assert (tmp_path / "abs.db").is_file()


def test_a_three_slash_url_meant_as_absolute_is_refused_with_the_fix(tmp_path, monkeypatch):
    open_store(f"sqlite:///{tmp_path}/old.db").close()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative to here, the three-slash form is a new, empty file
    with pytest.raises(ValidationError) as err:
        open_store(f"sqlite://{tmp_path}/old.db")  # what an older version documented as absolute
    assert err.value.field == "store-url" and f"sqlite:///{tmp_path}/old.db" in err.value.reason


def test_report_from_store_creates_nothing(tmp_path):
    home = tmp_path / "home"
    res = invoke("report", "--tenant", T, "--campaign", C, "--from-store", CAMPAIGN_COUNTERS_HOME=str(home))
    assert res.exit_code == 4 and "nothing was persisted there" in res.stderr
    assert not home.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for args in (["report", "--tenant", T, "--campaign", C], ["journey", "--tenant", T, "--campaign", C,
                                                                "--job", "j", "--user", "u"]):
        res = invoke(*args, "--from-store", CAMPAIGN_COUNTERS_STORE_URL=f"sqlite:///{empty}")
        assert res.exit_code == 4, res.output
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_reader_waits_for_a_locked_store_briefly_then_says_so(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", jsonl(tmp_path, [ev("sent", "u1", 1)]))
    assert cli("snapshot").exit_code == 0
    path = tmp_path / "reports.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA locking_mode=EXCLUSIVE")
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("DELETE FROM durable_state WHERE kind='nothing'")  # holds the lock until rollback
    try:
        started = time.monotonic()
        res = cli("report", "--tenant", T, "--campaign", C, "--from-store")
        waited = time.monotonic() - started
        assert res.exit_code == 5 and "locked by another process (waited 2 s)" in res.stderr, res.output
        assert waited < 30  # 2 s of waiting, plus a loaded machine's slack
        health = cli("health")
        assert health.exit_code == 5 and "locked" in json.loads(health.stdout)["store"]["error"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert cli("report", "--tenant", T, "--campaign", C, "--from-store").exit_code == 0


def test_health_without_a_data_directory_says_so_and_creates_nothing(tmp_path):
    home = tmp_path / "not-here"
    res = invoke("health", CAMPAIGN_COUNTERS_HOME=str(home))
    assert res.exit_code == 5 and isinstance(res.exception, SystemExit)
    out = json.loads(res.stdout)
    assert out["home"] == str(home) and not out["redis"]["ok"] and str(home) in out["redis"]["error"]
    assert not home.exists()


def test_health_on_a_redis_url_with_no_store_yet_creates_none(redis_url, tmp_path):
    res = invoke("health", CAMPAIGN_COUNTERS_REDIS_URL=redis_url, CAMPAIGN_COUNTERS_HOME=str(tmp_path / "home"))
    out = json.loads(res.stdout)
    assert out["store"]["absent"] and out["store"]["ok"] and out["home"] == str(tmp_path / "home")
    assert not (tmp_path / "home").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find the embedded server")
def test_a_new_home_is_announced_and_shown_instead_of_the_socket(tmp_path):
    home = tmp_path / "home"
    try:
        first = run_cli(home, "tenant", "set-tz", "--tenant", T, "--tz", "UTC")
        assert first.returncode == 0, first.stderr
        assert f"note: creating the data directory {home}" in first.stderr
        demo = run_cli(home, "demo", "--users", "20")
        assert demo.returncode == 0 and "creating" not in demo.stderr
        assert f"(the embedded Redis in {home})" in demo.stderr and "unix://" not in demo.stderr
        health = run_cli(home, "health")
        out = json.loads(health.stdout)
        assert out["home"] == str(home) and out["redis"]["url"] == "embedded" and "unix://" not in health.stdout
    finally:
        for pid in embedded_servers(home):  # only servers of this test's home
            os.kill(pid, signal.SIGTERM)


def test_passwords_in_query_strings_are_redacted_too():
    assert redact("redis://h:6379/0?db=1&password=s3cret") == "redis://h:6379/0?db=1&password=***"
    assert redact("redis://:s3cret@h/0") == "redis://:***@h/0"
    assert redact("unix:///tmp/r.sock?password=s3cret") == "unix:///tmp/r.sock?password=***"
    res = invoke("report", "--tenant", T, "--campaign", C,
                 CAMPAIGN_COUNTERS_REDIS_URL="redis://127.0.0.1:1/0?password=s3cret")
    assert res.exit_code == 5 and "s3cret" not in res.output and "password=***" in res.stderr


def test_a_mongodb_outage_is_one_line_naming_the_cause(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    cli("record", jsonl(tmp_path, [ev("sent", "u1", 1)]))
    res = cli("report", "--tenant", T, "--campaign", C, "--from-store",
              "--store-url", "mongodb://u:pw@127.0.0.1:1/db?serverSelectionTimeoutMS=200")
    assert res.exit_code == 5
    assert len(res.stderr.splitlines()) == 1
    assert "Topology" not in res.stderr and "configured timeouts" not in res.stderr
    assert "no MongoDB server answered (127.0.0.1:1: " in res.stderr and "pw@" not in res.stderr
