"""The chat service's calls never raise, never wait beyond their budget, and never lose an event."""

from __future__ import annotations

import asyncio
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


async def test_async_record_safe_gives_up_after_the_timeout(blackhole, tmp_path):
    c = AsyncCounters(blackhole, settings=Settings(timeout=0.05), spool=str(tmp_path))
    started = time.perf_counter()
    outcome = await c.record_safe(ev("sent", "u1", 1))
    elapsed = time.perf_counter() - started
    assert outcome == "unknown"  # sent, no reply: it may have been applied, so it is spooled with an id
    assert elapsed < 1.0  # the budget is 50 ms; a hung server must not hold the caller
    assert c.stats["unknown"] == 1 and c.stats["spooled"] == 1
    assert c.spool.status().events == 1
    await c.aclose(timeout=0.5)


async def test_fire_never_blocks_and_spools_what_it_cannot_send(redis_url, tmp_path):
    c = AsyncCounters(closed_port_url(), settings=Settings(timeout=0.05, send_timeout=0.05), spool=str(tmp_path))
    started = time.perf_counter()
    for i in range(20):
        c.fire(ev("sent", f"u{i}", 1))
    assert time.perf_counter() - started < 0.5
    assert await c.drain(timeout=5.0)
    assert c.stats["spooled"] == 20 and c.spool.status().events == 20
    await c.aclose(timeout=1.0)
    up = Counters(redis_url, spool=str(tmp_path))  # Redis answers: the spool is sent, exactly once
    assert up.spool_replay() == {"applied": 20}
    assert up.spool_replay() == {} and up.report(T, C)["sent_users_count"] == 20
    up.close()


async def test_fire_records_when_redis_is_up(redis_url):
    c = AsyncCounters(redis_url, settings=Settings(timeout=5.0, send_timeout=5.0))  # generous: the suite may run loaded
    for i in range(50):
        c.fire(ev("sent", f"u{i}", 1, id=f"i{i}"))
    await c.drain()
    assert (await c.report(T, C))["sent_users_count"] == 50
    await c.close()


def test_sync_record_safe_waits_no_longer_than_its_budget(blackhole):
    c = Counters(blackhole, settings=Settings(timeout=0.05))  # socket_timeout stays 5 s for other calls
    started = time.perf_counter()
    # the server never answers the connection's handshake: the event was not sent
    assert c.record_safe(ev("sent", "u1", 1)) == "spooled"
    assert time.perf_counter() - started < 0.2
    assert c.stats["unsent"] == 1 and c.spool.status().events == 1
    c.close(timeout=0.5)


def test_sync_record_safe_never_raises(caplog):
    c = Counters(closed_port_url(), socket_timeout=0.05)
    assert c.record_safe(ev("sent", "u1", 1)) == "spooled"  # no connection: certainly not applied
    assert c.record_safe({"type": "nonsense"}) == "rejected"
    assert c.stats["unsent"] == 1 and c.stats["spooled"] == 1
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
    assert set(outcomes) <= {"applied", "unknown"}
    c.settings = Settings(timeout=5.0)
    for i in range(30):  # whatever was cut short is either applied or not, never twice
        assert await c.record_safe(ev("sent", f"u{i}", 1, id=f"x{i}")) in ("applied", "duplicate")
    report = await c.report(T, C)
    assert report["sent_users_count"] == 30
    assert (await c.record(ev("sent", "fresh", 2))) == "applied"
    await c.close()


async def test_fired_events_share_script_calls(redis_url, raw):
    from oracle import expected_report, metrics_of
    from scenarios import OFFER_SCRIPT, random_events

    c = AsyncCounters(redis_url, settings=Settings(timeout=5.0, send_timeout=5.0))
    await c.load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 60, seed=5)
    raw.config_resetstat()
    for e in events:
        c.fire(e)  # as request handlers would: no await in between
    await c.drain()
    assert raw.info("commandstats")["cmdstat_evalsha"]["calls"] <= 3  # one call (plus a NOSCRIPT retry, if any)
    assert metrics_of(await c.report(T, C)) == expected_report(events, OFFER_SCRIPT)
    assert c.stats["applied"] + c.stats["duplicates"] == len(events)
    assert c.stats["unknown"] == c.stats["unsent"] == 0 and c.stats.get("spooled", 0) == 0
    await c.close()


async def test_events_fired_apart_go_alone(redis_url, raw):
    """The window's timer sends a lone event; the next one, fired after that, goes on its own."""
    import asyncio

    c = AsyncCounters(redis_url, settings=Settings(timeout=5.0, send_timeout=5.0, fire_window=0.001))
    await c.record(ev("sent", "warm-up", 1))
    raw.config_resetstat()
    for i in range(5):
        c.fire(ev("sent", f"u{i}", 1))
        for _ in range(500):  # no drain: only the timer can send it
            if raw.hexists(f"cc:v2:{{{C}}}:u", f"u{i}"):
                break
            await asyncio.sleep(0.01)
    assert raw.info("commandstats")["cmdstat_evalsha"]["calls"] == 5
    assert (await c.report(T, C))["sent_users_count"] == 6
    await c.close()


async def test_fire_spools_beyond_max_in_flight_and_sends_it_later(redis_url, tmp_path):
    c = AsyncCounters(redis_url, settings=Settings(timeout=5.0, send_timeout=5.0, fire_window=1.0),
                      spool=str(tmp_path))
    c.max_in_flight = 10
    for i in range(25):
        c.fire(ev("sent", f"u{i}", 1))
    assert await c.drain(timeout=10)
    assert c.stats["spooled"] == 15  # 10 queued for the sender; the rest kept on disk, not dropped
    for _ in range(200):  # the sender replays the spool once Redis took a batch (and then deletes the file)
        if (await c.report(T, C))["sent_users_count"] == 25 and c.spool.status().events == 0:
            break
        await asyncio.sleep(0.05)
    assert (await c.report(T, C))["sent_users_count"] == 25 and c.spool.status().events == 0
    await c.close()


def test_fire_beyond_the_bound_does_not_wait_for_the_disk(redis_url, tmp_path):
    """Events fired beyond max_in_flight are spooled by the client's spill thread, a batch per write:
    the caller returns even while the spool cannot be written (here another writer holds it)."""
    c = Counters(redis_url, settings=Settings(timeout=5.0, send_timeout=5.0, fire_window=1.0), spool=str(tmp_path))
    c.max_in_flight = 10
    returned = threading.Event()

    def chat_handler():
        for i in range(20):
            c.fire(ev("sent", f"u{i}", 1))
        returned.set()

    with c.spool._lock:  # the spool's disk is busy
        threading.Thread(target=chat_handler, daemon=True).start()
        assert returned.wait(timeout=10)  # 10 queued for the sender, 10 waiting for the spill thread
        assert c.stats["spooled"] == 0
    assert c.flush(timeout=10)
    assert c.stats["spooled"] == 10
    for _ in range(200):  # the sender replays the spool once it has caught up
        if c.report(T, C)["sent_users_count"] == 20:
            break
        time.sleep(0.05)
    assert c.report(T, C)["sent_users_count"] == 20 and c.spool.status().events == 0
    c.close()


def test_a_replay_never_takes_the_file_a_writer_is_opening(tmp_path):
    """Writers start new files while another spool replays the directory (as 8 chat processes do
    under overload): no event is left behind in a file the replay deleted."""
    from campaign_counters.counters.spool import Spool

    writer, reader = Spool(tmp_path, fsync=False), Spool(tmp_path, fsync=False)
    written, seen = [], set()
    finished = threading.Event()

    def write():
        for i in range(3000):
            writer.append([ev("sent", f"u{i}", 1, id=f"e{i}")])
            written.append(f"e{i}")
            if i % 3 == 0:
                writer.close()  # the next append starts a new file
        finished.set()

    def send(events):
        seen.update(e["id"] for e in events)
        return ["applied"] * len(events)

    t = threading.Thread(target=write)
    t.start()
    while not finished.is_set():
        reader.replay(send)
    t.join()
    writer.close()
    reader.replay(send)
    assert set(written) - seen == set()


def test_a_replay_cut_short_keeps_what_is_left_even_in_a_full_spool(tmp_path):
    """Redis stops answering midway through a replay: what was not delivered stays on disk, whole,
    though the spool is at its cap; a replay that delivers nothing leaves the file as it was."""
    from campaign_counters.counters.spool import REPLAY_CHUNK, Spool

    n = REPLAY_CHUNK + 100
    Spool(tmp_path, fsync=False).append([ev("sent", f"u{i}", 1, id=f"e{i}") for i in range(n)])
    full = Spool(tmp_path, fsync=False, max_bytes=Spool(tmp_path).size())
    files = sorted(tmp_path.iterdir())
    assert full.replay(lambda evs: ["unknown"] * len(evs)) == {"unknown": REPLAY_CHUNK}
    assert sorted(tmp_path.iterdir()) == files and full.status().events == n
    sent = []

    def first_chunk_only(evs):
        outcome = "applied" if not sent else "unknown"
        sent.append(len(evs))
        return [outcome] * len(evs)

    assert full.replay(first_chunk_only) == {"applied": REPLAY_CHUNK, "unknown": 100}
    assert full.status().events == 100 and full.overflowed == 0
    assert full.replay(lambda evs: ["applied"] * len(evs)) == {"applied": 100}
    assert full.status().events == 0


async def test_a_burst_of_concurrent_calls_waits_for_connections(redis_url):
    import asyncio

    c = AsyncCounters(redis_url, settings=Settings(timeout=30.0))
    c.max_connections = 8  # far fewer than the calls in flight
    outcomes = await asyncio.gather(*(c.record_safe(ev("sent", f"u{i}", 1, id=f"b{i}")) for i in range(300)))
    assert set(outcomes) == {"applied"}
    assert (await c.report(T, C))["sent_users_count"] == 300
    await c.close()


async def test_concurrent_first_calls_of_a_new_client_all_apply_on_a_new_redis(redis_url):
    """Redis without an epoch marker yet: one call creates it; the others, refused meanwhile, are sent again
    under it (they used to be reported unsent and spooled: the client had seen a marker by then)."""
    c = AsyncCounters(redis_url, settings=Settings(timeout=30.0))
    outcomes = await asyncio.gather(*(c.record_safe(ev("sent", f"u{i}", 1, id=f"f{i}")) for i in range(300)))
    assert set(outcomes) == {"applied"} and c.spool.status().events == 0
    assert (await c.report(T, C))["sent_users_count"] == 300
    await c.close()
