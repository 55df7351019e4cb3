"""Recompute reports from raw events: the truth the nightly reconcile trusts.

Pure Python, no I/O, and independent of the Lua script: it keeps per-user
sets and minimums and folds them at the end, so it shares no incremental
logic with the realtime path it checks. Memory is O(users + event ids +
interactions) (the journey analysis needs each interaction's time, target
and choice): events are streamed through `add`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..analysis import Analysis, ScriptVersion, Visit, version_of
from ..events import Event
from ..reports import Aggregate, build_report
from ..script import FlowGraph


@dataclass
class _User:
    """What one user did in one scope; every field is order-independent."""

    first: int | None = None
    sent: int | None = None
    fin: int | None = None
    exit: str | None = None
    interactions: int = 0
    reached: set[str] = field(default_factory=set)
    steps: list[tuple[int, int, str, str | None]] = field(default_factory=list)  # (ts, arrival, target, choice)

    def merge(self, other: "_User") -> None:
        self.first = _min(self.first, other.first)
        self.sent = _min(self.sent, other.sent)
        if other.fin is not None and (self.fin is None or (other.fin, other.exit or "") < (self.fin, self.exit or "")):
            self.fin, self.exit = other.fin, other.exit
        self.interactions += other.interactions
        self.reached |= other.reached
        self.steps += other.steps


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class CampaignTruth:
    """Accumulates one campaign's events; reports per job and for the campaign."""

    def __init__(self, tenant: str, campaign: str, graph: FlowGraph | None,
                 versions: list[ScriptVersion] | None = None) -> None:
        """`versions`: the scripts the campaign ran; an event is then read with the script loaded last at
        or before its time (the first one before that), a user's funnel with the one it started under."""
        self.tenant = tenant
        self.campaign = campaign
        self.graph = graph
        self.versions = versions or []
        self.users: dict[str, dict[str, _User]] = {}  # job -> user -> state
        self.choices: dict[str, dict[tuple[str, str], int]] = {}  # job -> (node, choice) -> n
        self.status: tuple[int, int, str] | None = None  # (ts, arrival, status)
        self.job_status: dict[str, tuple[int, int, str]] = {}
        self._ids: set[str] = set()
        self._arrival = 0
        self._at: dict[tuple[int, str, str | None, str | None], str | None] = {}  # where choices were made

    def graph_at(self, ts_ms: int) -> FlowGraph | None:
        """The script in force at `ts_ms`: of the version loaded last by then, else the only one known."""
        return version_of(ts_ms, self.versions).graph if self.versions else self.graph

    def add(self, ev: Event) -> bool:
        """Apply one event; False when its id was seen before."""
        if ev.id is not None:
            if ev.id in self._ids:
                return False
            self._ids.add(ev.id)
        self._arrival += 1
        if ev.type == "status":
            mark = (ev.ts_ms, self._arrival, ev.status or "")
            self.status = max(self.status, mark) if self.status else mark
            if ev.job:
                self.job_status[ev.job] = max(self.job_status.get(ev.job, mark), mark)
            return True
        job, user, ts = ev.job or "", ev.user or "", ev.ts_ms
        users = self.users.get(job)
        if users is None:
            users = self.users[job] = {}
        u = users.get(user)
        if u is None:
            u = users[user] = _User()
        if u.first is None or ts < u.first:
            u.first = ts
        graph = self.graph_at(ts)
        if ev.type == "sent":
            if u.sent is None or ts < u.sent:
                u.sent = ts
            if graph and graph.start:
                u.reached.add(graph.start)
        elif ev.type == "interaction":
            target = ev.target or ""
            u.interactions += 1
            u.steps.append((ts, self._arrival, target, ev.choice))
            u.reached.add(target)
            key = (id(graph), target, ev.choice, ev.node)
            at = self._at.get(key, "")
            if at == "":
                at = self._at[key] = graph.choice_node(target, ev.choice, ev.node) if graph else ev.node
            if at:
                u.reached.add(at)
                if ev.choice is not None:
                    key = (at, ev.choice)
                    counts = self.choices.setdefault(job, {})
                    counts[key] = counts.get(key, 0) + 1
            if graph and graph.is_end(target):
                if u.fin is None or (ev.ts_ms, target) < (u.fin, u.exit or ""):
                    u.fin, u.exit = ev.ts_ms, target
        return True

    @property
    def jobs(self) -> list[str]:
        return sorted(self.users)

    @property
    def has_events(self) -> bool:
        """Whether any event of the campaign was added (statuses included)."""
        return self._arrival > 0

    def _scope(self, job: str | None) -> tuple[dict[str, _User], dict[tuple[str, str], int]]:
        if job is not None:
            return self.users.get(job, {}), self.choices.get(job, {})
        merged: dict[str, _User] = {}
        copied: set[str] = set()
        choices: dict[tuple[str, str], int] = {}
        for j, users in self.users.items():
            for name, u in users.items():
                seen = merged.get(name)
                if seen is None:
                    merged[name] = u  # most users are in one job: share, don't copy
                    continue
                if name not in copied:
                    fresh = _User()
                    fresh.merge(seen)
                    merged[name] = seen = fresh
                    copied.add(name)
                seen.merge(u)
            for key, n in self.choices.get(j, {}).items():
                choices[key] = choices.get(key, 0) + n
        return merged, choices

    def aggregate(self, job: str | None = None) -> Aggregate:
        users, choices = self._scope(job)
        agg = Aggregate()
        successors: dict[int, dict[str, frozenset[str]]] = {}
        nothing: frozenset[str] = frozenset()
        reached, continued = agg.reached, agg.continued
        for u in users.values():
            graph = self.graph_at(u.first or 0)
            succ = successors.get(id(graph))
            if succ is None:
                succ = successors[id(graph)] = {n: frozenset(s) for n, s in (graph.successors if graph else {}).items()}
            agg.target += 1
            agg.sent += u.sent is not None
            agg.interacted += u.interactions > 0
            agg.interactions += u.interactions
            if u.fin is not None:
                agg.completed += 1
                agg.completion_ms += u.fin - (u.sent if u.sent is not None else u.first or 0)
            for n in u.reached:
                reached[n] = reached.get(n, 0) + 1
                if not u.reached.isdisjoint(succ.get(n, nothing)):
                    continued[n] = continued.get(n, 0) + 1
        for (node, choice), n in choices.items():
            agg.choices.setdefault(node, {})[choice] = n
        mark = self.job_status.get(job) if job else None
        mark = mark or self.status
        agg.status = mark[2] if mark else None
        return agg

    def report(self, job: str | None = None) -> dict[str, Any]:
        return build_report(self.tenant, self.campaign, job, self.aggregate(job), self.graph)

    def analysis(self, job: str | None, now_ms: int, window_ms: int, tz: ZoneInfo) -> dict[str, Any]:
        """The journey analysis of a job (None: the campaign) at `now_ms`, from the events added."""
        fold = Analysis(self.graph, now_ms, window_ms, tz, versions=self.versions)
        by_user: dict[str, list[Visit]] = {}
        for j, users in self.users.items():
            if job is None or j == job:
                for name, u in users.items():
                    by_user.setdefault(name, []).append(Visit(
                        first_ms=u.first or 0, sent_ms=u.sent, fin_ms=u.fin, reached=set(u.reached),
                        steps=[(ts, target, choice) for ts, _, target, choice in sorted(u.steps)]))
        for visits in by_user.values():
            fold.add_user(visits)
        return fold.result()



# -- overviews (docs/metrics.md) -----------------------------------------------

PERIODS = ("daily", "weekly", "monthly")


def window(period: str, day: date, tz: ZoneInfo) -> tuple[date, datetime, datetime]:
    """(first local date, start, end) of the period holding `day`, in `tz`."""
    if period == "daily":
        first, last = day, day
    elif period == "weekly":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=6)
    elif period == "monthly":
        first = day.replace(day=1)
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    else:
        raise ValueError(f"period must be one of {PERIODS}")
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    return first, start, end


@dataclass
class _CampaignDay:
    users: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    interacted: set[str] = field(default_factory=set)
    interactions: int = 0


class OverviewTruth:
    """One tenant's overview of one window, from the events in it."""

    def __init__(self, tenant: str, period: str, day: date, tz: ZoneInfo) -> None:
        self.tenant, self.period, self.tz = tenant, period, tz
        self.first, start, end = window(period, day, tz)
        self.start_ms, self.end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        self.start, self.end = start, end
        self.campaigns: dict[str, _CampaignDay] = {}
        self.status: dict[str, tuple[int, int, str]] = {}
        self._ids: set[tuple[str, str]] = set()
        self._arrival = 0

    def add(self, ev: Event) -> None:
        if ev.tenant != self.tenant:
            return
        if ev.id is not None:
            key = (ev.campaign, ev.id)
            if key in self._ids:
                return
            self._ids.add(key)
        self._arrival += 1
        if ev.type == "status" and ev.ts_ms < self.end_ms:
            mark = (ev.ts_ms, self._arrival, ev.status or "")
            self.status[ev.campaign] = max(self.status.get(ev.campaign, mark), mark)
        if not self.start_ms <= ev.ts_ms < self.end_ms:
            return
        c = self.campaigns.setdefault(ev.campaign, _CampaignDay())
        if ev.type == "status":
            return
        c.users.add(ev.user or "")
        if ev.type == "sent":
            c.sent.add(ev.user or "")
        elif ev.type == "interaction":
            c.interacted.add(ev.user or "")
            c.interactions += 1

    def document(self) -> dict[str, Any]:
        counted = self.campaigns
        sent = sum(len(c.sent) for c in counted.values())
        interacted = sum(len(c.interacted) for c in counted.values())
        latest = {c: self.status[c][2] for c in counted if c in self.status}
        return {
            "tenant_id": self.tenant,
            "report_type": self.period,
            "report_date": self.first.isoformat(),
            "timezone": str(self.tz),
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "campaigns_count": len(counted),
            "total_target_users": sum(len(c.users) for c in counted.values()),
            "total_sent_users": sent,
            "total_interacted_users": interacted,
            "total_interactions": sum(c.interactions for c in counted.values()),
            "avg_interaction_rate": interacted / sent * 100 if sent else 0.0,
            "campaigns_completed": sum(1 for s in latest.values() if s == "COMPLETED"),
            "campaigns_running": sum(1 for s in latest.values() if s == "RUNNING"),
            "campaigns_error": sum(1 for s in latest.values() if s == "ERROR"),
        }
