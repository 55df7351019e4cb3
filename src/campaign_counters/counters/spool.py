"""The local spool: events the chat service could not deliver, kept on disk until Redis takes them.

What goes in: events whose outcome is `unsent` (Redis unreachable, or it
lost its data), `unknown` (sent, no reply) and events fired beyond the
in-memory bound. Every spooled event carries an id (fired events without
one get a deterministic id), so replaying one that was in fact applied is
a duplicate, never a second count.

Layout: one append-only JSON Lines file per process (`spool-<host>-<pid>-<n>.jsonl`)
in the spool directory, so processes never write the same file. A line is
one event. Appends are flushed and fsynced per batch by default (`fsync`):
an event reported as spooled survives a crash of the process or the host.
A writer holds an exclusive `flock` on the file it appends to (once it
holds it, it checks that no replay took and deleted the new file first);
a replay takes files with the same lock (so it takes a dead process's
files and never one a live process still writes: each process replays its
own), sends their events, writes those left undelivered to a fresh file,
and only then deletes the file (a process that ends in between leaves
copies, which replay as duplicates, never a gap). The total size of the
directory is capped (`max_bytes`): beyond it,
events are dropped, counted in `overflowed` and logged with their ids.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..events import Event

log = logging.getLogger(__name__)

ENV_SPOOL_DIR = "CAMPAIGN_COUNTERS_SPOOL_DIR"
DEFAULT_MAX_BYTES = 256 * 2**20
REPLAY_CHUNK = 5000


def event_dict(ev: Event) -> dict[str, Any]:
    """An event as its JSON object (the event contract's fields; ts in seconds)."""
    out: dict[str, Any] = {"type": ev.type, "tenant": ev.tenant, "campaign": ev.campaign, "ts": ev.ts_ms / 1000}
    for name in ("job", "user", "id", "target", "choice", "node", "title", "status"):
        value = getattr(ev, name)
        if value is not None:
            out[name] = value
    return out


@dataclass
class SpoolStatus:
    """What a spool holds: events waiting, since when, and what overflowed."""

    events: int
    oldest: float | None  # Unix time of the oldest waiting event's spooling
    overflowed: int
    files: int

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "oldest_age_s": round(time.time() - self.oldest, 1) if self.oldest else None,
                "overflowed": self.overflowed, "files": self.files}


class Spool:
    """One process's writer into a spool directory, and the replay of the whole directory."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.overflowed = 0
        self._lock = threading.Lock()
        self._fh: Any = None
        self._path: Path | None = None
        self._serial = 0
        self._written = 0  # events this process appended (and has not seen replayed)

    # -- writing ---------------------------------------------------------------

    def _open(self) -> Any:
        while self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._serial += 1
            name = f"spool-{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}-{self._serial}.jsonl"
            self._path = self.dir / name
            fh = open(self._path, "ab")
            fcntl.flock(fh, fcntl.LOCK_EX)  # ours while we write it
            if os.fstat(fh.fileno()).st_nlink:
                self._fh = fh
            else:  # a replay took (and deleted) the new file between its creation and our lock: open another
                fh.close()
        return self._fh

    def size(self) -> int:
        """Bytes in the directory's spool files."""
        try:
            return sum(p.stat().st_size for p in self.dir.glob("spool-*.jsonl"))
        except OSError:
            return 0

    def append(self, events: Iterable[Event | Mapping[str, Any]], freed: int = 0) -> int:
        """Write events (each must have an id); returns how many were kept (the rest overflowed).

        `freed`: bytes of a spool file about to be deleted (a replay replacing it), not counted against the cap.
        """
        lines = [json.dumps(e if isinstance(e, Mapping) else event_dict(e), separators=(",", ":")).encode() + b"\n"
                 for e in events]
        if not lines:
            return 0
        with self._lock:
            room = self.max_bytes - self.size() + freed
            kept: list[bytes] = []
            for line in lines:
                if len(line) > room:
                    break
                kept.append(line)
                room -= len(line)
            lost = lines[len(kept):]
            if lost:
                self.overflowed += len(lost)
                ids = [json.loads(x).get("id") for x in lost]
                log.error("spool %s is full (%d bytes): %d event(s) lost, ids %s", self.dir, self.max_bytes,
                          len(lost), ids)
            if kept:
                fh = self._open()
                fh.write(b"".join(kept))
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                self._written += len(kept)
            return len(kept)

    def keep(self, events: list[Event]) -> int:
        """`append` that never raises, for callers that must not: events a failing disk cannot take
        count as overflowed and are logged with their ids. Returns how many were kept."""
        try:
            return self.append(events)
        except OSError as exc:
            log.error("spool %s could not be written (%s): %d event(s) lost, ids %s", self.dir, type(exc).__name__,
                      len(events), [ev.id for ev in events])
            with self._lock:
                self.overflowed += len(events)
            return 0

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    # -- reading -----------------------------------------------------------------

    def status(self) -> SpoolStatus:
        """Events waiting in the whole directory (every process's files)."""
        events, oldest, files = 0, None, 0
        for path in sorted(self.dir.glob("spool-*.jsonl")) if self.dir.is_dir() else []:
            try:
                with open(path, "rb") as fh:
                    n = sum(1 for line in fh if line.strip())
                mtime = path.stat().st_ctime
            except OSError:
                continue
            if n:
                files += 1
                events += n
                oldest = mtime if oldest is None else min(oldest, mtime)
        return SpoolStatus(events, oldest, self.overflowed, files)

    def pending(self) -> bool:
        """Whether this process spooled events that no replay has taken yet (cheap: no disk access)."""
        return self._written > 0

    def replay(self, send: Callable[[list[dict[str, Any]]], list[str]]) -> dict[str, int]:
        """Send every spooled event with `send(events) -> outcomes`; returns counts per outcome.

        Events whose outcome is `unknown` or `unsent` stay spooled. A file
        another replay holds is skipped.
        """
        counts: dict[str, int] = {}
        if not self.dir.is_dir():
            return counts
        with self._lock:  # our own file is closed first: a replay takes it whole
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            self._written = 0
        for path in sorted(self.dir.glob("spool-*.jsonl")):
            try:
                fh = open(path, "r+b")
            except OSError:
                continue
            with fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        continue
                    raise
                if not path.exists():
                    continue  # another replay finished it between our listing and our lock
                events = [json.loads(line) for line in fh if line.strip()]
                left: list[dict[str, Any]] = []
                for start in range(0, len(events), REPLAY_CHUNK):
                    part = events[start:start + REPLAY_CHUNK]
                    outcomes = send(part)
                    for ev, outcome in zip(part, outcomes):
                        counts[outcome] = counts.get(outcome, 0) + 1
                        if outcome in ("unknown", "unsent"):
                            left.append(ev)
                    if any(o in ("unknown", "unsent") for o in outcomes):
                        left += events[start + REPLAY_CHUNK:]  # Redis is failing again: stop here
                        break
                if left and len(left) == len(events):
                    break  # nothing was delivered: the file stays as it is
                if left:  # written before the file is deleted: a crash in between leaves copies, never a loss
                    self.append(left, freed=os.fstat(fh.fileno()).st_size)
                    self.close()
                path.unlink()
            if left:
                break
        return counts


def default_spool_dir() -> Path:
    """$CAMPAIGN_COUNTERS_SPOOL_DIR, else `spool` under $CAMPAIGN_COUNTERS_HOME (default ./.campaign-counters)."""
    env = os.environ.get(ENV_SPOOL_DIR)
    if env:
        return Path(env)
    return Path(os.environ.get("CAMPAIGN_COUNTERS_HOME") or ".campaign-counters") / "spool"
