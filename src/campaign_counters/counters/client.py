"""`Counters` (sync) and `AsyncCounters` (asyncio): the public realtime API.

Both run the plans of `protocol` and differ only in how a batch reaches
Redis.  Redis-py's own retries are disabled: a retried pipeline could apply
an event twice, and numbers must be exact.  Callers that want retries resend
events with ids, which makes resending safe.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any, Iterable, Mapping

import hiredis
import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..connection import RedisTarget, parse_redis_url
from ..errors import BackendError, CampaignCountersError
from ..events import Event
from ..script import FlowGraph, ScriptCache
from .core import FAILED, CountersCore, RecordResult, Settings
from .transport import Address, Plan, Receive, RefreshTopology, Send, call

log = logging.getLogger(__name__)
CLUSTER_SLOTS = ("CLUSTER", "SLOTS")


def pack(cmds: list[tuple]) -> bytes:
    return b"".join(hiredis.pack_command(c) for c in cmds)


def read_one(read: Any) -> Any:
    try:
        return read()
    except ResponseError as exc:
        return exc


async def read_one_async(read: Any) -> Any:
    try:
        return await read()
    except ResponseError as exc:
        return exc


class Held:
    """Connections held by one plan run for streamed sends (Send ... Receive).

    Replies are read in the order commands were written; a connection error
    turns the unread replies of that node into that error, and a connection
    released with replies unread is closed rather than returned dirty.
    """

    def __init__(self) -> None:
        self.conns: dict[Address, tuple[Any, Any]] = {}  # addr -> (pool, connection)
        self.sent: dict[Address, int] = {}
        self.errors: dict[Address, Exception] = {}

    def send(self, addr: Address, cmds: list[tuple], pool: Any) -> None:
        self.sent[addr] = self.sent.get(addr, 0) + len(cmds)
        if addr in self.errors:
            return
        try:
            if addr not in self.conns:
                self.conns[addr] = (pool, pool.get_connection())
            self.conns[addr][1].send_packed_command([pack(cmds)], check_health=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc

    async def send_async(self, addr: Address, cmds: list[tuple], pool: Any) -> None:
        self.sent[addr] = self.sent.get(addr, 0) + len(cmds)
        if addr in self.errors:
            return
        try:
            if addr not in self.conns:
                self.conns[addr] = (pool, await pool.get_connection())
            await self.conns[addr][1].send_packed_command([pack(cmds)], check_health=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.errors[addr] = exc

    def read(self, addr: Address) -> list[Any]:
        n, out = self.sent[addr], []
        try:
            while addr not in self.errors and len(out) < n:
                out.append(read_one(self.conns[addr][1].read_response))
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
_NO_RETRY = dict(retry=Retry(NoBackoff(), 0), retry_on_error=[])


def _target(url: str | None, client: Any) -> RedisTarget:
    if url is None and client is None:
        raise BackendError("give a Redis URL or a client")
    return parse_redis_url(url) if url is not None else RedisTarget(url="<client>")


class _Base(CountersCore):
    _module: Any

    def __init__(self, url: str | None = None, *, client: Any = None, settings: Settings | None = None,
                 script_cache: ScriptCache | None = None, socket_timeout: float | None = 5.0) -> None:
        self.target = _target(url, client)
        super().__init__(self.target.cluster, settings, script_cache)
        self._socket_timeout = socket_timeout
        self._clients: dict[Address, Any] = {}
        self._twin: Any = None
        if client is not None:
            self._clients[None] = client

    def _pool_class(self) -> tuple[Any, dict[str, Any]]:
        return self._module.ConnectionPool, {}

    def _client(self, addr: Address) -> Any:
        c = self._clients.get(addr)
        if c is None:
            pool_class, pool_opts = self._pool_class()
            opts = dict(decode_responses=False, socket_timeout=self._socket_timeout, **_NO_RETRY, **pool_opts)
            if addr is None:
                pool = pool_class.from_url(self.target.url, **opts)
            else:
                pool = pool_class(host=addr[0], port=addr[1], **{**self.target.options, **opts})
            c = self._clients[addr] = self._module.Redis(connection_pool=pool)
        return c

    def _refresh_sources(self) -> list[Address]:
        known = [a for a in self.router.nodes() if a is not None]
        return known + [s for s in self.target.seeds if s not in known]

    def _wrap(self, exc: RedisError) -> BackendError:
        return BackendError(f"Redis at {self.target.redacted()} failed: {type(exc).__name__}: {exc}")


class Counters(_Base):
    """Synchronous client; thread-safe as redis-py's connection pool is."""

    _module = redis

    def _pipeline(self, addr: Address, cmds: list[tuple]) -> list[Any]:
        """Send a batch on a connection of its own and read the raw replies (errors in place)."""
        own = Held()
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
            return first_answer(self._pipeline(a, [CLUSTER_SLOTS])[0] for a in self._refresh_sources())
        return {addr: self._pipeline(addr, cmds) for addr, cmds in request.by_node.items()}

    def _run(self, plan: Plan) -> Any:
        """Drive a plan; an I/O error is thrown into it where it asked, so a plan may recover."""
        held, reply, error = Held(), None, None
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
        """Apply one event: 'applied' or 'duplicate'; raises on bad input or failure."""
        return self._run(self.plan_record(event))

    def record_many(self, events: Iterable[Event | Mapping[str, Any]]) -> RecordResult:
        """Apply events in pipelines; bad events are reported, not raised."""
        return self._run(self.plan_record_many(events))

    def record_safe(self, event: Event | Mapping[str, Any]) -> str:
        """For the chat service: never raises, returns the outcome ('failed' on any error).

        Runs on connections whose every network wait is bounded by
        `settings.timeout` (50 ms by default), whatever `socket_timeout` the
        client was made with.
        """
        try:
            return self._budgeted()._run(self.plan_record_many([event])).outcomes[0]
        except (RedisError, CampaignCountersError, OSError) as exc:
            self.stats["failed"] += 1
            log.warning("record_safe failed: %s", type(exc).__name__)
            return FAILED

    def _budgeted(self) -> "Counters":
        """This client on connections of its own with the fire-and-forget timeout.

        A shallow copy: routing, caches and stats are shared, only the
        connections differ. A client built around a given redis client has
        no URL to open more connections with, so it is used as it is.
        """
        if self.target.url == "<client>":
            return self
        if self._twin is None:
            twin = copy.copy(self)
            twin._clients, twin._socket_timeout = {}, self.settings.timeout
            self._twin = twin
        return self._twin

    def load_script(self, tenant: str, campaign: str, script: Any) -> FlowGraph:
        return self._run(self.plan_load_script(tenant, campaign, script))

    def report(self, tenant: str, campaign: str, job: str | None = None) -> dict[str, Any]:
        return self._run(self.plan_report(tenant, campaign, job))

    def journey(self, tenant: str, campaign: str, job: str, user: str, with_ids: bool = False) -> dict[str, Any]:
        return self._run(self.plan_journey(tenant, campaign, job, user, with_ids))

    def run(self, plan: Plan) -> Any:
        """Run a plan of `protocol`/`maintenance` (used by the persistence jobs)."""
        return self._run(plan)

    def set_timezone(self, tenant: str, tz: str) -> None:
        self._run(call(self.router, [self.set_timezone_cmd(tenant, tz)]))

    def close(self) -> None:
        if self._twin is not None:
            self._twin.close()
            self._twin = None
        for c in self._clients.values():
            c.close()
            c.connection_pool.disconnect()
        self._clients.clear()


class AsyncCounters(_Base):
    """asyncio client over redis.asyncio, with the same keys, scripts and parsing."""

    _module = aredis

    max_connections = 100  # per Redis node; concurrent calls beyond it wait for a free connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._background: set[asyncio.Task] = set()
        self.max_in_flight = 10000  # fired events queued or being sent; more are dropped (and counted)
        self._fired: list[Event | Mapping[str, Any]] = []
        self._fired_sending = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task | None = None

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
        return await self._run(self.plan_record(event))

    async def record_many(self, events: Iterable[Event | Mapping[str, Any]]) -> RecordResult:
        return await self._run(self.plan_record_many(events))

    async def record_safe(self, event: Event | Mapping[str, Any], timeout: float | None = None) -> str:
        """Never raises and never waits beyond `timeout` (default settings.timeout)."""
        try:
            result = await asyncio.wait_for(
                self._run(self.plan_record_many([event])), timeout or self.settings.timeout
            )
            return result.outcomes[0]
        except (asyncio.TimeoutError, RedisError, CampaignCountersError, OSError) as exc:
            self.stats["failed"] += 1
            log.warning("record_safe failed: %s", type(exc).__name__)
            return FAILED

    def fire(self, event: Event | Mapping[str, Any]) -> None:
        """Fire and forget: returns at once, never raises; failures are counted in `stats`.

        Fired events are sent by one background sender, in `record_many`
        batches: what is fired within `settings.fire_window` (2 ms), or while
        the previous batch is on its way, goes in one script call per
        campaign, so under load a call's fixed cost is shared by many events.
        Beyond `max_in_flight` events waiting or being sent, events are
        dropped and counted as failed (the nightly reconcile repairs them).
        """
        if len(self._fired) + self._fired_sending >= self.max_in_flight:
            self.stats["failed"] += 1
            return
        self._fired.append(event)
        if self._sender is not None:
            return  # the running sender takes it with its next batch
        if len(self._fired) >= self.settings.script_batch or self.settings.fire_window <= 0:
            self._start_sender()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.settings.fire_window, self._start_sender)

    def _start_sender(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._sender is None and self._fired:
            self._sender = asyncio.get_running_loop().create_task(self._send_fired())
            self._background.add(self._sender)
            self._sender.add_done_callback(self._background.discard)

    async def _send_fired(self) -> None:
        """Send fired events until none are left; each batch is a record_many whose network
        waits are bounded by the client's socket timeout (nobody awaits it)."""
        try:
            while self._fired:
                batch, self._fired = self._fired[:self.settings.chunk], self._fired[self.settings.chunk:]
                self._fired_sending = len(batch)
                try:
                    await self._run(self.plan_record_many(batch))
                except (RedisError, CampaignCountersError, OSError) as exc:
                    self.stats["failed"] += len(batch)
                    log.warning("fire: %d event(s) failed: %s", len(batch), type(exc).__name__)
                finally:
                    self._fired_sending = 0
        finally:
            self._sender = None

    async def drain(self) -> None:
        """Send what was fired and wait for it (e.g. on shutdown)."""
        self._start_sender()
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def load_script(self, tenant: str, campaign: str, script: Any) -> FlowGraph:
        return await self._run(self.plan_load_script(tenant, campaign, script))

    async def report(self, tenant: str, campaign: str, job: str | None = None) -> dict[str, Any]:
        return await self._run(self.plan_report(tenant, campaign, job))

    async def journey(self, tenant: str, campaign: str, job: str, user: str, with_ids: bool = False) -> dict[str, Any]:
        return await self._run(self.plan_journey(tenant, campaign, job, user, with_ids))

    async def set_timezone(self, tenant: str, tz: str) -> None:
        await self._run(call(self.router, [self.set_timezone_cmd(tenant, tz)]))

    async def close(self) -> None:
        await self.drain()
        for c in self._clients.values():
            await c.aclose()
            await c.connection_pool.disconnect()
        self._clients.clear()
