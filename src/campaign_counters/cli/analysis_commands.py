"""Commands for analysts: runs compared side by side."""

from __future__ import annotations

from typing import Any

import click

from ..comparison import compare_reports
from ..config import Config
from ..errors import ValidationError
from .app import main
from .options import campaign_option, config_options, counters_for, emit, format_option, store_for, tenant_option
from .output import rows_csv


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
@click.option("--job", "jobs", multiple=True, required=True, help="A job (run) to compare: give it twice, A then B.")
@click.option("--from-store", is_flag=True, help="Compare the last snapshots in the report store instead of Redis.")
@format_option
@config_options
def compare(cfg: Config, tenant: str, campaign: str, jobs: tuple[str, ...], from_store: bool, fmt: str) -> None:
    """Compare two jobs of a campaign: every metric side by side, and whether their rates differ.

    For each metric: A, B, difference (B - A) and relative difference
    ((B - A) / A, empty when A is 0). The interaction and completion rates
    also get a two-proportion test: the difference in percentage points, its
    95% interval and the p-value (significant: p < 0.05). CSV: one row per
    test, then per metric.
    """
    if len(jobs) != 2 or jobs[0] == jobs[1]:
        raise ValidationError("job", "give exactly two different jobs: --job A --job B")
    if from_store:
        from ..persist.views import stored_report

        store = store_for(cfg)
        result = compare_reports(*(stored_report(store, tenant, campaign, j) for j in jobs))
    else:
        result = counters_for(cfg).compare(tenant, campaign, jobs[0], jobs[1])
    if fmt == "csv":
        click.echo(rows_csv(comparison_rows(result)))
    else:
        emit(result, fmt)
