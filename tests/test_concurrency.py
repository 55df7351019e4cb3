"""Several writer processes at once still give exact counts."""

from __future__ import annotations

import multiprocessing as mp
import random

from campaign_counters import Counters
from oracle import expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, random_events


def _writer(url, events, seed):
    rng = random.Random(seed)
    c = Counters(url)
    applied = 0
    for i in range(0, len(events), 97):
        applied += c.record_many(events[i:i + 97]).accepted
        if rng.random() < 0.3:
            c.record_many([])
    c.close()
    return applied


def test_four_processes_with_overlapping_events(redis_url):
    Counters(redis_url).load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 400, seed=3)
    rng = random.Random(5)
    shares = [[] for _ in range(4)]
    for e in events:
        # events with ids go to 1-3 writers at once (overlap); each is applied once
        for w in rng.sample(range(4), k=rng.randint(1, 3)):
            shares[w].append(e)
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        applied = pool.starmap(_writer, [(redis_url, s, i) for i, s in enumerate(shares)])
    distinct = len({e["id"] for e in events})
    assert sum(applied) == distinct
    c = Counters(redis_url)
    for job in (None, "job-1", "job-2"):
        assert metrics_of(c.report(T, C, job)) == expected_report(events, OFFER_SCRIPT, job)


def test_four_processes_without_ids(redis_url):
    """Without ids nothing is de-duplicated: each event goes to exactly one writer."""
    Counters(redis_url).load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 300, seed=9, with_ids=False)
    shares = [events[i::4] for i in range(4)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        applied = pool.starmap(_writer, [(redis_url, s, i) for i, s in enumerate(shares)])
    assert sum(applied) == len(events)
    c = Counters(redis_url)
    for job in (None, "job-1", "job-2"):
        assert metrics_of(c.report(T, C, job)) == expected_report(events, OFFER_SCRIPT, job)


def test_a_report_read_while_users_join_a_second_job_counts_each_user_once(redis_url):
    """Campaign totals are job counters plus corrections written together; a report reads them together.

    Every user is in job-1 first; while they join job-2 one call at a time, the campaign's user count
    stays exactly the same, and every report read meanwhile must say so.
    """
    import threading

    users = 1500
    c = Counters(redis_url)
    c.load_script(T, C, OFFER_SCRIPT)
    c.record_many([{"type": "targeted", "tenant": T, "campaign": C, "job": "job-1", "user": f"u{i}", "ts": 1}
                   for i in range(users)])
    writer = Counters(redis_url)
    done = threading.Event()

    def join_second_job():
        for i in range(users):
            writer.record({"type": "targeted", "tenant": T, "campaign": C, "job": "job-2", "user": f"u{i}", "ts": 2})
        done.set()

    thread = threading.Thread(target=join_second_job)
    thread.start()
    seen = []
    while not done.is_set():
        seen.append(c.report(T, C)["target_users_count"])
    thread.join(timeout=60)
    assert len(seen) > 20 and set(seen) == {users}
    assert c.report(T, C, "job-2")["target_users_count"] == users
    writer.close()
    c.close()
