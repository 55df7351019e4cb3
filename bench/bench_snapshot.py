"""Snapshot benchmark: persist a 100,000-user campaign from Redis into SQLite.

    python bench/bench_snapshot.py [--users 100000] [--store sqlite:////tmp/x.db]

Records a 10-node campaign where each user makes about 5 interactions, then
times one snapshot (reports + every user's journey, journal trimmed) and a
second one (nothing new: should be near-instant).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import CAMPAIGN, SCRIPT, TENANT, Server, table, walk_events  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.stores import open_store  # noqa: E402
from campaign_counters.persist.snapshot import snapshot_campaign  # noqa: E402


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
