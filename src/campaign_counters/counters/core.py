"""What the counters API asks of Redis and how it reads the replies.

Everything here is shared by `Counters` and `AsyncCounters`: plans are
generators over `transport.execute`, so the two clients differ only in how
they perform I/O.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo

import msgpack

from redis.exceptions import RedisError

from ..errors import BackendError, NotFound, TenantMismatch, ValidationError
from ..events import Event, check_id, parse_event
from ..reports import build_report
from ..script import FlowGraph, ScriptCache, parse_script
from ..timezones import parse_zone, zone_or_utc
from .keys import KeySchema
from .records import (
    APPLIED_CODE, DUPLICATE_CODE, FOREIGN_CODE, UserState, find_record, journal_page, journey_step,
    parse_counters, parse_names, record_call, rejection_of, sum_counters,
)
from .transport import Cmd, LuaScript, Plan, Router, Streamed, as_dict, call, execute, receive_streamed, send_streamed

LOAD_SCRIPT = LuaScript.load("load_script.lua")

APPLIED, DUPLICATE, REJECTED, FAILED = "applied", "duplicate", "rejected", "failed"


@dataclass(frozen=True)
class Settings:
    """Tunables of the realtime path; every one has a safe default."""

    id_ttl: int = 2 * 86400  # how long an event id is remembered for de-duplication
    day_ttl: int = 40 * 86400  # how long per-day HyperLogLogs live
    journal: bool = True  # keep interactions in a stream for journeys and snapshots
    timeout: float = 0.05  # budget of a fire-and-forget call, seconds
    fire_window: float = 0.002  # AsyncCounters.fire waits this long to gather events into one call (0: send at once)
    chunk: int = 5000  # events per pipeline in record_many
    script_batch: int = 500  # events of one campaign per script call (bounds how long Redis is busy)
    tz_ttl: float = 300.0  # how long a tenant's timezone is cached


@dataclass
class Rejection:
    """Why event `index` was not applied; `code` is record.lua's (None: failed validation)."""

    index: int
    field: str
    reason: str
    code: int | None = None


@dataclass
class _InFlight:
    """A chunk whose script calls were written and whose replies are unread."""

    members: list[list[int]] = field(default_factory=list)  # event indexes per script call
    expiring: dict[str, str] = field(default_factory=dict)  # day HLL key -> campaign, to EXPIRE
    streamed: Streamed | None = None


@dataclass
class RecordResult:
    """Outcome of a batch: counts plus where and why events were not applied."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        out = {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}
        if self.failed:
            out["failed"] = self.failed
        return out


class CountersCore:
    """Shared state and plans of the sync and asyncio clients."""

    def __init__(self, cluster: bool, settings: Settings | None = None, script_cache: ScriptCache | None = None) -> None:
        self.settings = settings or Settings()
        self.keys = KeySchema(cluster=cluster)
        self.router = Router(cluster=cluster)
        self.scripts = script_cache or ScriptCache()
        self._tz: dict[str, tuple[float, ZoneInfo]] = {}
        self._expiring: set[str] = set()  # day HLL keys this client already gave a TTL
        self._days: dict[str, tuple[int, int, str]] = {}
        self.stats: dict[str, int] = {"applied": 0, "duplicates": 0, "rejected": 0, "failed": 0}

    # -- recording -----------------------------------------------------------

    def local_day(self, tenant: str, ts_ms: int) -> str:
        """The tenant-local date of `ts_ms` as YYYYMMDD (cached per tenant and day).

        The tenant's timezone must have been loaded (`plan_timezone`).
        """
        start, end, day = self._days.get(tenant, (0, -1, ""))
        if start <= ts_ms < end:
            return day
        tz = self._tz[tenant][1]
        date = datetime.fromtimestamp(ts_ms / 1000, tz).date()
        start = int(datetime.combine(date, dtime(), tz).timestamp() * 1000)
        end = int(datetime.combine(date + timedelta(days=1), dtime(), tz).timestamp() * 1000)
        day = date.strftime("%Y%m%d")
        self._days[tenant] = (start, end, day)
        return day

    def _load_timezones(self, tenants: Iterable[str]) -> Plan:
        now = time.monotonic()
        missing = sorted({t for t in tenants if t not in self._tz or now - self._tz[t][0] > self.settings.tz_ttl})
        if not missing:
            return
        (names,) = yield from call(self.router, [Cmd(None, ("HMGET", self.keys.tenants(), *missing))])
        for tenant, name in zip(missing, names):
            self._tz[tenant] = (now, zone_or_utc(name))
            self._days.pop(tenant, None)

    def plan_record_many(self, items: Iterable[Event | Mapping[str, Any]]) -> Plan:
        """Validate, then apply in pipelines; never raises for a bad event.

        Chunks overlap: the next chunk is validated while Redis runs the
        calls of the previous one, whose replies are read only then.
        """
        result = RecordResult()
        invalid: dict[str, int] = {}  # field -> events that failed validation
        flight: _InFlight | None = None
        for batch in self._validated(items, result, invalid):
            if flight is not None:
                yield from self._collect(flight, result)
            flight = yield from self._send(batch, result)
        if flight is not None:
            yield from self._collect(flight, result)
        if invalid:
            # Counted for `health`; best effort: a failure here never fails the batch.
            key = self.keys.input_rejections()
            try:
                yield from execute(self.router, [Cmd(None, ("HINCRBY", key, f, n)) for f, n in sorted(invalid.items())])
            except RedisError:
                pass
        self._count(result)
        return result

    def _validated(self, items: Iterable[Event | Mapping[str, Any]], result: RecordResult,
                   invalid: dict[str, int]) -> Iterator[list[tuple[int, Event]]]:
        """Chunks of (index, valid event); rejections go into `result` and `invalid`."""
        batch: list[tuple[int, Event]] = []
        for index, item in enumerate(items):
            try:
                ev = item if isinstance(item, Event) else parse_event(item)
            except ValidationError as exc:
                invalid[exc.field] = invalid.get(exc.field, 0) + 1
                result.rejections.append(Rejection(index, exc.field, exc.reason))
                result.rejected += 1
                result.outcomes.append(REJECTED)
                continue
            result.outcomes.append("")
            batch.append((index, ev))
            if len(batch) >= self.settings.chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    def _send(self, batch: list[tuple[int, Event]], result: RecordResult) -> Plan:
        """Write a chunk's script calls (one per campaign and `script_batch` events)."""
        try:
            yield from self._load_timezones(ev.tenant for _, ev in batch)
        except RedisError as exc:
            for i, _ in batch:
                result.failed += 1
                result.outcomes[i] = FAILED
                result.errors.append((i, f"{type(exc).__name__}: {exc}"))
            return None
        groups: dict[str, list[tuple[int, Event]]] = {}
        for item in batch:
            groups.setdefault(item[1].campaign, []).append(item)
        flight = _InFlight()

        def commands() -> Iterator[Cmd]:
            # Built one script call at a time: each is written to Redis while
            # the next is being built.
            for campaign, items in groups.items():
                for start in range(0, len(items), self.settings.script_batch):
                    part = items[start:start + self.settings.script_batch]
                    flight.members.append([i for i, _ in part])
                    yield record_call(self.keys, campaign, [ev for _, ev in part], self.local_day,
                                      self.settings.id_ttl, self.settings.journal, flight.expiring,
                                      self._expiring)
            yield from (Cmd(c, ("EXPIRE", key, self.settings.day_ttl)) for key, c in list(flight.expiring.items()))

        flight.streamed = yield from send_streamed(self.router, commands())
        return flight

    def _collect(self, flight: "_InFlight", result: RecordResult) -> Plan:
        """Read the replies of a chunk's calls into `result`."""
        replies = yield from receive_streamed(self.router, flight.streamed)
        n_record = len(flight.members)
        for key, reply in zip(flight.expiring, replies[n_record:]):
            if reply == 1:
                self._expiring.add(key)
        if len(self._expiring) > 100_000:
            self._expiring.clear()
        for indexes, reply in zip(flight.members, replies):
            codes = [reply] * len(indexes) if isinstance(reply, Exception) else reply
            for i, code in zip(indexes, codes):
                self._outcome(result, i, code)

    def _outcome(self, result: RecordResult, i: int, code: Any) -> None:
        if isinstance(code, Exception):
            result.failed += 1
            result.outcomes[i] = FAILED
            result.errors.append((i, f"{type(code).__name__}: {code}"))
        elif code == APPLIED_CODE:
            result.accepted += 1
            result.outcomes[i] = APPLIED
        elif code == DUPLICATE_CODE:
            result.duplicates += 1
            result.outcomes[i] = DUPLICATE
        else:
            fld, reason = rejection_of(code)
            result.rejected += 1
            result.outcomes[i] = REJECTED
            result.rejections.append(Rejection(i, fld, reason, code))

    def _count(self, result: RecordResult) -> None:
        self.stats["applied"] += result.accepted
        self.stats["duplicates"] += result.duplicates
        self.stats["rejected"] += result.rejected
        self.stats["failed"] += result.failed

    def plan_record(self, item: Event | Mapping[str, Any]) -> Plan:
        """One event; bad input and Redis failures raise."""
        ev = item if isinstance(item, Event) else parse_event(item)
        result = yield from self.plan_record_many([ev])
        if result.errors:
            raise BackendError(result.errors[0][1])
        if result.rejections:
            rej = result.rejections[0]
            if rej.code == FOREIGN_CODE:
                raise TenantMismatch(ev.campaign)
            raise ValidationError(rej.field, rej.reason)
        return result.outcomes[0]

    # -- scripts ---------------------------------------------------------------

    def plan_load_script(self, tenant: str, campaign: str, script: Any) -> Plan:
        check_id("tenant", tenant)
        check_id("campaign", campaign)
        graph = script if isinstance(script, FlowGraph) else parse_script(script)
        payload = msgpack.packb(
            [
                list(graph.nodes),
                graph.start or "",
                sorted(graph.end_nodes),
                [[s, t] for s, t, _ in graph.edges],
                graph.unique_predecessor(),
                graph.unique_labelled_source(),
            ]
        )
        k = self.keys
        keys = (k.meta(campaign), k.script(campaign), k.registry(campaign), k.names(campaign))
        argv = (tenant, campaign, graph.raw, graph.sha, payload)
        cmd = Cmd(campaign, ("EVALSHA", LOAD_SCRIPT.sha, len(keys), *keys, *argv), LOAD_SCRIPT)
        (reply,) = yield from call(self.router, [cmd])
        self.scripts.invalidate(campaign)
        if reply == -1:
            raise TenantMismatch(campaign)
        self.scripts.put(campaign, graph)
        return graph

    def _graph(self, campaign: str, sha: bytes | None) -> Plan:
        if not sha:
            return None
        graph = self.scripts.get(campaign, sha.decode())
        if graph is None:
            (raw,) = yield from call(self.router, [Cmd(campaign, ("GET", self.keys.script(campaign)))])
            if raw is None:
                return None
            graph = parse_script(raw)
            self.scripts.put(campaign, graph)
        return graph

    def plan_timezone(self, tenant: str) -> Plan:
        """The tenant's IANA timezone (UTC unless set)."""
        check_id("tenant", tenant)
        yield from self._load_timezones([tenant])
        return self._tz[tenant][1]

    def set_timezone_cmd(self, tenant: str, tz: str) -> Cmd:
        check_id("tenant", tenant)
        parse_zone(tz)
        self._tz.pop(tenant, None)
        self._days.pop(tenant, None)
        return Cmd(None, ("HSET", self.keys.tenants(), tenant, tz))

    def shadow(self) -> "CountersCore":
        """A twin writing to the campaign's shadow keys (same slots, same connections)."""
        twin = copy.copy(self)
        twin.keys = self.keys.shadow()
        twin.settings = replace(self.settings, id_ttl=3600)
        twin.stats = dict.fromkeys(self.stats, 0)
        return twin

    # -- reading ---------------------------------------------------------------

    def plan_graph(self, tenant: str, campaign: str) -> Plan:
        """The campaign's flow graph (None without a script); NotFound for foreign campaigns."""
        meta, _ = yield from self._owned(tenant, campaign, [])
        return (yield from self._graph(campaign, meta.get(b"script_sha")))

    def _owned(self, tenant: str, campaign: str, extra: list[Cmd]) -> Plan:
        """Meta hash plus `extra`, raising NotFound for foreign campaigns."""
        check_id("tenant", tenant)
        check_id("campaign", campaign)
        meta = Cmd(campaign, ("HGETALL", self.keys.meta(campaign)))
        replies = yield from call(self.router, [meta, *extra])
        meta = as_dict(replies[0])
        owner = meta.get(b"tenant")
        if owner is None or owner.decode() != tenant:
            raise NotFound(f"campaign {campaign!r} of tenant {tenant!r} has no data")
        return meta, replies[1:]

    def plan_report(self, tenant: str, campaign: str, job: str | None = None) -> Plan:
        """Read in O(nodes x jobs): a job's counters, or every job's plus corrections."""
        if job is not None:
            check_id("job", job)
        k = self.keys
        reads = [Cmd(campaign, ("HGETALL", k.counters(campaign))), Cmd(campaign, ("HGETALL", k.names(campaign)))]
        meta, (camp_raw, names_raw) = yield from self._owned(tenant, campaign, reads)
        jobs = [f[2:].decode() for f in meta if f.startswith(b"j:")]
        if job is not None:
            if job not in jobs:
                raise NotFound(f"job {job!r} of campaign {campaign!r} has no data")
            jobs = [job]
        cmds = [Cmd(campaign, ("HGETALL", k.counters(campaign, j))) for j in jobs]
        cmds += [Cmd(campaign, ("XINFO", "STREAM", k.journal(campaign, j))) for j in jobs]
        replies = yield from execute(self.router, cmds)
        for reply in replies[:len(jobs)]:
            if isinstance(reply, Exception):
                raise reply
        parts = [as_dict(r) for r in replies[:len(jobs)]]
        campaign_fields = as_dict(camp_raw)
        if job is None:
            parts.append(campaign_fields)
        agg = parse_counters(sum_counters(parts), parse_names(names_raw))
        own = parts[0] if job is not None else campaign_fields
        status = own.get(b"status") or campaign_fields.get(b"status")
        agg.status = status.decode() if status else None
        changed = [int(own[b"updated_at"])] if b"updated_at" in own else []
        for info in replies[len(jobs):]:
            if not isinstance(info, Exception):
                last = as_dict(info).get(b"last-generated-id", b"0-0")
                changed.append(int(last.split(b"-")[0]))
        agg.updated_at_ms = max(changed) if changed and max(changed) else None
        sha = meta.get(b"script_sha")
        graph = yield from self._graph(campaign, sha)
        return build_report(tenant, campaign, job, agg, graph)

    def plan_journey(self, tenant: str, campaign: str, job: str, user: str, with_ids: bool = False) -> Plan:
        """Summary from the user's record, path from the journal (what is not yet persisted)."""
        check_id("job", job)
        k = self.keys
        reads = [
            Cmd(campaign, ("HGET", k.meta(campaign), "j:" + job)),
            Cmd(campaign, ("HGET", k.users(campaign), user)),
        ]
        _, (ji, raw) = yield from self._owned(tenant, campaign, reads)
        record = find_record(raw, ji)
        if record is None:
            raise NotFound(f"user {user!r} has no events in job {job!r}")
        state = UserState.from_record(record)
        names: dict[int, str] = {}
        if state.exit:
            (name,) = yield from call(self.router, [Cmd(campaign, ("HGET", k.names(campaign), state.exit))])
            if name:
                names[state.exit] = name.decode()
        steps = []
        cursor, count = "-", 1
        while True:
            page = yield from self.plan_journal_page(campaign, job, cursor, count)
            steps += [s for s in page.steps if s["user"] == user and s["type"] == "i"]
            if page.entries < count:
                break
            cursor, count = "(" + str(page.last), page.next_count()
        steps.sort(key=lambda s: s["ts_ms"])  # stable: ties stay in arrival (journal) order
        path = [journey_step(s, with_ids) for s in steps]
        return {"tenant": tenant, "campaign": campaign, "job": job, "user": user,
                "journey_path": path, **state.summary(names)}

    def plan_journal_page(self, campaign: str, job: str, start: str = "-", count: int = 1) -> Plan:
        """Up to `count` entries of a job's journal from `start`, oldest first, as steps."""
        key = self.keys.journal(campaign, job)
        (entries,) = yield from call(self.router, [Cmd(campaign, ("XRANGE", key, start, "+", "COUNT", count))])
        return journal_page(entries)
