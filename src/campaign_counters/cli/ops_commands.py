"""Commands for operators: `health`, and `bench` (how fast this Redis records, with a throwaway campaign).

For an operator checking a deployment (the embedded server, a production
Redis, a cluster): the numbers in BENCHMARKS.md come from bench/ on the
build machine, this measures where it runs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import click

from ..config import Config
from ..connection import redact
from ..counters import AsyncCounters
from ..counters import maintenance as m
from ..errors import BackendError
from . import demo as d
from .app import EXIT_ATTENTION, EXIT_BACKEND, main
from .options import config_options, counters_for, emit, format_option, queue_for, say, store_for

TENANT = "cc-bench"


def _percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"calls": len(samples), "p50_ms": round(qs[49], 3), "p95_ms": round(qs[94], 3),
            "p99_ms": round(qs[98], 3), "max_ms": round(max(samples), 3)}


async def _async_latency(url: str, campaign: str, events: list[dict[str, Any]]) -> list[float]:
    c = AsyncCounters(url)
    samples = []
    try:
        for ev in events:
            started = time.perf_counter()
            await c.record(dict(ev, campaign=campaign))
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await c.close()
    return samples


@main.command()
@click.option("--events", default=100_000, show_default=True, type=click.IntRange(1000),
              help="Events for the record_many throughput run.")
@click.option("--calls", default=2000, show_default=True, type=click.IntRange(100),
              help="Single record calls timed, sync and asyncio each.")
@click.option("--keep", is_flag=True, help="Keep the benchmark campaigns (tenant cc-bench) instead of deleting them.")
@format_option
@config_options(store=False)
def bench(cfg: Config, events: int, calls: int, keep: bool, fmt: str) -> None:
    """Measure record_many throughput and single-call latency on this Redis.

    Uses the demo's script and generated users under tenant cc-bench, in
    campaigns of their own that are deleted afterwards (--keep to look at
    them). Prints events/s and latency percentiles in milliseconds.

    \b
    Example:
      campaign-counters bench --events 20000 --calls 500
    """
    counters = counters_for(cfg)
    run = uuid.uuid4().hex[:8]
    bulk, single, single_async = f"cc-bench-{run}", f"cc-bench-{run}-s", f"cc-bench-{run}-a"
    for campaign in (bulk, single, single_async):
        counters.load_script(TENANT, campaign, d.demo_script())
    stream = []
    for ev in d.demo_events(events, seed=7, tenant=TENANT, campaign=bulk):
        stream.append(ev)
        if len(stream) >= events:
            break
    try:
        say(f"bench: record_many of {len(stream):,} events on {cfg.redis_label} ...")
        started = time.perf_counter()
        result = counters.record_many(stream)
        seconds = time.perf_counter() - started
        say(f"bench: {calls:,} single record calls, sync then asyncio ...")
        sync_samples = []
        for ev in stream[:calls]:
            t = time.perf_counter()
            counters.record(dict(ev, campaign=single))
            sync_samples.append((time.perf_counter() - t) * 1000)
        async_samples = asyncio.run(_async_latency(cfg.redis, single_async, stream[:calls]))
    finally:
        if not keep:
            for campaign in (bulk, single, single_async):
                counters.run(m.drop_campaign(counters, campaign))
    emit({
        "redis": cfg.redis_label,
        "record_many": {"events": len(stream), "accepted": result.accepted, "duplicates": result.duplicates,
                        "seconds": round(seconds, 3), "events_per_s": round(len(stream) / seconds)},
        "record": _percentiles(sync_samples),
        "async_record": _percentiles(async_samples),
        "campaigns": [bulk, single, single_async] if keep else [],
    }, fmt)


@main.command()
@format_option
@config_options(queue=True)
def health(cfg: Config, fmt: str) -> None:
    """Check Redis, the report store and the queue; show Redis memory, pending
    snapshots and rejected events: by campaign those Redis refused (a campaign
    named under another tenant, a closed one), by field those that failed
    validation.

    Not ok when numbers are at risk: an evicting maxmemory-policy (anything
    but noeviction), memory above 90% of maxmemory, keys evicted or commands
    refused for lack of memory. Exit status 0 when all is ok, 5 when Redis,
    the store or the queue does not answer (the others are still reported),
    1 when everything answers but something needs attention.

    Creates nothing: with the embedded Redis and no data directory it says
    so (exit status 5) rather than start an empty one; the report store is
    only read (an SQLite file locked by a writer for over 2 s is reported
    as unavailable).

    \b
    Example:
      campaign-counters health
      campaign-counters health --format table
    """
    from ..health import health as check

    if cfg.embedded and not cfg.home_path.is_dir():
        report: dict = {"ok": False, "home": str(cfg.home_path), "redis": {
            "ok": False, "url": "embedded",
            "error": f"no data directory {cfg.home_path}: nothing was recorded with this home (run from the "
                     "directory you recorded in, or set CAMPAIGN_COUNTERS_HOME or --home)"}}
        emit(report, fmt)
        raise SystemExit(EXIT_BACKEND)
    try:
        store, store_error = store_for(cfg, read_only=True), None
    except BackendError as exc:  # e.g. an SQLite file that cannot be opened: Redis is still reported
        store, store_error = None, str(exc)
    report = check(counters_for(cfg), store, queue_for(cfg), store_error=store_error)
    if cfg.uses_home:
        report = {"home": str(cfg.home_path), **report}
    if cfg.embedded:
        report["redis"]["url"] = "embedded"
    if store is None and store_error is None:
        report["store"] = {"ok": True, "url": redact(cfg.store), "absent": "nothing persisted yet"}
    emit(report, fmt)
    if not report["ok"]:
        down = any(not report.get(part, {}).get("ok", True) for part in ("redis", "store", "queue"))
        raise SystemExit(EXIT_BACKEND if down else EXIT_ATTENTION)
