"""Realtime path benchmarks: throughput vs the server's ceiling, latency (memory: bench_scale.py).

    python bench/bench_record.py                 # everything, ~3 minutes
    python bench/bench_record.py --only throughput --rounds 3

Throughput is compared with a ceiling measured in the same run:
`redis-benchmark -P 64` calling our own record.lua by SHA, per event type,
weighted by the mix; a trivial HINCRBY baseline is printed too so numbers
from different machines can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import statistics
import subprocess
import sys
import time

import msgpack

sys.path.insert(0, os.path.dirname(__file__))

from common import CAMPAIGN, SCRIPT, TENANT, Server, events, percentiles, redis_benchmark, table  # noqa: E402

from campaign_counters import AsyncCounters, Counters  # noqa: E402
from campaign_counters.counters.records import WIRE_WIDTH, record_call  # noqa: E402
from campaign_counters.events import parse_event  # noqa: E402


def throughput(server: Server, n_events: int) -> tuple[float, collections.Counter]:
    server.client().flushall()
    c = Counters(server.tcp_url)
    c.load_script(TENANT, CAMPAIGN, SCRIPT)
    evs = []
    for ev in events(n_events):
        evs.append(ev)
        if len(evs) >= n_events:
            break
    mix = collections.Counter(e["type"] for e in evs)
    started = time.perf_counter()
    result = c.record_many(evs)
    elapsed = time.perf_counter() - started
    assert result.failed == 0 and result.rejected == 0, result.summary()
    c.close()
    return len(evs) / elapsed, mix


def bench_cmd(server: Server, args: list, n: int, clients: int, keyspace: int = 100_000_000) -> float:
    """Requests/s that `redis-benchmark -P 64` gets for one command; fails if any call failed."""
    r = server.client()
    r.config_resetstat()
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-P", "64", "-c", str(clients),
           "-n", str(n), "-r", str(keyspace), "--csv", *[a if isinstance(a, bytes) else str(a) for a in args]]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    stats = r.info("commandstats")
    failed = sum(v.get("failed_calls", 0) + v.get("rejected_calls", 0) for v in stats.values())
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    ran = stats.get(f"cmdstat_{name.lower()}", {}).get("calls", 0)
    if failed or ran < n:
        raise RuntimeError(f"{failed} of the benchmarked calls failed, {ran} of {n} ran: the ceiling would be meaningless")
    # "test","rps","avg_latency_ms","min_latency_ms","p50...","p95...","p99...","max..." where the
    # test's name is the command itself, binary blob (newlines too) and all: read the numbers from the end.
    header, _, rest = out.partition(b"\n")
    columns = header.count(b",")
    return float(re.findall(rb'"([0-9.]+)"', rest)[-columns])


NUL_FREE_TS = 0x0101010101010101  # ms; its 8 msgpack bytes are all non-zero


def benchmark_args(cmd_args: tuple, subs: list[tuple[str, str]]) -> list[bytes]:
    """A record.lua call as redis-benchmark arguments, with __rand_int__ placeholders.

    The events travel as one msgpack argument, and redis-benchmark takes
    arguments as C strings, so the blob is re-encoded without a zero byte:
    timestamps are moved to NUL_FREE_TS + their offset (what the script does
    does not depend on their value).
    """
    def sub(value: str) -> str:
        for old, new in subs:
            value = value.replace(old, new)
        return value

    *head, blob = cmd_args
    values = msgpack.unpackb(blob)
    t0 = min(values[i] for i in range(4, len(values), WIRE_WIDTH))
    for i, v in enumerate(values):
        if isinstance(v, str):
            values[i] = sub(v)
    for i in range(4, len(values), WIRE_WIDTH):
        ts = NUL_FREE_TS + values[i] - t0
        while b"\0" in ts.to_bytes(8, "big"):
            ts += 1
        values[i] = ts
    args = [sub(str(a)).encode() for a in head] + [msgpack.packb(values)]
    bad = [i for i, a in enumerate(args) if b"\0" in a]
    if bad:
        raise RuntimeError(f"arguments {bad} hold a zero byte: redis-benchmark cannot pass them")
    return args


def _ceiling_client(server: Server) -> Counters:
    server.client().flushall()
    c = Counters(server.tcp_url)
    c.load_script(TENANT, CAMPAIGN, SCRIPT)
    c.record({"type": "sent", "tenant": TENANT, "campaign": CAMPAIGN, "job": "run-1", "user": "warm", "ts": 1})
    c.run(c._load_timezones([TENANT]))
    return c


def ceiling_call(c: Counters, evs: list) -> tuple:
    """The arguments of one record.lua call for events without ids.

    redis-benchmark can vary text in arguments, not the binary fingerprint an
    id becomes, so a ceiling with ids would measure duplicates: the ceilings
    leave ids out (an id costs the script one bucket read and append).
    """
    return record_call(c.keys, CAMPAIGN, evs, c.local_day, c._options, c.epoch).args


def single_ceilings(server: Server, n: int) -> dict[str, float]:
    """Requests/s of record.lua with one event per call (the chat service's calls), per event type."""
    c = _ceiling_client(server)
    samples = {
        "targeted": {"type": "targeted"},
        "sent": {"type": "sent"},
        "interaction": {"type": "interaction", "target": "q_budget", "choice": "yes"},
    }
    out = {}
    for name, extra in samples.items():
        ev = parse_event({"tenant": TENANT, "campaign": CAMPAIGN, "job": "run-1", "user": "USER", "ts": 1_764_000_000,
                          **extra})
        args = benchmark_args(ceiling_call(c, [ev]), [("USER", "u:__rand_int__")])
        out[name] = max(bench_cmd(server, args, n, clients) for clients in (1, 4))
    out["baseline HINCRBY"] = hincrby_baseline(server, n * 2)
    c.close()
    return out


def hincrby_baseline(server: Server, n: int) -> float:
    """Requests/s of a trivial command, the baseline every machine can be compared by."""
    return bench_cmd(server, ["HINCRBY", "bench:h", "f:__rand_int__", 1], n, 4, 1000)


def batch_ceiling(server: Server, n: int) -> float:
    """Events/s of record.lua driven with 100 events of the mix per call, every event a new user."""
    c = _ceiling_client(server)
    mix = [parse_event({k: v for k, v in e.items() if k != "id"}) for e in events(40)][:100]
    args = benchmark_args(ceiling_call(c, mix), [("user-", "u:__rand_int__:")])
    c.close()
    return 100 * max(bench_cmd(server, args, n // 100, clients) for clients in (1, 4))


async def async_latency(url: str, n: int) -> list[float]:
    c = AsyncCounters(url)
    await c.load_script(TENANT, "lat-async", SCRIPT)
    samples = []
    for i in range(n + 500):
        ev = {"type": "sent" if i % 3 else "interaction", "tenant": TENANT, "campaign": "lat-async", "job": "run-1",
              "user": f"u{i % 2000}", "ts": 1_764_000_000 + i, "id": f"a{i}", "target": "q_interest", "choice": "start"}
        t = time.perf_counter()
        await c.record(ev)
        if i >= 500:
            samples.append((time.perf_counter() - t) * 1000)
    await c.close()
    return samples


async def fire_burst(server: Server, n: int) -> tuple[float, int]:
    """AsyncCounters.fire of n events as request handlers would (no await), then drain:
    events/s and the script calls Redis ran for them."""
    c = AsyncCounters(server.tcp_url)
    c.max_in_flight = n  # a burst this fast would otherwise be cut at 10,000 queued events (dropped, counted)
    await c.load_script(TENANT, "fire", SCRIPT)
    evs = [dict(e, campaign="fire") for _, e in zip(range(n), events(n, seed=3))]
    server.client().config_resetstat()
    started = time.perf_counter()
    for ev in evs:
        c.fire(ev)
        await asyncio.sleep(0)  # a request handler yields to the loop between requests
    await c.drain()
    elapsed = time.perf_counter() - started
    calls = server.client().info("commandstats")["cmdstat_evalsha"]["calls"]
    assert c.stats["failed"] == 0, c.stats
    await c.close()
    return n / elapsed, calls


def sync_latency(url: str, n: int) -> list[float]:
    c = Counters(url)
    c.load_script(TENANT, "lat-sync", SCRIPT)
    samples = []
    for i in range(n + 500):
        ev = {"type": "sent" if i % 3 else "interaction", "tenant": TENANT, "campaign": "lat-sync", "job": "run-1",
              "user": f"u{i % 2000}", "ts": 1_764_000_000 + i, "id": f"s{i}", "target": "q_interest", "choice": "start"}
        t = time.perf_counter()
        c.record(ev)
        if i >= 500:
            samples.append((time.perf_counter() - t) * 1000)
    c.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events for the throughput run")
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds (the median is reported)")
    ap.add_argument("--latency-calls", type=int, default=5000)
    ap.add_argument("--only", choices=["throughput", "latency"], help="run one part")
    args = ap.parse_args()
    with Server() as server:
        if args.only in (None, "throughput"):
            have_ceiling = redis_benchmark() is not None
            if not have_ceiling:
                print("redis-benchmark not found: apt-get install -y redis-tools (for the ceiling)")
            rounds, hincrby_ratios = [], []
            for i in range(args.rounds):
                rate, mix = throughput(server, args.events)
                batch = batch_ceiling(server, 200_000) if have_ceiling else float("nan")
                hincrby = hincrby_baseline(server, 400_000) if have_ceiling else float("nan")
                rounds.append((rate, batch))
                hincrby_ratios.append(rate / hincrby)
                print(f"round {i + 1}: record_many {rate:,.0f} events/s, batched ceiling {batch:,.0f} events/s "
                      f"({rate / batch:.0%}), HINCRBY {hincrby:,.0f}/s ({rate / hincrby:.1%})", flush=True)
            rate = statistics.median(r for r, _ in rounds)
            print(f"record_many, one process, TCP loopback, {sum(mix.values()):,} events {dict(mix)}: "
                  f"median {rate:,.0f} events/s (min {min(r for r, _ in rounds):,.0f}, "
                  f"max {max(r for r, _ in rounds):,.0f}) over {args.rounds} rounds")
            if have_ceiling:
                ceil = single_ceilings(server, 200_000)
                batch = statistics.median(b for _, b in rounds)
                total = sum(mix.values())
                mixed = total / sum(mix[t] / ceil[t] for t in mix)
                rows = [(k, f"{v:,.0f}") for k, v in ceil.items()]
                rows.insert(3, ("batch of 100 (events/s, median)", f"{batch:,.0f}"))
                rows.append(("one event per call, weighted by the mix", f"{mixed:,.0f}"))
                print(table(rows, ("redis-benchmark -P 64, record.lua", "requests/s")))
                print(f"record_many / batched ceiling = {statistics.median(r / b for r, b in rounds):.0%} (median of "
                      f"rounds)   record_many / one-event ceiling = {rate / mixed:.0%}   "
                      f"one-event ceiling / HINCRBY baseline = {mixed / ceil['baseline HINCRBY']:.1%}")
                print(f"record_many / HINCRBY baseline (redis-benchmark -P 64, measured in each round) = "
                      f"{statistics.median(hincrby_ratios):.1%} (median of rounds; goal >= 6.6%)")
        if args.only in (None, "latency"):
            rows = []
            for name, samples in (("AsyncCounters.record", asyncio.run(async_latency(server.tcp_url, args.latency_calls))),
                                  ("Counters.record", sync_latency(server.tcp_url, args.latency_calls))):
                p = percentiles(samples)
                rows.append((name, *(f"{p[k]:.3f}" for k in ("p50", "p95", "p99", "max"))))
            print(table(rows, ("single call, TCP loopback (ms)", "p50", "p95", "p99", "max")))
            rate, calls = asyncio.run(fire_burst(server, 20_000))
            print(f"AsyncCounters.fire, 20,000 events from one event loop: {rate:,.0f} events/s in {calls:,} "
                  f"script calls ({20_000 / calls:.0f} events per call, window 2 ms)")


if __name__ == "__main__":
    main()
