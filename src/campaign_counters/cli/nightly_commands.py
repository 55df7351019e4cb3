"""Commands of the nightly side: reconcile, overview (and backfill), tenant settings."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

import click

from ..config import Config
from ..errors import ValidationError
from ..nightly.schedule import ENV_HISTORY
from .app import EXIT_DRIFT, main
from .options import (
    ProgressBar, config_options, counters_for, emit, format_option, history_option, say, store_for, tz_option,
    zone_for,
)


def _history(src: str | None) -> Any:
    from ..nightly.history import open_history

    if not src:
        raise ValidationError("history", f"give --history SRC (or set {ENV_HISTORY})")
    return open_history(src)


@main.command()
@click.option("--tenant", required=True, help="Tenant id.")
@history_option
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Check the campaigns with events on this local day.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Backfill: the campaigns with events on any local day from --date to this one.")
@click.option("--campaign", multiple=True, help="Check only this campaign (repeatable).")
@tz_option
@click.option("--repair", is_flag=True, help="Replace drifting campaigns' Redis state with the truth, atomically, and re-snapshot.")
@format_option
@config_options
def reconcile(cfg: Config, tenant: str, history_src: str | None, day: Any, until: Any, campaign: tuple[str, ...],
              tz: str | None, repair: bool, fmt: str) -> None:
    """Recompute campaigns from the raw history and compare with the live counters.

    Prints {"checked", "drift": [{"campaign", "job", "metric", "expected",
    "actual"}], "repaired"} and stores it as a ReconcileReports document.
    Exit status 0 when there is no drift (after repairing, with --repair), 1 otherwise.
    """
    from ..nightly.reconcile import reconcile as run

    if until and not day:
        raise ValidationError("until", "needs --date (the first day of the range)")
    if until and until < day:
        raise ValidationError("until", "must not be before --date")
    counters = counters_for(cfg)
    bar = ProgressBar("reading history")
    try:
        result = run(counters, store_for(cfg), _history(history_src), tenant,
                     day=day.date() if day else None, until=until.date() if until else None,
                     campaigns=set(campaign) or None, tz=zone_for(counters, tenant, tz), repair=repair,
                     progress=lambda c: (bar.close(), say(f"checking {c} ...")), read_progress=bar)
    finally:
        bar.close()
    emit(result.output(), fmt)
    say(f"{result.checked} reports checked, {len(result.drift)} drifting metrics"
        + (f", repaired {', '.join(result.repaired)}" if result.repaired else ""))
    if result.drift:
        sys.exit(EXIT_DRIFT)


@main.command()
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--period", type=click.Choice(["daily", "weekly", "monthly"]), default="daily", show_default=True)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="A local date in the period [default: today].")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Backfill: every period from --date to this date.")
@history_option
@click.option("--live", is_flag=True, help="Approximate 'today so far' from Redis HyperLogLogs (no history needed).")
@tz_option
@format_option
@config_options
def overview(cfg: Config, tenant: str, period: str, day: Any, until: Any, history_src: str | None, live: bool,
             tz: str | None, fmt: str) -> None:
    """Print (and store) a tenant's overview for a day, ISO week or month.

    Windows are local to the tenant's timezone. Exact overviews come from the
    history and are upserted into the report store; --live gives today's
    numbers so far, approximately, without storing them.
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
    ov.store_overviews(store_for(cfg), docs, counters)
    say(f"stored {len(docs)} {period} overview(s)")
    emit(docs[0] if len(docs) == 1 else docs, fmt)


@main.group()
def tenant() -> None:
    """Tenant settings."""


@tenant.command("set-tz")
@click.option("--tenant", "name", required=True, help="Tenant id.")
@click.option("--tz", required=True, help="IANA timezone, e.g. Europe/Berlin.")
@config_options
def set_tz(cfg: Config, name: str, tz: str) -> None:
    """Set the timezone of a tenant: its days, overviews and nightly run follow it."""
    counters_for(cfg).set_timezone(name, tz)
    emit({"tenant": name, "tz": tz}, "json")
