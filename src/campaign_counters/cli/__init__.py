"""The click command line; `main` is the console script."""

from .app import main
from . import persist_commands  # noqa: F401  (registers its commands on main)

__all__ = ["main"]
