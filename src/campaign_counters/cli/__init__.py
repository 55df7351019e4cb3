"""The click command line; `main` is the console script."""

from .app import main
from . import bench, nightly_commands, persist_commands  # noqa: F401  (register their commands on main)

__all__ = ["main"]
