"""Million-user campaigns: Redis bytes per user, journey and report latency, change-log bytes per event.

    python bench/bench_scale.py                      # 1K, 100K and 1M users: ~15 minutes, ~1 GB of RAM for Redis
    python bench/bench_scale.py --sizes 1000,100000  # a quick run
    python bench/bench_scale.py --only log

One 10-node campaign (bench/common.py), every user targeted, sent and
`--interactions` interactions along the edges, each event with an id unless
said otherwise. Every figure stands beside a baseline measured in the same
run: memory against the same server flushed, with the campaign's script
loaded; latency against a plain `HGET` of one field of the users hash; the
change log's bytes against the bytes of the names it must hold.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.dirname(__file__))

from common import CAMPAIGN, SCRIPT, TENANT, Server, percentiles, table, walk_events  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.counters.keys import KeySchema  # noqa: E402
from campaign_counters.persist.snapshot import snapshot_campaign  # noqa: E402
from campaign_counters.persist.views import stored_journey  # noqa: E402
from campaign_counters.stores import open_store  # noqa: E402

JOB = "run-1"
KEYS = KeySchema()
CHUNK = 20_000  # events per record_many call


def scale_events(users: int, interactions: int, ids: bool, campaign: str = CAMPAIGN) -> Iterator[dict[str, Any]]:
    """walk_events, in another campaign and with or without ids."""
    for ev in walk_events(users, interactions):
        ev["campaign"] = campaign
        if not ids:
            del ev["id"]
        yield ev


def record_all(c: Counters, events: Iterator[dict[str, Any]]) -> int:
    """Record in chunks; the events recorded (all must be applied)."""
    batch: list[dict[str, Any]] = []
    done = 0
    for ev in events:
        batch.append(ev)
        if len(batch) >= CHUNK:
            res = c.record_many(batch)
            assert res.accepted == len(batch), res.summary()
            done += len(batch)
            batch = []
    if batch:
        res = c.record_many(batch)
        assert res.accepted == len(batch), res.summary()
        done += len(batch)
    return done


def used_memory(server: Server) -> int:
    return int(server.client().info("memory")["used_memory"])


def big_keys(server: Server, campaign: str) -> list[tuple[str, int]]:
    """MEMORY USAGE (every element counted) of each key of the campaign, largest first."""
    r = server.client()
    out = []
    for key in r.scan_iter(match=f"{KEYS.campaign(campaign)}*", count=1000):
        out.append((key.decode(), int(r.memory_usage(key, samples=0) or 0)))
    return sorted(out, key=lambda kv: -kv[1])


def memory_run(server: Server, users: int, interactions: int, ids: bool) -> dict[str, Any]:
    """Fill a flushed server with one campaign; used_memory delta and MEMORY USAGE of its keys."""
    r = server.client()
    r.flushall()
    c = Counters(server.unix_url)
    c.load_script(TENANT, CAMPAIGN, SCRIPT)
    empty = used_memory(server)
    started = time.perf_counter()
    n = record_all(c, scale_events(users, interactions, ids))
    seconds = time.perf_counter() - started
    after = used_memory(server)
    c.close()
    return {"users": users, "ids": ids, "events": n, "empty": empty, "delta": after - empty,
            "keys": big_keys(server, CAMPAIGN), "seconds": seconds}


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """p50/p99/max in ms of n calls, after 50 warm-up calls."""
    for _ in range(50):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return percentiles(samples)


def latency_run(server: Server, users: int, samples: int, store_dir: str | None) -> list[tuple]:
    """Journey and report latency over the campaign memory_run left (nothing snapshotted), then from the store."""
    rng = random.Random(users)
    r = server.client()
    c = Counters(server.unix_url)
    ukey = KEYS.users(CAMPAIGN)
    picks = [f"user-{rng.randrange(users):07d}" for _ in range(samples + 50)]
    it = iter(picks * 2)
    rows = [("HGET of one user's field (baseline)", timed(lambda: r.hget(ukey, next(it)), samples))]
    it = iter(picks * 2)
    rows.append(("journey, live", timed(lambda: c.journey(TENANT, CAMPAIGN, JOB, next(it)), samples)))
    rows.append(("report (campaign), live", timed(lambda: c.report(TENANT, CAMPAIGN), samples)))
    rows.append(("report (job), live", timed(lambda: c.report(TENANT, CAMPAIGN, JOB), samples)))
    if store_dir is not None:
        store = open_store(f"sqlite:///{store_dir}/reports-{users}.db")
        started = time.perf_counter()
        snap = snapshot_campaign(c, store, CAMPAIGN)
        took = time.perf_counter() - started
        print(f"  snapshot of {users:,} users into SQLite: {snap.journeys:,} journeys in {took:.1f} s", flush=True)
        it = iter(picks * 2)
        rows.append(("journey --from-store (SQLite)", timed(lambda: stored_journey(store, TENANT, CAMPAIGN, JOB,
                                                                                     next(it)), samples)))
        store.close()
    c.close()
    return [(users, name, *(f"{p[k]:.3f}" for k in ("p50", "p99", "max"))) for name, p in rows]


def log_run(server: Server, users: int, interactions: int) -> list[tuple]:
    """Change-log bytes per event: the same events recorded one per call and in batches."""
    r = server.client()
    r.flushall()
    c = Counters(server.unix_url)
    rows = []
    for how in ("one event per call", "record_many (batches)"):
        campaign = "log-single" if how.startswith("one") else "log-batched"
        c.load_script(TENANT, campaign, SCRIPT)
        evs = list(scale_events(users, interactions, True, campaign))
        if how.startswith("one"):
            for ev in evs:
                assert c.record(ev) == "applied"
        else:
            record_all(c, iter(evs))
        size = int(r.strlen(KEYS.change_log(campaign)))
        names = sum(len(u.encode()) + 1 for u in {e["user"] for e in evs})  # each name once, with its separator
        rows.append((how, f"{len(evs):,}", f"{size:,}", f"{size / len(evs):.2f}", f"{names / len(evs):.2f}"))
    c.close()
    return rows


def memory_rows(run: dict[str, Any]) -> list[tuple]:
    users, delta = run["users"], run["delta"]
    rows = [(f"{users:,}", "yes" if run["ids"] else "no", f"{run['events']:,}", "used_memory delta (everything)",
             f"{delta / 1e6:.1f} MB", f"{delta / users:.0f}")]
    shown = 0
    for key, size in run["keys"]:
        if shown < 6 or size > 0.01 * delta:
            rows.append(("", "", "", f"MEMORY USAGE {key}", f"{size / 1e6:.2f} MB", f"{size / users:.1f}"))
            shown += 1
    rest = sum(size for _, size in run["keys"][shown:])
    rows.append(("", "", "", f"MEMORY USAGE of its {len(run['keys']) - shown} other keys", f"{rest / 1e6:.3f} MB",
                 f"{rest / users:.2f}"))
    rows.append(("", "", "", "baseline: used_memory of the flushed server", f"{run['empty'] / 1e6:.1f} MB", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="users per run, comma-separated")
    ap.add_argument("--interactions", type=int, default=5, help="interactions per user")
    ap.add_argument("--samples", type=int, default=2000, help="calls timed per latency figure")
    ap.add_argument("--store-max", type=int, default=100_000, help="largest size also snapshotted into SQLite")
    ap.add_argument("--memory-min", type=int, default=100_000,
                    help="smallest size whose memory is shown, and also measured without ids")
    ap.add_argument("--log-users", type=int, default=5000, help="users of the change-log comparison")
    ap.add_argument("--only", choices=["memory", "log"], help="memory (with latency) or the change log")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="cc-bench-scale-")
    with Server() as server:
        if args.only in (None, "memory"):
            mem, lat = [], []
            for users in sizes:
                for ids in (True, False):
                    if not ids and users < args.memory_min:
                        continue
                    run = memory_run(server, users, args.interactions, ids)
                    print(f"  {users:,} users {'with' if ids else 'without'} ids: {run['events']:,} events in "
                          f"{run['seconds']:.0f} s, {run['delta'] / users:.0f} B/user", flush=True)
                    if users >= args.memory_min:
                        mem += memory_rows(run)
                    if ids:
                        lat += latency_run(server, users, args.samples, tmp if users <= args.store_max else None)
            print(table(mem, ("users", "ids", "events", "what", "bytes", "bytes/user")))
            print(table(lat, ("users", "call (ms)", "p50", "p99", "max")))
        if args.only in (None, "log"):
            print(table(log_run(server, args.log_users, args.interactions),
                        ("change log", "events", "log bytes", "bytes/event", "baseline: names once, bytes/event")))


if __name__ == "__main__":
    main()
