"""Recompute benchmark: the nightly truth from 1,000,000 JSON Lines events.

    python bench/bench_recompute.py [--events 1000000] [--campaigns 20]

Writes a history file (not timed), then times streaming it through the
history source into per-campaign truths and building every report, and
reports the peak RSS of the process. The seed design allowed 30 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import SCRIPT, TENANT, events, table  # noqa: E402

from campaign_counters.nightly.history import JsonlHistory  # noqa: E402
from campaign_counters.nightly.recompute import CampaignTruth  # noqa: E402
from campaign_counters.script import parse_script  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--campaigns", type=int, default=20)
    args = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="cc-bench-history-"), "history.jsonl")
    per = args.events // args.campaigns
    written = 0
    with open(path, "w") as fh:
        for i in range(args.campaigns):
            for n, ev in enumerate(events(per, seed=i, campaign=f"camp-{i}", jobs=("run-1", "run-2"))):
                if n >= per:
                    break
                fh.write(json.dumps(ev) + "\n")
                written += 1
    size = os.path.getsize(path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    graph = parse_script(SCRIPT)
    started = time.perf_counter()
    truths: dict[str, CampaignTruth] = {}
    for ev in JsonlHistory(path).events(TENANT):
        truth = truths.get(ev.campaign)
        if truth is None:
            truth = truths[ev.campaign] = CampaignTruth(TENANT, ev.campaign, graph)
        truth.add(ev)
    streamed = time.perf_counter() - started
    reports = sum(len([t.report(j) for j in [None, *t.jobs]]) for t in truths.values())
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    users = sum(len(u) for t in truths.values() for u in t.users.values())
    print(table([
        ("history file", f"{written:,} events, {size / 1e6:.0f} MB", ""),
        ("stream + recompute", f"{written / streamed:,.0f} events/s", f"{streamed:.2f} s"),
        ("reports built", f"{reports} (campaign totals and jobs)", f"{total - streamed:.2f} s"),
        ("total", f"{users:,} user-job states", f"{total:.2f} s"),
        ("peak RSS", f"{peak / 1024:.0f} MB (before the run: {rss_before / 1024:.0f} MB)", ""),
    ], ("recompute", "", "time")))
    os.remove(path)


if __name__ == "__main__":
    main()
