"""The `campaign-counters` command: options and env vars in, library calls, output out.

Data goes to stdout; messages and progress to stderr.  Exit codes:
0 ok, 1 drift found (reconcile), 2 bad input or usage, 3 some input lines
rejected, 4 not found, 5 Redis or the report store unavailable.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import click
from redis.exceptions import RedisError

from .. import __version__
from ..config import ENV_HOME, ENV_QUEUE, ENV_REDIS, ENV_STORE, Config
from ..connection import redact
from ..counters import Counters
from ..errors import BackendError, NotFound, TenantMismatch, ValidationError
from .output import FORMATS, render

EXIT_DRIFT, EXIT_INPUT, EXIT_REJECTED, EXIT_NOT_FOUND, EXIT_BACKEND = 1, 2, 3, 4, 5


def say(message: str) -> None:
    click.echo(message, err=True)


def emit(data: Any, fmt: str) -> None:
    click.echo(render(data, fmt))


class App(click.Group):
    """Turns the library's errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ValidationError, TenantMismatch) as exc:
            say(f"error: {exc}")
            ctx.exit(EXIT_INPUT)
        except NotFound as exc:
            say(f"not found: {exc}")
            ctx.exit(EXIT_NOT_FOUND)
        except BackendError as exc:
            say(f"unavailable: {exc}")
            ctx.exit(EXIT_BACKEND)
        except RedisError as exc:
            say(f"unavailable: Redis: {type(exc).__name__}: {redact(str(exc))}")
            ctx.exit(EXIT_BACKEND)


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
                        help="Output format (JSON: one object on stdout).")(f)


tenant_option = click.option("--tenant", required=True, help="Tenant id.")
campaign_option = click.option("--campaign", required=True, help="Campaign id.")


def counters_for(cfg: Config) -> Counters:
    return Counters(cfg.redis)


def store_for(cfg: Config, must_exist: bool = True) -> Any:
    """The report store; with `must_exist` False, None when the default file is absent."""
    from ..persist import open_store

    if not must_exist and cfg.store_url is None and not Path(cfg.store[len("sqlite:///"):]).exists():
        return None
    return open_store(cfg.store)


@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="campaign-counters")
def main() -> None:
    """Realtime, exact campaign reports kept in Redis.

    Record campaign events (JSON Lines), read live reports and user journeys,
    persist them to MongoDB or SQLite. Without --redis-url everything runs on
    an embedded Redis whose data lives in $CAMPAIGN_COUNTERS_HOME.

    Exit codes: 0 ok, 1 drift found, 2 bad input or usage, 3 some input lines
    rejected, 4 not found (or another tenant's campaign), 5 Redis or the report
    store unavailable.
    """


@main.group()
def script() -> None:
    """Campaign scripts (flow graphs)."""


@script.command("load")
@tenant_option
@campaign_option
@click.argument("file", type=click.File("r"))
@config_options
def script_load(cfg: Config, tenant: str, campaign: str, file: TextIO) -> None:
    """Register or replace the script of a campaign, binding it to the tenant.

    FILE is the script JSON ({"nodes": [...], "edges": [...]}), or - for stdin.
    Prints the start node, end nodes and flow sequence found.
    """
    graph = counters_for(cfg).load_script(tenant, campaign, file.read())
    emit({
        "tenant": tenant, "campaign": campaign, "nodes": len(graph.nodes), "start": graph.start,
        "end_nodes": sorted(graph.end_nodes), "flow_sequence": list(graph.flow_sequence),
    }, "json")


def _lines(stream: TextIO, chunk: int) -> Iterator[list[tuple[int, Any]]]:
    """Chunks of (line number, parsed object or an error string); blank lines skipped."""
    batch: list[tuple[int, Any]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            batch.append((number, json.loads(line)))
        except ValueError as exc:
            batch.append((number, f"line: not valid JSON ({exc.msg})"))
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


@main.command()
@click.argument("file", type=click.File("r"), default="-")
@click.option("--chunk", default=5000, show_default=True, help="Events per pipeline batch.")
@config_options
def record(cfg: Config, file: TextIO, chunk: int) -> None:
    """Record JSON Lines events from FILE (default: stdin), in order.

    Prints {"accepted", "duplicates", "rejected"} on stdout; each rejected line
    is named on stderr with its line number and reason. Exit status 0 when
    nothing was rejected, 3 when some lines were (all others are recorded).
    """
    counters = counters_for(cfg)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "failed": 0}
    started, seen, next_progress = time.monotonic(), 0, 100_000
    for batch in _lines(file, chunk):
        good = [(n, obj) for n, obj in batch if not isinstance(obj, str)]
        for n, obj in batch:
            if isinstance(obj, str):
                say(f"line {n}: {obj}")
                totals["rejected"] += 1
        result = counters.record_many([obj for _, obj in good])
        for rej in result.rejections:
            say(f"line {good[rej.index][0]}: {rej.field}: {rej.reason}")
        for index, error in result.errors:
            say(f"line {good[index][0]}: not recorded: {error}")
        for key, value in result.summary().items():
            totals[key] += value
        seen += len(batch)
        if seen >= next_progress:
            rate = seen / max(time.monotonic() - started, 1e-9)
            say(f"... {seen:,} lines ({rate:,.0f}/s)")
            next_progress += 100_000
    summary = {k: v for k, v in totals.items() if k != "failed" or v}
    emit(summary, "json")
    if totals["failed"]:
        sys.exit(EXIT_BACKEND)
    if totals["rejected"]:
        sys.exit(EXIT_REJECTED)


@main.command()
@tenant_option
@campaign_option
@click.option("--job", help="A job (run) of the campaign [default: the campaign total].")
@click.option("--from-store", is_flag=True, help="Read the last snapshot from the report store instead of Redis.")
@format_option
@config_options
def report(cfg: Config, tenant: str, campaign: str, job: str | None, from_store: bool, fmt: str) -> None:
    """Print the report of a campaign (or of one job), live from Redis."""
    if from_store:
        from ..persist.views import stored_report

        emit(stored_report(store_for(cfg), tenant, campaign, job), fmt)
    else:
        emit(counters_for(cfg).report(tenant, campaign, job), fmt)


@main.command()
@tenant_option
@campaign_option
@click.option("--job", required=True, help="Job (run) id.")
@click.option("--user", required=True, help="User id.")
@click.option("--from-store", is_flag=True, help="Read the last snapshot from the report store instead of Redis.")
@format_option
@config_options
def journey(cfg: Config, tenant: str, campaign: str, job: str, user: str, from_store: bool, fmt: str) -> None:
    """Print one user's journey through a job: steps, completion, exit node."""
    from ..persist.views import live_journey, stored_journey

    if from_store:
        emit(stored_journey(store_for(cfg), tenant, campaign, job, user), fmt)
    else:
        emit(live_journey(counters_for(cfg), store_for(cfg, must_exist=False), tenant, campaign, job, user), fmt)


@main.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 1_000_000), help="Users to simulate.")
@click.option("--seed", default=1, show_default=True, help="Random seed (same seed, same data).")
@format_option
@config_options
def demo(cfg: Config, users: int, seed: int, fmt: str) -> None:
    """Load a sample campaign, simulate users, record their events, print the report.

    Event ids are derived from the seed, so running it again records nothing
    twice: the report stays the same.
    """
    from . import demo as d

    counters = counters_for(cfg)
    counters.load_script(d.TENANT, d.CAMPAIGN, d.demo_script())
    result = counters.record_many(d.demo_events(users, seed))
    say(f"demo: {result.accepted:,} events recorded, {result.duplicates:,} duplicates ignored "
        f"({redact(cfg.redis)})")
    emit(counters.report(d.TENANT, d.CAMPAIGN), fmt)
    say(f"next: campaign-counters report --tenant {d.TENANT} --campaign {d.CAMPAIGN} --job {d.JOBS[0]} --format table")
