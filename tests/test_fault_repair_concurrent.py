"""Fault: `reconcile --repair` while four processes record and snapshots run.

The repair rebuilds the campaign from the history beside the live keys,
while events keep arriving (with ids, about 10% of them sent twice, some by
two processes) and a snapshot loop persists the campaign. The history holds
every event but those of some "late" users, which the processes send only
once the repair has begun (the history was read before they happened): they
reach the rebuilt state through the repair tail, or after the swap. Whether
the repair swapped its state in or refused to (saying why), the live
reports, the stored reports after a final snapshot and every user's journey
(live and stored) end exactly as the independent oracle computes them from
all the events.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import threading
import time

import pytest
import redis
from oracle import expected_journey, expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events
from servers import RedisServer, wait_for

from campaign_counters import Counters
from campaign_counters.counters.keys import KeySchema
from campaign_counters.errors import RepairRefused, SnapshotRefused
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.reconcile import reconcile
from campaign_counters.persist.durable import check_redis, flags
from campaign_counters.persist.snapshot import journey_from_doc, report_from_doc, snapshot_campaign
from campaign_counters.stores import open_store

PROCESSES = 4
USERS = 2500
RECORDING_S = 8.0  # how long the processes take to send most of their share (paced): the repair runs meanwhile


ENDED = "test:repair-ended"  # set by the test when its reconcile call returned (not a key of the package)


class SlowHistory(JsonlHistory):
    """The history file, read as from a slow MongoDB: each read starts after `delay` seconds. A repair reads
    the history with its tail on, so events sent meanwhile reach it through the tail, however fast the
    rebuild itself is on this machine."""

    delay = 1.0

    def events(self, *args, **kwargs):
        time.sleep(self.delay)
        yield from super().events(*args, **kwargs)


def _repair_began(raw: redis.Redis) -> bool:
    """A repair of the campaign is running (its tail is on), has swapped its state in, or ended."""
    return any(v is not None for v in raw.hmget(KeySchema().meta(C), "repairing", "rgen")) or bool(raw.exists(ENDED))


def _wait(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def _record_share(url: str, events: list[dict], late: list[dict], seconds: float, seed: int) -> dict[str, int]:
    """Send the first 80% of `events` over about `seconds`, in batches of 1-250 events (now and then one
    `record` call each); the `late` events only once a repair has begun, mixed into what follows; the
    last 20% of `events` once the repair ended (they reach the swapped-in state)."""
    rng = random.Random(seed)
    c, raw = Counters(url), redis.Redis.from_url(url)
    started = time.monotonic()
    out = {"applied": 0, "duplicate": 0, "other": 0, "late_during_repair": 0, "after_repair": 0}

    def send(part: list[dict]) -> None:
        if rng.random() < 0.15:
            for e in part[:20]:
                outcome = c.record(e)
                out[outcome if outcome in out else "other"] += 1
            part = part[20:]
        if part:
            res = c.record_many(part)
            out["applied"] += res.accepted
            out["duplicate"] += res.duplicates
            out["other"] += res.rejected + res.unknown + res.unsent

    cut = len(events) * 8 // 10
    i = j = 0
    while i < cut or j < len(late):
        part = events[i:min(cut, i + rng.randint(1, 250))]
        i += len(part)
        if i >= cut:
            _wait(lambda: _repair_began(raw), 120)
        if j < len(late) and _repair_began(raw):
            extra = late[j:j + rng.randint(1, 60)]
            j += len(extra)
            part = part + extra
            if raw.hexists(KeySchema().meta(C), "repairing"):
                out["late_during_repair"] += len(extra)  # sent while the tail is on
        send(part)
        ahead = i / cut * seconds - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    _wait(lambda: raw.exists(ENDED), 120)
    for k in range(cut, len(events), 100):
        send(events[k:k + 100])
        out["after_repair"] += len(events[k:k + 100])
    c.close()
    raw.close()
    return out


def shares(events: list[dict], seed: int) -> list[list[dict]]:
    """Each event to one process; about 10% of them to a second one as well (in another place in its order)."""
    rng = random.Random(seed)
    out: list[list[dict]] = [[] for _ in range(PROCESSES)]
    for i, e in enumerate(events):
        k = i % PROCESSES
        out[k].append(e)
        if rng.random() < 0.1:
            other = (k + rng.randint(1, PROCESSES - 1)) % PROCESSES
            at = max(0, len(out[other]) - rng.randint(0, 200))
            out[other].insert(at, dict(e))
    return out


class SnapshotLoop(threading.Thread):
    """Snapshots the campaign again and again (as the workers do), counting what happened."""

    def __init__(self, url: str, store_url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.store_url = url, store_url
        self.stop = threading.Event()
        self.done = self.skipped = 0
        self.refused: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        counters, store = Counters(self.url), open_store(self.store_url)
        try:
            while not self.stop.is_set():
                try:
                    result = snapshot_campaign(counters, store, C)
                    self.skipped += bool(result.skipped)
                    self.done += not result.skipped
                except SnapshotRefused as exc:
                    self.refused.append(exc.reason)
                except Exception as exc:  # noqa: BLE001 - reported by the test, whatever it is
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop.wait(0.2)
        finally:
            counters.close()
            store.close()


@pytest.fixture
def server():
    with RedisServer("--maxmemory", "512mb", "--maxmemory-policy", "noeviction") as s:
        yield s


def is_late(event: dict) -> bool:
    """Events of every 8th user happen after the history was read: the repair must not lose them."""
    return int(event["user"].split("-")[1]) % 8 == 0


def test_a_repair_during_recording_and_snapshots_ends_exact(server, tmp_path):
    events = random_events(OFFER_SCRIPT, USERS, seed=81, dup_rate=0.1)
    late = [e for e in events if is_late(e)]
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(e) + "\n" for e in events if not is_late(e)))
    store_url = f"sqlite:///{tmp_path}/reports.db"
    counters, store = Counters(server.url), open_store(store_url)
    check_redis(counters, store)
    counters.load_script(T, C, OFFER_SCRIPT)
    loop = SnapshotLoop(server.url, store_url)
    loop.start()
    ctx = mp.get_context("spawn")
    refused: RepairRefused | None = None
    started_at = expected_report(events, OFFER_SCRIPT)["total_interactions"] // 4  # then the repair begins
    work = [(server.url, share, late[k::PROCESSES], RECORDING_S, k)
            for k, share in enumerate(shares([e for e in events if not is_late(e)], seed=82))]
    try:
        with ctx.Pool(PROCESSES) as pool:
            pending = pool.starmap_async(_record_share, work)
            wait_for(lambda: counters.report(T, C)["total_interactions"] >= started_at, 60,
                     "a quarter of the interactions to be recorded")
            applied_before = counters.report(T, C)["total_interactions"]
            try:
                result = reconcile(counters, store, SlowHistory(str(history)), T, campaigns={C}, repair=True)
            except RepairRefused as exc:
                refused = exc
            server.client().set(ENDED, 1)
            sent = pending.get(timeout=240)
    finally:
        loop.stop.set()
        loop.join(timeout=60)
    assert not loop.is_alive()
    assert loop.errors == [] and loop.refused == [], "\n".join(loop.errors + loop.refused)
    assert loop.done > 0
    assert sum(s["other"] for s in sent) == 0
    truth = expected_report(events, OFFER_SCRIPT)
    assert 0 < applied_before < truth["total_interactions"], "the repair did not start during recording"
    assert sum(s["late_during_repair"] for s in sent) > 0, "no late event came while the repair ran"
    assert all(s["after_repair"] > 0 for s in sent)
    if refused is None:
        assert result.repaired == [C]
        assert any(d["source"] == "live" for d in result.drift)  # what was still missing when it began
    else:
        assert "events kept arriving" in refused.reason or "lease" in refused.reason
    assert flags(store) == {}
    snapshot_campaign(counters, store, C)
    for job in (None, "job-1", "job-2"):
        want = expected_report(events, OFFER_SCRIPT, job)
        assert metrics_of(counters.report(T, C, job)) == want
        assert metrics_of(report_from_doc(store.campaign_report(T, C, job))) == want
    pairs = sorted({(e["job"], e["user"]) for e in events})
    for job, user in pairs:
        want = expected_journey(events, OFFER_SCRIPT, job, user)
        live = counters.journey(T, C, job, user)
        stored = journey_from_doc(store.journey(T, C, job, user))
        assert {k: live[k] for k in want} == want, (job, user)
        assert {k: stored[k] for k in want} == want, (job, user)
    counters.close()
    store.close()
