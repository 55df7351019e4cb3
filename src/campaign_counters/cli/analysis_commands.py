"""Commands for analysts: runs compared side by side, journeys analysed."""

from __future__ import annotations

from typing import Any

import click

from ..comparison import compare_reports
from ..config import Config
from ..errors import ValidationError
from .app import main
from .options import (
    campaign_option, config_options, counters_for, emit, format_option, id_option, reader_store, say, store_for,
    tenant_option, window_option,
)
from .output import analysis_table, rows_csv


def comparison_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A comparison as flat rows (tests first, then every metric): the CSV shape."""
    rows = []
    for t in result["tests"]:
        rows.append({"metric": t["metric"], "test": "two_proportions",
                     "a": f"{t['a']['successes']}/{t['a']['trials']}", "b": f"{t['b']['successes']}/{t['b']['trials']}",
                     "difference": t["difference"], "relative_difference": None, "ci95_low": t["ci95_low"],
                     "ci95_high": t["ci95_high"], "p_value": t["p_value"], "significant": t["significant"]})
    rows += [{**r, "test": None} for r in result["metrics"]]
    return rows


@main.command()
@tenant_option
@campaign_option
@id_option("job", "jobs", multiple=True, help="A job (run) to compare: give it twice, A then B.")
@click.option("--from-store", is_flag=True, help="Compare the last snapshots in the report store instead of Redis.")
@format_option
@config_options()
def compare(cfg: Config, tenant: str, campaign: str, jobs: tuple[str, ...], from_store: bool, fmt: str) -> None:
    """Compare two jobs of a campaign: every metric side by side, and whether their rates differ.

    For each metric: A, B, difference (B - A) and relative difference
    ((B - A) / A, empty when A is 0). The interaction and completion rates
    also get a two-proportion test: the difference in percentage points, its
    95% interval and the p-value (significant: p < 0.05). CSV: one row per
    test, then per metric.

    \b
    Example:
      campaign-counters compare --tenant acme --campaign spring-sale --job run-1 --job run-2
    """
    if len(jobs) != 2 or jobs[0] == jobs[1]:
        raise ValidationError("job", "give exactly two different jobs: --job A --job B")
    if from_store:
        from ..persist.views import stored_report

        store = reader_store(cfg)
        result = compare_reports(*(stored_report(store, tenant, campaign, j) for j in jobs))
    else:
        result = counters_for(cfg).compare(tenant, campaign, jobs[0], jobs[1])
    if fmt == "csv":
        click.echo(rows_csv(comparison_rows(result)))
    else:
        emit(result, fmt)


def analysis_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """An analysis as flat rows, one section per part (the CSV shape)."""
    rows: list[dict[str, Any]] = [{"section": "summary", "metric": k, "value": result[k]}
                                  for k in ("tenant", "campaign", "job", "now", "inactivity_window", "users")]
    rows += [{"section": "completion_time", "metric": k, "value": v} for k, v in result["completion_time"].items()]
    for part in ("transitions", "drop_off", "time_per_node", "choices"):
        rows += [{"section": part, **r} for r in result[part]]
    heat = result["heatmap"]
    rows += [{"section": "heatmap", "timezone": heat["timezone"], "weekday": day, "hour": hour, "interactions": n}
             for day, hours in zip(heat["weekdays"], heat["interactions"]) for hour, n in enumerate(hours)]
    return rows


@main.command()
@tenant_option
@campaign_option
@id_option("job", required=False, help="A job (run) of the campaign [default: the campaign total].")
@window_option
@click.option("--persist", is_flag=True, help="Also store the analysis of the total and of every job in the "
                                              "campaign's CampaignReports documents (field `analysis`) and "
                                              "publish it on the campaign dashboard (Grafana).")
@format_option
@config_options()
def analyze(cfg: Config, tenant: str, campaign: str, job: str | None, window_s: int, persist: bool, fmt: str) -> None:
    """Analyse a campaign's journeys now: paths, drop-off states, time, unique choosers, best hours.

    Computed on demand from every user's record in Redis (one scan, in pages:
    O(users) time, memory bounded by nodes), never on the recording path.
    Heatmap hours are in the tenant's timezone. CSV: one row per value,
    `section` first.

    \b
    Example:
      campaign-counters analyze --tenant acme --campaign spring-sale --job run-1 --format table
    """
    from ..persist.analysis import live_analyses, persist_analysis

    counters = counters_for(cfg)
    if persist:
        results = live_analyses(counters, tenant, campaign, window_s=window_s)
        stored = persist_analysis(store_for(cfg), results, counters)
        say(f"stored {stored} analysis(es) in CampaignReports and on the campaign dashboard "
            "(scopes never snapshotted are skipped)")
        result = next((r for r in results if r["job"] == job), None)
        if result is None:
            result = live_analyses(counters, tenant, campaign, [job], window_s=window_s)[0]  # raises NotFound
    else:
        result = live_analyses(counters, tenant, campaign, [job], window_s=window_s)[0]
    if fmt == "csv":
        click.echo(rows_csv(analysis_rows(result)))
    elif fmt == "table":
        emit(analysis_table(result), fmt)
    else:
        emit(result, fmt)
