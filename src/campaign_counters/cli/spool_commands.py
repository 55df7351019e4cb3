"""Commands of the local spool: what the chat service could not deliver, and sending it."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import Config
from ..counters.spool import ENV_SPOOL_DIR, Spool, default_spool_dir
from .app import EXIT_BACKEND, main
from .options import checked_writer, config_options, emit, format_option, say

spool_dir_option = click.option(
    "--dir", "directory", envvar=ENV_SPOOL_DIR, show_envvar=True, metavar="DIR", type=click.Path(file_okay=False),
    help="The spool directory the chat service writes [default: spool under --home].")


@main.group()
def spool() -> None:
    """The local spool of chat-service clients (events Redis did not take)."""


@spool.command("status")
@spool_dir_option
@format_option
def spool_status(directory: str | None, fmt: str) -> None:
    """Show the events waiting in a spool directory (every process's files).

    \b
    Example:
      campaign-counters spool status --dir /var/lib/chat/spool
    """
    emit(Spool(Path(directory) if directory else default_spool_dir()).status().as_dict(), fmt)


@spool.command("replay")
@spool_dir_option
@format_option
@config_options()
def spool_replay(cfg: Config, directory: str | None, fmt: str) -> None:
    """Send the events of a spool directory to Redis now; what Redis does not take stays spooled.

    Chat-service clients replay their own spool by themselves once Redis
    answers again; this sends what processes that ended left behind. Safe
    to run at any time and more than once: spooled events carry ids, so an
    event already applied counts as a duplicate. Prints the count of events
    per outcome; exit status 5 when some are still undelivered.

    \b
    Example:
      campaign-counters spool replay --dir /var/lib/chat/spool
    """
    counters, _ = checked_writer(cfg)
    path = Path(directory) if directory else default_spool_dir()
    spooled = Spool(path)
    counts = counters.spool_replay(spooled)
    left = spooled.status()
    emit({"dir": str(path), "outcomes": counts, "left": left.events}, fmt)
    if left.events:
        say(f"{left.events:,} event(s) still spooled in {path}: Redis did not take them (see the outcomes)")
        raise SystemExit(EXIT_BACKEND)
