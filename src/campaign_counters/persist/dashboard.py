"""The dashboards' read model, published off the hot path: by snapshots, the scheduler tick and the nightly job.

A snapshot publishes the figures of the reports it has just persisted, so a
campaign panel shows exactly what `report` said at that snapshot: at most one
scheduler tick old. Numbers are written as text that parses back to the same
value (counts as integers, rates as Python's shortest round-trip float text,
which Grafana's Redis plugin parses to the same float64); a null is left out.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from ..config import dashboard_history
from ..counters import Counters
from ..counters import dashboard as d
from ..counters import maintenance as m
from ..reports import iso_ms

CHOICE_SEP = " / "  # a choice's field in the choices hash: "<node> / <choice>"
RATE_WINDOW_MS = 5 * 60_000  # rejected events per minute are averaged over this window


def text(value: Any) -> str:
    """A figure as Redis keeps it: ints as digits, floats as their shortest exact text."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def series_cap() -> d.SeriesCap:
    """How much history the dashboard streams keep (CAMPAIGN_COUNTERS_DASHBOARD_ENTRIES / _DAYS)."""
    entries, days = dashboard_history()
    return d.SeriesCap(entries, days)


def scope_figures(doc: dict[str, Any], published_at: str) -> d.ScopeFigures:
    """The dashboard figures of one report (a live report, or its CampaignReports document)."""
    scalars = {name: text(doc[name]) for name in d.SCALAR_METRICS if doc.get(name) is not None}
    metrics = dict(scalars)
    for name in ("status", "updated_at"):
        if doc.get(name) is not None:
            metrics[name] = text(doc[name])
    metrics["published_at"] = published_at
    analytics = doc.get("node_analytics") or {}
    funnel = doc.get("funnel_data") or []
    nodes = {
        "reached": {n: text(a["reached_count"]) for n, a in analytics.items()},
        "choices": {f"{n}{CHOICE_SEP}{c}": text(k) for n, a in analytics.items() for c, k in a["choices"].items()},
        "conversion": {step["node"]: text(step["conversion_rate"]) for step in funnel},
        "drop_off": {step["node"]: text(step["drop_off_rate"]) for step in funnel},
    }
    job = doc.get("job_id", doc.get("job"))
    return d.ScopeFigures(job, metrics, scalars, nodes)


def publish_campaign(counters: Counters, tenant: str, campaign: str, docs: Iterable[dict[str, Any]],
                     ttl: int | None = None, cap: d.SeriesCap | None = None) -> list[str]:
    """Publish a campaign's dashboards from the reports a snapshot just stored; `ttl` expires them
    with the campaign's keys. Returns the time series that got an entry (scopes that changed)."""
    now_ms = int(time.time() * 1000)
    scopes = [scope_figures(doc, iso_ms(now_ms) or "") for doc in docs]
    if not scopes:
        return []
    total = next((s for s in scopes if s.job is None), scopes[0])
    status = total.metrics.get("status", "")
    return counters.run(d.write_campaign(counters, tenant, campaign, scopes, status, cap or series_cap(),
                                           ttl, now_ms))


TRANSITION_SEP = " → "  # a move's field in the transitions hashes: "<from> → <to>"


def analysis_figures(job: str | None, analysis: dict[str, Any], published_at: str) -> d.AnalysisFigures:
    """The dashboard figures of one scope's analysis (the `analysis` field of its CampaignReports document)."""
    summary = {"computed_at": analysis["now"], "published_at": published_at,
               "inactivity_window": text(analysis["inactivity_window"]), "users": text(analysis["users"]),
               "heatmap_timezone": analysis["heatmap"]["timezone"]}
    ct = analysis["completion_time"]
    summary.update({f"completion_time_{name}": text(ct[name]) for name in d.COMPLETION_TIME
                    if ct.get(name) is not None})
    moves = {t["from"] + TRANSITION_SEP + t["to"]: t for t in analysis["transitions"]}
    hashes = {
        "transitions": {label: text(t["users"]) for label, t in moves.items()},
        "off_script": {label: text(t["users"]) for label, t in moves.items() if not t["in_script"]},
        "drop_off": {f"{row['node']}{CHOICE_SEP}{state}": text(row[state])
                     for row in analysis["drop_off"] for state in d.DROP_OFF_STATES},
        "choice_users": {f"{c['node']}{CHOICE_SEP}{c['choice']}": text(c["users"]) for c in analysis["choices"]},
        "choice_clicks": {f"{c['node']}{CHOICE_SEP}{c['choice']}": text(c["clicks"]) for c in analysis["choices"]},
        "time_per_node": {t["node"]: text(t["median"]) for t in analysis["time_per_node"]
                          if t.get("median") is not None},
    }
    heat = analysis["heatmap"]
    rows = [[day, *(text(n) for n in hours)] for day, hours in zip(heat["weekdays"], heat["interactions"])]
    return d.AnalysisFigures(job, summary, hashes, rows)


def publish_analyses(counters: Counters, analyses: Iterable[dict[str, Any]]) -> int:
    """Publish stored analyses (as `live_analyses` gives them) to their campaign dashboards; returns how many
    scopes were published (a scope the dashboards do not show, never snapshotted or expired, is skipped)."""
    published_at = iso_ms(int(time.time() * 1000)) or ""
    by_campaign: dict[str, list[d.AnalysisFigures]] = {}
    for a in analyses:
        by_campaign.setdefault(a["campaign"], []).append(analysis_figures(a["job"], a, published_at))
    return sum(len(counters.run(d.write_analysis(counters, campaign, scopes)))
               for campaign, scopes in by_campaign.items())


def operations_figures(dirty: list[tuple[str, str | None, Any]], rejected: dict[str, dict[str, int]],
                       inputs: d.OpsInputs, now_ms: int) -> tuple[dict[str, str], dict[str, str]]:
    """(ops hash, rejections by reason) from the tick's readings."""
    invalid = sum(rejected["by_field"].values())
    refused = sum(rejected["by_campaign"].values())
    total = invalid + refused
    rate = 0.0
    if inputs.earlier is not None:
        since_ms, before = inputs.earlier
        minutes = (now_ms - since_ms) / 60_000
        previous = int(before.get("rejected_total", 0))
        if minutes > 0 and total >= previous:
            rate = (total - previous) / minutes
    fullest = max(inputs.memory, key=_used_share, default=None)
    used = fullest["used_memory"] if fullest else 0
    limit = _memory_limit(fullest) if fullest else 0
    headroom = min((_memory_limit(n) - n["used_memory"] for n in inputs.memory), default=0)
    spool = sum(int(v) for v in inputs.spool.values() if v.strip().lstrip("-").isdigit())
    ops = {
        "published_at": iso_ms(now_ms) or "",
        "pending_snapshots": text(len(dirty)),
        "rejected_total": text(total),
        "rejected_invalid": text(invalid),
        "rejected_refused": text(refused),
        "rejected_per_minute": text(round(rate, 3)),
        "spool_depth": text(spool),
        "memory_used_bytes": text(used),
        "memory_limit_bytes": text(limit),
        "memory_used_pct": text(_used_share(fullest) * 100 if fullest else 0.0),
        "memory_headroom_bytes": text(headroom),
    }
    reasons = {f"invalid {f}": text(n) for f, n in rejected["by_field"].items()}
    reasons.update({f"refused {c}": text(n) for c, n in rejected["by_campaign"].items()})
    return ops, reasons


def _memory_limit(node: dict[str, int]) -> int:
    """A node's memory bound: its maxmemory, else the machine's memory."""
    return node["maxmemory"] or node["total_system_memory"]


def _used_share(node: dict[str, int]) -> float:
    limit = _memory_limit(node)
    return node["used_memory"] / limit if limit else 0.0


def publish_operations(counters: Counters, dirty: list[tuple[str, str | None, Any]],
                       cap: d.SeriesCap | None = None) -> dict[str, str]:
    """Publish the operations figures of this tick (`dirty`: the tick's pending snapshots); returns them.

    Memory is the fullest node's (used / maxmemory, or / the machine's memory
    without a maxmemory), so one panel and one alert cover a cluster.
    """
    now_ms = int(time.time() * 1000)
    inputs = counters.run(d.operations_inputs(counters, now_ms - RATE_WINDOW_MS))
    rejected = counters.run(m.rejected_counts(counters))
    ops, reasons = operations_figures(dirty, rejected, inputs, now_ms)
    series = {name: ops[name] for name in d.OPS_SERIES}
    counters.run(d.write_operations(counters, ops, reasons, series, cap or series_cap(), now_ms))
    return ops


def publish_overviews(counters: Counters, docs: Iterable[dict[str, Any]]) -> None:
    """Keep each tenant's latest overview per period for the tenant dashboard (older ones are ignored)."""
    for doc in docs:
        figures = {name: text(doc[name]) for name in d.OVERVIEW_FIELDS if doc.get(name) is not None}
        counters.run(d.write_overview(counters, doc["tenant_id"], doc["report_type"], figures))


def publish_nightly_run(counters: Counters, tenant: str, day_iso: str, output: dict[str, Any]) -> None:
    """Record a tenant's nightly check (the reconcile output) for the dashboards and the drift alert."""
    figures = {"day": day_iso, "run_at": iso_ms(int(time.time() * 1000)) or "",
               "checked": text(output["checked"]), "drift": text(len(output["drift"])),
               "repaired": text(len(output["repaired"]))}
    counters.run(d.write_nightly_run(counters, tenant, figures))
