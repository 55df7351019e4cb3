"""Event validation cost (`parse_event`) of this tree against a git revision, measured in the same run.

    python bench/bench_parse.py [--rev main] [--users 40000] [--rounds 7]

Both versions of `events.py` validate the same realistic events (bench/common.py's
mix: targeted, sent, interactions), alternating rounds so a loaded
machine slows both alike; prints each one's best round and the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

from common import events as realistic_events  # noqa: E402
from campaign_counters import events as current  # noqa: E402


def load_revision(rev: str):
    """`events.py` as it was at `rev`, imported beside the current one (it needs only errors.py)."""
    root = os.path.join(os.path.dirname(__file__), "..")
    text = subprocess.run(["git", "show", f"{rev}:src/campaign_counters/events.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "events_baseline.py")
    with open(path, "w") as f:
        f.write(text.replace("from .errors import", "from campaign_counters.errors import"))
    spec = importlib.util.spec_from_file_location("events_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["events_baseline"] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


def best(parse, evs, rounds) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for ev in evs:
            parse(ev)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="main")
    ap.add_argument("--users", type=int, default=40_000, help="users of bench/common.py's event mix")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    evs = list(realistic_events(args.users))
    baseline = load_revision(args.rev)
    base_t = cur_t = float("inf")
    for _ in range(args.rounds):  # alternate, one round each at a time
        base_t = min(base_t, best(baseline.parse_event, evs, 1))
        cur_t = min(cur_t, best(current.parse_event, evs, 1))
    n = len(evs)
    print(f"{n:,} events; {args.rev}: {base_t / n * 1e9:,.0f} ns/event; this tree: {cur_t / n * 1e9:,.0f} ns/event; "
          f"ratio {cur_t / base_t:.3f}")


if __name__ == "__main__":
    main()
