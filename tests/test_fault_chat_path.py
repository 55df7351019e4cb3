"""Fault: the chat service's path when Redis stops, stalls, restarts or cannot be reached.

Every network wait is bounded by its budget whatever the network does, and
no event is lost or counted twice: what Redis does not take goes to the
local spool and is sent when Redis answers again. Servers are stopped
(SIGSTOP), killed and restarted by the PIDs the tests started; numbers are
checked against the independent oracle.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import redis
from oracle import expected_report, metrics_of
from scenarios import OFFER_SCRIPT, C, T, ev, random_events
from servers import REDIS_SERVER, wait_for

from campaign_counters import AsyncCounters, Counters
from campaign_counters.counters import Settings
from campaign_counters.counters.spool import Spool


class TcpRedis:
    """A redis-server on a loopback TCP port, with AOF in a directory that outlives restarts."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cc-chat-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpRedis:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--loglevel", "warning", "--maxmemory", "512mb", "--maxmemory-policy", "noeviction"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 10, "redis-server to answer")
        return self

    def _answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def send(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def remove(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def server():
    s = TcpRedis().start()
    yield s
    s.remove()


class SynDropper:
    """A port whose SYNs are dropped: a listening socket with a full accept queue never answers new ones."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(0)
        self.port = self.srv.getsockname()[1]
        self.fill = []
        for _ in range(4):  # fill the queue: later connects stay in SYN_SENT
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fill.append(s)
        time.sleep(0.1)

    def close(self) -> None:
        for s in self.fill:
            s.close()
        self.srv.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


BUDGET = 0.2  # seconds
SLACK = 0.15  # what a loaded 2-core machine adds to any wait


def test_a_syn_dropper_really_drops_syns():
    """The trick the next tests rely on: a plain connect to it times out instead of being refused."""
    dropper = SynDropper()
    try:
        s = socket.socket()
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.connect(("127.0.0.1", dropper.port))
        s.close()
    finally:
        dropper.close()


@pytest.mark.parametrize("fault", ["sigstop", "closed-port", "dropped-syns"])
def test_sync_record_safe_returns_within_its_budget_and_spools(server, tmp_path, fault):
    c = Counters(server.url, settings=Settings(timeout=BUDGET), spool=str(tmp_path))
    assert c.record_safe(ev("sent", "warm", 1, id="w")) == "applied"  # connections exist before the fault
    dropper = None
    if fault == "sigstop":
        server.send(signal.SIGSTOP)
        target = c
    else:
        port = closed_port() if fault == "closed-port" else (dropper := SynDropper()).port
        target = Counters(f"redis://127.0.0.1:{port}/0", settings=Settings(timeout=BUDGET), spool=str(tmp_path))
    try:
        outcomes = []
        for i in range(3):
            outcome, seconds = timed(lambda: target.record_safe(ev("sent", f"u{i}", 2, id=f"e{i}")))
            assert seconds <= BUDGET + SLACK, (fault, seconds)
            outcomes.append(outcome)
        assert set(outcomes) <= {"unknown", "spooled"} and target.spool.status().events == 3
        closing, seconds = timed(lambda: target.close(timeout=BUDGET))
        assert seconds <= BUDGET + SLACK
    finally:
        if dropper:
            dropper.close()
        if fault == "sigstop":
            server.send(signal.SIGCONT)
    again = Counters(server.url, spool=str(tmp_path))
    assert again.spool_replay() in ({"applied": 3}, {"applied": 2, "duplicate": 1}, {"applied": 1, "duplicate": 2},
                                    {"duplicate": 3})
    assert again.report(T, C)["sent_users_count"] == 4  # warm + u0..u2: each once, whatever the replay found
    again.close()


@pytest.mark.parametrize("fault", ["sigstop", "closed-port", "dropped-syns"])
async def test_async_record_safe_returns_within_its_budget(server, tmp_path, fault):
    dropper = None
    if fault == "sigstop":
        url = server.url
    elif fault == "closed-port":
        url = f"redis://127.0.0.1:{closed_port()}/0"
    else:
        dropper = SynDropper()
        url = f"redis://127.0.0.1:{dropper.port}/0"
    c = AsyncCounters(url, settings=Settings(timeout=BUDGET), spool=str(tmp_path))
    if fault == "sigstop":
        assert await c.record_safe(ev("sent", "warm", 1, id="w")) == "applied"
        server.send(signal.SIGSTOP)
    try:
        started = time.perf_counter()
        outcome = await c.record_safe(ev("sent", "u1", 2, id="e1"))
        assert time.perf_counter() - started <= BUDGET + SLACK
        assert outcome in ("unknown", "spooled") and c.spool.status().events == 1
        started = time.perf_counter()
        await c.aclose(timeout=BUDGET)
        assert time.perf_counter() - started <= BUDGET + SLACK
    finally:
        if dropper:
            dropper.close()
        if fault == "sigstop":
            server.send(signal.SIGCONT)


def test_fire_is_safe_from_threads_without_an_event_loop(server, tmp_path):
    c = Counters(server.url, settings=Settings(send_timeout=5.0), spool=str(tmp_path))
    c.initialize()
    events = [ev("sent", f"u{i}", 1) for i in range(2000)]  # no ids: deterministic ones are given

    def fire(part):
        for e in part:
            c.fire(e)

    threads = [threading.Thread(target=fire, args=(events[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.flush(timeout=20)
    assert c.report(T, C)["sent_users_count"] == 2000 and c.stats["spooled"] == 0
    c.close()


def test_close_returns_within_its_timeout_while_redis_is_stopped_and_loses_nothing(server, tmp_path):
    c = Counters(server.url, settings=Settings(send_timeout=0.2), spool=str(tmp_path))
    c.initialize()
    server.send(signal.SIGSTOP)
    try:
        for i in range(500):
            c.fire(ev("sent", f"u{i}", 1, id=f"s{i}"))
        _, seconds = timed(lambda: c.close(timeout=0.5))
        assert seconds <= 0.5 + SLACK
    finally:
        server.send(signal.SIGCONT)
    assert Spool(tmp_path).status().events == 500  # nothing sent in time: everything is on disk
    up = Counters(server.url, spool=str(tmp_path))
    up.spool_replay()
    assert up.report(T, C)["sent_users_count"] == 500 and Spool(tmp_path).status().events == 0
    up.close()


# -- four chat-service processes through an outage -------------------------------------------------

EVENTS = 50_000
PROCESSES = 4


def _chat_process(url: str, spool_dir: str, events: list, pace: float, done_path: str) -> dict:
    """Fire `events` at about `pace` events/s, then wait until the spool drained (bounded), as a worker does."""
    c = Counters(url, settings=Settings(send_timeout=0.5), spool=spool_dir)
    started = time.monotonic()
    for i, e in enumerate(events):
        c.fire(e)
        ahead = i / pace - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the sender replays our spool once Redis takes batches again
        if c.flush(timeout=1) and not c.spool.pending():
            break
        time.sleep(0.2)
    stats = dict(c.stats)
    c.close(timeout=10)
    open(done_path, "w").close()
    return stats


def chat_events() -> list[dict]:
    """50,000 events of 12,500 users, half of them without an id."""
    events = random_events(OFFER_SCRIPT, 12_500, seed=71, dup_rate=0.0)[:EVENTS]
    for i, e in enumerate(events):
        if i % 2:
            e.pop("id")
    return events


@pytest.mark.parametrize("fault", ["sigstop", "restart"])
def test_an_outage_under_four_firing_processes_loses_nothing_and_counts_nothing_twice(server, tmp_path, fault):
    setup = Counters(server.url)
    setup.load_script(T, C, OFFER_SCRIPT)
    setup.close()
    events = chat_events()
    assert len(events) == EVENTS
    shares = [events[i::PROCESSES] for i in range(PROCESSES)]
    spool_dir = str(tmp_path / "spool")
    pace = 1500.0  # events/s per process: ~8 s of firing, the outage in the middle
    ctx = mp.get_context("spawn")
    done = [str(tmp_path / f"done-{i}") for i in range(PROCESSES)]
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap_async(_chat_process, [(server.url, spool_dir, s, pace, d)
                                                     for s, d in zip(shares, done)])
        time.sleep(2.5)
        if fault == "sigstop":
            server.send(signal.SIGSTOP)  # stalled: connections hang, nothing answers
            time.sleep(10)
            server.send(signal.SIGCONT)
        else:
            server.stop(signal.SIGTERM)  # restarted from its append-only file
            time.sleep(3)
            server.start()
        stats = results.get(timeout=240)
    spooled = sum(s.get("spooled", 0) for s in stats)
    assert spooled > 0, "the outage sent nothing to the spool: the test did not test it"
    assert Spool(spool_dir).status().events == 0  # drained by the processes themselves
    check = Counters(server.url)
    for job in (None, "job-1", "job-2"):
        assert metrics_of(check.report(T, C, job)) == expected_report(events, OFFER_SCRIPT, job)
    check.close()
