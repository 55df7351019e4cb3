"""Helpers of the CLI tests: event files and running the CLI as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys


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
