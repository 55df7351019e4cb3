"""Plans that write the dashboards' read model: hashes and streams that Grafana reads one key each.

The figures arrive ready-made, as strings (persist/dashboard.py makes them
from reports); these plans know where they go and how to replace them so
that a reader never sees a hash half empty: new values are written over the
old ones first, then the fields that are gone are removed. Field names are
listed here once, for the writers and for the dashboards generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..reports import METRICS
from .core import CountersCore
from .keys import ANALYSIS_FIGURES, DASHBOARD_ROUTE, NODE_FIGURES
from .transport import Cmd, LuaScript, Plan, as_dict, call, on_every_node

REPLACE_IF_NEWER = LuaScript.load("replace_if_newer.lua")
REPLACE_ROWS = LuaScript.load("replace_rows.lua")

SCALAR_METRICS = tuple(m for m in METRICS if m not in ("node_analytics", "funnel_data"))
CAMPAIGN_FIELDS = (*SCALAR_METRICS, "status", "updated_at", "published_at")
PERIODS = ("daily", "weekly", "monthly")
TODAY = "today"  # the overview "period" of today so far, approximate
OVERVIEW_FIGURES = ("campaigns_count", "total_target_users", "total_sent_users", "total_interacted_users",
                    "total_interactions", "avg_interaction_rate")
OVERVIEW_FIELDS = ("report_date", *OVERVIEW_FIGURES, "campaigns_completed", "campaigns_running",
                   "campaigns_error", "computed_at")
TODAY_FIELDS = ("report_date", *OVERVIEW_FIGURES, "distinct_users", "published_at")
NIGHTLY_FIELDS = ("day", "run_at", "checked", "drift", "repaired")
NIGHTLY_SUMMARY = ("day", "run_at", "drift")  # per-tenant hashes of the operations dashboard
OPS_FIELDS = ("published_at", "pending_snapshots", "rejected_total", "rejected_invalid", "rejected_refused",
              "rejected_per_minute", "spool_depth", "memory_used_bytes", "memory_limit_bytes",
              "memory_used_pct", "memory_headroom_bytes")
OPS_SERIES = ("pending_snapshots", "rejected_total", "spool_depth", "memory_used_pct")
TENANT_OPS_FIELDS = ("nightly_overdue_tenants", "drift_tenants", "tenants_published_ms")
COMPLETION_TIME = ("completed", "mean", "median", "p90", "max_relative_error")  # the analysis' completion_time
ANALYSIS_SUMMARY = ("computed_at", "published_at", "inactivity_window", "users", "heatmap_timezone",
                    *(f"completion_time_{name}" for name in COMPLETION_TIME))
ANALYSIS_HASHES = tuple(f for f in ANALYSIS_FIGURES if f not in ("summary", "heatmap"))
DROP_OFF_STATES = ("went_on", "waiting", "dropped")
HEATMAP_COLUMNS = ("weekday", *(f"{hour:02d}" for hour in range(24)))


@dataclass(frozen=True)
class SeriesCap:
    """How much history a dashboard stream keeps: at most `entries`, none older than `days`."""

    entries: int = 10_000
    days: float = 35.0

    @property
    def age_ms(self) -> int:
        return int(self.days * 86_400_000)


@dataclass
class ScopeFigures:
    """What the dashboards show of one scope of a campaign (a job, or the total: job None)."""

    job: str | None
    metrics: dict[str, str]  # the scope's hash: metric name -> value
    series: dict[str, str]  # one stream entry: the numeric metrics
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # NODE_FIGURES -> {node: value}


@dataclass
class AnalysisFigures:
    """What the dashboards show of one scope's latest stored analysis."""

    job: str | None
    summary: dict[str, str]  # ANALYSIS_SUMMARY -> value
    hashes: dict[str, dict[str, str]]  # ANALYSIS_HASHES -> {label: value}
    heatmap: list[list[str]]  # one row per weekday: HEATMAP_COLUMNS' values


def _flat(mapping: dict[str, str]) -> list[str]:
    return [x for pair in mapping.items() for x in pair]


def _decoded(reply: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in as_dict(reply).items()}


def replace_hashes(p: CountersCore, route: str, contents: dict[str, dict[str, str]]) -> Plan:
    """Make each hash hold exactly `contents[key]` (an empty mapping: no key)."""
    keys = list(contents)
    olds = yield from call(p.router, [Cmd(route, ("HKEYS", key)) for key in keys])
    cmds = []
    for key, old in zip(keys, olds):
        new = contents[key]
        if new:
            cmds.append(Cmd(route, ("HSET", key, *_flat(new))))
        stale = [f for f in old if f.decode() not in new]
        if stale:
            cmds.append(Cmd(route, ("HDEL", key, *stale)))
    if cmds:
        yield from call(p.router, cmds)


def append_if_changed(p: CountersCore, route: str, entries: dict[str, dict[str, str]], cap: SeriesCap,
                      now_ms: int) -> Plan:
    """Add each entry to its stream unless it equals the stream's last one; trim to `cap`.

    Returns the streams that got an entry. Entry ids are the server's clock,
    which is what Grafana plots them by.
    """
    keys = list(entries)
    lasts = yield from call(p.router, [Cmd(route, ("XREVRANGE", key, "+", "-", "COUNT", 1)) for key in keys])
    cmds, added = [], []
    for key, last in zip(keys, lasts):
        fields = entries[key]
        if fields and not (last and _decoded(last[0][1]) == fields):
            cmds.append(Cmd(route, ("XADD", key, "MAXLEN", cap.entries, "*", *_flat(fields))))
            added.append(key)
        cmds.append(Cmd(route, ("XTRIM", key, "MINID", max(0, now_ms - cap.age_ms))))
    yield from call(p.router, cmds)
    return added


def write_campaign(p: CountersCore, tenant: str, campaign: str, scopes: list[ScopeFigures], status: str,
                     cap: SeriesCap, ttl: int | None, now_ms: int) -> Plan:
    """Replace a campaign's dashboard keys, list it under its tenant; expire them with `ttl` (None: keep).

    Returns the series streams that got an entry (scopes whose metrics changed).
    """
    k = p.keys
    hashes: dict[str, dict[str, str]] = {}
    for scope in scopes:
        hashes[k.dashboard(campaign, scope.job)] = scope.metrics
        for figure in NODE_FIGURES:
            hashes[k.dashboard_nodes(campaign, scope.job, figure)] = scope.nodes.get(figure, {})
    hashes[k.dashboard_jobs(campaign)] = {s.job: s.metrics.get("status", "") for s in scopes if s.job is not None}
    yield from replace_hashes(p, campaign, hashes)
    series = {k.dashboard_series(campaign, s.job): s.series for s in scopes}
    added = yield from append_if_changed(p, campaign, series, cap, now_ms)
    lifetime = ("EXPIRE", ttl) if ttl is not None else ("PERSIST",)
    analysis = [k.dashboard_analysis(campaign, s.job, f) for s in scopes for f in ANALYSIS_FIGURES]
    cmds = [Cmd(campaign, (lifetime[0], key, *lifetime[1:])) for key in [*hashes, *series, *analysis]]
    cmds += [Cmd(DASHBOARD_ROUTE, ("HSET", k.dashboard_campaigns(tenant), campaign, status)),
             Cmd(DASHBOARD_ROUTE, ("SADD", k.dashboard_tenants(), tenant))]
    yield from call(p.router, cmds)
    return added


def write_analysis(p: CountersCore, campaign: str, scopes: list[AnalysisFigures]) -> Plan:
    """Replace the analysis keys of each scope the dashboards show (its hash exists), with that hash's
    lifetime, so they expire with the campaign's. Returns the jobs written (None: the campaign total)."""
    k = p.keys
    ttls = yield from call(p.router, [Cmd(campaign, ("PTTL", k.dashboard(campaign, s.job))) for s in scopes])
    shown = [(s, ttl) for s, ttl in zip(scopes, ttls) if ttl != -2]  # -2: no such key
    hashes: dict[str, dict[str, str]] = {}
    for s, _ in shown:
        hashes[k.dashboard_analysis(campaign, s.job, "summary")] = s.summary
        for figure in ANALYSIS_HASHES:
            hashes[k.dashboard_analysis(campaign, s.job, figure)] = s.hashes.get(figure, {})
    yield from replace_hashes(p, campaign, hashes)
    cmds = []
    for s, ttl in shown:
        heatmap = k.dashboard_analysis(campaign, s.job, "heatmap")
        values = [v for row in s.heatmap for v in row]
        cmds.append(Cmd(campaign, ("EVALSHA", REPLACE_ROWS.sha, 1, heatmap, len(HEATMAP_COLUMNS), *HEATMAP_COLUMNS,
                                   *values), REPLACE_ROWS))
        for figure in ANALYSIS_FIGURES:
            key = k.dashboard_analysis(campaign, s.job, figure)
            cmds.append(Cmd(campaign, ("PEXPIRE", key, ttl) if ttl >= 0 else ("PERSIST", key)))
    if cmds:
        yield from call(p.router, cmds)
    return [s.job for s, _ in shown]


def write_if_newer(p: CountersCore, key: str, order: str, figures: dict[str, str]) -> Plan:
    """Replace a fixed-tag hash with `figures` unless it holds a newer `order` value; True if replaced."""
    args = ("EVALSHA", REPLACE_IF_NEWER.sha, 1, key, order, figures[order], *_flat(figures))
    (replaced,) = yield from call(p.router, [Cmd(DASHBOARD_ROUTE, args, REPLACE_IF_NEWER)])
    return replaced == 1


def write_overview(p: CountersCore, tenant: str, period: str, figures: dict[str, str]) -> Plan:
    """Keep a tenant's latest overview of a period (by report_date) for the tenant dashboard."""
    return (yield from write_if_newer(p, p.keys.dashboard_overview(tenant, period), "report_date", figures))


def write_nightly_run(p: CountersCore, tenant: str, figures: dict[str, str]) -> Plan:
    """Keep a tenant's latest nightly check (by day checked) for the dashboards and alerts."""
    return (yield from write_if_newer(p, p.keys.dashboard_nightly(tenant), "day", figures))


def nightly_runs(p: CountersCore, tenants: list[str]) -> Plan:
    """tenant -> its latest nightly check's figures (tenants never checked are left out)."""
    replies = yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HGETALL", p.keys.dashboard_nightly(t)))
                                         for t in tenants])
    return {t: _decoded(r) for t, r in zip(tenants, replies) if r}


def write_tenants(p: CountersCore, today: dict[str, dict[str, str]], nightly: dict[str, dict[str, str]],
                    ops: dict[str, str]) -> Plan:
    """Per tenant today's figures; per nightly figure a hash tenant -> value; the tenant counts of the ops hash."""
    k = p.keys
    hashes = {k.dashboard_overview(t, TODAY): figures for t, figures in today.items()}
    hashes.update({k.dashboard_nightly_all(name): values for name, values in nightly.items()})
    yield from replace_hashes(p, DASHBOARD_ROUTE, hashes)
    yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HSET", k.dashboard_ops(), *_flat(ops)))])


def tenants_published_ms(p: CountersCore) -> Plan:
    """When the tenant figures were last published (epoch ms), or None."""
    (raw,) = yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HGET", p.keys.dashboard_ops(),
                                                              "tenants_published_ms"))])
    return int(raw) if raw is not None else None


def prune_campaigns(p: CountersCore, tenant: str) -> Plan:
    """Unlist a tenant's campaigns whose dashboard keys expired (with the campaign's); returns them."""
    k = p.keys
    (listed,) = yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HKEYS", k.dashboard_campaigns(tenant)))])
    campaigns = [c.decode() for c in listed]
    exists = yield from call(p.router, [Cmd(c, ("EXISTS", k.dashboard(c))) for c in campaigns])
    gone = [c for c, e in zip(campaigns, exists) if not e]
    if gone:
        yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HDEL", k.dashboard_campaigns(tenant), *gone))])
    return gone


@dataclass
class OpsInputs:
    """What the operations figures are computed from, besides the dirty and rejected indexes."""

    memory: list[dict[str, int]]  # per node: used_memory, maxmemory, total_system_memory
    spool: dict[str, str]  # client -> what it reported
    earlier: tuple[int, dict[str, str]] | None  # (ms, ops figures then): the rate window's start, or later


def operations_inputs(p: CountersCore, since_ms: int) -> Plan:
    """Memory of every node, the spool reports, and the ops figures as they were at `since_ms`."""
    k = p.keys
    infos = yield from on_every_node(p.router, ("INFO", "memory"))
    spool, before, oldest = yield from call(p.router, [
        Cmd(None, ("HGETALL", k.spool_status())),
        Cmd(DASHBOARD_ROUTE, ("XREVRANGE", k.dashboard_ops_series(), since_ms, "-", "COUNT", 1)),
        Cmd(DASHBOARD_ROUTE, ("XRANGE", k.dashboard_ops_series(), "-", "+", "COUNT", 1)),
    ])
    earlier = None
    if before:  # the figures were unchanged from this entry until the window's start
        earlier = (since_ms, _decoded(before[0][1]))
    elif oldest:  # the stream is younger than the window
        earlier = (int(oldest[0][0].split(b"-")[0]), _decoded(oldest[0][1]))
    return OpsInputs([_memory(info) for info in infos], _decoded(spool), earlier)


def _memory(info: bytes) -> dict[str, int]:
    text = info.decode() if isinstance(info, bytes) else str(info)
    wanted = ("used_memory", "maxmemory", "total_system_memory")
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: int(values.get(name, 0)) for name in wanted}


def write_operations(p: CountersCore, ops: dict[str, str], rejected: dict[str, str], series: dict[str, str],
                       cap: SeriesCap, now_ms: int) -> Plan:
    """Write the ops figures and rejections by reason; add an ops stream entry if they changed."""
    k = p.keys
    yield from call(p.router, [Cmd(DASHBOARD_ROUTE, ("HSET", k.dashboard_ops(), *_flat(ops)))])
    yield from replace_hashes(p, DASHBOARD_ROUTE, {k.dashboard_rejected(): rejected})
    yield from append_if_changed(p, DASHBOARD_ROUTE, {k.dashboard_ops_series(): series}, cap, now_ms)
