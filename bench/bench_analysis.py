"""Analysis benchmark: the on-demand journey analysis of a 100,000-user campaign, against its snapshot.

    python bench/bench_analysis.py [--users 100000] [--interactions 5]

Records the same campaign as bench_snapshot.py (10 nodes, about 5
interactions per user), then times, in the same run: the live report
(O(nodes)), a first snapshot (reads every user's record and writes every
journey: the O(users) baseline), the analysis of the campaign total and of
every scope in one scan (`analyze --persist`), and the same analysis from
history (the nightly recompute's fold over the events).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(__file__))

from bench_snapshot import walk_events  # noqa: E402
from common import CAMPAIGN, SCRIPT, TENANT, Server, table  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.events import parse_event  # noqa: E402
from campaign_counters.nightly.recompute import CampaignTruth  # noqa: E402
from campaign_counters.persist.analysis import live_analyses  # noqa: E402
from campaign_counters.persist.snapshot import snapshot_campaign  # noqa: E402
from campaign_counters.stores import open_store  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--interactions", type=int, default=5, help="interactions per user")
    args = ap.parse_args()
    store = open_store(f"sqlite:///{tempfile.mkdtemp(prefix='cc-bench-analysis-')}/reports.db")
    events = list(walk_events(args.users, args.interactions))
    with Server() as server:
        c = Counters(server.unix_url)
        c.load_script(TENANT, CAMPAIGN, SCRIPT)
        for i in range(0, len(events), 20_000):
            c.record_many(events[i:i + 20_000])
        _, report_s = timed(lambda: c.report(TENANT, CAMPAIGN))
        _, snapshot_s = timed(lambda: snapshot_campaign(c, store, CAMPAIGN))
        total, total_s = timed(lambda: live_analyses(c, TENANT, CAMPAIGN, [None]))
        _, all_s = timed(lambda: live_analyses(c, TENANT, CAMPAIGN))
        graph = c.run(c.plan_graph(TENANT, CAMPAIGN))

        def recompute():
            truth = CampaignTruth(TENANT, CAMPAIGN, graph)
            for ev in events:
                truth.add(parse_event(ev))
            return truth.analysis(None, 0, 86_400_000, ZoneInfo("UTC"))

        _, recompute_s = timed(recompute)
    users = total[0]["users"]
    rows = [
        ("report (live, O(nodes))", f"{report_s:.3f}", f"{report_s / snapshot_s:.3f}", ""),
        ("first snapshot (baseline: every user's record and journey)", f"{snapshot_s:.2f}", "1.00",
         f"{users / snapshot_s:,.0f}"),
        ("analysis, campaign total (one scan)", f"{total_s:.2f}", f"{total_s / snapshot_s:.2f}",
         f"{users / total_s:,.0f}"),
        ("analysis, total + every job (one scan, as --persist)", f"{all_s:.2f}", f"{all_s / snapshot_s:.2f}",
         f"{users / all_s:,.0f}"),
        ("analysis from history (parse + fold, as the nightly recompute)", f"{recompute_s:.2f}",
         f"{recompute_s / snapshot_s:.2f}", f"{users / recompute_s:,.0f}"),
    ]
    print(table(rows, (f"{users:,} users, 10 nodes, {args.interactions} interactions/user", "seconds",
                       "vs snapshot", "users/s")))


if __name__ == "__main__":
    main()
