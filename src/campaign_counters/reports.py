"""Report shapes of docs/metrics.md, built from per-scope aggregates.

Pure functions, no I/O: the live path (counters read from Redis) and the
nightly recompute (events replayed from history) both end here, so a report
means the same thing whichever way its numbers were gathered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .script import FlowGraph

METRICS = (
    "target_users_count",
    "sent_users_count",
    "interacted_users_count",
    "completed_users_count",
    "total_interactions",
    "interaction_rate",
    "completion_rate",
    "avg_completion_time",
    "node_analytics",
    "funnel_data",
)


@dataclass
class Aggregate:
    """What a report needs for one scope (a job, or the campaign total)."""

    target: int = 0
    sent: int = 0
    interacted: int = 0
    completed: int = 0
    interactions: int = 0
    completion_ms: int = 0
    reached: dict[str, int] = field(default_factory=dict)
    continued: dict[str, int] = field(default_factory=dict)
    choices: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str | None = None
    updated_at_ms: int | None = None


def pct(part: float, whole: float) -> float:
    return part / whole * 100 if whole else 0.0


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_ms(when: datetime) -> int:
    """A datetime as Unix milliseconds, cut to the millisecond as BSON dates are (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def node_analytics(agg: Aggregate, graph: FlowGraph | None) -> dict[str, Any]:
    nodes = list(graph.nodes) if graph else []
    known = set(nodes)
    extra = sorted((set(agg.reached) | set(agg.choices)) - known)
    return {
        n: {"reached_count": agg.reached.get(n, 0), "choices": dict(sorted(agg.choices.get(n, {}).items()))}
        for n in nodes + extra
    }


def funnel(agg: Aggregate, graph: FlowGraph | None) -> list[dict[str, Any]]:
    if graph is None:
        return []
    start_reached = agg.reached.get(graph.start, 0) if graph.start else 0
    out = []
    for n in graph.flow_sequence:
        reached = agg.reached.get(n, 0)
        dropped = 0.0
        if reached and not graph.is_end(n):
            dropped = pct(reached - agg.continued.get(n, 0), reached)
        out.append(
            {
                "node": n,
                "reached_count": reached,
                "conversion_rate": pct(reached, start_reached),
                "drop_off_rate": dropped,
            }
        )
    return out


def build_report(
    tenant: str, campaign: str, job: str | None, agg: Aggregate, graph: FlowGraph | None
) -> dict[str, Any]:
    """The report object of the `report` command and the store documents (docs/metrics.md)."""
    return {
        "tenant": tenant,
        "campaign": campaign,
        "job": job,
        "target_users_count": agg.target,
        "sent_users_count": agg.sent,
        "interacted_users_count": agg.interacted,
        "completed_users_count": agg.completed,
        "total_interactions": agg.interactions,
        "interaction_rate": pct(agg.interacted, agg.sent),
        "completion_rate": pct(agg.completed, agg.sent),
        "avg_completion_time": (agg.completion_ms / agg.completed / 1000) if agg.completed else None,
        "node_analytics": node_analytics(agg, graph),
        "funnel_data": funnel(agg, graph),
        "status": agg.status,
        "updated_at": iso_ms(agg.updated_at_ms),
    }
