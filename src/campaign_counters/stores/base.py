"""The report-store interface: small on purpose, so MongoDB and SQLite share it.

Documents carry the seed's field names (`tenant_id`, `campaign_id`,
`job_id`, ...).  Every write is an upsert of absolute values keyed by the
document's natural key, so writing the same snapshot twice changes nothing.
Journey steps are keyed by their journal entry id (`sid`) and merged, never
appended blindly, so a snapshot retried after a crash adds no duplicates.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable

from ..connection import redact

JOURNEY_FIELDS = ("completed", "exit_node", "completion_time", "total_interactions")


class ReportStore(abc.ABC):
    """Where snapshots, overviews and reconcile results are kept."""

    url: str

    @abc.abstractmethod
    def upsert_campaign_reports(self, docs: Iterable[dict[str, Any]]) -> None:
        """Replace CampaignReports documents keyed by (tenant_id, campaign_id, job_id)."""

    @abc.abstractmethod
    def campaign_report(self, tenant: str, campaign: str, job: str | None) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def campaign_reports(self, tenant: str, campaign: str) -> list[dict[str, Any]]:
        """All documents of a campaign (every job and the total), job_id order."""

    @abc.abstractmethod
    def upsert_journeys(self, docs: Iterable[dict[str, Any]]) -> None:
        """Merge UserJourneyReports: summary fields replaced, `journey_path` steps merged by `sid`."""

    @abc.abstractmethod
    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def delete_journeys(self, tenant: str, campaign: str) -> None:
        """Forget a campaign's journeys (a repair rewrites them from a new journal)."""

    @abc.abstractmethod
    def upsert_overview(self, doc: dict[str, Any]) -> None:
        """Replace an OverviewReports document keyed by (tenant_id, report_type, report_date)."""

    @abc.abstractmethod
    def overview(self, tenant: str, report_type: str, report_date: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def insert_reconcile(self, doc: dict[str, Any]) -> None:
        """Add a ReconcileReports document (history of checks; never replaced)."""

    @abc.abstractmethod
    def reconcile_reports(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        """Latest reconcile results of a tenant, newest first."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise BackendError when the store cannot be reached."""

    def close(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"


def sid_order(sid: str) -> tuple[int, int, int]:
    """Sort key of a step id `<journal entry id>.<position in the entry>` (or of an entry id).

    Journal entry ids are Redis stream ids (`<ms>-<seq>`), so this is arrival order.
    """
    entry, _, pos = sid.partition(".")
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0), int(pos or 0)


def merge_steps(*parts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journey order over steps from several places: by time, then by arrival; one step per `sid`.

    A later part wins for a `sid` present in several (the live journal over the store).
    """
    unique: dict[str, dict[str, Any]] = {}
    for part in parts:
        unique.update((s["sid"], s) for s in part)
    return sorted(unique.values(), key=lambda s: (s["ts"], sid_order(s["sid"])))
