"""`Counters` (sync) and `AsyncCounters` (asyncio): the public realtime API.

Both run the plans of `core` and differ only in how a batch reaches Redis.
Redis-py's own retries are disabled: a retried pipeline could apply an event
twice, and numbers must be exact. Callers that want retries resend events
with ids, which makes resending safe; `record_safe` and `fire` do it for
them through the local spool.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from typing import Any, Iterable, Mapping

import hiredis
import redis
import redis.asyncio as aredis
import redis.asyncio.retry  # noqa: F401  (redis.asyncio.retry.Retry for asyncio clients)
import redis.retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..comparison import compare_reports
from ..connection import RedisTarget, parse_redis_url
from ..errors import BackendError, CampaignCountersError, ValidationError
from ..events import Event, parse_event
from ..script import FlowGraph, ScriptCache
from .core import SPOOLED, UNKNOWN, UNSENT, CountersCore, NotSent, RecordResult, Settings
from .fire import Firer, with_id
from .spool import Spool, default_spool_dir
from .transport import Address, Plan, Receive, RefreshTopology, Send, call

log = logging.getLogger(__name__)
CLUSTER_SLOTS = ("CLUSTER", "SLOTS")


def pack(cmds: list[tuple]) -> bytes:
    return b"".join(hiredis.pack_command(c) for c in cmds)


def read_one(conn: Any, deadline: float | None) -> Any:
    """One reply (a Redis error reply as a value); the wait ends at `deadline` (monotonic) when given."""
    sock = getattr(conn, "_sock", None) if deadline is not None else None
    if sock is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RedisTimeoutError("budget spent before the reply came")
        sock.settimeout(remaining)
    try:
        return conn.read_response()
    except ResponseError as exc:
        return exc
    finally:
        if sock is not None and conn._sock is sock:
            sock.settimeout(conn.socket_timeout)


async def read_one_async(read: Any) -> Any:
    try:
        return await read()
    except ResponseError as exc:
        return exc


class Held:
    """Connections held by one plan run for streamed sends (Send ... Receive).

    Replies are read in the order commands were written; a connection error
    turns the unread replies of that node into that error (`NotSent` when no
    connection could be made: those commands certainly did not run), and a
    connection released with replies unread is closed rather than returned
    dirty. With a `deadline`, no read waits beyond it.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.conns: dict[Address, tuple[Any, Any]] = {}  # addr -> (pool, connection)
        self.sent: dict[Address, int] = {}
        self.errors: dict[Address, Exception] = {}
        self.deadline = deadline

    def send(self, addr: Address, cmds: list[tuple], pool: Any) -> None:
        self.sent[addr] = self.sent.get(addr, 0) + len(cmds)
        if addr in self.errors:
            return
        if addr not in self.conns:
            try:
                self.conns[addr] = (pool, pool.get_connection())
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.errors[addr] = NotSent(f"{type(exc).__name__}: {exc}")
                return
        try:
            self.conns[addr][1].send_packed_command([pack(cmds)], check_health=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc

    async def send_async(self, addr: Address, cmds: list[tuple], pool: Any) -> None:
        self.sent[addr] = self.sent.get(addr, 0) + len(cmds)
        if addr in self.errors:
            return
        if addr not in self.conns:
            try:
                self.conns[addr] = (pool, await pool.get_connection())
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.errors[addr] = NotSent(f"{type(exc).__name__}: {exc}")
                return
        try:
            await self.conns[addr][1].send_packed_command([pack(cmds)], check_health=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc

    def read(self, addr: Address) -> list[Any]:
        n, out = self.sent[addr], []
        try:
            while addr not in self.errors and len(out) < n:
                out.append(read_one(self.conns[addr][1], self.deadline))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc
        del self.sent[addr]  # only now: a read cut short leaves the connection marked dirty
        return out + [self.errors.get(addr)] * (n - len(out))

    async def read_async(self, addr: Address) -> list[Any]:
        n, out = self.sent[addr], []
        try:
            while addr not in self.errors and len(out) < n:
                out.append(await read_one_async(self.conns[addr][1].read_response))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc
        del self.sent[addr]  # only now: a read cut short leaves the connection marked dirty
        return out + [self.errors.get(addr)] * (n - len(out))

    def _drop(self) -> list[tuple[Any, Any, bool]]:
        dirty = set(self.sent) | set(self.errors)
        out = [(pool, conn, addr in dirty) for addr, (pool, conn) in self.conns.items()]
        self.conns, self.sent, self.errors = {}, {}, {}
        return out

    def release(self) -> None:
        for pool, conn, dirty in self._drop():
            if dirty:
                conn.disconnect()
            pool.release(conn)

    async def release_async(self) -> None:
        for pool, conn, dirty in self._drop():
            if dirty:
                await conn.disconnect()
            await pool.release(conn)


def first_answer(replies: Iterable[Any]) -> Any:
    """The first non-error reply of several nodes asked the same thing."""
    last: Exception | None = None
    for reply in replies:
        if not isinstance(reply, Exception):
            return reply
        last = reply
    raise last or BackendError("no cluster node to ask for the topology")


def _target(url: str | None, client: Any) -> RedisTarget:
    if url is None and client is None:
        raise BackendError("give a Redis URL or a client")
    if client is not None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ValidationError("client", "must be made with decode_responses=False: campaign-counters reads "
                                            "binary values (msgpack records, fingerprints)")
    return parse_redis_url(url) if url is not None else RedisTarget(url="<client>")


class _Base(CountersCore):
    _module: Any

    def __init__(self, url: str | None = None, *, client: Any = None, settings: Settings | None = None,
                 script_cache: ScriptCache | None = None, socket_timeout: float | None = 5.0,
                 socket_connect_timeout: float | None = 5.0, spool: Spool | str | None = None) -> None:
        self.target = _target(url, client)
        super().__init__(self.target.cluster, settings, script_cache)
        self._socket_timeout = socket_timeout
        self._connect_timeout = socket_connect_timeout
        self._clients: dict[Address, Any] = {}
        self._twins: dict[float, Any] = {}
        self._spool_arg = spool
        self._spool: Spool | None = None
        self._firer: Firer | None = None
        self._fire_lock = threading.Lock()
        self.max_in_flight = 10_000  # fired events queued or being sent; more go straight to the spool
        if client is not None:
            self._clients[None] = client

    # -- connections -------------------------------------------------------------

    def _pool_class(self) -> tuple[Any, dict[str, Any]]:
        return self._module.ConnectionPool, {}

    def _client(self, addr: Address) -> Any:
        c = self._clients.get(addr)
        if c is None:
            pool_class, pool_opts = self._pool_class()
            opts = dict(decode_responses=False, socket_timeout=self._socket_timeout,
                        socket_connect_timeout=self._connect_timeout, retry=self._no_retry(), retry_on_error=[],
                        **pool_opts)
            if addr is None:
                pool = pool_class.from_url(self.target.url, **opts)
            else:
                pool = pool_class(host=addr[0], port=addr[1], **{**self.target.options, **opts})
            c = self._clients[addr] = self._module.Redis(connection_pool=pool)
        return c

    def _no_retry(self) -> Any:
        """A retry policy of this client's flavour (sync or asyncio) that never retries: budgets stay whole."""
        return self._module.retry.Retry(NoBackoff(), 0)

    def _refresh_sources(self) -> list[Address]:
        known = [a for a in self.router.nodes() if a is not None]
        return known + [s for s in self.target.seeds if s not in known]

    def _wrap(self, exc: RedisError) -> BackendError:
        return BackendError(f"Redis at {self.target.redacted()} failed: {type(exc).__name__}: {exc}")

    def _bounded(self, seconds: float, sync: bool = False) -> Any:
        """This client on connections of its own whose network waits (connect, handshake)
        take at most half of `seconds` each; `sync`: as a `Counters` (the fire sender's).

        A shallow copy: routing, caches and stats are shared. A client made
        around a given redis client has no URL to open more connections with,
        so it is used as it is (None for a sync twin of an asyncio one).
        """
        if self.target.url == "<client>":
            return self if not sync or isinstance(self, Counters) else None
        key = (seconds, sync)
        twin = self._twins.get(key)
        if twin is None:
            twin = copy.copy(self)
            twin._clients, twin._twins, twin._firer = {}, {}, None
            twin._socket_timeout = twin._connect_timeout = seconds / 2
            if sync:
                twin.__class__ = Counters  # same state, sync I/O
            self._twins[key] = twin
        return twin

    # -- the spool and fire ----------------------------------------------------------

    @property
    def spool(self) -> Spool:
        """Where undeliverable events wait (made on first use)."""
        if self._spool is None:
            arg = self._spool_arg
            self._spool = arg if isinstance(arg, Spool) else Spool(arg or default_spool_dir())
        return self._spool

    def _firer_for(self) -> Firer:
        with self._fire_lock:
            if self._firer is None:
                sender = self._bounded(self.settings.send_timeout, sync=True)
                self._firer = Firer(sender, self.spool, self.max_in_flight, self.stats, self._count_invalid)
            return self._firer

    def _count_invalid(self, field: str) -> None:
        self.stats.setdefault("invalid:" + field, 0)
        self.stats["invalid:" + field] += 1

    def fire(self, event: Event | Mapping[str, Any]) -> None:
        """Fire and forget: returns at once, never raises, never blocks; safe from any thread.

        A background thread sends fired events in batches (what is fired
        within `settings.fire_window`, or while the previous batch is on its
        way). Events without an id get a deterministic one. What cannot be
        delivered (Redis down or slow beyond `settings.send_timeout`, its data
        lost, more than `max_in_flight` events waiting) is written to the
        local spool and replayed when Redis takes batches again; invalid
        events are counted in `stats` and dropped.
        """
        self._firer_for().fire(event)

    def _spooled(self, ev: Event, outcome: str) -> str:
        """Keep an event that was not delivered; the outcome to report for it."""
        kept = self.spool.keep([ev])  # record_safe never raises, not even for a failing disk
        self.stats["spooled"] = self.stats.get("spooled", 0) + kept
        return outcome if outcome == UNKNOWN or not kept else SPOOLED

    def spool_replay(self, spool: Spool | None = None) -> dict[str, int]:
        """Send every event of a spool directory (default: this client's) now; counts per outcome.

        Events Redis does not take (unsent, unknown) stay spooled.
        """
        sender = self._bounded(self.settings.send_timeout, sync=True)
        if sender is None:
            raise BackendError("replaying the spool needs a client made from a URL")
        return (spool or self.spool).replay(lambda evs: sender.record_many(evs).outcomes)


class Counters(_Base):
    """Synchronous client; thread-safe as redis-py's connection pool is."""

    _module = redis

    def __enter__(self) -> "Counters":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _pipeline(self, addr: Address, cmds: list[tuple], deadline: float | None = None) -> list[Any]:
        """Send a batch on a connection of its own and read the raw replies (errors in place)."""
        own = Held(deadline)
        try:
            own.send(addr, cmds, self._client(addr).connection_pool)
            return own.read(addr)
        finally:
            own.release()

    def _io(self, request: Any, held: "Held") -> Any:
        if isinstance(request, Send):
            for addr, cmds in request.by_node.items():
                held.send(addr, cmds, self._client(addr).connection_pool)
            return None
        if isinstance(request, Receive):
            try:
                return {addr: held.read(addr) for addr in list(held.sent)}
            finally:
                held.release()
        if isinstance(request, RefreshTopology):
            return first_answer(self._pipeline(a, [CLUSTER_SLOTS], held.deadline)[0]
                                for a in self._refresh_sources())
        return {addr: self._pipeline(addr, cmds, held.deadline) for addr, cmds in request.by_node.items()}

    def _run(self, plan: Plan, deadline: float | None = None) -> Any:
        """Drive a plan; an I/O error is thrown into it where it asked, so a plan may recover."""
        held, reply, error = Held(deadline), None, None
        try:
            while True:
                request = plan.throw(error) if error is not None else plan.send(reply)
                try:
                    reply, error = self._io(request, held), None
                except RedisError as exc:
                    error = exc
        except StopIteration as stop:
            return stop.value
        except RedisError as exc:
            raise self._wrap(exc) from exc
        finally:
            held.release()

    def record(self, event: Event | Mapping[str, Any]) -> str:
        """Apply one event: 'applied' or 'duplicate'.

        Raises ValidationError (bad input, or refused by Redis with a reason),
        TenantMismatch (another tenant's campaign), BackendError (Redis failed:
        the event may or may not have been applied; with an id, sending it
        again is safe).
        """
        return self._run(self.plan_record(event))

    def record_many(self, events: Iterable[Event | Mapping[str, Any]]) -> RecordResult:
        """Apply events in pipelines; bad events and Redis failures are reported in the result, not raised."""
        return self._run(self.plan_record_many(events))

    def record_safe(self, event: Event | Mapping[str, Any]) -> str:
        """For the chat service: never raises, returns within `settings.timeout` (50 ms by default).

        Outcomes: 'applied', 'duplicate', 'rejected' (invalid, or refused by
        Redis), 'unknown' (sent, no reply in time: it may have been applied)
        or 'spooled' (not sent). Unknown and spooled events are kept in the
        local spool and replayed; an event without an id is given a
        deterministic one first, so the replay cannot count it twice.
        """
        try:
            ev = with_id(event if isinstance(event, Event) else parse_event(event))
        except ValidationError as exc:
            self.stats["rejected"] += 1
            self._count_invalid(exc.field)
            return "rejected"
        deadline = time.monotonic() + self.settings.timeout
        try:
            outcome = self._bounded(self.settings.timeout)._run(self.plan_record_many([ev]), deadline).outcomes[0]
        except (RedisError, CampaignCountersError, OSError) as exc:
            log.warning("record_safe: %s", type(exc).__name__)
            self.stats["unknown"] += 1
            outcome = UNKNOWN
        if outcome in (UNKNOWN, UNSENT):
            return self._spooled(ev, outcome)
        return outcome

    def load_script(self, tenant: str, campaign: str, script: Any) -> FlowGraph:
        """Register or replace a campaign's flow graph; returns it parsed.

        Raises ScriptError (malformed script), TenantMismatch (the campaign is
        bound to another tenant), BackendError (Redis failed or lost its data).
        """
        return self._run(self.plan_load_script(tenant, campaign, script))

    def report(self, tenant: str, campaign: str, job: str | None = None) -> dict[str, Any]:
        """The live report of a campaign (or one job). NotFound for another tenant's campaign or an unknown job."""
        return self._run(self.plan_report(tenant, campaign, job))

    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
        """One user's journey through a job, live. NotFound when the user has no events in the job."""
        return self._run(self.plan_journey(tenant, campaign, job, user))

    def compare(self, tenant: str, campaign: str, job_a: str, job_b: str) -> dict[str, Any]:
        """Two jobs' live reports side by side with differences and rate tests (`comparison.compare_reports`);
        NotFound as `report`."""
        return compare_reports(self.report(tenant, campaign, job_a), self.report(tenant, campaign, job_b))

    def run(self, plan: Plan) -> Any:
        """Run a plan of `core`/`maintenance` (used by the persistence jobs)."""
        return self._run(plan)

    def set_timezone(self, tenant: str, tz: str) -> None:
        """Set a tenant's IANA timezone (its days, overviews and nightly run follow it)."""
        self._run(call(self.router, [self.set_timezone_cmd(tenant, tz)]))

    def initialize(self) -> str:
        """The epoch marker, created when Redis holds none (a new deployment)."""
        current = self._run(self.plan_read_epoch())
        if not current:
            current = self._run(self.plan_create_epoch()) or self._run(self.plan_read_epoch())
        self.epoch = current
        return current

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until fired events were sent or spooled; False when `timeout` ran out first."""
        return self._firer.flush(timeout) if self._firer is not None else True

    def close(self, timeout: float = 5.0) -> None:
        """Send what was fired (within `timeout`; the rest is spooled), then close connections."""
        if self._firer is not None:
            self._firer.close(timeout)
            self._firer = None
        for twin in self._twins.values():
            twin.close(0)
        self._twins = {}
        for c in self._clients.values():
            c.close()
            c.connection_pool.disconnect()
        self._clients.clear()
        if self._spool is not None:
            self._spool.close()


class AsyncCounters(_Base):
    """asyncio client over redis.asyncio, with the same keys, scripts and parsing.

    `fire` shares the sync client's sender thread, so it never needs the
    event loop and is safe from any thread.
    """

    _module = aredis

    max_connections = 100  # per Redis node; concurrent calls beyond it wait for a free connection

    async def __aenter__(self) -> "AsyncCounters":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _pool_class(self) -> tuple[Any, dict[str, Any]]:
        """A blocking pool: redis.asyncio's default pool fails at its 100th concurrent
        connection, and a burst of concurrent calls must wait, not fail."""
        return self._module.BlockingConnectionPool, {"max_connections": self.max_connections, "timeout": None}

    async def _pipeline(self, addr: Address, cmds: list[tuple]) -> list[Any]:
        own = Held()
        try:
            await own.send_async(addr, cmds, self._client(addr).connection_pool)
            return await own.read_async(addr)
        finally:
            await own.release_async()

    async def _io(self, request: Any, held: "Held") -> Any:
        if isinstance(request, Send):
            for addr, cmds in request.by_node.items():
                await held.send_async(addr, cmds, self._client(addr).connection_pool)
            return None
        if isinstance(request, Receive):
            try:
                return {addr: await held.read_async(addr) for addr in list(held.sent)}
            finally:
                await held.release_async()
        if isinstance(request, RefreshTopology):
            replies = [(await self._pipeline(a, [CLUSTER_SLOTS]))[0] for a in self._refresh_sources()]
            return first_answer(replies)
        nodes = list(request.by_node)
        replies = await asyncio.gather(*(self._pipeline(a, request.by_node[a]) for a in nodes))
        return dict(zip(nodes, replies))

    async def _run(self, plan: Plan) -> Any:
        held, reply, error = Held(), None, None
        try:
            while True:
                request = plan.throw(error) if error is not None else plan.send(reply)
                try:
                    reply, error = await self._io(request, held), None
                except RedisError as exc:
                    error = exc
        except StopIteration as stop:
            return stop.value
        except RedisError as exc:
            raise self._wrap(exc) from exc
        finally:
            await held.release_async()

    async def record(self, event: Event | Mapping[str, Any]) -> str:
        """Apply one event: 'applied' or 'duplicate'; raises as `Counters.record` does."""
        return await self._run(self.plan_record(event))

    async def record_many(self, events: Iterable[Event | Mapping[str, Any]]) -> RecordResult:
        """Apply events in pipelines; bad events and Redis failures are reported in the result."""
        return await self._run(self.plan_record_many(events))

    async def record_safe(self, event: Event | Mapping[str, Any], timeout: float | None = None) -> str:
        """Never raises and never waits beyond `timeout` (default settings.timeout); outcomes as
        `Counters.record_safe` (unknown and spooled events are kept in the local spool)."""
        try:
            ev = with_id(event if isinstance(event, Event) else parse_event(event))
        except ValidationError as exc:
            self.stats["rejected"] += 1
            self._count_invalid(exc.field)
            return "rejected"
        try:
            result = await asyncio.wait_for(self._run(self.plan_record_many([ev])), timeout or self.settings.timeout)
            outcome = result.outcomes[0]
        except (asyncio.TimeoutError, RedisError, CampaignCountersError, OSError) as exc:
            log.warning("record_safe: %s", type(exc).__name__)
            self.stats["unknown"] += 1
            outcome = UNKNOWN
        if outcome in (UNKNOWN, UNSENT):
            return self._spooled(ev, outcome)
        return outcome

    async def load_script(self, tenant: str, campaign: str, script: Any) -> FlowGraph:
        """Register or replace a campaign's flow graph; raises as `Counters.load_script` does."""
        return await self._run(self.plan_load_script(tenant, campaign, script))

    async def report(self, tenant: str, campaign: str, job: str | None = None) -> dict[str, Any]:
        """The live report of a campaign (or one job); NotFound as `Counters.report`."""
        return await self._run(self.plan_report(tenant, campaign, job))

    async def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any]:
        """One user's journey through a job, live; NotFound as `Counters.journey`."""
        return await self._run(self.plan_journey(tenant, campaign, job, user))

    async def compare(self, tenant: str, campaign: str, job_a: str, job_b: str) -> dict[str, Any]:
        """Two jobs' live reports side by side; as `Counters.compare`."""
        return compare_reports(await self.report(tenant, campaign, job_a), await self.report(tenant, campaign, job_b))

    async def set_timezone(self, tenant: str, tz: str) -> None:
        """Set a tenant's IANA timezone."""
        await self._run(call(self.router, [self.set_timezone_cmd(tenant, tz)]))

    async def initialize(self) -> str:
        """The epoch marker, created when Redis holds none (a new deployment)."""
        current = await self._run(self.plan_read_epoch())
        if not current:
            current = await self._run(self.plan_create_epoch()) or await self._run(self.plan_read_epoch())
        self.epoch = current
        return current

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until fired events were sent or spooled, without blocking the loop; False on timeout."""
        if self._firer is None:
            return True
        return await asyncio.to_thread(self._firer.flush, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send what was fired (within `timeout`; the rest is spooled), then close connections."""
        if self._firer is not None:
            firer, self._firer = self._firer, None
            await asyncio.to_thread(firer.close, timeout)
        for twin in self._twins.values():
            twin.close(0)
        self._twins = {}
        for c in self._clients.values():
            await c.aclose()
            await c.connection_pool.disconnect()
        self._clients.clear()
        if self._spool is not None:
            self._spool.close()

    close = aclose
