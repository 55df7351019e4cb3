"""The chat service's call never raises and never waits beyond its budget."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from campaign_counters import AsyncCounters, Counters
from campaign_counters.counters import Settings
from scenarios import C, T, ev


@pytest.fixture
def blackhole():
    """A TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"redis://:hunter2@127.0.0.1:{port}/0"


async def test_async_record_safe_gives_up_after_the_timeout(blackhole):
    c = AsyncCounters(blackhole, settings=Settings(timeout=0.05))
    started = time.perf_counter()
    outcome = await c.record_safe(ev("sent", "u1", 1))
    elapsed = time.perf_counter() - started
    assert outcome == "failed"
    assert elapsed < 1.0  # the budget is 50 ms; a hung server must not hold the caller
    assert c.stats["failed"] == 1


async def test_fire_never_blocks_and_counts_failures():
    c = AsyncCounters(closed_port_url(), settings=Settings(timeout=0.05))
    for i in range(20):
        c.fire(ev("sent", f"u{i}", 1))
    await c.drain()
    assert c.stats["failed"] == 20


async def test_fire_records_when_redis_is_up(redis_url):
    c = AsyncCounters(redis_url, settings=Settings(timeout=5.0))  # generous: the suite may run loaded
    for i in range(50):
        c.fire(ev("sent", f"u{i}", 1, id=f"i{i}"))
    await c.drain()
    assert (await c.report(T, C))["sent_users_count"] == 50
    await c.close()


def test_sync_record_safe_waits_no_longer_than_its_budget(blackhole):
    c = Counters(blackhole, settings=Settings(timeout=0.05))  # socket_timeout stays 5 s for other calls
    started = time.perf_counter()
    assert c.record_safe(ev("sent", "u1", 1)) == "failed"
    assert time.perf_counter() - started < 1.0
    assert c.stats["failed"] == 1
    c.close()


def test_sync_record_safe_never_raises(caplog):
    c = Counters(closed_port_url(), socket_timeout=0.05)
    assert c.record_safe(ev("sent", "u1", 1)) == "failed"
    assert c.record_safe({"type": "nonsense"}) == "rejected"
    assert c.stats["failed"] == 1
    assert "hunter2" not in caplog.text


def test_backend_error_message_hides_the_password():
    from campaign_counters import BackendError

    c = Counters(closed_port_url(), socket_timeout=0.05)
    with pytest.raises(BackendError) as info:
        c.report(T, C)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


async def test_a_cancelled_call_leaves_no_dirty_connection(redis_url):
    """Timeouts cancel mid-flight; the next calls must not read stale replies."""
    c = AsyncCounters(redis_url, settings=Settings(timeout=0.000001))
    outcomes = [await c.record_safe(ev("sent", f"u{i}", 1, id=f"x{i}")) for i in range(30)]
    assert set(outcomes) <= {"applied", "failed"}
    c.settings = Settings(timeout=5.0)
    for i in range(30):  # whatever was cut short is either applied or not, never twice
        assert await c.record_safe(ev("sent", f"u{i}", 1, id=f"x{i}")) in ("applied", "duplicate")
    report = await c.report(T, C)
    assert report["sent_users_count"] == 30
    assert (await c.record(ev("sent", "fresh", 2))) == "applied"
    await c.close()
