"""Fire and forget: a background thread sends fired events in batches; callers never wait.

`fire(event)` validates the event in the caller's thread, gives it a
deterministic id when it has none (so a replay can never count it twice),
queues it and returns. It is safe from any thread and from sync or asyncio
code: the sender is a thread of its own with its own connections, whose
every network wait is bounded by `Settings.send_timeout`.

The sender takes what was fired within `fire_window` (or while the
previous batch was on its way) and sends it with `record_many`: up to
`script_batch` events of a campaign per script call, so under load batches
grow and a call's fixed cost in Redis is shared. What cannot be delivered
(unsent, unknown outcome, or fired while `max_in_flight` events already
wait; those are written SPILL_BATCH at a time, within SPILL_AFTER) goes to
the local spool; the spool is replayed when Redis takes a
batch again. `close(timeout)` returns within `timeout`: whatever is still
queued or on its way then is spooled (a copy of an event that does arrive
is a harmless duplicate).
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
SPILL_BATCH = 256  # events fired beyond max_in_flight are written to the spool this many at a time (one fsync)
SPILL_AFTER = 0.05  # ... or once the first of them waited this long (seconds)


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
        self._overflow: list[Event] = []  # fired beyond max_in_flight, on their way to the spool
        self._overflow_since = 0.0
        self._spilling = 0  # events being written to the spool right now
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
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
        spill = False
        with self._cond:
            self.stats["fired"] += 1
            if self.client is None or self._closing:
                spill = True
            elif len(self._queue) + len(self._sending) >= self.max_in_flight:
                # Overload: to the spool, a batch at a time so that a burst costs one fsync per batch.
                if not self._overflow:
                    self._overflow_since = time.monotonic()
                self._overflow.append(ev)
                spill = len(self._overflow) >= SPILL_BATCH or time.monotonic() - self._overflow_since >= SPILL_AFTER
                ev = None
            else:
                self._queue.append(ev)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="campaign-counters-fire", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if spill:
            self._spill([ev] if ev is not None else [])



    def _spill(self, events: list[Event]) -> None:
        """Write `events` and whatever overflowed so far to the spool."""
        with self._cond:
            events, self._overflow = self._overflow + events, []
            self._spilling += len(events)
        try:
            if events:
                self.stats["spooled"] += self.spool.append(events)
        finally:
            with self._cond:
                self._spilling -= len(events)

    def _take(self) -> list[Event] | None:
        """The next batch: what was fired within the window (None: closing and nothing left)."""
        settings = self.client.settings
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(timeout=SPILL_AFTER if self._overflow else STATUS_EVERY)
                if not self._queue:
                    return []  # idle: a chance to spill overflow, report the spool and replay it
            if not self._queue:
                return None
            window_ends = time.monotonic() + settings.fire_window
            while len(self._queue) < settings.script_batch and not self._closing:
                left = window_ends - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), settings.chunk))]
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
            if self._overflow:
                self._spill([])
            if delivered:
                self._replay()
            self._report()

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
        self.stats["spool_waiting"] = status.events
        self.stats["spool_oldest_age_s"] = int(time.time() - status.oldest) if status.oldest else 0
        keys = self.client.keys
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
        """Events queued, being sent, or on their way to the spool."""
        with self._cond:
            return len(self._queue) + len(self._sending) + len(self._overflow) + self._spilling

    def flush(self, timeout: float) -> bool:
        """Wait until what was fired has been sent or spooled; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        while self.waiting():
            if self._thread is None and self._overflow:  # no sender to write the overflow
                self._spill([])
                continue
            if time.monotonic() >= deadline:
                return False
            with self._cond:
                self._cond.notify()
            time.sleep(0.001)
        return True

    def close(self, timeout: float) -> None:
        """Stop the sender within `timeout`; what it did not deliver by then is spooled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            rest = list(self._sending) + list(self._queue)
            self._queue.clear()
        if rest:
            self._spill(rest)
        self.spool.close()
