"""The Python side of record.lua: its arguments in, and what it stores and returns out.

The layouts (the msgpack arguments, return codes, user records with their
journey steps and id fingerprints, the change log, the repair tail, counters
hashes) are defined by record.lua; changing the script means checking this
one file. Shared by live reads, snapshots and repairs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import msgpack

from ..errors import BackendError
from ..events import Event
from ..analysis import Visit
from ..reports import Aggregate
from ..script import SEP
from .keys import KeySchema
from .transport import Cmd, LuaScript, as_dict

RECORD = LuaScript.load("record.lua")

FLAG_TARGETED, FLAG_SENT, FLAG_INTERACTED, FLAG_COMPLETED = 1, 2, 4, 8

TYPE_CODES = {"targeted": "t", "sent": "s", "interaction": "i", "status": "x"}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}
WIRE_WIDTH = 13  # values per event in record.lua's events argument
TAIL_WIDTH = 11  # values per event in a repair tail entry
CODE_OFFSET = 8  # record.lua replies a byte per event: its code + 8 (codes are -6..1)
FINGERPRINT_BYTES = 9  # 72 bits: see `fingerprint`

MAX_NODES = 4096  # distinct nodes of a campaign without a script (record.lua's MAX_NODES)
# Campaign counters record.lua adds to when a cap was hit: events counted under a node's '(other)'
# choice (max_choices), events left out of per-day counts (max_days).
OVERFLOW_FIELDS = {"max_choices": b"over:choices", "max_days": b"over:days"}

# Codes record.lua returns per event.
APPLIED_CODE, DUPLICATE_CODE = 1, 0
FOREIGN_CODE, TOO_MANY_NODES_CODE, CLOSED_CODE, UNKNOWN_NODE_CODE = -1, -2, -3, -6
NO_EPOCH_CODE, OTHER_EPOCH_CODE = -4, -5
REJECTION_REASONS = {
    FOREIGN_CODE: ("campaign", "belongs to another tenant"),
    TOO_MANY_NODES_CODE: ("target", f"campaign has too many distinct nodes (limit {MAX_NODES})"),
    CLOSED_CODE: ("campaign", "is closed: it completed and its live data expired after the retention period "
                              "(its reports are in the store); load its script again to reopen it"),
    UNKNOWN_NODE_CODE: ("target", "is not a node of the campaign's script (nor is `node`, when given): "
                                  "load the script that has it first"),
}
REJECTION_NAMES = {FOREIGN_CODE: "other_tenant", TOO_MANY_NODES_CODE: "too_many_nodes", CLOSED_CODE: "closed",
                   UNKNOWN_NODE_CODE: "unknown_node"}


def rejection_of(code: int) -> tuple[str, str]:
    """(field, reason) of a negative code of record.lua."""
    return REJECTION_REASONS.get(code, ("event", f"rejected by Redis ({code})"))


def fingerprint(event_id: str) -> bytes:
    """The 72-bit fingerprint by which record.lua remembers an event id (BLAKE2b).

    An id is compared only with the entries of its bucket, which share its
    last L bits (2**L buckets), so a new id is mistaken for a remembered one
    with probability n_b / 2**(72 - L) for n_b entries in its bucket. A
    campaign remembering 20 million ids (two days of 10 million events a day)
    has L of about 21 and n_b at most a few dozen: under 2e-14 per event.
    """
    return hashlib.blake2b(event_id.encode(), digest_size=FINGERPRINT_BYTES).digest()


@dataclass(frozen=True)
class RecordOptions:
    """The record script's tunables (see `Settings`), as its arguments (built once per client)."""

    id_ttl: int
    journeys: bool
    day_ttl: int
    max_choices: int
    max_days: int

    def packed(self) -> tuple[str, ...]:
        return (str(self.id_ttl), "1" if self.journeys else "0", str(self.day_ttl), str(self.max_choices),
                str(self.max_days))


def record_call(keys: KeySchema, campaign: str, events: Sequence[Event], local_day: Callable[[str, int], str],
                options: tuple[str, ...], epoch: str = "", fingerprints: Sequence[bytes] | None = None) -> Cmd:
    """One record.lua call for events of one campaign (see the script for the layout).

    `local_day(tenant, ts_ms)` names an event's local day; `options` is
    `RecordOptions.packed()`; `epoch` the marker the caller expects ('': any).
    The call carries this machine's clock (keep clocks in sync: it stamps
    remembered ids, whose TTL it measures).
    Fingerprints are taken from the events' ids unless given (a replay of
    the repair tail). Runs for every event of a bulk load, so key names are
    built once per job and day, not per event.
    """
    k = keys
    names = [k.meta(campaign), k.users(campaign), k.counters(campaign), k.dirty(campaign),
             k.registry(campaign), k.names(campaign), k.rejected(campaign), k.epoch(campaign),
             k.change_log(campaign), k.repair_tail(campaign), k.ids(campaign)]
    jobs: dict[str, int] = {}
    days: dict[tuple[str, str], int] = {}
    values: list[Any] = []
    for i, ev in enumerate(events):
        tenant, job, etype = ev.tenant, ev.job, ev.type
        today = local_day(tenant, ev.ts_ms)
        if job:
            job_ref = jobs.get(job, 0)
            if not job_ref:
                names.append(k.counters(campaign, job))
                job_ref = jobs[job] = len(names)
        else:
            job_ref = 3  # a status of the whole campaign
        day_ref = 0
        if etype != "status":
            day_ref = days.get((today, tenant), 0)
            if not day_ref:
                names += [k.day_users(campaign, today, "a"), k.day_users(campaign, today, "s"),
                          k.day_users(campaign, today, "i"), k.tenant_day_users(tenant, today, campaign)]
                day_ref = days[(today, tenant)] = len(names) - 3
        if fingerprints is not None:
            fp = fingerprints[i]
        else:
            fp = fingerprint(ev.id) if ev.id is not None else b""
        values += (TYPE_CODES[etype], tenant, job or "", ev.user or "", ev.ts_ms, ev.target or "",
                   ev.choice or "", ev.node or "", ev.status or "", today, job_ref, day_ref, fp)
    now = str(int(time.time() * 1000))
    argv = (campaign, epoch, now, *options, msgpack.packb(values, use_bin_type=False))  # cmsgpack knows no bin
    return Cmd(campaign, ("EVALSHA", RECORD.sha, len(names), *names, *argv), RECORD)


def split_reply(reply: bytes | str) -> tuple[list[int], str]:
    """record.lua's reply: (one code per event, the epoch marker or '').

    The script returns one string: a byte per event (its code + 8), a
    newline, the epoch marker (a table reply costs Redis a reply-buffer
    allocation per call).
    """
    data = reply.encode() if isinstance(reply, str) else bytes(reply)
    codes, _, epoch = data.partition(b"\n")
    return [c - CODE_OFFSET for c in codes], epoch.decode()


def tail_events(campaign: str, entries: list) -> tuple[list[Event], list[bytes], str | None]:
    """Repair tail entries as (events, their fingerprints, the last entry id)."""
    events: list[Event] = []
    fps: list[bytes] = []
    last = None
    for entry_id, fields in entries:
        last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        values = msgpack.unpackb(as_dict(fields)[b"e"], raw=True)  # fingerprints are not text
        for k in range(0, len(values), TAIL_WIDTH):
            etype, tenant, job, user, ts, target, choice, node, status, _day, fp = values[k:k + TAIL_WIDTH]
            text = [v.decode() or None for v in (job, user, target, choice, node, status)]
            events.append(Event(TYPE_NAMES[etype.decode()], tenant.decode(), campaign, ts, text[0], text[1], None,
                                text[2], text[3], text[4], None, text[5]))
            fps.append(fp)
    return events, fps, last


def split_log(data: bytes, carry: bytes = b"") -> tuple[list[str], bytes]:
    """User names in a chunk of the change log; the unfinished name at its end is carried over."""
    data = carry + data
    cut = data.rfind(b"\x1f")
    if cut < 0:
        return [], data
    return [u.decode() for u in data[:cut].split(b"\x1f")], data[cut + 1:]


def user_jobs(raw: bytes | None) -> list[list]:
    """The job records inside a user's packed value (the header dropped)."""
    if raw is None:
        return []
    # The header holds binary fingerprints: decoded leniently, and dropped.
    return msgpack.unpackb(raw, unicode_errors="surrogateescape")[1:]


def find_record(raw: bytes | None, job_index: bytes | int | None) -> list | None:
    """The record of one job inside a user's packed value."""
    if raw is None or job_index is None:
        return None
    ji = int(job_index)
    return next((r for r in user_jobs(raw) if r[0] == ji), None)


@dataclass
class UserState:
    """One user's state in one job, as its record keeps it."""

    flags: int
    first_ms: int
    sent_ms: int | None
    end_ms: int | None
    exit: int
    interactions: int
    steps: list  # flat: ms after first_ms, node index, choice ('' for none), ...
    reached: list  # node indexes the user reached

    @classmethod
    def from_record(cls, r: list) -> "UserState":
        first = r[2]
        return cls(
            flags=r[1],
            first_ms=first,
            sent_ms=first + r[3] if r[3] >= 0 else None,
            end_ms=first + r[4] if r[4] >= 0 else None,
            exit=r[5],
            interactions=r[6],
            steps=r[9] if len(r) > 9 and r[9] else [],
            reached=list(r[7]) if len(r) > 7 and isinstance(r[7], list) else [],
        )

    @property
    def completed(self) -> bool:
        return bool(self.flags & FLAG_COMPLETED)

    @property
    def completion_ms(self) -> int | None:
        if not self.completed or self.end_ms is None:
            return None
        return self.end_ms - (self.sent_ms if self.sent_ms is not None else self.first_ms)

    def node_indexes(self) -> set[int]:
        """Indexes of the nodes the journey names (its steps' nodes and the exit)."""
        out = set(self.steps[1::3])
        if self.exit:
            out.add(self.exit)
        return out

    def visit(self, names: Mapping[int, str]) -> Visit:
        """What the analysis needs of this record (`analysis.Visit`); `names` must know every node index."""
        s, first = self.steps, self.first_ms
        return Visit(first_ms=first, sent_ms=self.sent_ms, fin_ms=self.end_ms if self.completed else None,
                     reached={names[i] for i in self.reached},
                     steps=[(first + s[i], names[s[i + 1]], s[i + 2] or None) for i in range(0, len(s), 3)])

    def journey(self, names: Mapping[int, str]) -> dict[str, Any]:
        """The journey: steps in time order (then arrival), completion, exit node, interactions."""
        ct = self.completion_ms
        s, first = self.steps, self.first_ms
        path = [{"node": names.get(s[i + 1], ""), "choice": s[i + 2] or None, "ts": (first + s[i]) / 1000}
                for i in range(0, len(s), 3)]
        return {
            "journey_path": path,
            "completed": self.completed,
            "exit_node": names.get(self.exit) if self.exit else None,
            "completion_time": ct / 1000 if ct is not None else None,
            "total_interactions": self.interactions,
        }


def parse_rejections(raw: Mapping[bytes, Any]) -> Iterator[tuple[str, str, int]]:
    """(campaign, reason name, events) from the rejected-events index."""
    for field, n in raw.items():
        campaign, _, code = field.decode().rpartition("\x1f")
        yield campaign, REJECTION_NAMES.get(-int(code), f"code {code}"), int(n)


def parse_names(raw: Any) -> dict[int, str]:
    return {int(i): n.decode() for i, n in as_dict(raw).items()}


METRIC_FIELDS = (b"target", b"sent", b"interacted", b"completed", b"interactions", b"ct_ms")
METRIC_PREFIXES = (b"r:", b"k:", b"ch:")


def sum_counters(parts: Iterable[Mapping[bytes, bytes]]) -> dict[bytes, int]:
    """Add counters hashes field by field (metric fields only)."""
    total: dict[bytes, int] = {}
    for part in parts:
        for f, v in part.items():
            if f in METRIC_FIELDS or f.startswith(METRIC_PREFIXES):
                total[f] = total.get(f, 0) + int(v)
    return total


def parse_counters(raw: Mapping[bytes, Any], names: Mapping[int, str]) -> Aggregate:
    """Read a counters hash (one scope; nodes by index) into an Aggregate.

    BackendError when a node index has no name: the campaign's names hash is
    gone (evicted, or lost with Redis data) while its counters remain.
    """
    agg = Aggregate()
    simple = {
        b"target": "target", b"sent": "sent", b"interacted": "interacted", b"completed": "completed",
        b"interactions": "interactions", b"ct_ms": "completion_ms",
    }

    def name(index: bytes) -> str:
        found = names.get(int(index))
        if found is None:
            raise BackendError(f"Redis lost part of a campaign: node #{int(index)} has counters but no name "
                               "(was a key evicted? check `campaign-counters health`); "
                               "`campaign-counters reconcile --repair` rebuilds it from the history")
        return found

    for f, v in raw.items():
        if f in simple:
            setattr(agg, simple[f], int(v))
        elif f.startswith(b"r:"):
            agg.reached[name(f[2:])] = int(v)
        elif f.startswith(b"k:"):
            agg.continued[name(f[2:])] = int(v)
        elif f.startswith(b"ch:"):
            node, _, choice = f[3:].decode().partition(SEP)
            agg.choices.setdefault(name(node.encode()), {})[choice] = int(v)
    agg.reached = {n: c for n, c in agg.reached.items() if c}
    agg.continued = {n: c for n, c in agg.continued.items() if c}
    return agg
