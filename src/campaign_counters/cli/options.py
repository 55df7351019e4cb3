"""Options, helpers and output shared by the commands (rq's `cli/helpers.py`).

Data goes to stdout; messages and progress to stderr.
"""

from __future__ import annotations

import functools
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import click

from ..analysis import DEFAULT_WINDOW_S
from ..config import ENV_HOME, ENV_QUEUE, ENV_REDIS, ENV_STORE, Config
from ..connection import redact
from ..counters import Counters
from ..errors import NotFound
from ..events import check_id, check_text
from ..nightly.schedule import ENV_HISTORY
from ..timezones import parse_zone
from .output import FORMATS, render


def say(message: str) -> None:
    """A message for people: stderr."""
    click.echo(message, err=True)


def program() -> str:
    """How to run this command line again: `campaign-counters` when that is on PATH, else its full path."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("campaign-counters")
    if invoked.name == "campaign-counters":
        same = on_path is not None and Path(on_path).resolve() == invoked.resolve()
        return "campaign-counters" if same else str(invoked)
    if on_path is not None:
        return "campaign-counters"
    return f"{Path(sys.executable)} -m campaign_counters"


def log_to_stderr(level: str, quiet: bool = False, verbose: bool = False) -> str:
    """Send log records (ours and RQ's) to stderr at `level` (-q: WARNING, -v: DEBUG); returns the level used."""
    level = "DEBUG" if verbose else "WARNING" if quiet else level.upper()
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    return level


def stop_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so close callbacks and exit hooks run (the embedded Redis stops)."""

    def stop(signum: int, frame: Any) -> None:
        say("stopping (SIGTERM)")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


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


_REDIS = click.option(
    "--redis-url", envvar=ENV_REDIS, show_envvar=True, metavar="URL",
    help="redis://, rediss://, unix:// or redis+cluster://host:port,... [default: an embedded Redis under --home]")
_STORE = click.option(
    "--store-url", envvar=ENV_STORE, show_envvar=True, metavar="URL",
    help="sqlite:///relative.db, sqlite:////absolute/path.db or mongodb://host/db "
         "[default: reports.db under --home]")
_QUEUE = click.option(
    "--queue-url", envvar=ENV_QUEUE, show_envvar=True, metavar="URL",
    help="Redis for the RQ queue (not a cluster) [default: the Redis URL]")
_HOME = click.option(
    "--home", envvar=ENV_HOME, show_envvar=True, metavar="DIR",
    help="Where the embedded Redis and the default store keep their data [default: ./.campaign-counters, "
         "relative to the current directory]")


def config_options(*, store: bool = True, queue: bool = False) -> Callable[[Callable], Callable]:
    """--redis-url and --home on every command that connects; --store-url, --queue-url where they are used."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            urls = {k: kwargs.pop(k, None) for k in ("redis_url", "store_url", "queue_url", "home")}
            return f(Config.from_env(**urls), **kwargs)

        for option in reversed([_REDIS, *([_STORE] if store else []), *([_QUEUE] if queue else []), _HOME]):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def format_option(f: Callable | None = None, *, nested: bool = False) -> Callable:
    """--format json|table|csv; `nested`: the output holds node analytics and a funnel (say how they print)."""
    detail = (" (nodes, funnel)" if nested else "",
              " (node_analytics.NODE.reached_count, funnel_data.0.node)" if nested else "")
    option = click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="json", show_default=True,
        help=f"json: one object (or array) on stdout. table: for people, scalars then one table per nested "
             f"list or mapping{detail[0]}. csv: a header `key,value` then one row per value, nested keys "
             f"dotted{detail[1]}; null is an empty value.")
    return option(f) if f is not None else option


def announce_home(cfg: Config) -> None:
    """Say on stderr, once per command, that the data directory is being created (a new, empty store)."""
    ctx = click.get_current_context(silent=True)
    if not cfg.uses_home or cfg.home_path.exists() or (ctx is not None and ctx.meta.get("cc-home-announced")):
        return
    if ctx is not None:
        ctx.meta["cc-home-announced"] = True
    say(f"note: creating the data directory {cfg.home_path} (nothing recorded there yet; set {ENV_HOME} "
        "or --home to use another one)")


def checked_id(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """An option's id(s) checked as the event contract checks them (ValidationError names the option)."""
    field = param.opts[0].lstrip("-")
    if value is None:
        return None
    if field == "user":
        return check_text("user", value)
    return tuple(check_id(field, v) for v in value) if isinstance(value, tuple) else check_id(field, value)


def id_option(name: str, *decls: str, required: bool = True, help: str = "", **kwargs: Any) -> Callable:
    """--tenant/--campaign/--job/--user: an id of the event contract, checked before anything runs."""
    return click.option(f"--{name}", *decls, required=required, help=help, callback=checked_id, **kwargs)


tenant_option = id_option("tenant", help="Tenant id (1-50 characters of A-Z a-z 0-9 _ . -).")
campaign_option = id_option("campaign", help="Campaign id (1-64 characters of A-Z a-z 0-9 _ . -).")


window_option = click.option(
    "--window", "window_s", default=DEFAULT_WINDOW_S, show_default=True, type=click.IntRange(1),
    help="Inactivity window of the analysis, seconds: a user who did not go on from a node is waiting there "
         "while their last activity is younger than this, dropped after.")


def counters_for(cfg: Config) -> Counters:
    """The client, closed with the command: the embedded server stops with its last client."""
    announce_home(cfg)
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


def store_for(cfg: Config, read_only: bool = False) -> Any:
    """The report store. `read_only` (readers): creates nothing; None when there is no store yet."""
    from ..stores import open_store
    from ..stores.sqlite import StoreAbsent

    if not read_only:
        if not cfg.store_url:
            announce_home(cfg)
        store = open_store(cfg.store)
    else:
        try:
            store = open_store(cfg.store, read_only=True)
        except StoreAbsent:
            return None
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(store.close)
    return store


def reader_store(cfg: Config) -> Any:
    """The report store for `--from-store` reads (creates nothing); NotFound when nothing was persisted there."""
    store = store_for(cfg, read_only=True)
    if store is None:
        raise NotFound(f"no report store at {redact(cfg.store)} yet: nothing was persisted there (run `snapshot`)")
    return store


def queue_for(cfg: Config) -> Any:
    """The RQ queue, its connection closed with the command (the embedded server stops with its last client)."""
    from ..persist.jobs import make_queue

    announce_home(cfg)
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
