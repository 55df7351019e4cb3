"""The click command line; `main` is the console script."""

from . import (  # noqa: F401  (register commands)
    analysis_commands, grafana_commands, nightly_commands, ops_commands, persist_commands, realtime_commands,
    spool_commands,
)
from .app import main

__all__ = ["main"]
