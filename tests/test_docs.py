"""Every `campaign-counters` command the README and the `--help` examples show, run in order on a test Redis.

Commands are taken from the README's shell blocks and inline code, and from
the `Example:` block of every command's help. Placeholders become real
values (T: a tenant, C: a campaign, SRC: a history file, `[...]`: the
optional part included); commands that run until stopped get their one-shot
flag (`scheduler --once`, `worker --burst`); `bench` and `demo` run small.
A command passes when it neither fails to parse nor hits an error (exit
status 0, 1 for "drift found" or "needs attention", 3 or 4 where the
command is shown for such a case), and prints no traceback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from campaign_counters.cli import main
from scenarios import OFFER_SCRIPT

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {"T": "acme", "C": "spring-sale", "D": "2026-10-25", "SRC": "events.jsonl", "FILE": "events.jsonl",
                "script-C.json": "script.json", "mongodb://fptchat-db:27017/fptchat": "events.jsonl"}
ONE_SHOT = {"scheduler": ["--once"], "worker": ["--burst"]}
SMALL = {"bench": {"--events": "1000", "--calls": "100"}, "demo": {"--users": "200"}}
OK = {0, 1}


def readme_commands() -> list[str]:
    """`campaign-counters ...` lines of the README's shell blocks, then of its inline code, in order."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r" & | \| ", line):
                part = part.strip().removeprefix(".venv/bin/")
                if part.startswith("campaign-counters ") and "COMPLETE=" not in line:
                    found.append(part)
    found += [c for c in re.findall(r"`(campaign-counters [^`]+)`", text)]
    return found


def help_examples() -> list[str]:
    """The lines of every command's `Example:` block, group and subcommands alike."""
    found = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        doc = cmd.help or ""
        if "Example:" in doc:
            for line in doc.split("Example:", 1)[1].splitlines():
                line = line.strip()
                if line.startswith("campaign-counters "):
                    found.extend(p.strip() for p in line.split(" | ") if p.strip().startswith("campaign-counters"))
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])

    walk(main, [])
    return found


def argv(command: str, spool: Path) -> list[str]:
    """The command's arguments with placeholders filled in and long-running flags added."""
    command = re.sub(r"\[([^\]]+)\]", r"\1", command)  # an optional part, included
    words = [PLACEHOLDERS.get(w, w).split("|")[0] for w in shlex.split(command)[1:]]  # a|b: the first
    words = [str(spool) if w.startswith("/var/lib/") else w for w in words]
    name = next((w for w in words if not w.startswith("-")), "")
    for flag, value in SMALL.get(name, {}).items():
        if flag in words:
            words[words.index(flag) + 1] = value
        else:
            words += [flag, value]
    return words + [f for f in ONE_SHOT.get(name, []) if f not in words]


def history(path: Path) -> None:
    """The events the examples talk about: tenant acme, campaign spring-sale, jobs run-1 and run-2, October 2026."""
    t0 = 1_761_350_400  # 2026-10-25 00:00 UTC
    base = {"tenant": "acme", "campaign": "spring-sale", "job": "run-1"}
    events = []
    for i, (user, job) in enumerate([("u42", "run-1"), ("u7", "run-1"), ("u9", "run-2"), ("u8", "run-2")]):
        events += [{**base, "job": job, "type": "sent", "user": user, "ts": t0 + 60 * i, "id": f"{user}-s"},
                   {**base, "job": job, "type": "interaction", "user": user, "ts": t0 + 60 * i + 5, "target": "ask",
                    "choice": "go", "id": f"{user}-1"}]
    events.append({**base, "type": "interaction", "user": "u42", "ts": t0 + 30, "target": "bye", "choice": "no",
                   "id": "u42-2"})
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "script.json").write_text(json.dumps(OFFER_SCRIPT))
    history(tmp_path / "events.jsonl")
    return tmp_path


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert len(commands) >= 30
    assert commands[0].startswith("campaign-counters script load")  # the CLI section comes first
    assert {shlex.split(c)[1] for c in commands} >= {"script", "record", "report", "journey", "bench", "snapshot",
                                                      "scheduler", "worker", "health", "reconcile", "overview",
                                                      "tenant", "nightly", "grafana"}


def test_every_command_has_an_example_in_its_help():
    def leaves(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from leaves(sub, [*path, name])
        else:
            yield path, cmd

    missing = [" ".join(p) for p, cmd in leaves(main, []) if "Example:" not in (cmd.help or "")]
    assert missing == []


@pytest.mark.parametrize("source", ["README.md", "--help examples"])
def test_every_documented_command_runs(redis_url, workdir, source):
    env = {k: None for k in os.environ if k.startswith("CAMPAIGN_COUNTERS_")}
    env.update({"CAMPAIGN_COUNTERS_REDIS_URL": redis_url, "CAMPAIGN_COUNTERS_HOME": str(workdir / "home"),
                "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{workdir}/reports.db",
                "CAMPAIGN_COUNTERS_SPOOL_DIR": str(workdir / "spool")})
    commands = readme_commands() if source == "README.md" else help_examples()
    # the examples start where a user does: a script, some events, a snapshot
    setup = ["campaign-counters script load --tenant acme --campaign spring-sale script.json",
             "campaign-counters record events.jsonl", "campaign-counters snapshot"]
    failures = []
    for command in [*setup, *commands]:
        args = argv(command, workdir / "spool")
        if args[0] in ONE_SHOT:  # RQ forks work horses: a process of its own, not pytest's
            res = subprocess.run([sys.executable, "-m", "campaign_counters", *args], capture_output=True, text=True,
                                 timeout=120, env={**{k: v for k, v in os.environ.items() if k not in env},
                                                   **{k: v for k, v in env.items() if v is not None}})
            code, out = res.returncode, res.stdout + res.stderr
        else:
            res = CliRunner().invoke(main, args, env=env)
            code, out = res.exit_code, res.output
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                failures.append((command, f"raised {res.exception!r}"))
                continue
        if code not in OK or "Traceback" in out or "Usage:" in out:
            failures.append((command, code, out[-300:]))
    assert failures == []


def test_ci_runs_the_readme_test_command_first_then_the_lowest_versions():
    readme = (ROOT / "README.md").read_text()
    test_command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3 -m"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    def plain(command: str) -> list[str]:  # quieter flags aside
        return [w for w in shlex.split(command) if w not in ("-q", "-p", "no:cacheprovider")]

    assert plain(commands[0]) == plain(test_command)
    assert "-c constraints-lowest.txt" in "\n".join(commands[1:])
    assert commands[-1].startswith('"$lowest/bin/pytest"')  # the whole suite, in the lowest-versions venv


def test_the_lowest_versions_are_pyprojects_floors():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    floors = {}
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(spec)
        floors[req.name] = next((Version(s.version) for s in req.specifier if s.operator == ">="), None)
    pins = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name] = Version(pinned)
    assert set(pins) == {"redis", "rq", "click", "msgpack"}
    assert {n: floors[n] for n in pins} == pins
