"""Grafana alert rules (unified alerting, file provisioning format) over the operations figures.

Each rule reads one field of the operations hash the scheduler tick writes,
takes its last value and compares it with a threshold. The thresholds are
the constants below: change one and export again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dashboards import KEYS, OPERATIONS_UID, operations
from .panels import DATASOURCE, DATASOURCE_UID, TAG

BACKLOG = 500  # campaigns waiting for a snapshot
REJECTED_PER_MINUTE = 10.0
MEMORY_PCT = 80.0
EXPRESSIONS = {"type": "__expr__", "uid": "__expr__"}


@dataclass(frozen=True)
class Rule:
    uid: str
    title: str
    field: str  # of the operations hash
    above: float
    hold: str  # how long the condition must hold before the alert fires
    severity: str
    summary: str


RULES = (
    Rule("cc-nightly-drift", "Drift found by the nightly check", "drift_tenants", 0, "0s", "critical",
         "The last nightly check of {{ $values.B }} tenant(s) found live counters or snapshots that differ "
         "from the history: see the operations dashboard, then `campaign-counters reconcile --repair`."),
    Rule("cc-nightly-overdue", "Nightly check not run by 01:00 local time", "nightly_overdue_tenants", 0, "0s",
         "warning", "{{ $values.B }} tenant(s) have no nightly check of the day that ended: is the scheduler "
                    "running, a worker listening, CAMPAIGN_COUNTERS_HISTORY set?"),
    Rule("cc-snapshot-backlog", "Snapshot backlog", "pending_snapshots", BACKLOG, "10m", "warning",
         "{{ $values.B }} campaigns have changes not yet persisted: are the workers keeping up?"),
    Rule("cc-rejected-rate", "Rejected events", "rejected_per_minute", REJECTED_PER_MINUTE, "5m", "warning",
         "{{ $values.B }} events per minute are rejected: see rejected events by reason on the operations dashboard."),
    Rule("cc-redis-memory", f"Redis memory above {MEMORY_PCT:g}%", "memory_used_pct", MEMORY_PCT, "5m", "critical",
         "The fullest Redis node uses {{ $values.B }}% of its memory: raise maxmemory or shorten retention."),
)


def _panel_id(field: str) -> int:
    """The operations panel that shows `field`, so an alert links to it."""
    for panel in operations()["panels"]:
        for target in panel.get("targets", []):
            if target.get("keyName") == KEYS.dashboard_ops() and field in target.get("field", "").split():
                return panel["id"]
    raise LookupError(f"no operations panel shows {field!r}")


def _rule(rule: Rule) -> dict[str, Any]:
    query = {"refId": "A", "datasource": DATASOURCE, "type": "command", "command": "hget",
             "keyName": KEYS.dashboard_ops(), "field": rule.field}
    return {
        "uid": rule.uid, "title": rule.title, "condition": "C",
        "data": [
            {"refId": "A", "queryType": "", "relativeTimeRange": {"from": 600, "to": 0},
             "datasourceUid": DATASOURCE_UID, "model": query},
            {"refId": "B", "queryType": "", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
             "model": {"refId": "B", "datasource": EXPRESSIONS, "type": "reduce", "expression": "A",
                       "reducer": "last"}},
            {"refId": "C", "queryType": "", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
             "model": {"refId": "C", "datasource": EXPRESSIONS, "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": {"type": "gt", "params": [rule.above]}}]}},
        ],
        "dashboardUid": OPERATIONS_UID, "panelId": _panel_id(rule.field),
        "noDataState": "NoData", "execErrState": "Error", "for": rule.hold, "isPaused": False,
        "annotations": {"summary": rule.summary},
        "labels": {"service": TAG, "severity": rule.severity},
    }


def alert_rules() -> dict[str, Any]:
    """The provisioning file: one rule group, evaluated every minute."""
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": TAG, "folder": TAG, "interval": "1m",
                                         "rules": [_rule(r) for r in RULES]}]}
