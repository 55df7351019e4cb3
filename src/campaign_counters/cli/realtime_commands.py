"""Commands of the realtime side: script load, record, report, journey, demo."""

from __future__ import annotations

import sys
import time
from typing import Any, BinaryIO, Iterator, NamedTuple

import click

from ..config import Config
from ..counters import maintenance as m
from ..errors import NotFound, TenantMismatch, ValidationError
from ..jsonlines import decode_error, loads_line
from ..persist import durable
from .app import EXIT_BACKEND, EXIT_INTERRUPTED, EXIT_REJECTED, main
from .options import (
    campaign_option, checked_writer, config_options, counters_for, emit, format_option, id_option, program,
    reader_store, say, store_for, tenant_option, window_option,
)
from .output import analysis_table


@main.group()
def script() -> None:
    """Campaign scripts (flow graphs)."""


@script.command("load")
@tenant_option
@campaign_option
@click.argument("file", type=click.File("rb"))
@format_option
@config_options()
def script_load(cfg: Config, tenant: str, campaign: str, file: BinaryIO, fmt: str) -> None:
    """Register or replace the script of a campaign, binding it to the tenant.

    FILE is the script JSON ({"nodes": [...], "edges": [...]}, UTF-8), or -
    for stdin. Prints the start node, end nodes and flow sequence found. A
    script without an end node is refused (completions could never count).
    Another tenant's campaign is not found (exit status 4), as in `report`.

    \b
    Example:
      campaign-counters script load --tenant acme --campaign spring-sale script.json
    """
    raw = file.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError("file", f"{getattr(file, 'name', '-')}: not valid UTF-8 (byte {exc.start + 1})") from None
    counters, store = checked_writer(cfg)
    try:
        durable.check_owner(counters, store, tenant, campaign)  # the store remembers closed campaigns' owners
        graph = counters.load_script(tenant, campaign, text)
    except TenantMismatch:
        raise NotFound(campaign_not_found(tenant, campaign)) from None
    durable.remember_campaign(counters, store, counters.run(m.campaign_meta(counters, campaign)))
    emit({
        "tenant": tenant, "campaign": campaign, "nodes": len(graph.nodes), "start": graph.start,
        "end_nodes": sorted(graph.end_nodes), "flow_sequence": list(graph.flow_sequence),
    }, fmt)


def campaign_not_found(tenant: str, campaign: str) -> str:
    """What an unknown campaign, and another tenant's, look like: the same words."""
    return f"campaign {campaign!r} of tenant {tenant!r} has no data"


class BadLine(NamedTuple):
    """A line rejected before it reaches the library (field `line`)."""

    reason: str


def _lines(stream: BinaryIO, chunk: int) -> Iterator[list[tuple[int, Any]]]:
    """Chunks of (line number, parsed JSON or a BadLine), streamed; blank lines skipped."""
    batch: list[tuple[int, Any]] = []
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark
        if not raw.strip():
            continue
        try:
            batch.append((number, loads_line(raw)))
        except UnicodeDecodeError as exc:
            batch.append((number, BadLine(f"not valid UTF-8 (byte {exc.start + 1})")))
        except ValueError as exc:
            batch.append((number, BadLine(f"not valid JSON ({decode_error(exc)})")))
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


@main.command()
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--chunk", default=5000, show_default=True, type=click.IntRange(1), help="Lines per batch sent to Redis.")
@format_option
@config_options()
def record(cfg: Config, file: BinaryIO, chunk: int, fmt: str) -> None:
    """Record JSON Lines events from FILE (default -: stdin), streamed, in order.

    One event object per line (see the README's event table); blank lines
    are skipped. Prints {"accepted", "duplicates", "rejected"} on stdout, and
    "unknown" (sent, no reply: maybe applied) and "unsent" when Redis failed.
    Each rejected line is named on stderr as `line N: FIELD: REASON` (a line
    that is not JSON has FIELD `line`). Exit status 0 when nothing was
    rejected, 3 when some lines were (all others are recorded), 5 when Redis
    failed (recording stops there; events with an id can be recorded again
    safely), 130 when interrupted (Ctrl-C): stderr says which lines were
    recorded and how to resume. Progress every 100,000 lines.

    \b
    Example:
      campaign-counters record events.jsonl
      cat events.jsonl | campaign-counters record -
    """
    counters, _ = checked_writer(cfg)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "unknown": 0, "unsent": 0}
    started, seen, next_progress, done_through = time.monotonic(), 0, 100_000, 0
    try:
        for batch in _lines(file, chunk):
            good = [(n, obj) for n, obj in batch if not isinstance(obj, BadLine)]
            messages = [(n, f"line: {obj.reason}") for n, obj in batch if isinstance(obj, BadLine)]
            totals["rejected"] += len(messages)
            result = counters.record_many([obj for _, obj in good])
            messages += [(good[r.index][0], f"{r.field}: {r.reason}") for r in result.rejections]
            for n, message in sorted(messages, key=lambda m: m[0]):
                say(f"line {n}: {message}")
            for key, value in result.summary().items():
                totals[key] += value
            if result.failed:
                failed = sorted(good[i][0] for i, _ in result.errors)
                say(f"unavailable: Redis at {cfg.redis_label}: {result.errors[0][1]}; "
                    f"{len(failed):,} line(s) not recorded (first: line {failed[0]}), the rest of the input "
                    "was not read. Recording the input again is safe for events with an id.")
                break
            done_through = batch[-1][0]
            seen += len(batch)
            if seen >= next_progress:
                rate = seen / max(time.monotonic() - started, 1e-9)
                say(f"... {seen:,} lines ({rate:,.0f}/s)")
                next_progress += 100_000
    except KeyboardInterrupt:
        source = getattr(file, "name", "-")
        source = "-" if source in ("<stdin>", "-") else source
        resume = (f"tail -n +{done_through + 1} {source} | {program()} record -" if source != "-"
                  else f"skip the first {done_through:,} lines of the input and record the rest")
        say(f"interrupted: lines 1-{done_through:,} were recorded ({totals['accepted']:,} events accepted); "
            f"to resume: {resume}. The batch in flight may be partly recorded: recording it again is safe "
            "for events with an id.")
        emit({k: v for k, v in totals.items() if k in ("accepted", "duplicates", "rejected") or v}, fmt)
        sys.exit(EXIT_INTERRUPTED)
    summary = {k: v for k, v in totals.items() if k in ("accepted", "duplicates", "rejected") or v}
    emit(summary, fmt)
    if totals["unknown"] or totals["unsent"]:
        sys.exit(EXIT_BACKEND)
    if totals["rejected"]:
        sys.exit(EXIT_REJECTED)


@main.command()
@tenant_option
@campaign_option
@id_option("job", required=False, help="A job (run) of the campaign [default: the campaign total].")
@click.option("--from-store", is_flag=True,
              help="Read the last snapshot from the report store instead of Redis (creates nothing; waits at most "
                   "2 s for a writer's lock on SQLite).")
@click.option("--analysis", "with_analysis", is_flag=True,
              help="Add the live analysis (field `analysis`, as `analyze` gives it): scans every user's record, "
                   "O(users) instead of O(nodes x jobs). With --from-store, the stored analysis (the last "
                   "`analyze --persist` or nightly check) is part of the report whenever there is one.")
@window_option
@format_option(nested=True)
@config_options()
def report(cfg: Config, tenant: str, campaign: str, job: str | None, from_store: bool, with_analysis: bool,
           window_s: int, fmt: str) -> None:
    """Print the report of a campaign (or of one job), live from Redis.

    The report alone reads a few hashes: O(nodes x jobs), whatever the number
    of users. --analysis adds transitions, drop-off states, completion time,
    unique choosers and the heatmap, computed now from every user's record in
    Redis (one scan in pages: O(users) time, about 10 s per 100,000 users
    as measured in BENCHMARKS.md, against about 1 ms for the report alone;
    memory bounded by nodes plus the ids of the users scanned).

    \b
    Example:
      campaign-counters report --tenant acme --campaign spring-sale
      campaign-counters report --tenant acme --campaign spring-sale --job run-1 --format table
      campaign-counters report --tenant acme --campaign spring-sale --from-store
      campaign-counters report --tenant acme --campaign spring-sale --analysis --window 3600
    """
    if from_store:
        from ..persist.views import stored_report

        emit(stored_report(reader_store(cfg), tenant, campaign, job), fmt)
        return
    try:
        if with_analysis:
            from ..persist.analysis import report_with_analysis

            result = report_with_analysis(counters_for(cfg), tenant, campaign, job, window_s=window_s)
        else:
            result = counters_for(cfg).report(tenant, campaign, job)
    except NotFound as exc:
        raise NotFound(f"{exc} (a completed campaign's live data expires after the retention period: "
                       "try --from-store)") from None
    if fmt == "table" and "analysis" in result:
        emit({k: v for k, v in result.items() if k != "analysis"}, fmt)
        click.echo("\nanalysis:")
        emit(analysis_table(result["analysis"]), fmt)
    else:
        emit(result, fmt)


@main.command()
@tenant_option
@campaign_option
@id_option("job", help="Job (run) id.")
@id_option("user", help="User id.")
@click.option("--from-store", is_flag=True, help="Read the last snapshot from the report store instead of Redis.")
@format_option(nested=True)
@config_options()
def journey(cfg: Config, tenant: str, campaign: str, job: str, user: str, from_store: bool, fmt: str) -> None:
    """Print one user's journey through a job: steps, completion, exit node.

    Live, the whole journey comes from the user's record in Redis (one
    read, whatever the campaign's size); when Redis no longer holds the user
    (the campaign's keys expired after it closed), from the last snapshot in
    the report store. `--from-store` reads the snapshot only.

    \b
    Example:
      campaign-counters journey --tenant acme --campaign spring-sale --job run-1 --user u42
    """
    from ..persist.views import live_journey, stored_journey

    if from_store:
        emit(stored_journey(reader_store(cfg), tenant, campaign, job, user), fmt)
    else:
        emit(live_journey(counters_for(cfg), lambda: store_for(cfg, read_only=True), tenant, campaign, job, user),
             fmt)


@main.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(1, 1_000_000), help="Users to simulate.")
@click.option("--seed", default=1, show_default=True, help="Random seed (same seed, same data).")
@format_option(nested=True)
@config_options()
def demo(cfg: Config, users: int, seed: int, fmt: str) -> None:
    """Load a sample campaign, simulate users, record their events, print the report.

    The campaign is tenant `demo`, campaign `demo-campaign` (script: the
    package's data/demo_script.json), with jobs run-1 and run-2: users are
    targeted, sent the first message, then click along the script's edges with
    drop-off; a few events arrive twice or out of order. Event ids are derived
    from the seed, so running it again records nothing twice: the report stays
    the same (another --seed or more --users adds to it). Without --redis-url
    the data lives in the embedded Redis under $CAMPAIGN_COUNTERS_HOME.

    \b
    Example:
      campaign-counters demo
      campaign-counters demo --users 500 --seed 2 --format table
    """
    from . import demo as d

    counters, _ = checked_writer(cfg)
    counters.load_script(d.TENANT, d.CAMPAIGN, d.demo_script())
    result = counters.record_many(d.demo_events(users, seed))
    say(f"demo: {result.accepted:,} events recorded, {result.duplicates:,} duplicates ignored "
        f"({cfg.redis_label})")
    emit(counters.report(d.TENANT, d.CAMPAIGN), fmt)
    say(f"next: {program()} report --tenant {d.TENANT} --campaign {d.CAMPAIGN} --job {d.JOBS[0]} --format table")
