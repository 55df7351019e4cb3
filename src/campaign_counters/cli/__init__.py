"""The click command line; `main` is the console script."""

from . import nightly_commands, ops_commands, persist_commands, realtime_commands  # noqa: F401  (register commands)
from .app import main

__all__ = ["main"]
