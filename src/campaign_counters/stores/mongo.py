"""MongoDB report store over PyMongo (sync: it runs inside RQ jobs).

Writes are `bulk_write` batches of upserts with absolute values; a
journey's `journey_path` is replaced whole. The durable state (what Redis
cannot afford to lose) lives in `CampaignCountersState`, keyed by (kind, key).

Documents are typed as FPTChat's models read them (ObjectId campaign ids,
BSON dates): `mongo_codec` encodes every document and query key on the way
in and decodes on the way out, so the interface still speaks plain values.
The first use of a store by this version migrates documents written by an
older one (plain strings and numbers) to those types, once: see `migrate`.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable
from urllib.parse import urlsplit

from ..connection import redact
from ..errors import BackendError, ValidationError
from .base import JOURNEY_FIELDS, ReportStore
from .mongo_codec import CAMPAIGN_REPORTS, OVERVIEWS, RECONCILES, USER_JOURNEYS, Schema

try:
    import pymongo
except ImportError as exc:  # pragma: no cover - optional dependency
    raise BackendError("MongoDB needs the 'mongo' extra: pip install 'campaign-counters[mongo]'") from exc

log = logging.getLogger(__name__)
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")

DEFAULT_DB = "campaign_counters"
META = "CampaignCountersMeta"  # {"_id": "schema", "version": n}: the document types this store holds
VERSION = 2  # 1: plain values; 2: ObjectId campaign ids and BSON dates
MIGRATION_BATCH = 1000
# Local midnights of a date D lie between D 00:00 UTC - 14 h (UTC+14) and D 00:00 UTC + 12 h (UTC-12).
EARLIEST_MIDNIGHT, LATEST_MIDNIGHT = timedelta(hours=-14), timedelta(hours=12)


def mongo_cause(exc: Exception) -> str:
    """One line naming the cause of a PyMongo error, without its topology dump or timeout settings."""
    text = (str(exc).splitlines() or [""])[0].split(", Timeout: ")[0].split(", Topology Description: ")[0]
    text = _TIMEOUTS.sub("", text)
    if isinstance(exc, pymongo.errors.ServerSelectionTimeoutError):
        return f"no MongoDB server answered ({text})"
    return f"{type(exc).__name__}: {text}"


class MongoStore(ReportStore):
    def __init__(self, url: str, client: Any = None, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only  # reads create no index (writes do, once); kept for open_store's readers
        self._errors = pymongo.errors.PyMongoError
        options = {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": 5000}
        self.client = client or pymongo.MongoClient(url, tz_aware=True, **options)
        db_name = urlsplit(url).path.lstrip("/").split("?")[0] or DEFAULT_DB
        self.db = self.client[db_name]
        self.reports = self.db["CampaignReports"]
        self.journeys = self.db["UserJourneyReports"]
        self.overviews = self.db["OverviewReports"]
        self.reconciles = self.db["ReconcileReports"]
        self.state_docs = self.db["CampaignCountersState"]
        self._typed: list[tuple[Any, Schema]] = [
            (self.reports, CAMPAIGN_REPORTS), (self.journeys, USER_JOURNEYS),
            (self.overviews, OVERVIEWS), (self.reconciles, RECONCILES),
        ]
        self._checked = False  # older documents looked for (and migrated)
        self._indexed = False

    def _fail(self, exc: Exception) -> BackendError:
        return BackendError(f"report store {redact(self.url)}: {mongo_cause(exc)}")

    def _prepare(self, write: bool) -> None:
        """Before the first read or write: migrate older documents (once per database).

        Before the first write, also create the indexes and mark the database
        as typed; a read of a database holding no older document changes nothing.
        """
        if self._indexed or (self._checked and not write):
            return
        asc = pymongo.ASCENDING
        try:
            if not self._checked:
                mark = self.db[META].find_one({"_id": "schema"})
                if (mark is None or mark.get("version", 1) < VERSION) and (write or self._holds_legacy()):
                    self.migrate()
                self._checked = True
            if write:
                self.db[META].update_one({"_id": "schema"}, {"$set": {"version": VERSION}}, upsert=True)
                self.reports.create_index([("tenant_id", asc), ("campaign_id", asc), ("job_id", asc)],
                                          unique=True)
                self.journeys.create_index(
                    [("tenant_id", asc), ("campaign_id", asc), ("job_id", asc), ("user_id", asc)], unique=True
                )
                self.overviews.create_index([("tenant_id", asc), ("report_type", asc), ("report_date", asc)],
                                            unique=True)
                self.reconciles.create_index([("tenant_id", asc), ("created_at", asc)])
                self.state_docs.create_index([("kind", asc), ("key", asc)], unique=True)
                self._indexed = True
        except self._errors as exc:
            raise self._fail(exc) from exc

    def _holds_legacy(self) -> bool:
        return any(c.find_one(schema.legacy_filter(), {"_id": 1}) is not None for c, schema in self._typed)

    def migrate(self) -> dict[str, int]:
        """Give documents written by an older version their BSON types; returns how many per collection.

        Safe to repeat and to run from several processes at once: a document
        is rewritten only while it still holds a plain value. One that would
        collide with a typed document of the same key (written meanwhile by
        a newer snapshot) is left as it was and counted in the log.
        """
        counts: dict[str, int] = {}
        for collection, schema in self._typed:
            legacy = schema.legacy_filter()
            ops: list[Any] = []
            counts[collection.name] = 0
            for doc in collection.find(legacy):
                typed = schema.encode(doc)
                if typed != doc:
                    ops.append(pymongo.ReplaceOne({"_id": doc["_id"], **legacy}, typed))
                if len(ops) >= MIGRATION_BATCH:
                    counts[collection.name] += self._rewrite(collection, ops)
                    ops = []
            counts[collection.name] += self._rewrite(collection, ops)
        self.db[META].update_one({"_id": "schema"}, {"$set": {"version": VERSION}}, upsert=True)
        if any(counts.values()):
            log.info("report store %s: documents given BSON types: %s", redact(self.url), counts)
        return counts

    def _rewrite(self, collection: Any, ops: list[Any]) -> int:
        if not ops:
            return 0
        try:
            return collection.bulk_write(ops, ordered=False).modified_count
        except pymongo.errors.BulkWriteError as exc:
            clashes = [e for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
            if len(clashes) < len(exc.details.get("writeErrors", [])):
                raise
            log.warning("report store %s: %d older %s document(s) left untyped: a typed one has the same key",
                        redact(self.url), len(clashes), collection.name)
            return exc.details.get("nModified", 0)

    def _bulk(self, collection: Any, ops: list) -> None:
        if not ops:
            return
        self._prepare(write=True)
        try:
            collection.bulk_write(ops, ordered=False)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def _find(self, collection: Any, schema: Schema, query: dict[str, Any], newest: bool = False,
              limit: int = 0) -> list[dict[str, Any]]:
        """Decoded documents matching a plain-valued query (encoded here)."""
        self._prepare(write=False)
        try:
            cursor = collection.find(schema.encode(query), {"_id": 0})
            if newest:
                cursor = cursor.sort([("created_at", -1), ("_id", -1)])
            return [schema.decode(d) for d in cursor.limit(limit)]
        except self._errors as exc:
            raise self._fail(exc) from exc

    def upsert_campaign_reports(self, docs: Iterable[dict[str, Any]]) -> None:
        ops = []
        for d in map(CAMPAIGN_REPORTS.encode, docs):
            key = {k: d[k] for k in ("tenant_id", "campaign_id", "job_id")}
            ops.append(pymongo.ReplaceOne(key, d, upsert=True))
        self._bulk(self.reports, ops)

    def campaign_report(self, tenant: str, campaign: str, job: str | None) -> dict[str, Any] | None:
        key = {"tenant_id": tenant, "campaign_id": campaign, "job_id": job}
        found = self._find(self.reports, CAMPAIGN_REPORTS, key)
        return found[0] if found else None

    def campaign_reports(self, tenant: str, campaign: str) -> list[dict[str, Any]]:
        docs = self._find(self.reports, CAMPAIGN_REPORTS, {"tenant_id": tenant, "campaign_id": campaign})
        return sorted(docs, key=lambda d: d["job_id"] or "")

    def upsert_journeys(self, docs: Iterable[dict[str, Any]]) -> None:
        ops = []
        for d in map(USER_JOURNEYS.encode, docs):
            key = {k: d[k] for k in ("tenant_id", "campaign_id", "job_id", "user_id")}
            ops.append(pymongo.UpdateOne(key, {"$set": {**d, "journey_path": list(d.get("journey_path", []))}},
                                         upsert=True))
        self._bulk(self.journeys, ops)

    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any] | None:
        key = {"tenant_id": tenant, "campaign_id": campaign, "job_id": job, "user_id": user}
        found = self._find(self.journeys, USER_JOURNEYS, key)
        if not found:
            return None
        doc = found[0]
        doc["journey_path"] = [{k: s.get(k) for k in ("node", "choice", "ts")} for s in doc.get("journey_path", [])]
        for f in JOURNEY_FIELDS:
            doc.setdefault(f, None)
        return doc

    def journey_lengths(self, tenant: str, campaign: str, job: str, users: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        self._prepare(write=False)
        try:
            for start in range(0, len(users), 500):
                query = USER_JOURNEYS.encode({"tenant_id": tenant, "campaign_id": campaign, "job_id": job})
                query["user_id"] = {"$in": users[start:start + 500]}
                for doc in self.journeys.find(query, {"_id": 0, "user_id": 1, "journey_path": 1}):
                    out[doc["user_id"]] = len(doc.get("journey_path") or [])
        except self._errors as exc:
            raise self._fail(exc) from exc
        return out

    def delete_journeys(self, tenant: str, campaign: str) -> None:
        self._prepare(write=True)
        try:
            self.journeys.delete_many(USER_JOURNEYS.encode({"tenant_id": tenant, "campaign_id": campaign}))
        except self._errors as exc:
            raise self._fail(exc) from exc

    def upsert_overview(self, doc: dict[str, Any]) -> None:
        typed = OVERVIEWS.encode(doc)
        key = {k: typed[k] for k in ("tenant_id", "report_type", "report_date")}
        self._bulk(self.overviews, [pymongo.ReplaceOne(key, typed, upsert=True)])

    def overview(self, tenant: str, report_type: str, report_date: str) -> dict[str, Any] | None:
        """The overview of the period starting on local date `report_date`, in the timezone it was computed in.

        Stored under the instant that date starts at in that timezone, which
        this query does not know: it reads the few candidates a timezone
        could give and keeps the one of that local date (the latest computed
        if the tenant's timezone changed between two runs).
        """
        try:
            midnight = datetime.combine(date.fromisoformat(report_date), time(), timezone.utc)
        except (TypeError, ValueError):
            raise ValidationError("report_date", "must be a date YYYY-MM-DD") from None
        span = {"$gte": midnight + EARLIEST_MIDNIGHT, "$lte": midnight + LATEST_MIDNIGHT}
        found = [d for d in self._find(self.overviews, OVERVIEWS,
                                       {"tenant_id": tenant, "report_type": report_type, "report_date": span})
                 if d["report_date"] == report_date]
        return max(found, key=lambda d: d.get("computed_at") or "") if found else None

    def insert_reconcile(self, doc: dict[str, Any]) -> None:
        self._bulk(self.reconciles, [pymongo.InsertOne(RECONCILES.encode(doc))])

    def reconcile_reports(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._find(self.reconciles, RECONCILES, {"tenant_id": tenant}, newest=True, limit=limit)

    def put_state(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self._bulk(self.state_docs, [pymongo.ReplaceOne({"kind": kind, "key": key},
                                                        {"kind": kind, "key": key, "doc": doc}, upsert=True)])

    def state(self, kind: str, key: str) -> dict[str, Any] | None:
        try:
            found = self.state_docs.find_one({"kind": kind, "key": key}, {"_id": 0})
        except self._errors as exc:
            raise self._fail(exc) from exc
        return found["doc"] if found else None

    def states(self, kind: str) -> dict[str, dict[str, Any]]:
        try:
            return {d["key"]: d["doc"] for d in self.state_docs.find({"kind": kind}, {"_id": 0})}
        except self._errors as exc:
            raise self._fail(exc) from exc

    def delete_state(self, kind: str, key: str) -> None:
        try:
            self.state_docs.delete_one({"kind": kind, "key": key})
        except self._errors as exc:
            raise self._fail(exc) from exc

    def ping(self) -> None:
        try:
            self.client.admin.command("ping")
        except self._errors as exc:
            raise self._fail(exc) from exc

    def close(self) -> None:
        self.client.close()
