"""The generated files of the `deploy/grafana` tree, and writing them.

Only what names Redis keys is generated (dashboards, alert rules); the
provisioning of the data source and of the dashboard folder is plain YAML
beside them. The generated files are committed: exporting again must
reproduce them byte for byte (a test checks it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .alerts import alert_rules
from .dashboards import all_dashboards

DEFAULT_DIR = Path("deploy") / "grafana"


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[str, str]:
    """Path (relative to the tree) -> content of every generated file."""
    files = {f"dashboards/{name}": _dump(board) for name, board in all_dashboards().items()}
    files["provisioning/alerting/campaign-counters.json"] = _dump(alert_rules())
    return files


def stale_files(directory: Path) -> list[str]:
    """Generated files that are missing under `directory` or differ from a fresh export."""
    return [rel for rel, text in generated_files().items()
            if not (directory / rel).is_file() or (directory / rel).read_text(encoding="utf-8") != text]


def export(directory: Path) -> list[str]:
    """Write every generated file under `directory`; returns the paths written (relative)."""
    written = []
    for rel, text in generated_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(rel)
    return written
