"""Commands of the dashboards: the Grafana tree generated from the key schema."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import EXIT_DRIFT, main
from .options import emit, format_option, say


@main.group()
def grafana() -> None:
    """Grafana dashboards and alert rules over the Redis read model."""


@grafana.command("export")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a generated file is missing or differs.")
@format_option
def export_tree(directory: Path | None, check: bool, fmt: str) -> None:
    """Write the dashboards and alert rules under DIRECTORY [default: deploy/grafana].

    Key names come from the key schema, so export again after changing it
    and commit the result; the data source and dashboard provisioning
    (YAML) beside them is not generated.

    \b
    Example:
      campaign-counters grafana export
      campaign-counters grafana export --check
    """
    from ..grafana.export import DEFAULT_DIR, export, stale_files

    directory = directory or DEFAULT_DIR
    if check:
        stale = stale_files(directory)
        emit({"directory": str(directory), "stale": stale}, fmt)
        if stale:
            say(f"{len(stale)} generated file(s) out of date: run `campaign-counters grafana export {directory}`")
            sys.exit(EXIT_DRIFT)
        return
    written = export(directory)
    say(f"wrote {len(written)} file(s) under {directory}")
    emit({"directory": str(directory), "written": written}, fmt)
