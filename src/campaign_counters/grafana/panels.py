"""Grafana JSON building blocks: queries of the Redis data source, panels, variables, dashboards.

Queries follow the query model of the RedisGrafana `redis-datasource`
plugin (2.2.0): `type` "command" with `command`, `keyName` and `field`, or
`type` "cli" with a free-text `query` (what template variables list).
Template variables (`${tenant}`) are
substituted by Grafana in `keyName`, `field` and `query`.
"""

from __future__ import annotations

from typing import Any

PLUGIN_ID = "redis-datasource"
PLUGIN_VERSION = "2.2.0"
DATASOURCE_UID = "campaign-counters-redis"
DATASOURCE = {"type": PLUGIN_ID, "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39  # Grafana 10.4's dashboard schema
TAG = "campaign-counters"
GRID_WIDTH = 24


def command(name: str, key: str, field: str | None = None) -> dict[str, Any]:
    """A query running one of the plugin's built-in commands on one key."""
    query: dict[str, Any] = {"refId": "A", "datasource": DATASOURCE, "type": "command", "command": name,
                             "keyName": key}
    if field is not None:
        query["field"] = field
    return query


def stream_rows(key: str) -> dict[str, Any]:
    """XRANGE over a whole stream (`start` -, `end` +), whatever the dashboard's time range: a table's rows."""
    return {**command("xrange", key), "start": "-", "end": "+"}


def panel(kind: str, title: str, query: dict[str, Any] | None, *, w: int = 6, h: int = 5,
          description: str = "", unit: str | None = None, options: dict[str, Any] | None = None,
          defaults: dict[str, Any] | None = None, transformations: list[dict[str, Any]] | None = None
          ) -> dict[str, Any]:
    """One panel reading one key; its place is set by `dashboard`."""
    field_defaults: dict[str, Any] = dict(defaults or {})
    if unit:
        field_defaults["unit"] = unit
    out: dict[str, Any] = {"type": kind, "title": title, "description": description, "gridPos": {"w": w, "h": h},
                           "fieldConfig": {"defaults": field_defaults, "overrides": []}, "options": options or {}}
    if query is not None:
        out["datasource"] = DATASOURCE
        out["targets"] = [query]
    if transformations:
        out["transformations"] = transformations
    return out


def _reduce(fields: str = "") -> dict[str, Any]:
    """Show each field's latest value; `fields` "/.*/" includes text fields (status, dates)."""
    return {"calcs": ["lastNotNull"], "fields": fields, "values": False}


def stat(title: str, query: dict[str, Any], *, text_values: bool = False, **kw: Any) -> dict[str, Any]:
    """Big numbers (or texts), one per field of the reply."""
    options = {"reduceOptions": _reduce("/.*/" if text_values else ""), "textMode": "value_and_name",
               "colorMode": "none", "graphMode": "none", "justifyMode": "auto", "orientation": "auto"}
    return panel("stat", title, query, options=options, **kw)


def gauge(title: str, query: dict[str, Any], *, maximum: float = 100, **kw: Any) -> dict[str, Any]:
    """Gauges from 0 to `maximum`, one per field of the reply."""
    options = {"reduceOptions": _reduce(), "showThresholdLabels": False, "showThresholdMarkers": True}
    return panel("gauge", title, query, options=options, defaults={"min": 0, "max": maximum}, **kw)


def bars(title: str, query: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Horizontal bars, one per field of the reply (per node, per reason, per tenant)."""
    options = {"reduceOptions": _reduce(), "orientation": "horizontal", "displayMode": "basic",
               "showUnfilled": True, "valueMode": "color", "namePlacement": "left", "sizing": "auto"}
    return panel("bargauge", title, query, options=options, defaults={"min": 0}, **kw)


def time_series(title: str, query: dict[str, Any], fields: list[str], **kw: Any) -> dict[str, Any]:
    """Lines over time from a stream read with XRANGE (entry ids are the times), keeping `fields`."""
    keep = {"id": "filterFieldsByName", "options": {"include": {"names": ["$time", *fields]}}}
    options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "none"}}
    defaults = {"custom": {"drawStyle": "line", "lineInterpolation": "stepAfter", "showPoints": "always",
                           "spanNulls": True}}
    return panel("timeseries", title, query, options=options, defaults=defaults, transformations=[keep], **kw)


def heat_table(title: str, query: dict[str, Any], fields: list[str], **kw: Any) -> dict[str, Any]:
    """A table keeping `fields` (the stream's ids and times dropped), number cells coloured by value."""
    keep = {"id": "filterFieldsByName", "options": {"include": {"names": fields}}}
    defaults = {"color": {"mode": "continuous-GrYlRd"}, "custom": {"align": "center",
                                                                 "cellOptions": {"type": "color-background"}}}
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, query, options=options, defaults=defaults, transformations=[keep], **kw)


def note(title: str, markdown: str, *, w: int = GRID_WIDTH, h: int = 3) -> dict[str, Any]:
    """A text panel (no query)."""
    return panel("text", title, None, w=w, h=h, options={"mode": "markdown", "content": markdown})


def row(title: str) -> dict[str, Any]:
    """A full-width heading that starts a new line of panels."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": GRID_WIDTH, "h": 1}}


def variable(name: str, label: str, query: str, *, all_value: str | None = None) -> dict[str, Any]:
    """A template variable listing what `query` (a CLI query) returns; `all_value` adds "All" meaning it."""
    out: dict[str, Any] = {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE, "query": query,
        "definition": query, "refresh": 2, "sort": 1, "hide": 0, "multi": False,
        "includeAll": all_value is not None, "options": [], "current": {}, "regex": "", "skipUrlSync": False,
    }
    if all_value is not None:
        out["allValue"] = all_value
        out["current"] = {"selected": True, "text": "All", "value": "$__all"}
    return out


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]], *, time_from: str = "now-24h", refresh: str = "30s") -> dict[str, Any]:
    """A dashboard; panels are laid out left to right in reading order, rows start new lines."""
    x = y = line = 0
    placed = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line = 0, y + line, 0
        placed.append({**p, "id": i, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, line = x + w, max(line, h)
        if p["type"] == "row":
            x, y, line = 0, y + h, 0
    return {
        "uid": uid, "title": title, "description": description, "tags": [TAG], "editable": False,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "browser", "refresh": refresh,
        "time": {"from": time_from, "to": "now"}, "graphTooltip": 1, "fiscalYearStartMonth": 0,
        "annotations": {"list": []},
        "links": [{"title": "campaign-counters", "type": "dashboards", "tags": [TAG], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False}],
        "templating": {"list": variables},
        "panels": placed,
    }
