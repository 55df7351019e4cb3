"""Routing and execution of command batches, written once for sync and async.

The logic (group commands by cluster node, reload a script on NOSCRIPT,
follow MOVED after a topology refresh) lives in generators that *yield* what
they need done and receive the replies.  The sync and asyncio clients only
run those generators, so both behave identically by construction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any, Generator, Iterable, Sequence

from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, TryAgainError

from redis.crc import key_slot

from .keys import slot_of

Address = tuple[str, int] | None  # None: the single server


@dataclass(frozen=True)
class LuaScript:
    """A .lua file next to this module, sent once and then called by SHA."""

    name: str
    source: str

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()

    @classmethod
    def load(cls, name: str) -> "LuaScript":
        source = resources.files(__package__).joinpath(name).read_text()
        return cls(name, source)


@dataclass(frozen=True)
class Cmd:
    """One Redis command; `route` is the campaign whose slot it touches
    (None: the slot of the command's first key)."""

    route: str | None
    args: tuple
    script: LuaScript | None = None


@dataclass(frozen=True)
class Batches:
    """Request to the driver: run each list as one pipeline on its node."""

    by_node: dict[Address, list[tuple]]


@dataclass(frozen=True)
class RefreshTopology:
    """Request to the driver: return CLUSTER SLOTS from any reachable node."""


@dataclass(frozen=True)
class Send:
    """Request to the driver: write these commands now, on one held connection per
    node, without waiting for replies (so Redis works while we build the next)."""

    by_node: dict[Address, list[tuple]]


@dataclass(frozen=True)
class Receive:
    """Request to the driver: the replies of everything sent since the last Receive,
    per node, in order; the held connections are released."""


RETRYABLE = (NoScriptError, MovedError, AskError, TryAgainError)


Plan = Generator[Any, Any, Any]


class Router:
    """Maps campaigns to nodes: everything to one server, or by cluster slot."""

    def __init__(self, cluster: bool = False) -> None:
        self.cluster = cluster
        self._slots: list[Address] = [None] * 16384

    def address(self, route: str | None) -> Address:
        """The node of a campaign's slot (None: any node)."""
        if not self.cluster:
            return None
        if route is None:
            return next((a for a in self._slots if a is not None), None)
        return self._slots[slot_of(route)]

    def address_of(self, cmd: "Cmd") -> Address:
        """A command's node: by its campaign, else by its first key."""
        if not self.cluster or cmd.route is not None or len(cmd.args) < 2:
            return self.address(cmd.route)
        key = cmd.args[1]
        return self._slots[key_slot(key.encode() if isinstance(key, str) else key)]

    def slot_per_node(self) -> list[int]:
        """One slot served by each node (the first of its range), to reach every node once by key."""
        first: dict[Address, int] = {}
        for slot, addr in enumerate(self._slots):
            if addr is not None and addr not in first:
                first[addr] = slot
        return sorted(first.values())

    def nodes(self) -> list[Address]:
        if not self.cluster:
            return [None]
        return sorted({a for a in self._slots if a is not None})

    def update(self, cluster_slots: Any) -> None:
        """Apply a CLUSTER SLOTS reply: [[start, end, [host, port, ...], ...], ...]."""
        slots: list[Address] = [None] * 16384
        for entry in cluster_slots:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else master[0]
            addr = (host, int(master[1]))
            for s in range(start, end + 1):
                slots[s] = addr
        self._slots = slots


def execute(router: Router, cmds: Sequence[Cmd], attempts: int = 4) -> Plan:
    """Run commands, each at most once; return replies or exceptions in order.

    Only errors that prove a command did not run (NOSCRIPT, MOVED, ASK,
    TRYAGAIN) are retried, so an event is never applied twice by a retry.
    """
    results: list[Any] = [None] * len(cmds)
    pending = list(range(len(cmds)))
    for attempt in range(attempts):
        if router.cluster and (attempt or router.address(None) is None):
            router.update((yield RefreshTopology()))
        groups: dict[Address, list[int]] = {}
        for i in pending:
            groups.setdefault(router.address_of(cmds[i]), []).append(i)
        replies = yield Batches({a: [cmds[i].args for i in idx] for a, idx in groups.items()})
        retry: list[int] = []
        load: dict[Address, set[LuaScript]] = {}
        for addr, idx in groups.items():
            for i, reply in zip(idx, replies[addr]):
                if isinstance(reply, NoScriptError) and cmds[i].script is not None:
                    load.setdefault(addr, set()).add(cmds[i].script)
                    retry.append(i)
                elif isinstance(reply, (MovedError, AskError, TryAgainError)):
                    retry.append(i)
                else:
                    results[i] = reply
        if load:
            loaded = yield Batches({a: [("SCRIPT", "LOAD", s.source) for s in ss] for a, ss in load.items()})
            for replies_ in loaded.values():
                for reply in replies_:
                    if isinstance(reply, Exception):
                        raise reply
        if not retry:
            return results
        pending = sorted(retry)
    for i in pending:
        results[i] = RedisError("gave up after repeated MOVED/NOSCRIPT replies")
    return results


@dataclass
class Streamed:
    """Commands written by `send_streamed` whose replies are still to be read."""

    cmds: list[Cmd]
    nodes: list[Address]


def send_streamed(router: Router, cmds: Iterable[Cmd]) -> Plan:
    """Write each command as soon as it is built, without reading replies.

    The caller may do other work (prepare the next batch) while Redis runs
    these, then collect the replies with `receive_streamed`.
    """
    if router.cluster and router.address(None) is None:
        router.update((yield RefreshTopology()))
    out = Streamed([], [])
    for cmd in cmds:
        addr = router.address_of(cmd)
        yield Send({addr: [cmd.args]})
        out.cmds.append(cmd)
        out.nodes.append(addr)
    return out


def receive_streamed(router: Router, streamed: Streamed) -> Plan:
    """Replies (or errors) of streamed commands, in order.

    Commands that provably did not run (NOSCRIPT, MOVED, ...) are retried
    through `execute`; everything else ran exactly once.
    """
    if not streamed.cmds:
        return []
    replies = yield Receive()
    cursor = {addr: iter(r) for addr, r in replies.items()}
    results = [next(cursor[addr]) for addr in streamed.nodes]
    retry = [i for i, r in enumerate(results) if isinstance(r, RETRYABLE)]
    if retry:
        again = yield from execute(router, [streamed.cmds[i] for i in retry])
        for i, r in zip(retry, again):
            results[i] = r
    return results


def on_every_node(router: Router, args: tuple) -> Plan:
    """Run one command on every node (the server, or each cluster master); replies in node order."""
    if router.cluster and router.address(None) is None:
        router.update((yield RefreshTopology()))
    nodes = router.nodes()
    replies = yield Batches({a: [args] for a in nodes})
    out = [replies[a][0] for a in nodes]
    for reply in out:
        if isinstance(reply, Exception):
            raise reply
    return out


def as_dict(reply: Any) -> dict:
    """A raw HGETALL (or stream entry) reply, [f1, v1, f2, v2, ...], as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


def call(router: Router, cmds: Sequence[Cmd]) -> Plan:
    """Like execute, but raise the first error: for reads and admin commands."""
    results = yield from execute(router, cmds)
    for reply in results:
        if isinstance(reply, Exception):
            raise reply
    return results
