"""What the counters API asks of Redis and how it reads the replies.

Everything here is shared by `Counters` and `AsyncCounters`: plans are
generators over `transport.execute`, so the two clients differ only in how
they perform I/O.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo

import msgpack
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import BackendError, NotFound, TenantMismatch, ValidationError
from ..events import Event, check_id, parse_event
from ..reports import build_report
from ..script import FlowGraph, ScriptCache, check_completable, parse_script
from ..timezones import parse_zone, zone_or_utc
from .keys import KeySchema
from .records import (
    APPLIED_CODE, DUPLICATE_CODE, FOREIGN_CODE, NO_EPOCH_CODE, OTHER_EPOCH_CODE, RecordOptions, UserState,
    find_record, parse_counters, parse_names, record_call, rejection_of, split_reply, sum_counters,
)
from .transport import (
    Cmd, LuaScript, Plan, RefreshTopology, Router, Streamed, as_dict, call, execute, receive_streamed, send_streamed,
)

LOAD_SCRIPT = LuaScript.load("load_script.lua")
REPORT_READS = 5  # transactions tried when jobs keep beginning while a report is read
log = logging.getLogger(__name__)

APPLIED, DUPLICATE, REJECTED, UNKNOWN, UNSENT = "applied", "duplicate", "rejected", "unknown", "unsent"
SPOOLED = "spooled"  # record_safe: not sent, kept in the local spool
LOST = ("Redis lost its data (its epoch marker is gone): nothing is recorded until the report store's copy of "
        "scripts, campaign owners and timezones is restored into it; the scheduler does this on its next tick, "
        "as does any campaign-counters command with a report store (e.g. `campaign-counters health`)")


@dataclass(frozen=True)
class Settings:
    """Tunables of the realtime path; every one has a safe default."""

    id_ttl: int = 2 * 86400  # how long an event id is remembered for de-duplication
    day_ttl: int = 40 * 86400  # how long per-day HyperLogLogs live
    journeys: bool = True  # keep journey steps and log changed users for snapshots
    timeout: float = 0.05  # budget of a record_safe call, seconds (every network wait included)
    send_timeout: float = 1.0  # budget of each network wait of the fire() sender and spool replays
    fire_window: float = 0.002  # fire() waits this long to gather events into one call (0: send at once)
    chunk: int = 5000  # events per pipeline in record_many
    script_batch: int = 500  # events of one campaign per script call (bounds how long Redis is busy)
    tz_ttl: float = 300.0  # how long a tenant's timezone is cached
    max_choices: int = 256  # distinct choices counted per node; more are counted as "(other)"
    max_days: int = 400  # distinct local days with per-day counts per campaign
    init_epoch: bool = True  # a client meeting a Redis without epoch marker for the first time creates one


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

    members: list[list[tuple[int, Event]]] = field(default_factory=list)  # events per script call
    streamed: Streamed | None = None


@dataclass
class RecordResult:
    """Outcome of a batch: counts plus where and why events were not applied.

    `unknown`: sent, but no reply came (the event may have been applied;
    sending it again with the same id is safe). `unsent`: certainly not
    applied (Redis unreachable, or it lost its data).
    """

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unknown: int = 0
    unsent: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Events not known to be applied or refused: unknown + unsent."""
        return self.unknown + self.unsent

    def summary(self) -> dict[str, int]:
        out = {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}
        if self.unknown:
            out["unknown"] = self.unknown
        if self.unsent:
            out["unsent"] = self.unsent
        return out


def new_epoch() -> str:
    """A fresh epoch marker: when it began, and 48 random bits."""
    return f"{int(time.time())}-{secrets.token_hex(6)}"


class NotSent(RedisConnectionError):
    """A connection could not be made: the commands meant for it were certainly not run."""


class CountersCore:
    """Shared state and plans of the sync and asyncio clients."""

    def __init__(self, cluster: bool, settings: Settings | None = None, script_cache: ScriptCache | None = None) -> None:
        self.settings = settings or Settings()
        self.keys = KeySchema(cluster=cluster)
        self.router = Router(cluster=cluster)
        self.scripts = script_cache or ScriptCache()
        self._tz: dict[str, tuple[float, ZoneInfo]] = {}
        self._days: dict[str, tuple[int, int, str]] = {}
        self._options = self._record_options()
        self.epoch = ""  # the epoch marker this client saw last ('': none yet)
        self.stats: dict[str, int] = dict.fromkeys(("applied", "duplicates", "rejected", "unknown", "unsent"), 0)

    def _record_options(self) -> tuple[str, ...]:
        s = self.settings
        return RecordOptions(s.id_ttl, s.journeys, s.day_ttl, s.max_choices, s.max_days).packed()

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

    def plan_record_many(self, items: Iterable[Event | Mapping[str, Any]],
                         fingerprints: Mapping[int, bytes] | None = None) -> Plan:
        """Validate, then apply in pipelines; never raises for a bad event.

        Chunks overlap: the next chunk is validated while Redis runs the
        calls of the previous one, whose replies are read only then.
        `fingerprints` (event index -> fingerprint) stand in for the ids of
        replayed repair-tail events.
        """
        result = RecordResult()
        invalid: dict[str, int] = {}  # field -> events that failed validation
        flight: _InFlight | None = None
        for batch in self._validated(items, result, invalid):
            if flight is not None:
                yield from self._collect(flight, result, fingerprints)
            flight = yield from self._send(batch, result, fingerprints)
        if flight is not None:
            yield from self._collect(flight, result, fingerprints)
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

    def _calls(self, batch: list[tuple[int, Event]], flight: _InFlight,
               fingerprints: Mapping[int, bytes] | None) -> Iterator[Cmd]:
        """record.lua calls for a chunk, one per campaign and `script_batch` events, built one at a time
        (each is written to Redis while the next is being built)."""
        groups: dict[str, list[tuple[int, Event]]] = {}
        for item in batch:
            groups.setdefault(item[1].campaign, []).append(item)
        for campaign, items in groups.items():
            for start in range(0, len(items), self.settings.script_batch):
                part = items[start:start + self.settings.script_batch]
                flight.members.append(part)
                fps = [fingerprints[i] for i, _ in part] if fingerprints is not None else None
                yield record_call(self.keys, campaign, [ev for _, ev in part], self.local_day, self._options,
                                  self.epoch, fps)

    def _send(self, batch: list[tuple[int, Event]], result: RecordResult,
              fingerprints: Mapping[int, bytes] | None) -> Plan:
        """Write a chunk's script calls without waiting for their replies."""
        try:
            yield from self._load_timezones(ev.tenant for _, ev in batch)
        except RedisError as exc:
            for i, _ in batch:
                self._failed(result, i, exc, sent=False)
            return None
        flight = _InFlight()
        flight.streamed = yield from send_streamed(self.router, self._calls(batch, flight, fingerprints))
        return flight

    def _collect(self, flight: "_InFlight | None", result: RecordResult,
                 fingerprints: Mapping[int, bytes] | None) -> Plan:
        """Read the replies of a chunk's calls into `result`.

        Calls refused for the epoch marker are sent once more after
        `_settle_epoch` allowed it (nothing of them was applied).
        """
        if flight is None:
            return
        again = yield from self._read(flight, result, settle=True)
        if again:
            retry = _InFlight()
            retry.streamed = yield from send_streamed(self.router, self._calls(again, retry, fingerprints))
            yield from self._read(retry, result, settle=False)

    def _read(self, flight: _InFlight, result: RecordResult, settle: bool) -> Plan:
        """Replies into `result`; returns the events to send again after the epoch was settled."""
        replies = yield from receive_streamed(self.router, flight.streamed)
        again: list[tuple[int, Event]] = []
        allowed: bool | None = None if settle else False
        for part, reply in zip(flight.members, replies):
            if isinstance(reply, Exception):
                for i, _ in part:
                    self._failed(result, i, reply, sent=not isinstance(reply, NotSent))
                continue
            codes, epoch = split_reply(reply)
            if codes[0] in (NO_EPOCH_CODE, OTHER_EPOCH_CODE):
                if allowed is None:
                    allowed = yield from self._settle_epoch(codes[0], epoch)
                if allowed:
                    again += part
                else:
                    for i, _ in part:
                        self._failed(result, i, BackendError(LOST), sent=False)
                continue
            self.epoch = epoch
            for (i, _), code in zip(part, codes):
                self._outcome(result, i, code)
        return again

    def _settle_epoch(self, code: int, epoch: str) -> Plan:
        """After a call refused for the epoch: True when the calls may be sent again."""
        if code == OTHER_EPOCH_CODE:
            log.warning("Redis epoch changed from %s to %s: Redis was restored or replaced", self.epoch, epoch)
            self.epoch = epoch
            return True
        if self.epoch or not self.settings.init_epoch:
            # Another call of this client (or another writer) may have set the marker since this
            # call was sent: then it is sent again under it. None at all: Redis lost its data.
            current = yield from self.plan_read_epoch()
            if not current:
                return False
            self.epoch = current
            return True
        created = yield from self.plan_create_epoch()
        self.epoch = created or ""
        return created is not None

    def plan_read_epoch(self) -> Plan:
        """The epoch marker: its value when every node agrees, '' when none holds one.

        On Redis Cluster one slot per node is read (a node that lost its data
        lost every slot's marker). BackendError when only some nodes hold it
        or they disagree.
        """
        if self.router.cluster:
            if not self.router.slot_per_node():
                self.router.update((yield RefreshTopology()))
            keys = [self.keys.slot_index_key("epoch", slot) for slot in self.router.slot_per_node()]
        else:
            keys = [self.keys.epoch()]
        values = yield from call(self.router, [Cmd(None, ("GET", k)) for k in keys])
        found = {v.decode() for v in values if v is not None}
        if not found:
            return ""
        if len(found) > 1 or None in values:
            raise BackendError(f"{sum(v is not None for v in values)} of {len(values)} Redis Cluster nodes hold "
                               "the epoch marker: a node lost its data (`campaign-counters health` tells more)")
        return found.pop()

    def plan_set_epoch(self, value: str, only_if_absent: bool = False) -> Plan:
        """Write the epoch marker into every slot (NX: only where there is none)."""
        keys = self.keys.all_index_keys("epoch") if self.router.cluster else [self.keys.epoch()]
        extra = ("NX",) if only_if_absent else ()
        yield from call(self.router, [Cmd(None, ("SET", k, value, *extra)) for k in keys])

    def plan_create_epoch(self) -> Plan:
        """Start an epoch where Redis holds none (SET NX on every slot); the marker Redis holds then."""
        value = new_epoch()
        yield from self.plan_set_epoch(value, only_if_absent=True)
        current = yield from self.plan_read_epoch()
        return current or None

    def _failed(self, result: RecordResult, i: int, exc: Exception, sent: bool) -> None:
        if sent:
            result.unknown += 1
            result.outcomes[i] = UNKNOWN
        else:
            result.unsent += 1
            result.outcomes[i] = UNSENT
        result.errors.append((i, f"{type(exc).__name__}: {exc}"))

    def _outcome(self, result: RecordResult, i: int, code: Any) -> None:
        if code == APPLIED_CODE:
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
        self.stats["unknown"] += result.unknown
        self.stats["unsent"] += result.unsent

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

    def plan_load_script(self, tenant: str, campaign: str, script: Any, restore: bool = False,
                         record_version: bool = True) -> Plan:
        """Register or replace a campaign's flow graph (`restore`: written back from the
        report store after Redis lost its data; the given owner wins). A script other than the
        last one loaded is remembered as a new version, with when it was loaded (`record_version`)."""
        check_id("tenant", tenant)
        check_id("campaign", campaign)
        graph = script if isinstance(script, FlowGraph) else parse_script(script)
        if not restore:  # a restored script was accepted once: it is written back as it was
            check_completable(graph)
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
        keys = (k.meta(campaign), k.script(campaign), k.registry(campaign), k.names(campaign), k.epoch(campaign),
                k.dirty(campaign))
        argv = (tenant, campaign, graph.raw, graph.sha, payload, "restore" if restore else "")
        cmd = Cmd(campaign, ("EVALSHA", LOAD_SCRIPT.sha, len(keys), *keys, *argv), LOAD_SCRIPT)
        (reply,) = yield from call(self.router, [cmd])
        if reply == NO_EPOCH_CODE and (yield from self._settle_epoch(reply, "")):
            (reply,) = yield from call(self.router, [cmd])
        self.scripts.invalidate(campaign)
        if reply == NO_EPOCH_CODE:
            raise BackendError(LOST)
        if reply == FOREIGN_CODE:
            raise TenantMismatch(campaign)
        self.scripts.put(campaign, graph)
        if record_version and not restore:
            yield from self._record_version(campaign, graph)
        return graph

    def _record_version(self, campaign: str, graph: FlowGraph) -> Plan:
        """Note a newly loaded script as the campaign's latest version (nothing when it is the latest already)."""
        key = self.keys.script_versions(campaign)
        (raw,) = yield from call(self.router, [Cmd(campaign, ("HGETALL", key))])
        loads = sorted((int(f), v) for f, v in as_dict(raw).items() if f.isdigit())
        if loads and loads[-1][1].decode() == graph.sha:
            return
        now = int(time.time() * 1000)
        at = max(now, loads[-1][0] + 1) if loads else now
        yield from call(self.router, [Cmd(campaign, ("HSET", key, str(at), graph.sha, f"s:{graph.sha}", graph.raw))])

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
        """Read in O(nodes x jobs): a job's counters, or every job's plus corrections.

        NotFound for another tenant's campaign, or a job without events.
        """
        if job is not None:
            check_id("job", job)
        meta, _ = yield from self._owned(tenant, campaign, [])
        for _ in range(REPORT_READS):
            known = [f[2:].decode() for f in meta if f.startswith(b"j:")]
            if job is not None and job not in known:
                raise NotFound(f"job {job!r} of campaign {campaign!r} has no data")
            jobs = [job] if job is not None else known
            meta, camp_raw, names_raw, job_raws = yield from self._counters_at_once(campaign, jobs)
            if meta.get(b"tenant", b"").decode() != tenant:
                raise NotFound(f"campaign {campaign!r} of tenant {tenant!r} has no data")
            if job is not None or sorted(f[2:].decode() for f in meta if f.startswith(b"j:")) == sorted(known):
                break  # no job began between the two reads
        else:
            raise BackendError(f"campaign {campaign!r} kept gaining jobs while its report was read")
        parts = [as_dict(r) for r in job_raws]
        campaign_fields = as_dict(camp_raw)
        if job is None:
            parts.append(campaign_fields)
        agg = parse_counters(sum_counters(parts), parse_names(names_raw))
        own = parts[0] if job is not None else campaign_fields
        status = own.get(b"status") or campaign_fields.get(b"status")
        agg.status = status.decode() if status else None
        changed = [int(own[b"updated_at"])] if b"updated_at" in own else []
        changed += [int(meta[b"t:" + j.encode()]) for j in jobs if b"t:" + j.encode() in meta]
        agg.updated_at_ms = max(changed) if changed and max(changed) else None
        sha = meta.get(b"script_sha")
        graph = yield from self._graph(campaign, sha)
        return build_report(tenant, campaign, job, agg, graph)

    def _counters_at_once(self, campaign: str, jobs: list[str]) -> Plan:
        """Meta, campaign counters, node names and these jobs' counters as one transaction.

        Campaign totals are job counters plus corrections in the campaign
        hash, written together by every record call; read apart, a call in
        between would make the sum wrong (too high or too low) for a moment,
        and a snapshot would persist that.
        """
        k = self.keys
        reads = [("HGETALL", k.meta(campaign)), ("HGETALL", k.counters(campaign)), ("HGETALL", k.names(campaign)),
                 *(("HGETALL", k.counters(campaign, j)) for j in jobs)]
        cmds = [Cmd(campaign, ("MULTI",)), *(Cmd(campaign, r) for r in reads), Cmd(campaign, ("EXEC",))]
        for _ in range(3):  # a slot that moved aborts the transaction; `execute` has refreshed the routes
            replies = yield from execute(self.router, cmds)
            if not isinstance(replies[-1], Exception):
                break
        else:
            raise replies[-1]
        meta, camp, names, *job_raws = replies[-1]
        for reply in (meta, camp, names, *job_raws):
            if isinstance(reply, Exception):
                raise reply
        return as_dict(meta), camp, names, job_raws

    def plan_journey(self, tenant: str, campaign: str, job: str, user: str) -> Plan:
        """One user's journey in a job, from the user's record: O(the user's steps), one round trip
        plus one for node names. NotFound when the user has no events in the job."""
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
        names = yield from self.plan_node_names(campaign, state.node_indexes())
        return {"tenant": tenant, "campaign": campaign, "job": job, "user": user, **state.journey(names)}

    def plan_node_names(self, campaign: str, indexes: Iterable[int]) -> Plan:
        """index -> node id for some node indexes (BackendError for an index without a name)."""
        wanted = sorted(indexes)
        if not wanted:
            return {}
        (raw,) = yield from call(self.router, [Cmd(campaign, ("HMGET", self.keys.names(campaign), *wanted))])
        missing = [i for i, n in zip(wanted, raw) if n is None]
        if missing:
            raise BackendError(f"Redis lost part of campaign {campaign!r}: node #{missing[0]} has no name "
                               "(was a key evicted? check `campaign-counters health`)")
        return {i: n.decode() for i, n in zip(wanted, raw)}
