"""Snapshot benchmark: persist a 100,000-user campaign from Redis into SQLite.

    python bench/bench_snapshot.py [--users 100000] [--store sqlite:////tmp/x.db]

Records a 10-node campaign where each user makes about 5 interactions, then
times one snapshot (reports + every user's journey, journal trimmed) and a
second one (nothing new: should be near-instant).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import CAMPAIGN, SCRIPT, TENANT, Server, table  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.stores import open_store  # noqa: E402
from campaign_counters.persist.snapshot import snapshot_campaign  # noqa: E402


def walk_events(users: int, per_user: int, seed: int = 1):
    """Targeted, sent and `per_user` interactions along the edges (looping via the reminder)."""
    rng = random.Random(seed)
    succ: dict[str, list[dict]] = {}
    for e in SCRIPT["edges"]:
        succ.setdefault(e["source"], []).append(e)
    n = 0
    for u in range(users):
        base = {"tenant": TENANT, "campaign": CAMPAIGN, "job": "run-1", "user": f"user-{u:07d}"}
        ts = 1_764_000_000 + rng.randint(0, 40_000)
        yield dict(base, type="targeted", ts=ts, id=f"e{(n := n + 1)}")
        yield dict(base, type="sent", ts=ts + 1, id=f"e{(n := n + 1)}")
        node = "welcome"
        for _ in range(per_user):
            options = succ.get(node) or succ["welcome"]
            edge = rng.choice(options)
            ts += rng.randint(2, 200)
            yield dict(base, type="interaction", ts=ts, target=edge["target"], choice=edge["label"], id=f"e{(n := n + 1)}")
            node = edge["target"] if succ.get(edge["target"]) else "welcome"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--interactions", type=int, default=5, help="interactions per user")
    ap.add_argument("--store", help="store URL [default: a temporary SQLite file]")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cc-bench-store-")
    store = open_store(args.store or f"sqlite:///{tmp}/reports.db")
    with Server() as server:
        c = Counters(server.unix_url)
        c.load_script(TENANT, CAMPAIGN, SCRIPT)
        started = time.perf_counter()
        batch, recorded = [], 0
        for ev in walk_events(args.users, args.interactions):
            batch.append(ev)
            if len(batch) >= 20_000:
                recorded += c.record_many(batch).accepted
                batch = []
        recorded += c.record_many(batch).accepted
        record_s = time.perf_counter() - started
        started = time.perf_counter()
        first = snapshot_campaign(c, store, CAMPAIGN)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = snapshot_campaign(c, store, CAMPAIGN)
        second_s = time.perf_counter() - started
    rows = [
        ("record", f"{recorded:,} events", f"{record_s:.2f}", f"{recorded / record_s:,.0f} events/s"),
        ("snapshot (all new)", f"{first.journeys:,} journey upserts, {first.steps:,} steps", f"{first_s:.2f}",
         f"{first.steps / first_s:,.0f} steps/s"),
        ("snapshot again (nothing new)", f"{second.journeys:,} journeys", f"{second_s:.2f}", ""),
    ]
    print(table(rows, (f"{args.users:,} users, 10 nodes, {args.interactions} interactions/user", "work", "seconds", "rate")))


if __name__ == "__main__":
    main()
