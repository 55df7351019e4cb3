"""Commands of the nightly side: reconcile, overview (and backfill), tenant settings."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

import click

from ..config import Config
from ..errors import ValidationError
from ..nightly.schedule import ENV_HISTORY
from .app import EXIT_DRIFT, EXIT_INPUT, main
from .options import (
    ProgressBar, checked_writer, config_options, counters_for, emit, force_option, format_option, history_option,
    id_option, say, store_for, tenant_option, tz_option, zone_for,
)


def _history(src: str | None) -> Any:
    from ..nightly.history import open_history

    if not src:
        raise ValidationError("history", f"give --history SRC (or set {ENV_HISTORY})")
    return open_history(src)


@main.command()
@tenant_option
@history_option
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]),
              help="Check the campaigns with events on this local day.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Backfill: the campaigns with events on any local day from --date to this one.")
@id_option("campaign", required=False, multiple=True,
           help="Check only this campaign (repeatable); not found (exit 4) when it has no data anywhere.")
@tz_option
@click.option("--repair", is_flag=True,
              help="Replace drifting campaigns' Redis state with the truth, atomically, and re-snapshot.")
@force_option
@format_option
@config_options()
def reconcile(cfg: Config, tenant: str, history_src: str | None, day: Any, until: Any, campaign: tuple[str, ...],
              tz: str | None, repair: bool, force: bool, fmt: str) -> None:
    """Recompute campaigns from the raw history and compare with the live counters.

    Prints {"checked", "drift": [{"campaign", "job", "metric", "expected",
    "actual", "source"}], "repaired", "after_repair"} and stores it as a
    ReconcileReports document. "drift" is what was found (with --repair:
    before repairing, so it says what was changed, from what to what);
    "after_repair" is the drift left after repairing (null without --repair).
    Exit status 0 when there is no drift (after repairing, with --repair), 1
    otherwise, 2 when --repair was refused: the history has no events for a
    drifting campaign that has live or stored data, or would shrink its users
    or interactions (nothing is written then; --force repairs anyway), 4
    when a --campaign has no events in the history, nothing live and
    nothing stored.

    \b
    Example:
      campaign-counters reconcile --tenant acme --history events.jsonl --date 2026-10-25
      campaign-counters reconcile --tenant acme --history events.jsonl --campaign spring-sale --repair
    """
    from ..nightly.reconcile import reconcile as run

    if until and not day:
        raise ValidationError("until", "needs --date (the first day of the range)")
    if until and until < day:
        raise ValidationError("until", "must not be before --date")
    counters, store = checked_writer(cfg)
    bar = ProgressBar("reading history")
    try:
        result = run(counters, store, _history(history_src), tenant,
                     day=day.date() if day else None, until=until.date() if until else None,
                     campaigns=set(campaign) or None, tz=zone_for(counters, tenant, tz), repair=repair,
                     force=force, progress=lambda c: (bar.close(), say(f"checking {c} ...")), read_progress=bar)
    finally:
        bar.close()
    emit(result.output(), fmt)
    say(f"{result.checked} reports checked, {len(result.drift)} drifting metrics"
        + (f", repaired {', '.join(result.repaired)}" if result.repaired else ""))
    if result.after_repair:
        say(f"{len(result.after_repair)} drifting metrics left after repairing")
    if result.remaining:
        sys.exit(EXIT_DRIFT)


@main.command()
@tenant_option
@click.option("--period", type=click.Choice(["daily", "weekly", "monthly"]), default="daily", show_default=True)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="A local date in the period [default: today].")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Backfill: every period from --date to this date.")
@history_option
@click.option("--live", is_flag=True, help="Approximate 'today so far' from Redis HyperLogLogs (no history needed).")
@tz_option
@force_option
@format_option
@config_options()
def overview(cfg: Config, tenant: str, period: str, day: Any, until: Any, history_src: str | None, live: bool,
             tz: str | None, force: bool, fmt: str) -> None:
    """Print (and store) a tenant's overview for a day, ISO week or month.

    Windows are local to the tenant's timezone. Exact overviews come from the
    history and are upserted into the report store; --live gives today's
    numbers so far, approximately, without storing them. Exit status 2, with
    nothing stored, when an overview would have smaller counts than the
    stored one or than Redis's per-day counters, or comes from a history
    with no events in a window that has data (--force stores it anyway).

    \b
    Example:
      campaign-counters overview --tenant acme --period weekly --date 2026-10-25 --history events.jsonl
      campaign-counters overview --tenant acme --live
    """
    from ..nightly import overview as ov

    counters = counters_for(cfg)
    zone = zone_for(counters, tenant, tz)
    if live:
        emit(ov.today_so_far(counters, tenant, zone), fmt)
        return
    history = _history(history_src)
    first = day.date() if day else date.today()
    last = until.date() if until else first
    if last < first:
        raise ValidationError("until", "must not be before --date")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    bar = ProgressBar(f"{period} overviews of {first} to {last}: reading history")
    try:
        docs = ov.overviews(history, tenant, period, days, zone, progress=bar)
    finally:
        bar.close()
    ov.store_overviews(store_for(cfg), docs, counters, force=force)
    say(f"stored {len(docs)} {period} overview(s)")
    emit(docs[0] if len(docs) == 1 else docs, fmt)


@main.command()
@tenant_option
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]), help="The tenant-local day.")
@history_option
@click.option("--repair", is_flag=True,
              help="Repair drifting campaigns (the nightly job does with CAMPAIGN_COUNTERS_REPAIR=1).")
@force_option
@format_option
@config_options()
def nightly(cfg: Config, tenant: str, day: Any, history_src: str | None, repair: bool, force: bool, fmt: str) -> None:
    """Run a tenant's nightly check of one local day now, as the scheduler's job does.

    Reconciles the campaigns with events that day, writes the overviews that
    close with it (daily; weekly on Sundays; monthly on a month's last day)
    and marks the night done: for the nights `health` lists as missed (too
    old to be retried, refused, run without a history). Prints the run's
    summary; exit status 0 when the night is done, 2 when refused.

    \b
    Example:
      campaign-counters nightly --tenant acme --date 2026-10-25 --history events.jsonl
    """
    from ..nightly.schedule import run_night

    if not history_src:
        raise ValidationError("history", f"give --history SRC (or set {ENV_HISTORY})")
    out = run_night(counters_for(cfg), store_for(cfg), history_src, tenant, day.date(), repair=repair, force=force)
    emit(out, fmt)
    if out.get("refused"):
        say(f"refused: {out['refused']} (--force to write anyway)")
        sys.exit(EXIT_INPUT)


@main.group()
def tenant() -> None:
    """Tenant settings."""


@tenant.command("set-tz")
@id_option("tenant", "name", help="Tenant id.")
@click.option("--tz", required=True, help="IANA timezone, e.g. Europe/Berlin.")
@format_option
@config_options()
def set_tz(cfg: Config, name: str, tz: str, fmt: str) -> None:
    """Set the timezone of a tenant: its days, overviews and nightly run follow it.

    \b
    Example:
      campaign-counters tenant set-tz --tenant acme --tz Asia/Ho_Chi_Minh
    """
    from ..persist.durable import remember_timezone

    counters, store = checked_writer(cfg)
    counters.set_timezone(name, tz)
    remember_timezone(store, name, tz)
    emit({"tenant": name, "tz": tz}, fmt)
