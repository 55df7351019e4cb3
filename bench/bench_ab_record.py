"""record_many of this tree against a git revision, alternating in the same run.

    python bench/bench_ab_record.py --rev 8ea36bc            # ~1 minute; --events 100000 --rounds 5

Each round starts a fresh redis-server and records the same events (the
realistic mix of bench/common.py, every event with an id) once with this
tree's package and once with the revision's (checked out into a temporary
git worktree and run in a subprocess), one after the other, so both meet
the same machine load. Prints events/s and client CPU per round and the
median ratio: wall-clock figures on a shared machine move by ~30% between
runs, the ratio of neighbours much less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ONE_RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from common import CAMPAIGN, SCRIPT, TENANT, Server, events
from campaign_counters import Counters
evs = list(events(int(sys.argv[2])))[: int(sys.argv[2])]
srv = Server()
try:
    c = Counters(srv.tcp_url)
    c.load_script(TENANT, CAMPAIGN, SCRIPT)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    c.record_many(evs)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    c.close()
finally:
    srv.stop()
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"events_per_s": len(evs) / (t1 - t0), "client_cpu_us_per_event": cpu / len(evs) * 1e6}))
"""


def run(src: str, bench: str, n: int) -> dict:
    """One record_many run of the package in `src` (bench helpers from `bench`)."""
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", ONE_RUN, bench, str(n)], env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        sys.exit(f"run failed ({src}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="the git revision to compare with (its bench/common.py is used)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cc-ab-")
    old = os.path.join(tmp, "rev")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "-f", "--detach", old, args.rev], check=True,
                   capture_output=True)
    try:
        ratios = []
        print(f"{'round':>5}  {'this tree ev/s':>14}  {args.rev + ' ev/s':>14}  {'ratio':>6}  "
              "client CPU us/event (this, rev)")
        for i in range(args.rounds):
            new = run(os.path.join(ROOT, "src"), HERE, args.events)
            base = run(os.path.join(old, "src"), os.path.join(old, "bench"), args.events)
            ratios.append(new["events_per_s"] / base["events_per_s"])
            print(f"{i + 1:>5}  {new['events_per_s']:>14,.0f}  {base['events_per_s']:>14,.0f}  {ratios[-1]:>6.2f}  "
                  f"{new['client_cpu_us_per_event']:.1f}, {base['client_cpu_us_per_event']:.1f}")
        print(f"median ratio this tree / {args.rev}: {statistics.median(ratios):.2f} ({args.events:,} events per run)")
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
