"""Fire and forget: a background thread sends fired events in batches; callers never wait.

`fire(event)` validates the event in the caller's thread, gives it a
deterministic id when it has none (so a replay can never count it twice),
queues it and returns. It is safe from any thread and from sync or asyncio
code: the sender is a thread of its own with its own connections, whose
every network wait is bounded by `Settings.send_timeout`.

The sender takes what was fired within `fire_window` (or while the
previous batch was on its way), up to `script_batch` events, and sends
it with `record_many` (one script call per campaign), so under load batches
grow and a call's fixed cost in Redis is shared. One batch at a time: with
many processes on a busy Redis, what waits in Redis ahead of a reply stays
small, and so do the waits (more in flight made replies miss their budget
and turned delivered events into `unknown` ones). What cannot be delivered
(unsent, unknown outcome, or fired while `max_in_flight` events already
wait) goes to the local spool; the spool is replayed when Redis takes a
batch again and the sender has caught up with what is fired (replaying
during an overload would only deepen it). The caller never writes the
spool itself: events fired beyond the bound wait (up to `max_in_flight`
more) for a spill thread that appends them in batches, one fsync per
batch; only when that is full too does `fire` write to the spool in the
caller's thread (never dropping).
`close(timeout)` returns within `timeout`: whatever is still queued or on
its way then is spooled (a copy of an event that does arrive is a harmless
duplicate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..errors import ValidationError
from ..events import Event, parse_event
from .spool import Spool
from .transport import Cmd, call

log = logging.getLogger(__name__)

STATUS_EVERY = 5.0  # seconds between two reports of the spool's state into Redis


def with_id(ev: Event) -> Event:
    """The event, with a deterministic id derived from its content when it has none."""
    if ev.id is not None:
        return ev
    content = (ev.type, ev.tenant, ev.campaign, ev.job, ev.user, ev.ts_ms, ev.target, ev.choice, ev.node,
               ev.title, ev.status)
    return replace(ev, id="auto-" + hashlib.blake2b(repr(content).encode(), digest_size=16).hexdigest())


class Firer:
    """The queue, sender thread and spool behind `fire`."""

    def __init__(self, client: Any, spool: Spool, max_in_flight: int, stats: dict[str, int],
                 count_invalid: Callable[[str], None]) -> None:
        self.client = client  # a sync Counters whose network waits are bounded (None: spool everything)
        self.spool = spool
        self.max_in_flight = max_in_flight
        self.stats = stats
        self._count_invalid = count_invalid
        self._queue: deque[Event] = deque()
        self._sending: list[Event] = []
        self._overflow: list[Event] = []  # fired beyond max_in_flight, for the spill thread to spool
        self._spilling: list[Event] = []  # taken by the spill thread, being written
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the sender's: the queue changed
        self._overflowed = threading.Condition(lock)  # the spill thread's: the overflow changed
        self._closing = False
        self._thread: threading.Thread | None = None
        self._spiller: threading.Thread | None = None
        self._swept = False  # the spool directory was replayed once (files of dead processes)
        self._status_at = 0.0
        self._client_id = f"{socket.gethostname()}:{os.getpid()}"
        for key in ("fired", "spooled"):
            stats.setdefault(key, 0)

    def fire(self, item: Event | Mapping[str, Any]) -> None:
        """Queue one event for the sender; never blocks, never raises."""
        try:
            ev = with_id(item if isinstance(item, Event) else parse_event(item))
        except ValidationError as exc:
            self.stats["rejected"] += 1
            self._count_invalid(exc.field)
            return
        with self._cond:
            self.stats["fired"] += 1
            if self.client is None or self._closing:
                spill = True
            elif len(self._queue) + len(self._sending) < self.max_in_flight:
                spill = False
                self._queue.append(ev)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="campaign-counters-fire", daemon=True)
                    self._thread.start()
                self._cond.notify()
            elif len(self._overflow) + len(self._spilling) < self.max_in_flight:
                spill = False
                self._overflow.append(ev)
                if self._spiller is None:
                    self._spiller = threading.Thread(target=self._spill_run, name="campaign-counters-spill",
                                                     daemon=True)
                    self._spiller.start()
                self._overflowed.notify()
            else:
                spill = True  # both bounds reached: the caller writes it (kept, never dropped)
        if spill:
            self._spill([ev])

    def _spill(self, events: list[Event]) -> None:
        kept = self.spool.keep(events)  # fire never raises: a failing disk counts as the spool's overflow
        with self._cond:
            self.stats["spooled"] += kept

    def _spill_run(self) -> None:
        """The spill thread: spool what was fired beyond `max_in_flight`, a batch per write."""
        while True:
            with self._overflowed:
                while not self._overflow and not self._closing:
                    self._overflowed.wait()
                if not self._overflow:
                    return
                self._spilling, self._overflow = self._overflow, []
            self._spill(self._spilling)
            with self._overflowed:
                self._spilling = []

    def _take(self) -> list[Event] | None:
        """The next batch: what was fired within the window (None: closing and nothing left)."""
        settings = self.client.settings
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(timeout=STATUS_EVERY)
                if not self._queue:
                    return []  # idle: a chance to report the spool and replay it
            if not self._queue:
                return None
            window_ends = time.monotonic() + settings.fire_window
            while len(self._queue) < settings.script_batch and not self._closing:
                left = window_ends - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), settings.script_batch))]
            self._sending = batch
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            delivered = bool(batch) or self._answers()
            if batch:
                try:
                    result = self.client.record_many(batch)
                    left = [ev for ev, outcome in zip(batch, result.outcomes) if outcome in ("unknown", "unsent")]
                except Exception as exc:  # noqa: BLE001 - the sender must survive anything
                    log.warning("fire: %d event(s) not sent: %s", len(batch), type(exc).__name__)
                    left = batch
                if left:
                    self._spill(left)
                    delivered = False
                with self._cond:
                    self._sending = []
            if delivered and self._caught_up():
                self._replay()
            self._report()

    def _caught_up(self) -> bool:
        """Whether the sender keeps up with what is fired (less than a script call's worth waits, nothing
        overflowed): only then is the spool replayed, so an overload is not made worse by its own replays."""
        with self._cond:
            return len(self._queue) < self.client.settings.script_batch and not self._overflow

    def _answers(self) -> bool:
        """Whether Redis answers a PING now (checked when idle, before replaying the spool)."""
        if not self.spool.pending() and self._swept:
            return False
        try:
            self.client.run(call(self.client.router, [Cmd(None, ("PING",))]))
            return True
        except Exception:  # noqa: BLE001 - down: nothing to replay into
            return False

    def _replay(self) -> None:
        """Send spooled events once Redis takes batches again (everything in the directory, the first time)."""
        if not (self.spool.pending() or not self._swept):
            return
        self._swept = True
        try:
            counts = self.spool.replay(lambda evs: self.client.record_many(evs).outcomes)
        except Exception as exc:  # noqa: BLE001 - a failed replay leaves the spool as it was
            log.warning("fire: spool replay failed: %s", type(exc).__name__)
            return
        if counts:
            log.info("fire: spool replayed: %s", json.dumps(counts, sort_keys=True))

    def _report(self, force: bool = False) -> None:
        """Tell Redis what this process's spool holds (for `health` and dashboards), every few seconds."""
        if not force and time.monotonic() - self._status_at < STATUS_EVERY:
            return
        self._status_at = time.monotonic()
        status = self.spool.status()
        keys = self.client.keys
        self.stats["spool_waiting"] = status.events
        self.stats["spool_oldest_age_s"] = int(time.time() - status.oldest) if status.oldest else 0
        if status.events:
            cmds = [Cmd(None, ("HSET", keys.spool_status(), self._client_id, status.events)),
                    Cmd(None, ("HSET", keys.spool_oldest(), self._client_id, int(status.oldest or time.time())))]
        else:
            cmds = [Cmd(None, ("HDEL", keys.spool_status(), self._client_id)),
                    Cmd(None, ("HDEL", keys.spool_oldest(), self._client_id))]
        if status.overflowed:
            cmds.append(Cmd(None, ("HSET", keys.spool_overflowed(), self._client_id, status.overflowed)))
        try:
            self.client.run(call(self.client.router, cmds))
        except Exception:  # noqa: BLE001 - best effort
            pass

    def waiting(self) -> int:
        """Events queued, being sent, or waiting to be spooled."""
        with self._cond:
            return len(self._queue) + len(self._sending) + len(self._overflow) + len(self._spilling)

    def flush(self, timeout: float) -> bool:
        """Wait until what was fired has been sent or spooled; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        while self.waiting():
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.notify()
                self._overflowed.notify()
            time.sleep(0.001)
        return True

    def close(self, timeout: float) -> None:
        """Stop the sender within `timeout`; what it did not deliver by then is spooled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._overflowed.notify_all()
        for thread in (self._thread, self._spiller):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            rest = list(self._sending) + list(self._queue) + self._overflow
            if self._spiller is not None and self._spiller.is_alive():
                rest += self._spilling  # its write may not finish before the process ends (a copy is harmless)
            self._queue.clear()
            self._overflow = []
        if rest:
            self._spill(rest)
        self.spool.close()
