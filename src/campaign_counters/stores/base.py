"""The report-store interface: small on purpose, so MongoDB and SQLite share it.

Documents carry the seed's field names (`tenant_id`, `campaign_id`,
`job_id`, ...).  Every write is an upsert of absolute values keyed by the
document's natural key, so writing the same snapshot twice changes nothing:
a journey is written whole (its `journey_path` replaced), never appended to.
The store also keeps the durable copy of what Redis cannot afford to lose
(`put_state`: scripts, campaign owners, timezones, the epoch marker).
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
        """Replace UserJourneyReports keyed by (tenant_id, campaign_id, job_id, user_id), `journey_path` included."""

    @abc.abstractmethod
    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def journey_lengths(self, tenant: str, campaign: str, job: str, users: list[str]) -> dict[str, int]:
        """Stored journey steps per user (users without a stored journey are left out)."""

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
    def put_state(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        """Replace one durable state document (kind: owner, script, timezone, epoch, flag, ...)."""

    @abc.abstractmethod
    def state(self, kind: str, key: str) -> dict[str, Any] | None:
        """One durable state document, or None."""

    @abc.abstractmethod
    def states(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every durable state document of a kind, by key."""

    @abc.abstractmethod
    def delete_state(self, kind: str, key: str) -> None:
        """Forget one durable state document (absent: nothing happens)."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise BackendError when the store cannot be reached."""

    def close(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"
