"""Formatting of command output: JSON (default), human tables, CSV.

JSON is one object or array on stdout.  CSV flattens nested values into
`key,value` rows with dotted keys (`node_analytics.ask.reached_count`), so any
report fits one CSV shape.  Tables are for people: scalars first, then one
table per nested list or mapping.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

FORMATS = ("json", "table", "csv")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list):
        rows = []
        for i, v in enumerate(value):
            rows += flatten(v, f"{prefix}.{i}" if prefix else str(i))
        return rows
    return [(prefix, value)]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items()) or "-"
    return str(v)


def _grid(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def table(data: Any) -> str:
    if isinstance(data, list):
        if data and all(isinstance(r, dict) for r in data):
            headers = list(dict.fromkeys(k for r in data for k in r))
            return _grid(headers, [[r.get(h) for h in headers] for r in data])
        return "\n".join(_cell(v) for v in data)
    if not isinstance(data, dict):
        return _cell(data)
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, (dict, list))]
    parts = []
    if scalars:
        width = max(len(k) for k, _ in scalars)
        parts.append("\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in scalars))
    for k, v in data.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            parts.append(f"{k}:\n" + table(v))
        elif isinstance(v, list):
            parts.append(f"{k}: " + (", ".join(_cell(x) for x in v) or "-"))
        elif isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values()):
            headers = ["key", *dict.fromkeys(h for r in v.values() for h in r)]
            rows = [[name, *(r.get(h) for h in headers[1:])] for name, r in v.items()]
            parts.append(f"{k}:\n" + _grid(headers, rows))
        elif isinstance(v, dict):
            parts.append(f"{k}: " + _cell(v))
    return "\n\n".join(parts)


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["key", "value"])
        for key, value in flatten(data):
            writer.writerow([key, "" if value is None else value])
        return buf.getvalue().rstrip("\n")
    return table(data)


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """A list of flat rows as CSV: one header (the union of their keys, in order), one line per row."""
    headers = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for r in rows:
        writer.writerow(["" if r.get(h) is None else r.get(h) for h in headers])
    return buf.getvalue().rstrip("\n")
