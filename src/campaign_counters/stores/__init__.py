"""Report stores: where snapshots, overviews and reconcile results are kept.

`open_store` picks a backend by URL scheme; the interface (`base.ReportStore`)
knows none of them, and each backend is imported only when its scheme is used
(MongoDB's driver is an optional dependency).
"""

from __future__ import annotations

from importlib import import_module

from ..connection import redact
from ..errors import ValidationError
from .base import ReportStore

SCHEMES = {
    "sqlite": ("sqlite", "SQLiteStore"),
    "mongodb": ("mongo", "MongoStore"),
    "mongodb+srv": ("mongo", "MongoStore"),
}

__all__ = ["ReportStore", "open_store"]


def open_store(url: str) -> ReportStore:
    """`sqlite:///path/reports.db` or `mongodb://[user:pass@]host[:port]/db`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValidationError("store-url", f"unsupported store URL {redact(url)!r}: use sqlite:///path or mongodb://host/db")
    module, name = SCHEMES[scheme]
    return getattr(import_module(f".{module}", __name__), name)(url)
