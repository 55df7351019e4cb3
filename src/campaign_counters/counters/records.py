"""The Python side of record.lua: its arguments in, and what it stores and returns out.

The layouts (the msgpack argument, return codes, user records, journal
entries, counters hashes) are defined by record.lua; changing the script
means checking this one file. Shared by live reads, snapshots and repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import msgpack

from ..events import Event
from ..reports import Aggregate
from ..script import SEP
from .keys import KeySchema
from .transport import Cmd, LuaScript, as_dict

RECORD = LuaScript.load("record.lua")

FLAG_TARGETED, FLAG_SENT, FLAG_INTERACTED, FLAG_COMPLETED = 1, 2, 4, 8

JOURNAL_PAGE = 5000  # journal steps a live journey reads per round trip
JOURNAL_WIDTH = 7  # values per event in a journal entry (see record.lua)

TYPE_CODES = {"targeted": "t", "sent": "s", "interaction": "i", "status": "x"}

# Codes record.lua returns per event.
APPLIED_CODE, DUPLICATE_CODE = 1, 0
FOREIGN_CODE, TOO_MANY_NODES_CODE, CLOSED_CODE = -1, -2, -3
REJECTION_REASONS = {
    FOREIGN_CODE: ("campaign", "belongs to another tenant"),
    TOO_MANY_NODES_CODE: ("target", "campaign has too many distinct nodes (limit 4096)"),
    CLOSED_CODE: ("campaign", "is closed: it completed and its live data expired after the retention period "
                              "(its reports are in the store); load its script again to reopen it"),
}


def rejection_of(code: int) -> tuple[str, str]:
    """(field, reason) of a negative code of record.lua."""
    return REJECTION_REASONS.get(code, ("event", f"rejected by Redis ({code})"))


def record_call(keys: KeySchema, campaign: str, events: list[Event], local_day: Callable[[str, int], str],
                id_ttl: int, journal: bool, expiring: dict[str, str], known_expiring: set[str]) -> Cmd:
    """One record.lua call for events of one campaign (see the script for the layout).

    `local_day(tenant, ts_ms)` names an event's local day; day HyperLogLog
    keys not in `known_expiring` are added to `expiring` (key -> campaign)
    for the caller to EXPIRE. Runs for every event of a bulk load, so key
    names are built once per job and day, not per event.
    """
    k = keys
    names = [k.meta(campaign), k.users(campaign), k.counters(campaign), k.dirty(campaign),
             k.registry(campaign), k.names(campaign), k.rejected(campaign)]
    jobs: dict[str, int] = {}
    days: dict[tuple[str, str], int] = {}
    id_prefix = k.idempotency(campaign, "")
    values: list[Any] = []
    for ev in events:
        tenant, job, etype = ev.tenant, ev.job, ev.type
        today = local_day(tenant, ev.ts_ms)
        job_ref = day_ref = id_ref = 0
        if job:
            job_ref = jobs.get(job, 0)
            if not job_ref:
                names += [k.counters(campaign, job), k.journal(campaign, job)]
                job_ref = jobs[job] = len(names) - 1
        else:
            job_ref = 3  # a status of the whole campaign
        if etype != "status":
            day_ref = days.get((today, tenant), 0)
            if not day_ref:
                hlls = [k.day_users(campaign, today, "a"), k.day_users(campaign, today, "s"),
                        k.day_users(campaign, today, "i"), k.tenant_day_users(tenant, today, campaign)]
                expiring.update((key, campaign) for key in hlls if key not in known_expiring)
                names += hlls
                day_ref = days[(today, tenant)] = len(names) - 3
        if ev.id is not None:
            names.append(id_prefix + ev.id)  # a repeated id gets its own slot: SET NX tells
            id_ref = len(names)
        values += (TYPE_CODES[etype], tenant, job or "", ev.user or "", ev.ts_ms, ev.target or "",
                   ev.choice or "", ev.node or "", ev.title or "", ev.status or "", today, job_ref, day_ref, id_ref)
    argv = (campaign, id_ttl, 1 if journal else 0, msgpack.packb(values))
    return Cmd(campaign, ("EVALSHA", RECORD.sha, len(names), *names, *argv), RECORD)


def journey_step(entry: Mapping[str, Any], with_id: bool = False) -> dict[str, Any]:
    step = {"node": entry["target"], "choice": entry["choice"], "ts": entry["ts_ms"] / 1000}
    if with_id:
        step["sid"] = entry["sid"]
    return step


def find_record(raw: bytes | None, job_index: bytes | int | None) -> list | None:
    """The record of one job inside a user's packed records."""
    if raw is None or job_index is None:
        return None
    ji = int(job_index)
    return next((r for r in msgpack.unpackb(raw) if r[0] == ji), None)


@dataclass
class UserState:
    flags: int
    first_ms: int
    sent_ms: int | None
    end_ms: int | None
    exit: int
    interactions: int

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
        )

    @property
    def completed(self) -> bool:
        return bool(self.flags & FLAG_COMPLETED)

    @property
    def completion_ms(self) -> int | None:
        if not self.completed or self.end_ms is None:
            return None
        return self.end_ms - (self.sent_ms if self.sent_ms is not None else self.first_ms)

    def summary(self, names: Mapping[int, str]) -> dict[str, Any]:
        """The journey fields that come from the record (DESIGN 3.3)."""
        ct = self.completion_ms
        return {
            "completed": self.completed,
            "exit_node": names.get(self.exit) if self.exit else None,
            "completion_time": ct / 1000 if ct is not None else None,
            "total_interactions": self.interactions,
        }


@dataclass
class JournalPage:
    """Steps of a run of journal entries; `last` is the id of the last entry read."""

    steps: list[dict[str, Any]]
    entries: int
    last: str | None

    def next_count(self, steps: int = JOURNAL_PAGE) -> int:
        """How many entries the next page should ask for to hold about `steps` steps.

        An entry is a batch of events (one for the chat service's calls, up to
        a script call's worth for bulk loads), so pages are sized by what the
        entries read so far held.
        """
        if not self.steps:
            return steps
        return max(1, steps * self.entries // len(self.steps))


def journal_page(entries: list) -> JournalPage:
    """Decode XRANGE entries; each holds a batch of events, one step per event.

    A step's `sid` is `<entry id>.<position>`: unique, and in arrival order.
    `type` is t(argeted), s(ent) or i(nteraction).
    """
    steps: list[dict[str, Any]] = []
    last = None
    for entry_id, fields in entries:
        last = entry_id.decode()
        values = msgpack.unpackb(as_dict(fields)[b"b"])
        for k in range(0, len(values), JOURNAL_WIDTH):
            user, ts_ms, etype, target, choice, node, title = values[k:k + JOURNAL_WIDTH]
            steps.append({
                "user": user, "ts_ms": ts_ms, "type": etype, "target": target or None,
                "choice": choice or None, "node": node or None, "title": title or None,
                "sid": f"{last}.{k // JOURNAL_WIDTH}",
            })
    return JournalPage(steps, len(entries), last)


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
    """Read a counters hash (one scope; nodes by index) into an Aggregate."""
    agg = Aggregate()
    simple = {
        b"target": "target", b"sent": "sent", b"interacted": "interacted", b"completed": "completed",
        b"interactions": "interactions", b"ct_ms": "completion_ms",
    }
    for f, v in raw.items():
        if f in simple:
            setattr(agg, simple[f], int(v))
        elif f.startswith(b"r:"):
            agg.reached[names[int(f[2:])]] = int(v)
        elif f.startswith(b"k:"):
            agg.continued[names[int(f[2:])]] = int(v)
        elif f.startswith(b"ch:"):
            node, _, choice = f[3:].decode().partition(SEP)
            agg.choices.setdefault(names[int(node)], {})[choice] = int(v)
    agg.reached = {n: c for n, c in agg.reached.items() if c}
    agg.continued = {n: c for n, c in agg.continued.items() if c}
    return agg
