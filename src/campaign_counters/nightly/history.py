"""Raw event history: a JSON Lines file, or FPTChat's `NotificationHistory` in MongoDB.

Both stream events one at a time (memory stays bounded whatever the size)
and filter by tenant, campaign and time: in MongoDB on the server, in a file
while reading.

MongoDB documents become events through `campaign_counters.fptchat.history_events`,
the same mapping the chat service's hooks use live (field names overridable
with `CAMPAIGN_COUNTERS_HISTORY_MAPPING`, or `open_history(..., mapping=...)`).
"""

from __future__ import annotations

import abc
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..connection import redact
from ..errors import BackendError, ValidationError
from ..events import Event, parse_event
from ..fptchat import history_events, history_mapping
from ..jsonlines import loads_line

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10_000  # records read between two progress reports

Progress = Callable[[int, int | None, str], None]
"""Called as progress(done, total, unit) while a source is read; total None when unknown."""


class HistorySource(abc.ABC):
    """Where the nightly job reads what really happened."""

    skipped: int = 0

    @abc.abstractmethod
    def events(self, tenant: str, campaigns: set[str] | None = None,
               start_ms: int | None = None, end_ms: int | None = None,
               progress: Progress | None = None) -> Iterator[Event]:
        """Events of a tenant (optionally some campaigns, a [start, end) time range), in stored order.

        `progress` hears how far the read got (bytes of a file, documents of
        a collection), for a progress bar over long backfills.
        """

    def close(self) -> None:
        """Release resources."""


def _wanted(ev: Event, tenant: str, campaigns: set[str] | None, start_ms: int | None, end_ms: int | None) -> bool:
    return (ev.tenant == tenant and (campaigns is None or ev.campaign in campaigns)
            and (start_ms is None or ev.ts_ms >= start_ms) and (end_ms is None or ev.ts_ms < end_ms))


class JsonlHistory(HistorySource):
    """A JSON Lines file of events (docs/events.md); bad lines are skipped and counted."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValidationError("history", f"no such file: {path}")

    def events(self, tenant: str, campaigns: set[str] | None = None,
               start_ms: int | None = None, end_ms: int | None = None,
               progress: Progress | None = None) -> Iterator[Event]:
        self.skipped = 0
        needle = tenant.encode()
        total, done = self.path.stat().st_size, 0
        with self.path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                done += len(line)
                if progress and number % PROGRESS_EVERY == 0:
                    progress(done, total, "bytes")
                if needle not in line:  # also skips blank lines
                    continue
                try:
                    ev = parse_event(loads_line(line))
                except (ValueError, ValidationError) as exc:  # UnicodeDecodeError is a ValueError
                    self.skipped += 1
                    log.warning("%s line %d skipped: %s", self.path, number, exc)
                    continue
                if _wanted(ev, tenant, campaigns, start_ms, end_ms):
                    yield ev
        if progress:
            progress(done, total, "bytes")


class MongoHistory(HistorySource):
    """FPTChat's NotificationHistory collection, read with a field mapping."""

    def __init__(self, url: str, mapping: dict[str, Any] | None = None, client: Any = None,
                 collection: str | None = None) -> None:
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query))
        collection = collection or params.pop("collection", "NotificationHistory")
        clean = urlunsplit(parts._replace(query=urlencode(params)))
        self.url = url
        self.mapping = history_mapping(mapping)
        if client is None:
            try:
                import pymongo
            except ImportError as exc:  # pragma: no cover - optional dependency
                raise BackendError("MongoDB needs the 'mongo' extra: pip install 'campaign-counters[mongo]'") from exc
            client = pymongo.MongoClient(clean, serverSelectionTimeoutMS=5000, tz_aware=True)
            self._errors: tuple[type[Exception], ...] = (pymongo.errors.PyMongoError,)
        else:
            self._errors = (Exception,)
        db = parts.path.lstrip("/") or "fptchat"
        self.client = client
        self.collection = client[db][collection]

    def _query(self, tenant: str, campaigns: set[str] | None, start_ms: int | None, end_ms: int | None) -> dict:
        m = self.mapping
        query: dict[str, Any] = {m["tenant"]: tenant}
        if campaigns is not None:
            values: list[Any] = list(campaigns)
            try:
                from bson import ObjectId

                values += [ObjectId(c) for c in campaigns if ObjectId.is_valid(c)]
            except ImportError:  # pragma: no cover - bson ships with pymongo
                pass
            query[m["campaign"]] = {"$in": values}
        if (start_ms is not None or end_ms is not None) and m.get("time"):
            span: dict[str, Any] = {}
            if start_ms is not None:
                span["$gte"] = datetime.fromtimestamp(start_ms / 1000, timezone.utc)
            if end_ms is not None:
                span["$lt"] = datetime.fromtimestamp(end_ms / 1000, timezone.utc)
            query[m["time"]] = span
        return query

    def events(self, tenant: str, campaigns: set[str] | None = None,
               start_ms: int | None = None, end_ms: int | None = None,
               progress: Progress | None = None) -> Iterator[Event]:
        self.skipped = 0
        query = self._query(tenant, campaigns, start_ms, end_ms)
        try:
            total = self.collection.count_documents(query) if progress else None
            cursor = self.collection.find(query).batch_size(5000)
            for done, doc in enumerate(cursor, start=1):
                if progress and done % PROGRESS_EVERY == 0:
                    progress(done, total, "documents")
                for raw in history_events(doc, self.mapping):
                    try:
                        ev = parse_event(raw)
                    except ValidationError as exc:
                        self.skipped += 1
                        log.warning("NotificationHistory %s skipped: %s", doc.get("_id"), exc)
                        continue
                    if _wanted(ev, tenant, campaigns, start_ms, end_ms):
                        yield ev
            if progress:
                progress(total or 0, total, "documents")
        except self._errors as exc:
            if isinstance(exc, (ValidationError, BackendError)):
                raise
            from ..stores.mongo import mongo_cause

            raise BackendError(f"history {redact(self.url)}: {mongo_cause(exc)}") from exc

    def close(self) -> None:
        self.client.close()


def open_history(src: str, mapping: dict[str, Any] | None = None) -> HistorySource:
    """A JSON Lines path, or a mongodb:// URL (`?collection=` to override NotificationHistory)."""
    if src.startswith(("mongodb://", "mongodb+srv://")):
        return MongoHistory(src, mapping)
    return JsonlHistory(src)
