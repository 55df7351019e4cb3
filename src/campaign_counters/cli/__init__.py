"""The click command line; `main` is the console script."""

from .app import main
from . import persist_commands as _persist_commands  # noqa: F401  (registers commands)

__all__ = ["main"]
