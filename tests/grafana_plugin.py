"""What Grafana and its Redis data source do with a panel's query, in Python, for the dashboard tests.

Written from the source of RedisGrafana's redis-datasource v2.2.0 (the
version the compose file installs), not from our code:

- `SUPPORTED_COMMANDS`: the `command` values its backend answers
  (pkg/models/*.go, dispatched in pkg/query.go); any other returns nothing.
- a query with a non-empty `query` (type "cli") runs that text whatever its
  `command` (queryCustomCommand in pkg/redis-custom.go): the text is split
  like a shell line, the first word is the command, the second the key;
- frames (pkg/redis-hash.go, redis-set.go, redis-stream.go, data-frame.go):
  HGET gives one field named after `field`, HMGET one per space-separated
  field, HGETALL one per hash field in Redis's order, SMEMBERS/HKEYS a field
  "Value"; a value that Go's strconv.ParseFloat accepts becomes a float64,
  anything else stays text (a missing value is ""); XRANGE reads entries
  from `<from ms>-0` to `<to ms>-0` of the dashboard's time range, fields
  "$streamId", "$time" (the entry id's milliseconds), then every entry field,
  a field missing in an entry filled with 0.0 (numbers) or "" (text);
- template variables are replaced in `keyName`, `field` and `query`
  (DataSource.applyTemplateVariables), with Grafana's variable syntax.

The Redis client is redis-py's, plain or cluster: like the plugin's radix
client, it routes a command by its key.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

SUPPORTED_COMMANDS = frozenset({
    # Redis (pkg/models/redis.go, custom.go)
    "clientList", "clusterInfo", "clusterNodes", "get", "hget", "hgetall", "hkeys", "hlen", "hmget", "info",
    "llen", "scard", "slowlogGet", "smembers", "ttl", "type", "zrange", "xinfoStream", "xlen", "xrange",
    "xrevrange", "tmscan",
    # modules (redis-time-series.go, redis-search.go, redis-gears.go, redis-graph.go, redis-json.go)
    "ts.get", "ts.mget", "ts.info", "ts.queryindex", "ts.range", "ts.mrange", "ft.info", "ft.search",
    "rg.pystats", "rg.dumpregistrations", "rg.pyexecute", "rg.pydumpreqs", "graph.config", "graph.explain",
    "graph.profile", "graph.query", "graph.slowlog", "json.type", "json.get", "json.objkeys", "json.objlen",
    "json.arrlen",
})
QUERY_TYPES = frozenset({"command", "cli", "timeSeries", "search", "gears", "graph", "json"})

# Grafana's template variable syntax: $var, [[var]], ${var}, ${var:format}, ${var.field}
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
GO_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def substitute(text: str, variables: dict[str, str]) -> str:
    """Replace the variables Grafana knows; unknown ones stay as written (as Grafana leaves them)."""
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        return variables.get(name, match.group(0))
    return VARIABLE.sub(one, text)


def with_variables(query: dict[str, Any], variables: dict[str, str]) -> dict[str, Any]:
    out = dict(query)
    for name in ("keyName", "field", "query"):
        if out.get(name):
            out[name] = substitute(out[name], variables)
    return out


def value(raw: Any) -> float | str:
    """A reply value as the plugin puts it in a frame: float64 if ParseFloat accepts it, else text."""
    if raw is None:
        return ""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return float(text) if GO_FLOAT.fullmatch(text) else text


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2]))


def run(client: Any, query: dict[str, Any], time_range: tuple[int, int]) -> dict[str, list]:
    """The frame the plugin returns for a query (after variables were substituted): field -> values."""
    if query.get("query"):
        return _cli(client, query["query"])
    cmd, key, field = query.get("command"), query.get("keyName", ""), query.get("field", "")
    if cmd == "hget":
        return {field: [value(client.execute_command("HGET", key, field))]}
    if cmd == "hmget":
        names = shlex.split(field)
        return {n: [value(v)] for n, v in zip(names, client.execute_command("HMGET", key, *names))}
    if cmd == "hgetall":
        return {_text(f): [value(v)] for f, v in _pairs(client.execute_command("HGETALL", key))}
    if cmd in ("smembers", "hkeys"):
        return {"Value": sorted(_text(v) for v in client.execute_command(cmd.upper(), key))}
    if cmd in ("get", "type", "ttl", "hlen", "xlen", "llen", "scard"):
        return {"Value": [value(client.execute_command(cmd.upper(), key))]}
    if cmd in ("xrange", "xrevrange"):
        start, end = query.get("start") or f"{time_range[0]}-0", query.get("end") or f"{time_range[1]}-0"
        args = (start, end) if cmd == "xrange" else (end, start)
        return _entries(client.execute_command(cmd.upper(), key, *args))
    raise NotImplementedError(f"the tests do not emulate {cmd!r}")


def _entries(entries: list) -> dict[str, list]:
    frame: dict[str, list] = {"$streamId": [], "$time": []}
    for i, (entry_id, fields) in enumerate(entries):
        entry_id = _text(entry_id)
        frame["$streamId"].append(entry_id)
        frame["$time"].append(int(entry_id.split("-")[0]))
        seen = set()
        for f, v in _pairs(fields):
            name, parsed = _text(f), value(v)
            if name not in frame:
                frame[name] = [0.0 if isinstance(parsed, float) else ""] * i
            frame[name].append(parsed)
            seen.add(name)
        for name, values in frame.items():
            if name not in seen and not name.startswith("$"):
                values.append(0.0 if values and isinstance(values[0], float) else "")
    return frame


def _cli(client: Any, text: str) -> dict[str, list]:
    words = shlex.split(text)
    reply = client.execute_command(*words)
    if isinstance(reply, int):
        return {"Value": [reply]}
    if isinstance(reply, (bytes, str)):
        lines = _text(reply).replace("\r\n", "\n").split("\n")
        return {"Value": [value(lines[0])] if len(lines) == 1 else lines}
    if isinstance(reply, (set, list, tuple)):
        values = sorted(_text(v) for v in reply) if isinstance(reply, set) else [_text(v) for v in reply]
        return {"Value": values or ["(empty array)"]}
    raise NotImplementedError(f"reply of type {type(reply).__name__}")


def variable_values(client: Any, variable: dict[str, Any], variables: dict[str, str]) -> list[str]:
    """The options of a query variable (DataSource.metricFindQuery: every value of every field),
    sorted alphabetically as the variable's `sort: 1` asks Grafana to."""
    assert variable["sort"] == 1
    frame = _cli(client, substitute(variable["query"], variables))
    return sorted(str(v) for values in frame.values() for v in values)


def panel_queries(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, query) for every query of a dashboard."""
    return [(p, q) for p in board["panels"] for q in p.get("targets", [])]


def kept_fields(panel: dict[str, Any]) -> list[str] | None:
    """The fields a panel's filterFieldsByName keeps (None: no filter; the only transformation we use)."""
    steps = panel.get("transformations", [])
    assert all(step["id"] == "filterFieldsByName" for step in steps), steps
    return steps[-1]["options"]["include"]["names"] if steps else None


def transformed(panel: dict[str, Any], frame: dict[str, list]) -> dict[str, list]:
    """The frame after the panel's field filter: what the panel draws."""
    keep = kept_fields(panel)
    return frame if keep is None else {n: frame[n] for n in keep if n in frame}
