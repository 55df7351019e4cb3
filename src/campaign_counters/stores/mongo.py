"""MongoDB report store over PyMongo (sync: it runs inside RQ jobs).

Writes are `bulk_write` batches of upserts with absolute values; a
journey's `journey_path` is replaced whole. The durable state (what Redis
cannot afford to lose) lives in `CampaignCountersState`, keyed by (kind, key).
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlsplit

from ..connection import redact
from ..errors import BackendError
from .base import JOURNEY_FIELDS, ReportStore

DEFAULT_DB = "campaign_counters"


class MongoStore(ReportStore):
    def __init__(self, url: str, client: Any = None) -> None:
        try:
            import pymongo
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise BackendError("MongoDB needs the 'mongo' extra: pip install 'campaign-counters[mongo]'") from exc
        self.url = url
        self._pymongo = pymongo
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
        self._indexed = False

    def _fail(self, exc: Exception) -> BackendError:
        return BackendError(f"report store {redact(self.url)}: {type(exc).__name__}: {exc}")

    def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        asc = self._pymongo.ASCENDING
        try:
            self.reports.create_index([("tenant_id", asc), ("campaign_id", asc), ("job_id", asc)], unique=True)
            self.journeys.create_index(
                [("tenant_id", asc), ("campaign_id", asc), ("job_id", asc), ("user_id", asc)], unique=True
            )
            self.overviews.create_index([("tenant_id", asc), ("report_type", asc), ("report_date", asc)], unique=True)
            self.reconciles.create_index([("tenant_id", asc), ("created_at", asc)])
            self.state_docs.create_index([("kind", asc), ("key", asc)], unique=True)
        except self._errors as exc:
            raise self._fail(exc) from exc
        self._indexed = True

    def _bulk(self, collection: Any, ops: list) -> None:
        if not ops:
            return
        self._ensure_indexes()
        try:
            collection.bulk_write(ops, ordered=False)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def _find_one(self, collection: Any, query: dict) -> dict[str, Any] | None:
        try:
            doc = collection.find_one(query, {"_id": 0})
        except self._errors as exc:
            raise self._fail(exc) from exc
        return doc

    def upsert_campaign_reports(self, docs: Iterable[dict[str, Any]]) -> None:
        Replace = self._pymongo.ReplaceOne
        self._bulk(self.reports, [
            Replace({"tenant_id": d["tenant_id"], "campaign_id": d["campaign_id"], "job_id": d["job_id"]}, d, upsert=True)
            for d in docs
        ])

    def campaign_report(self, tenant: str, campaign: str, job: str | None) -> dict[str, Any] | None:
        return self._find_one(self.reports, {"tenant_id": tenant, "campaign_id": campaign, "job_id": job})

    def campaign_reports(self, tenant: str, campaign: str) -> list[dict[str, Any]]:
        try:
            docs = list(self.reports.find({"tenant_id": tenant, "campaign_id": campaign}, {"_id": 0}))
        except self._errors as exc:
            raise self._fail(exc) from exc
        return sorted(docs, key=lambda d: d["job_id"] or "")

    def upsert_journeys(self, docs: Iterable[dict[str, Any]]) -> None:
        Update = self._pymongo.UpdateOne
        ops = []
        for d in docs:
            key = {k: d[k] for k in ("tenant_id", "campaign_id", "job_id", "user_id")}
            ops.append(Update(key, {"$set": {**d, "journey_path": list(d.get("journey_path", []))}}, upsert=True))
        self._bulk(self.journeys, ops)

    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any] | None:
        doc = self._find_one(self.journeys, {"tenant_id": tenant, "campaign_id": campaign, "job_id": job, "user_id": user})
        if doc is None:
            return None
        doc["journey_path"] = [{k: s.get(k) for k in ("node", "choice", "ts")} for s in doc.get("journey_path", [])]
        for f in JOURNEY_FIELDS:
            doc.setdefault(f, None)
        return doc

    def journey_lengths(self, tenant: str, campaign: str, job: str, users: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            for start in range(0, len(users), 500):
                query = {"tenant_id": tenant, "campaign_id": campaign, "job_id": job,
                         "user_id": {"$in": users[start:start + 500]}}
                for doc in self.journeys.find(query, {"_id": 0, "user_id": 1, "journey_path": 1}):
                    out[doc["user_id"]] = len(doc.get("journey_path") or [])
        except self._errors as exc:
            raise self._fail(exc) from exc
        return out

    def delete_journeys(self, tenant: str, campaign: str) -> None:
        try:
            self.journeys.delete_many({"tenant_id": tenant, "campaign_id": campaign})
        except self._errors as exc:
            raise self._fail(exc) from exc

    def upsert_overview(self, doc: dict[str, Any]) -> None:
        key = {k: doc[k] for k in ("tenant_id", "report_type", "report_date")}
        self._bulk(self.overviews, [self._pymongo.ReplaceOne(key, doc, upsert=True)])

    def overview(self, tenant: str, report_type: str, report_date: str) -> dict[str, Any] | None:
        return self._find_one(self.overviews, {"tenant_id": tenant, "report_type": report_type, "report_date": report_date})

    def insert_reconcile(self, doc: dict[str, Any]) -> None:
        self._bulk(self.reconciles, [self._pymongo.InsertOne(dict(doc))])

    def reconcile_reports(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        try:
            cur = self.reconciles.find({"tenant_id": tenant}, {"_id": 0}).sort([("created_at", -1), ("_id", -1)]).limit(limit)
            return list(cur)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def put_state(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self._bulk(self.state_docs, [self._pymongo.ReplaceOne({"kind": kind, "key": key},
                                                         {"kind": kind, "key": key, "doc": doc}, upsert=True)])

    def state(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self._find_one(self.state_docs, {"kind": kind, "key": key})
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
