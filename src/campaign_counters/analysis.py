"""Analysis of a campaign's journeys: paths, drop-off states, time, unique choosers (pure).

Built from per-user facts (`Visit`: one user in one job), whichever way they
were gathered: the live scan of the users' records in Redis, or the nightly
recompute from history. The same fold then gives the same numbers, so
reconcile can check them.

Definitions (per job; the campaign total pools the user's visits of every job):

- a visit's *path*: the start node at the user's earliest `sent`, then each
  interaction's target at its time, in time order (ties: arrival order);
- `transitions`: for each pair (A, B) of consecutive path nodes, the users
  with that move; `in_script` tells whether A -> B is an edge of the script;
- `drop_off` per non-end node n reached (as `node_analytics`): users who
  `went_on` (reached one of n's successors), else `waiting` (last activity
  younger than the inactivity window at `now`) or `dropped` (older). Last
  activity: the latest, over the user's jobs in the scope, of each job's
  earliest event, earliest `sent` and every interaction;
- `completion_time`: per completed user (as `avg_completion_time`), its mean,
  and its median and p90 (nearest rank) read from a fixed log-bucket
  histogram: reported values are bucket midpoints, within `MAX_ERROR` of the
  exact order statistic;
- `time_per_node`: the median (same histogram) of the time from arriving at a
  node on a path to the next node of that path;
- `choices`: per node a choice was made at (resolved from the step's target
  and choice by the script, as for a choice without `node`) and choice, the
  clicks and the distinct users;
- `heatmap`: interactions per local day of week (Monday first) and hour, in
  the tenant's timezone (DST-aware: a local hour that repeats counts both);
- `versions` (when the scripts the campaign ran are known): each user belongs
  to the version loaded last at or before its earliest event (else the first
  version); per version, its users, and `node_analytics` and `funnel_data`
  over them with that version's script (choices resolved as in `choices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from .reports import Aggregate, funnel, iso_ms, node_analytics
from .script import FlowGraph

BUCKETS_PER_DOUBLING = 16
MAX_ERROR = 2 ** (1 / (2 * BUCKETS_PER_DOUBLING)) - 1  # about 2.2%: half a bucket, relative
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DEFAULT_WINDOW_S = 24 * 3600


@dataclass
class Visit:
    """One user in one job: what the analysis needs of its record (times in Unix ms)."""

    first_ms: int
    sent_ms: int | None
    fin_ms: int | None  # earliest end-node interaction
    reached: set[str]
    steps: list[tuple[int, str, str | None]]  # (ts, target, choice), in time order

    @property
    def last_ms(self) -> int:
        last = max(self.first_ms, self.sent_ms if self.sent_ms is not None else self.first_ms)
        return max(last, max((s[0] for s in self.steps), default=last))


@dataclass(frozen=True)
class ScriptVersion:
    """A script the campaign ran, and from when (Unix ms)."""

    number: int
    loaded_at_ms: int
    sha: str
    graph: FlowGraph


def version_of(first_ms: int, versions: list[ScriptVersion]) -> ScriptVersion:
    """The version a user starting at `first_ms` saw: the last loaded at or before it, else the first."""
    seen = versions[0]
    for v in versions:
        if v.loaded_at_ms <= first_ms:
            seen = v
    return seen


class LogHistogram:
    """Durations (ms) in fixed log buckets: 0 alone, then 16 buckets per doubling."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    @staticmethod
    def bucket(ms: int) -> int:
        return -1 if ms <= 0 else math.floor(math.log2(ms) * BUCKETS_PER_DOUBLING)

    def add(self, ms: int) -> None:
        b = self.bucket(ms)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.n += 1

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile's bucket midpoint, in seconds (None when empty)."""
        if not self.n:
            return None
        rank, seen = max(1, math.ceil(q * self.n)), 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return 0.0 if b < 0 else 2 ** ((b + 0.5) / BUCKETS_PER_DOUBLING) / 1000
        raise AssertionError("unreachable")


def path(visit: Visit, graph: FlowGraph | None) -> list[tuple[int, str]]:
    """(ts, node) of a visit's path, in time order (the start node first on a tie)."""
    out = [(ts, target) for ts, target, _ in visit.steps]
    if visit.sent_ms is not None and graph is not None and graph.start:
        at = 0
        while at < len(out) and out[at][0] < visit.sent_ms:
            at += 1
        out.insert(at, (visit.sent_ms, graph.start))
    return out


@dataclass
class Analysis:
    """Folds users' visits into the analysis of one scope."""

    graph: FlowGraph | None
    now_ms: int
    window_ms: int
    tz: ZoneInfo
    users: int = 0
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    went_on: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    completion: LogHistogram = field(default_factory=LogHistogram)
    completion_ms: int = 0
    per_node: dict[str, LogHistogram] = field(default_factory=dict)
    clicks: dict[tuple[str, str], int] = field(default_factory=dict)
    choosers: dict[tuple[str, str], int] = field(default_factory=dict)
    heat: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in WEEKDAYS])
    versions: list[ScriptVersion] = field(default_factory=list)
    by_version: dict[int, Aggregate] = field(default_factory=dict)
    _local: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def local_slot(self, ts_ms: int) -> tuple[int, int]:
        """(weekday, hour) of an instant in the timezone; cached per quarter hour (every UTC offset in use
        since 1972 is a multiple of 15 minutes, so a quarter hour never straddles a local hour)."""
        quarter = ts_ms // 900_000
        slot = self._local.get(quarter)
        if slot is None:
            local = datetime.fromtimestamp(quarter * 900, self.tz)
            slot = self._local[quarter] = (local.weekday(), local.hour)
        return slot

    def add_user(self, visits: Iterable[Visit]) -> None:
        """Add one user, with its visits of every job in the scope."""
        visits = list(visits)
        if not visits:
            return
        self.users += 1
        graph = self.graph
        pairs: set[tuple[str, str]] = set()
        chosen: set[tuple[str, str]] = set()
        reached: set[str] = set()
        for v in visits:
            reached |= v.reached
            p = path(v, graph)
            for (t0, a), (t1, b) in zip(p, p[1:]):
                pairs.add((a, b))
                self.per_node.setdefault(a, LogHistogram()).add(t1 - t0)
            for ts, target, choice in v.steps:
                day, hour = self.local_slot(ts)
                self.heat[day][hour] += 1
                at = graph.choice_node(target, choice) if graph is not None else None
                if at is not None and choice is not None:
                    self.clicks[(at, choice)] = self.clicks.get((at, choice), 0) + 1
                    chosen.add((at, choice))
        for pair in pairs:
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
        for key in chosen:
            self.choosers[key] = self.choosers.get(key, 0) + 1
        fins = [v.fin_ms for v in visits if v.fin_ms is not None]
        if fins:
            sent = [v.sent_ms for v in visits if v.sent_ms is not None]
            took = min(fins) - (min(sent) if sent else min(v.first_ms for v in visits))
            self.completion.add(took)
            self.completion_ms += took
        if self.versions:
            self._add_to_version(visits, reached)
        active = self.now_ms - max(v.last_ms for v in visits) < self.window_ms
        succ = graph.successors if graph is not None else {}
        for n in reached:
            if graph is not None and graph.is_end(n):
                continue
            if not reached.isdisjoint(succ.get(n, ())):
                self.went_on[n] = self.went_on.get(n, 0) + 1
            elif active:
                self.waiting[n] = self.waiting.get(n, 0) + 1
            else:
                self.dropped[n] = self.dropped.get(n, 0) + 1

    def _add_to_version(self, visits: list[Visit], reached: set[str]) -> None:
        version = version_of(min(v.first_ms for v in visits), self.versions)
        agg = self.by_version.setdefault(version.number, Aggregate())
        agg.target += 1
        succ = version.graph.successors
        for n in reached:
            agg.reached[n] = agg.reached.get(n, 0) + 1
            if not reached.isdisjoint(succ.get(n, ())):
                agg.continued[n] = agg.continued.get(n, 0) + 1
        for v in visits:
            for _, target, choice in v.steps:
                at = version.graph.choice_node(target, choice)
                if at is not None and choice is not None:
                    at_node = agg.choices.setdefault(at, {})
                    at_node[choice] = at_node.get(choice, 0) + 1

    def _node_order(self, seen: Iterable[str]) -> list[str]:
        known = list(self.graph.flow_sequence) if self.graph is not None else []
        return known + sorted(set(seen) - set(known))

    def result(self) -> dict[str, Any]:
        """The analysis as plain data (see the module doc)."""
        edges = {(s, t) for s, t, _ in self.graph.edges} if self.graph is not None else set()
        states = set(self.went_on) | set(self.waiting) | set(self.dropped)
        n = self.completion.n
        return {
            "users": self.users,
            "transitions": [{"from": a, "to": b, "users": c, "in_script": (a, b) in edges}
                            for (a, b), c in sorted(self.pairs.items())],
            "drop_off": [{"node": node, "went_on": self.went_on.get(node, 0), "waiting": self.waiting.get(node, 0),
                          "dropped": self.dropped.get(node, 0)}
                         for node in self._node_order(states) if node in states],
            "completion_time": {"completed": n, "mean": self.completion_ms / n / 1000 if n else None,
                                "median": self.completion.quantile(0.5), "p90": self.completion.quantile(0.9),
                                "max_relative_error": MAX_ERROR},
            "time_per_node": [{"node": node, "visits": self.per_node[node].n,
                               "median": self.per_node[node].quantile(0.5)}
                              for node in self._node_order(self.per_node) if node in self.per_node],
            "choices": [{"node": node, "choice": choice, "clicks": c, "users": self.choosers[(node, choice)]}
                        for (node, choice), c in sorted(self.clicks.items())],
            "heatmap": {"timezone": str(self.tz), "weekdays": list(WEEKDAYS), "interactions": self.heat},
            **({"versions": [self._version_result(v) for v in self.versions]} if self.versions else {}),
        }

    def _version_result(self, version: ScriptVersion) -> dict[str, Any]:
        agg = self.by_version.get(version.number, Aggregate())
        return {"version": version.number, "sha": version.sha, "loaded_at": iso_ms(version.loaded_at_ms),
                "users": agg.target, "node_analytics": node_analytics(agg, version.graph),
                "funnel_data": funnel(agg, version.graph)}


def analysis_values(result: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers of an analysis keyed by a readable dotted name (for checks and comparisons)."""
    if result is None:
        return {}
    out: dict[str, Any] = {"users": result["users"]}
    for t in result["transitions"]:
        out[f"transitions.{t['from']}>{t['to']}"] = t["users"]
    for d in result["drop_off"]:
        for state in ("went_on", "waiting", "dropped"):
            out[f"drop_off.{d['node']}.{state}"] = d[state]
    for k in ("completed", "mean", "median", "p90"):
        out[f"completion_time.{k}"] = result["completion_time"][k]
    for t in result["time_per_node"]:
        out[f"time_per_node.{t['node']}.visits"] = t["visits"]
        out[f"time_per_node.{t['node']}.median"] = t["median"]
    for c in result["choices"]:
        out[f"choices.{c['node']}.{c['choice']}.clicks"] = c["clicks"]
        out[f"choices.{c['node']}.{c['choice']}.users"] = c["users"]
    heat = result["heatmap"]
    for day, hours in zip(heat["weekdays"], heat["interactions"]):
        for hour, n in enumerate(hours):
            if n:
                out[f"heatmap.{day}.{hour}"] = n
    for v in result.get("versions", []):
        out[f"versions.{v['version']}.users"] = v["users"]
        for node, facts in v["node_analytics"].items():
            out[f"versions.{v['version']}.{node}.reached_count"] = facts["reached_count"]
            for choice, n in facts["choices"].items():
                out[f"versions.{v['version']}.{node}.choices.{choice}"] = n
    return out
