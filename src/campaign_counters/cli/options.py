"""Options, helpers and output shared by the commands (rq's `cli/helpers.py`).

Data goes to stdout; messages and progress to stderr.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import click

from ..analysis import DEFAULT_WINDOW_S
from ..config import ENV_HOME, ENV_QUEUE, ENV_REDIS, ENV_STORE, Config
from ..counters import Counters
from ..errors import BackendError
from ..nightly.schedule import ENV_HISTORY
from ..timezones import parse_zone
from .output import FORMATS, render


def say(message: str) -> None:
    """A message for people: stderr."""
    click.echo(message, err=True)


def emit(data: Any, fmt: str) -> None:
    """Data: stdout, in the chosen format."""
    click.echo(render(data, fmt))


class ProgressBar:
    """A bar on stderr for long reads (history backfills), made on the first report.

    Reports are (done, total, unit); a report going backwards starts a new
    bar (a second pass over the same source).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int | None, unit: str) -> None:
        if self.bar is not None and done < self.done:
            self.close()
        if self.bar is None:
            self.bar = click.progressbar(length=total or 0, label=f"{self.label} ({unit})", file=sys.stderr,
                                         show_eta=True, show_percent=True)
            self.bar.__enter__()
            self.done = 0
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def config_options(f: Callable) -> Callable:
    """--redis-url/--store-url/--queue-url/--home on every command that connects."""

    @click.option("--redis-url", envvar=ENV_REDIS, show_envvar=True, metavar="URL",
                  help="redis://, rediss://, unix:// or redis+cluster://host:port,... "
                       "[default: an embedded Redis under --home]")
    @click.option("--store-url", envvar=ENV_STORE, show_envvar=True, metavar="URL",
                  help="sqlite:///path or mongodb://host/db [default: sqlite:///HOME/reports.db]")
    @click.option("--queue-url", envvar=ENV_QUEUE, show_envvar=True, metavar="URL",
                  help="Redis for the RQ queue (not a cluster) [default: the Redis URL]")
    @click.option("--home", envvar=ENV_HOME, show_envvar=True, metavar="DIR",
                  help="Where embedded data lives [default: ./.campaign-counters]")
    @functools.wraps(f)
    def wrapper(redis_url: str | None, store_url: str | None, queue_url: str | None, home: str | None,
                **kwargs: Any) -> Any:
        cfg = Config.from_env(redis_url=redis_url, store_url=store_url, queue_url=queue_url, home=home)
        return f(cfg, **kwargs)

    return wrapper


def format_option(f: Callable) -> Callable:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True,
                        help="json: one object (or array) on stdout. table: for people, scalars then one "
                             "table per nested list/mapping (nodes, funnel). csv: a header `key,value` then "
                             "one row per value, nested keys dotted (node_analytics.NODE.reached_count, "
                             "funnel_data.0.node); null is an empty value.")(f)


window_option = click.option(
    "--window", "window_s", default=DEFAULT_WINDOW_S, show_default=True, type=click.IntRange(1),
    help="Inactivity window of the analysis, seconds: a user who did not go on from a node is waiting there "
         "while their last activity is younger than this, dropped after.")
tenant_option = click.option("--tenant", required=True, help="Tenant id.")
campaign_option = click.option("--campaign", required=True, help="Campaign id.")


def counters_for(cfg: Config) -> Counters:
    """The client, closed with the command: the embedded server stops with its last client."""
    counters = Counters(cfg.redis)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(counters.close)
    return counters


def checked_writer(cfg: Config) -> tuple[Counters, Any]:
    """The client and the report store, once Redis was checked to still hold its data.

    A Redis that lost it (or was replaced) is restored from the store's
    durable copy first, and the campaigns that were live are flagged for
    reconcile; both are said on stderr.
    """
    from ..persist.durable import check_redis

    counters, store = counters_for(cfg), store_for(cfg)
    check = check_redis(counters, store)
    if check.restored:
        say(f"warning: {check.reason}. Restored scripts, campaign owners and timezones from the report store; "
            f"{len(check.flagged)} campaign(s) need `campaign-counters reconcile --repair` "
            f"(flagged: {', '.join(check.flagged) or 'none'}).")
    return counters, store


def store_for(cfg: Config, must_exist: bool = True) -> Any:
    """The report store; with `must_exist` False, None when the default file is absent."""
    from ..stores import open_store

    if not must_exist and cfg.store_url is None and not Path(cfg.store[len("sqlite:///"):]).exists():
        return None
    return open_store(cfg.store)


def reachable_store(cfg: Config) -> tuple[Any, str | None]:
    """(the report store, None) when it answers (None when the default file is absent), else (None, why)."""
    try:
        store = store_for(cfg, must_exist=False)
        if store is not None:
            store.ping()
        return store, None
    except BackendError as exc:
        return None, str(exc)


def queue_for(cfg: Config) -> Any:
    """The RQ queue, its connection closed with the command (the embedded server stops with its last client)."""
    from ..persist.jobs import make_queue

    queue = make_queue(cfg.queue)
    click.get_current_context().call_on_close(queue.connection.close)
    return queue


history_option = click.option(
    "--history", "history_src", envvar=ENV_HISTORY, show_envvar=True, metavar="SRC",
    help="Raw events: a JSON Lines file, or mongodb://host/db (NotificationHistory; "
         "?collection=NAME to change it; field mapping in CAMPAIGN_COUNTERS_HISTORY_MAPPING).")
force_option = click.option(
    "--force", is_flag=True,
    help="Write even when the history would lose numbers (fewer users or interactions than Redis or the "
         "store hold, or no events at all): only when the history is known to be right.")
tz_option = click.option("--tz", help="IANA timezone, e.g. Asia/Ho_Chi_Minh [default: the tenant's setting, else UTC].")


def zone_for(counters: Counters, tenant: str, name: str | None) -> ZoneInfo:
    """The --tz given, else the tenant's setting (UTC when unset)."""
    if name:
        return parse_zone(name)
    return counters.run(counters.plan_timezone(tenant))
