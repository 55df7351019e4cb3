"""The `campaign-counters` group and the one place that maps errors to exit codes.

Exit codes: 0 ok, 1 drift found (reconcile) or something needs attention
(health), 2 bad input, usage, or a write refused because it would lose
numbers, 3 some input lines rejected, 4 not found or another tenant's
campaign, 5 Redis or the report store unavailable.
"""

from __future__ import annotations

import errno
from typing import Any

import click
from redis.exceptions import RedisError

from .. import __version__
from ..connection import redact
from ..errors import (
    BackendError, NotFound, Refused, RepairRefused, SnapshotRefused, TenantMismatch, ValidationError,
)
from .environment import check_environment
from .options import say

EXIT_DRIFT, EXIT_INPUT, EXIT_REJECTED, EXIT_NOT_FOUND, EXIT_BACKEND = 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_ATTENTION = EXIT_DRIFT  # health: everything answers, but numbers are at risk


class App(click.Group):
    """Turns the library's errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (RepairRefused, SnapshotRefused) as exc:
            say(f"refused: {exc.reason}")
            ctx.exit(EXIT_INPUT)
        except Refused as exc:
            say(f"refused: {exc} (--force to write anyway)")
            ctx.exit(EXIT_INPUT)
        except ValidationError as exc:
            say(f"error: {exc}")
            ctx.exit(EXIT_INPUT)
        except TenantMismatch as exc:
            say(f"error: {exc}")
            ctx.exit(EXIT_NOT_FOUND)
        except NotFound as exc:
            say(f"not found: {exc}")
            ctx.exit(EXIT_NOT_FOUND)
        except BackendError as exc:
            say(f"unavailable: {exc}")
            ctx.exit(EXIT_BACKEND)
        except RedisError as exc:
            say(f"unavailable: Redis: {type(exc).__name__}: {redact(str(exc))}")
            ctx.exit(EXIT_BACKEND)
        except OSError as exc:  # e.g. a --home that cannot be created
            if exc.errno == errno.EPIPE:
                raise  # click exits quietly when stdout is closed early (`| head`)
            where = f" {exc.filename}:" if exc.filename else ""
            say(f"unavailable:{where} {exc.strerror or exc}")
            ctx.exit(EXIT_BACKEND)


@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="campaign-counters")
def main() -> None:
    """Realtime, exact campaign reports kept in Redis.

    Record campaign events (JSON Lines), read live reports and user journeys,
    persist them to MongoDB or SQLite. Without --redis-url everything runs on
    an embedded Redis whose data lives in $CAMPAIGN_COUNTERS_HOME
    (./.campaign-counters of the current directory by default).

    Exit codes: 0 ok, 1 drift found (reconcile) or something needs attention
    (health), 2 bad input, usage, or a write refused because the history
    would lose numbers, 3 some input lines rejected, 4 not found (or another
    tenant's campaign), 5 Redis or the report store unavailable.

    Every CAMPAIGN_COUNTERS_* variable is checked before a command runs.
    Shell completion (bash; zsh and fish alike):
    eval "$(_CAMPAIGN_COUNTERS_COMPLETE=bash_source campaign-counters)"

    \b
    Example:
      campaign-counters demo
      campaign-counters report --tenant demo --campaign demo-campaign --format table
    """
    check_environment()
