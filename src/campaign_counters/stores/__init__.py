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


def check_store_url(url: str, field: str = "store-url") -> str:
    """The URL's scheme once the URL names a backend; ValidationError naming `field` otherwise."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValidationError(field, f"unsupported store URL {redact(url)!r}: use sqlite:///relative.db, "
                                     "sqlite:////absolute/path.db or mongodb://host/db")
    if scheme == "sqlite":
        from .sqlite import sqlite_path  # the standard library's sqlite3 only

        try:
            sqlite_path(url)
        except ValidationError as exc:
            raise ValidationError(field, exc.reason) from None
    return scheme


def open_store(url: str, read_only: bool = False) -> ReportStore:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `mongodb://[user:pass@]host[:port]/db`.

    `read_only`: for readers, which create nothing; an SQLite file that does
    not exist (or holds no reports) raises `sqlite.StoreAbsent`.
    """
    module, name = SCHEMES[check_store_url(url)]
    cls = getattr(import_module(f".{module}", __name__), name)
    return cls(url, read_only=True) if read_only else cls(url)
