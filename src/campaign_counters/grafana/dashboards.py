"""The three dashboards (campaign, tenant overview, operations): every key they read is named by the key schema.

Each panel reads one key of the read model that snapshots, the scheduler
tick and the nightly job publish, so the dashboards work the same on one
Redis server and on Redis Cluster.
"""

from __future__ import annotations

from typing import Any

from ..counters import dashboard as d
from ..counters.keys import CAMPAIGN_SCOPE, KeySchema
from .panels import bars, command, dashboard, gauge, heat_table, note, row, stat, stream_rows, time_series, variable

KEYS = KeySchema()
TENANT, CAMPAIGN, JOB = "${tenant}", "${campaign}", "${job}"

CAMPAIGN_UID, TENANT_UID, OPERATIONS_UID = "cc-campaign", "cc-tenant-overview", "cc-operations"
USERS = ("target_users_count", "sent_users_count", "interacted_users_count", "completed_users_count")
RATES = ("interaction_rate", "completion_rate")
TOTALS = ("total_target_users", "total_sent_users", "total_interacted_users", "total_interactions")
STALENESS = ("The figures are published by the snapshot of each changed campaign, which the scheduler starts "
             "every tick (10 s by default): they are at most one tick behind `campaign-counters report`.")
ANALYSIS_FRESHNESS = ("As of the last stored analysis (*Analysis computed at*): published when one is stored, by "
                      "`campaign-counters analyze --persist` or by the nightly check (so at most a night old when "
                      "the nightly check runs); not live, unlike the figures above.")


def _fields(*names: str) -> str:
    """The `field` of an HMGET query: names separated by spaces."""
    return " ".join(names)


def tenant_variable() -> dict[str, Any]:
    return variable("tenant", "Tenant", f"SMEMBERS {KEYS.dashboard_tenants()}")


def campaign() -> dict[str, Any]:
    """A campaign or one of its jobs: key figures, rates over time, nodes, funnel and drop-off."""
    scope = KEYS.dashboard(CAMPAIGN, JOB)
    series = command("xrange", KEYS.dashboard_series(CAMPAIGN, JOB))

    def nodes(figure: str) -> dict[str, Any]:
        return command("hgetall", KEYS.dashboard_nodes(CAMPAIGN, JOB, figure))

    panels = [
        note("About these numbers", f"{STALENESS} Job **All** is the campaign total: a user in two jobs "
                                    "counts once. Rates are percentages of the users sent a first message."),
        row("Key figures"),
        stat("Users", command("hmget", scope, _fields(*USERS)), w=12,
             description="Targeted, sent a first message, interacted, completed (reached an end node)."),
        stat("Interactions", command("hget", scope, "total_interactions"), w=4),
        stat("Average completion time", command("hget", scope, "avg_completion_time"), w=4, unit="s",
             description="From the first message to the first end node, over the users who completed."),
        stat("Status", command("hget", scope, "status"), w=4, text_values=True),
        gauge("Rates", command("hmget", scope, _fields(*RATES)), w=8, unit="percent"),
        stat("Report updated / published", command("hmget", scope, _fields("updated_at", "published_at")),
             w=16, text_values=True, description="When the counters last changed, and when this snapshot was published."),
        row("Over time: one point per snapshot that changed the figures"),
        time_series("Rates over time", series, list(RATES), w=12, h=8, unit="percent"),
        time_series("Users over time", series, list(USERS), w=12, h=8),
        time_series("Interactions over time", series, ["total_interactions"], w=12, h=8),
        time_series("Average completion time over time", series, ["avg_completion_time"], w=12, h=8, unit="s"),
        row("Nodes"),
        bars("Users who reached each node", nodes("reached"), w=12, h=9),
        bars("Choices made at each node", nodes("choices"), w=12, h=9,
             description="Interactions per button, named \"node / choice\"."),
        row("Funnel, in flow order"),
        bars("Conversion from the start node", nodes("conversion"), w=12, h=9, unit="percent",
             description="Users who reached the node, as a share of those who reached the start node."),
        bars("Drop-off at each node", nodes("drop_off"), w=12, h=9, unit="percent",
             description="Users who reached the node but none of the nodes after it (0 for end nodes)."),
        *journey_analysis(),
    ]
    variables = [
        tenant_variable(),
        variable("campaign", "Campaign", f"HKEYS {KEYS.dashboard_campaigns(TENANT)}"),
        variable("job", "Job", f"HKEYS {KEYS.dashboard_jobs(CAMPAIGN)}", all_value=CAMPAIGN_SCOPE),
    ]
    return dashboard(CAMPAIGN_UID, "Campaign", f"A campaign's live report. {STALENESS}", panels, variables)


def journey_analysis() -> list[dict[str, Any]]:
    """The campaign dashboard's panels of the latest stored journey analysis of the scope."""
    def part(figure: str) -> str:
        return KEYS.dashboard_analysis(CAMPAIGN, JOB, figure)

    summary = part("summary")
    times = _fields(*(f"completion_time_{name}" for name in ("mean", "median", "p90")))
    return [
        row("Journey analysis: the last stored analysis, not live"),
        note("About the analysis", f"{ANALYSIS_FRESHNESS} Definitions: docs/analysis.md. Drop-off states: "
                                   "*went_on* (reached a next node), *waiting* (idle for less than the inactivity "
                                   "window), *dropped* (idle for longer), as of the time it was computed.", h=3),
        stat("Analysis computed at / published / heatmap timezone",
             command("hmget", summary, _fields("computed_at", "published_at", "heatmap_timezone")),
             w=10, text_values=True, description=ANALYSIS_FRESHNESS),
        stat("Users analysed, completed", command("hmget", summary, _fields("users", "completion_time_completed")),
             w=7, description=ANALYSIS_FRESHNESS),
        stat("Inactivity window", command("hget", summary, "inactivity_window"), w=7, unit="s",
             description="Idle for less than this: waiting; for longer: dropped."),
        stat("Completion time: mean, median, p90", command("hmget", summary, times), w=12, unit="s",
             description="The mean is exact; the median and p90 come from a log-bucket histogram, within 2.2%. "
                         + ANALYSIS_FRESHNESS),
        bars("Median time spent at each node", command("hgetall", part("time_per_node")), w=12, h=9, unit="s",
             description="From arriving at a node to the next node of the user's path. " + ANALYSIS_FRESHNESS),
        bars("Transitions: users per move", command("hgetall", part("transitions")), w=12, h=12,
             description="Users who moved from one node to the next (\"from → to\"), every observed move. "
                         + ANALYSIS_FRESHNESS),
        bars("Moves that are not in the script", command("hgetall", part("off_script")), w=12, h=12,
             description="Transitions with no such edge in the script. " + ANALYSIS_FRESHNESS),
        bars("Drop-off states per node", command("hgetall", part("drop_off")), w=24, h=12,
             description="Per node reached, users who went on, are waiting there, or dropped (\"node / state\"). "
                         + ANALYSIS_FRESHNESS),
        bars("Unique users per choice", command("hgetall", part("choice_users")), w=12, h=9,
             description="Distinct users who made each choice (\"node / choice\"). " + ANALYSIS_FRESHNESS),
        bars("Clicks per choice", command("hgetall", part("choice_clicks")), w=12, h=9,
             description="Interactions per choice (\"node / choice\"), the node resolved by the script. "
                         + ANALYSIS_FRESHNESS),
        heat_table("Best time to send: interactions per weekday and hour", stream_rows(part("heatmap")),
                   list(d.HEATMAP_COLUMNS), w=24, h=8,
                   description="Interactions per local weekday and hour, in the tenant's timezone (*heatmap_timezone* "
                               "of the analysis). " + ANALYSIS_FRESHNESS),
    ]


def tenant_overview() -> dict[str, Any]:
    """A tenant's latest daily, weekly and monthly overviews, today so far, its nightly check, its campaigns."""
    panels = [note("About these numbers",
                   "Daily, weekly and monthly figures are exact: the nightly job computes them from the raw history "
                   "after each local midnight (weekly after a Sunday, monthly after a month's last day). Today's "
                   "figures are approximate (HyperLogLogs, about 1% error), refreshed by the scheduler every minute.")]
    for period in d.PERIODS:
        key = KEYS.dashboard_overview(TENANT, period)
        panels += [
            row(f"{period.capitalize()}: the latest period computed"),
            stat("First day", command("hget", key, "report_date"), w=4, text_values=True),
            stat("Campaigns", command("hmget", key, _fields("campaigns_count", "campaigns_completed",
                                                            "campaigns_running", "campaigns_error")), w=8),
            stat("Users and interactions", command("hmget", key, _fields(*TOTALS)), w=8),
            gauge("Interaction rate", command("hget", key, "avg_interaction_rate"), w=4, unit="percent"),
        ]
    today = KEYS.dashboard_overview(TENANT, d.TODAY)
    nightly = KEYS.dashboard_nightly(TENANT)
    panels += [
        row("Today so far (approximate)"),
        stat("Day", command("hmget", today, _fields("report_date", "published_at")), w=6, text_values=True),
        stat("Distinct users, all campaigns", command("hget", today, "distinct_users"), w=4),
        stat("Campaigns, users and interactions", command("hmget", today, _fields("campaigns_count", *TOTALS)), w=10),
        gauge("Interaction rate", command("hget", today, "avg_interaction_rate"), w=4, unit="percent"),
        row("Nightly correctness check"),
        stat("Last local day checked", command("hmget", nightly, _fields("day", "run_at")), w=8, text_values=True),
        stat("Reports checked, drifting metrics, campaigns repaired",
             command("hmget", nightly, _fields("checked", "drift", "repaired")), w=16),
        row("Campaigns"),
        stat("Campaigns and their latest status", command("hgetall", KEYS.dashboard_campaigns(TENANT)),
             w=24, h=6, text_values=True),
    ]
    return dashboard(TENANT_UID, "Tenant overview", "A tenant's daily, weekly and monthly overviews, today so far "
                     "and its nightly check.", panels, [tenant_variable()], time_from="now-7d", refresh="1m")


def operations() -> dict[str, Any]:
    """The service: pending snapshots, rejected events, spool, nightly checks, Redis memory."""
    ops = KEYS.dashboard_ops()
    series = command("xrange", KEYS.dashboard_ops_series())
    panels = [
        note("About these numbers", "Published by the scheduler's tick (10 s by default; the tenant figures at "
                                    "most once a minute). *Published at* says when: if it stops moving, the "
                                    "scheduler is not running and nothing here is current."),
        row("Now"),
        stat("Pending snapshots", command("hget", ops, "pending_snapshots"), w=4,
             description="Campaigns with changes not yet persisted to the report store."),
        stat("Rejected events per minute", command("hget", ops, "rejected_per_minute"), w=4,
             description="Averaged over the last 5 minutes."),
        stat("Rejected events", command("hmget", ops, _fields("rejected_total", "rejected_invalid",
                                                              "rejected_refused")), w=8,
             description="Invalid: failed validation. Refused: another tenant's or a closed campaign."),
        stat("Spool depth", command("hget", ops, "spool_depth"), w=4,
             description="Events waiting in the chat clients' local spools (0 when none reports)."),
        stat("Published at", command("hget", ops, "published_at"), w=4, text_values=True),
        gauge("Redis memory used (fullest node)", command("hget", ops, "memory_used_pct"), w=6, unit="percent",
              description="Of maxmemory, or of the machine's memory when Redis has no maxmemory."),
        stat("Redis memory", command("hmget", ops, _fields("memory_used_bytes", "memory_limit_bytes",
                                                           "memory_headroom_bytes")), w=10, unit="bytes"),
        stat("Tenants: nightly check overdue, drift found", command("hmget", ops, _fields(
            "nightly_overdue_tenants", "drift_tenants")), w=8,
             description="Overdue: the check of a local day had not run by 01:00 local time of the next day."),
        row("Over time: one point per tick that changed the figures"),
        time_series("Pending snapshots and spool", series, ["pending_snapshots", "spool_depth"], w=8, h=8),
        time_series("Rejected events (total)", series, ["rejected_total"], w=8, h=8),
        time_series("Redis memory used", series, ["memory_used_pct"], w=8, h=8, unit="percent"),
        row("Details"),
        bars("Rejected events by reason", command("hgetall", KEYS.dashboard_rejected()), w=12, h=8),
        stat("Spool by client", command("hgetall", KEYS.spool_status()), w=12, h=8, text_values=True),
        stat("Last local day checked, per tenant", command("hgetall", KEYS.dashboard_nightly_all("day")),
             w=8, h=8, text_values=True),
        bars("Drifting metrics found by the last check, per tenant",
             command("hgetall", KEYS.dashboard_nightly_all("drift")), w=8, h=8),
        stat("Last nightly run, per tenant", command("hgetall", KEYS.dashboard_nightly_all("run_at")),
             w=8, h=8, text_values=True),
    ]
    return dashboard(OPERATIONS_UID, "Operations", "campaign-counters in production: snapshots, rejected "
                     "events, spool, nightly checks, Redis memory.", panels, [], time_from="now-6h", refresh="30s")


def all_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    return {"campaign.json": campaign(), "tenant-overview.json": tenant_overview(), "operations.json": operations()}
