"""Commands of the persistence side: snapshot, worker, scheduler."""

from __future__ import annotations

import time
from typing import Any

import click

from ..config import Config
from ..connection import redact
from ..counters import maintenance as m
from ..errors import NotFound, SnapshotRefused
from .app import EXIT_INPUT, main
from .options import (
    checked_writer, config_options, counters_for, emit, format_option, id_option, log_to_stderr, queue_for, say,
    stop_on_sigterm,
)


def _targets(counters: Any, tenant: str | None, campaign: str | None) -> list[tuple[str, str]]:
    """(tenant, campaign) pairs to snapshot: one campaign, or all with changes."""
    if campaign:
        meta = counters.run(m.campaign_meta(counters, campaign))
        if meta.tenant is None or (tenant and meta.tenant != tenant):
            raise NotFound(f"campaign {campaign!r}" + (f" of tenant {tenant!r}" if tenant else "") + " has no data")
        return [(meta.tenant, campaign)]
    return [(t, c) for c, t, pending in counters.run(m.dirty_campaigns(counters))
            if t is not None and pending > 0 and (tenant is None or t == tenant)]


@main.command()
@id_option("tenant", required=False, help="Only this tenant's campaigns.")
@id_option("campaign", required=False, help="Only this campaign (even without pending changes).")
@click.option("--enqueue", is_flag=True, help="Put RQ jobs on the queue instead of running here.")
@format_option
@config_options(queue=True)
def snapshot(cfg: Config, tenant: str | None, campaign: str | None, enqueue: bool, fmt: str) -> None:
    """Persist campaign reports and journeys to the report store now.

    Without filters, every campaign with unpersisted changes. Safe to repeat
    and to run beside workers: documents are written with absolute values.
    Prints per campaign the reports, journeys (one per user and job) and
    distinct users written.

    \b
    Example:
      campaign-counters snapshot
      campaign-counters snapshot --tenant acme --campaign spring-sale
      campaign-counters snapshot --enqueue
    """
    if enqueue:  # the workers check Redis against the store themselves
        from ..persist.jobs import enqueue_snapshot

        counters = counters_for(cfg)
        targets = _targets(counters, tenant, campaign)
        queue = queue_for(cfg)
        queued = [c for t, c in targets if enqueue_snapshot(queue, t, c)]
        emit({"enqueued": queued, "already_pending": [c for _, c in targets if c not in queued]}, fmt)
        return
    from ..persist.snapshot import snapshot_campaign

    counters, store = checked_writer(cfg)
    targets = _targets(counters, tenant, campaign)
    results, refused = [], 0
    for i, (t, c) in enumerate(targets, start=1):
        say(f"[{i}/{len(targets)}] snapshot {t}/{c} ...")
        try:
            result = snapshot_campaign(
                counters, store, c, retention=cfg.retention_seconds,
                progress=lambda r: say(f"    {r.steps:,} journey steps, {r.journeys:,} journeys"),
            )
        except SnapshotRefused as exc:
            say(f"refused: {exc}")
            results.append({"tenant": t, "campaign": c, "refused": exc.reason})
            refused += 1
            continue
        if result.skipped:
            say(f"    skipped: {result.skipped}")
        results.append(result.as_dict())
    emit(results, fmt)
    if refused:
        raise SystemExit(EXIT_INPUT)


@main.command()
@click.option("--burst", "-b", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", "-n", help="The worker's name [default: RQ's, random].")
@click.option("--max-jobs", type=click.IntRange(1), help="Exit after this many jobs.")
@click.option("--logging-level", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
              help="Log level (logs go to stderr).")
@click.option("--quiet", "-q", is_flag=True, help="Log warnings and errors only (--logging-level WARNING).")
@click.option("--verbose", "-v", is_flag=True, help="Log everything (--logging-level DEBUG).")
@config_options(queue=True)
def worker(cfg: Config, burst: bool, name: str | None, max_jobs: int | None, logging_level: str, quiet: bool,
           verbose: bool) -> None:
    """Run an RQ worker for snapshot (and nightly) jobs; logs go to stderr.

    Jobs carry only ids; the worker passes its own configuration (URLs from
    options or env) to them, so no credentials are stored in the queue. A
    busy worker beats every 5 s: if it dies, the scheduler's next tick hands
    its job to another worker (about 15 s after the death, plus one tick).
    The flags are `rq worker`'s.

    \b
    Example:
      campaign-counters worker --name worker-1
      campaign-counters worker --burst --quiet
    """
    import redis

    from ..config import QUEUE_NAME
    from ..persist.liveness import HeartbeatWorker

    level = log_to_stderr(logging_level, quiet, verbose)
    cfg.export()
    conn = redis.Redis.from_url(cfg.queue)
    click.get_current_context().call_on_close(conn.connection_pool.disconnect)
    say(f"worker on queue {QUEUE_NAME!r}, Redis {cfg.redis_label}, store {redact(cfg.store)}")
    w = HeartbeatWorker([QUEUE_NAME], connection=conn, name=name)
    try:
        w.work(burst=burst, with_scheduler=True, max_jobs=max_jobs, logging_level=level)
    finally:
        scheduler = getattr(w, "scheduler", None)  # it opens a connection pool of its own
        if scheduler is not None and scheduler._connection is not None:
            scheduler._connection.connection_pool.disconnect()


@main.command()
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@config_options(queue=True)
def scheduler(cfg: Config, interval: float, once: bool) -> None:
    """Every tick: re-queue the jobs of dead workers, enqueue a snapshot per
    changed campaign, and each tenant's nightly job once its local midnight
    has passed (missed nights are caught up).

    The nightly job reconciles the day that ended against the history in
    $CAMPAIGN_COUNTERS_HISTORY (repairing with CAMPAIGN_COUNTERS_REPAIR=1) and
    writes the daily overview, the weekly one on Mondays, the monthly one on
    the 1st. SIGTERM (or Ctrl-C) stops it between ticks, and with it the
    embedded Redis when no other process uses it.

    \b
    Example:
      campaign-counters scheduler
      campaign-counters scheduler --once
    """
    stop_on_sigterm()
    from ..nightly.schedule import tick_nightly
    from ..persist.durable import check_redis, remember_timezones
    from ..persist.jobs import tick_snapshots
    from ..persist.liveness import requeue_abandoned

    counters, store = checked_writer(cfg)
    queue = queue_for(cfg)
    while True:
        check = check_redis(counters, store)
        if check.restored:
            say(f"warning: {check.reason}; restored from the report store, "
                f"{len(check.flagged)} campaign(s) flagged for reconcile")
        remember_timezones(counters, store)
        abandoned = requeue_abandoned(queue)
        enqueued = tick_snapshots(counters, queue)
        nights = tick_nightly(counters, queue)
        if abandoned.requeued or abandoned.failed:
            say(f"tick: jobs of dead workers: {len(abandoned.requeued)} re-queued "
                f"{abandoned.requeued}, {len(abandoned.failed)} failed {abandoned.failed}")
        if enqueued or nights or once:
            say(f"tick: {len(enqueued)} snapshot(s) enqueued, {len(nights)} nightly job(s)"
                + "".join(f" [{t} {d}]" for t, d in nights))
        if once:
            return
        time.sleep(interval)
