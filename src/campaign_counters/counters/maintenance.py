"""Plans the persistence jobs run against Redis: reading a campaign whole,
trimming what was persisted, settling change marks and expiring keys.

Kept here, beside the key schema they depend on, so `persist` never builds a
key name itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .core import CountersCore
from .keys import CAMPAIGN_SCOPE
from .records import (OVERFLOW_FIELDS, REJECTION_NAMES, TOO_MANY_NODES_CODE, parse_names, parse_rejections,
                      split_log, tail_events)
from .transport import Batches, Cmd, LuaScript, Plan, RefreshTopology, as_dict, call

SWAP = LuaScript.load("swap.lua")
BEGIN_SNAPSHOT = LuaScript.load("begin_snapshot.lua")
END_SNAPSHOT = LuaScript.load("end_snapshot.lua")
RENEW_LEASE = LuaScript.load("renew_lease.lua")
RELEASE_LEASE = LuaScript.load("release_lease.lua")
LOG_CHUNK = 1 << 20  # bytes of the change log read per round trip


@dataclass
class CampaignMeta:
    campaign: str
    tenant: str | None
    jobs: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    completed_at: int | None = None  # set while the campaign's latest status is COMPLETED
    expiring: bool = False  # its keys were given a retention TTL
    days: list[str] = field(default_factory=list)  # local days with per-day keys (yyyymmdd)
    script_sha: str | None = None


def campaign_meta(p: CountersCore, campaign: str) -> Plan:
    """A campaign's meta hash and node names (tenant None: nothing live in Redis)."""
    raw, names = yield from call(p.router, [
        Cmd(campaign, ("HGETALL", p.keys.meta(campaign))),
        Cmd(campaign, ("HGETALL", p.keys.names(campaign))),
    ])
    raw = as_dict(raw)
    meta = CampaignMeta(campaign, raw[b"tenant"].decode() if b"tenant" in raw else None, names=parse_names(names))
    for f, v in raw.items():
        if f.startswith(b"j:"):
            meta.jobs[f[2:].decode()] = int(v)
        elif f.startswith(b"d:"):
            meta.days.append(f[2:].decode())
    meta.days.sort()
    if b"script_sha" in raw:
        meta.script_sha = raw[b"script_sha"].decode()
    if b"completed_at" in raw:
        meta.completed_at = int(raw[b"completed_at"])
    meta.expiring = b"expiring" in raw
    return meta


def user_records(p: CountersCore, campaign: str, users: list[str]) -> Plan:
    """Packed records of many users (None for unknown ones), one round trip."""
    if not users:
        return []
    (raw,) = yield from call(p.router, [Cmd(campaign, ("HMGET", p.keys.users(campaign), *users))])
    return raw


def script_versions(p: CountersCore, campaign: str) -> Plan:
    """The scripts the campaign ran, oldest first: [(loaded at, Unix ms; sha; script JSON)]."""
    (raw,) = yield from call(p.router, [Cmd(campaign, ("HGETALL", p.keys.script_versions(campaign)))])
    fields = as_dict(raw)
    return [(int(f), sha.decode(), fields.get(b"s:" + sha, b"").decode())
            for f, sha in sorted(((f, v) for f, v in fields.items() if f.isdigit()), key=lambda x: int(x[0]))]


def scan_user_records(p: CountersCore, campaign: str, cursor: int = 0, count: int = 1000) -> Plan:
    """One HSCAN page of the users hash: (next cursor, 0 when done; [(user, packed record)])."""
    ((nxt, flat),) = yield from call(p.router, [Cmd(campaign, ("HSCAN", p.keys.users(campaign), cursor,
                                                                "COUNT", count))])
    pairs = _pairs(flat)
    return int(nxt), [(u.decode(), raw) for u, raw in pairs]


@dataclass
class SnapshotStart:
    """What `begin_snapshot` saw: the repair generation, and since when changes were pending (ms, 0: none)."""

    rgen: int
    pending_since: int


def begin_snapshot(p: CountersCore, campaign: str) -> Plan:
    """Freeze the change log for a snapshot; events recorded from now on go to the next one."""
    k = p.keys
    keys = (k.meta(campaign), k.change_log(campaign), k.frozen_log(campaign))
    (reply,) = yield from call(p.router, [Cmd(campaign, ("EVALSHA", BEGIN_SNAPSHOT.sha, 3, *keys), BEGIN_SNAPSHOT)])
    return SnapshotStart(int(reply[0]), int(reply[1]))


def changed_users(p: CountersCore, campaign: str, chunk: int = LOG_CHUNK) -> Plan:
    """The users the frozen change log lists, each once, in log order (read sequentially, in chunks)."""
    key = p.keys.frozen_log(campaign)
    seen: dict[str, None] = {}
    carry, start = b"", 0
    while True:
        (data,) = yield from call(p.router, [Cmd(campaign, ("GETRANGE", key, start, start + chunk - 1))])
        names, carry = split_log(data, carry)
        seen.update(dict.fromkeys(names))
        if len(data) < chunk:
            return list(seen)
        start += chunk


def end_snapshot(p: CountersCore, campaign: str, rgen: int) -> Plan:
    """Drop the persisted change log unless a repair swapped in new state since `begin_snapshot`; True if dropped."""
    k = p.keys
    keys = (k.meta(campaign), k.frozen_log(campaign), k.dirty(campaign))
    (reply,) = yield from call(p.router, [Cmd(campaign, ("EVALSHA", END_SNAPSHOT.sha, 3, *keys, campaign, rgen),
                                              END_SNAPSHOT)])
    return reply == 1


def take_lease(p: CountersCore, campaign: str, token: str, ms: int) -> Plan:
    """Take the campaign's lease (snapshots and repairs hold it); False when someone else holds it."""
    (reply,) = yield from call(p.router, [Cmd(campaign, ("SET", p.keys.lease(campaign), token, "NX", "PX", ms))])
    return reply is not None


def renew_lease(p: CountersCore, campaign: str, token: str, ms: int) -> Plan:
    """Extend our lease; False when it expired or someone else holds it."""
    cmd = Cmd(campaign, ("EVALSHA", RENEW_LEASE.sha, 1, p.keys.lease(campaign), token, ms), RENEW_LEASE)
    (reply,) = yield from call(p.router, [cmd])
    return reply == 1


def release_lease(p: CountersCore, campaign: str, token: str) -> Plan:
    """Release our lease (a lease someone else took meanwhile is left alone)."""
    cmd = Cmd(campaign, ("EVALSHA", RELEASE_LEASE.sha, 1, p.keys.lease(campaign), token), RELEASE_LEASE)
    yield from call(p.router, [cmd])


def pending_since(p: CountersCore, campaign: str) -> Plan:
    """Since when the campaign has changes no snapshot has begun to persist (ms; 0: none)."""
    (score,) = yield from call(p.router, [Cmd(campaign, ("ZSCORE", p.keys.dirty(campaign), campaign))])
    return int(float(score)) if score is not None else 0


def dirty_campaigns(p: CountersCore) -> Plan:
    """[(campaign, tenant, pending since: ms)] over every slot of the index."""
    keys = p.keys.all_index_keys("dirty")
    cmds = [Cmd(_route(k) if p.router.cluster else None, ("ZRANGE", k, 0, -1, "WITHSCORES")) for k in keys]
    replies = yield from call(p.router, cmds)
    found: list[tuple[str, int]] = []
    for reply in replies:
        for member, score in _pairs(reply):
            found.append((member.decode(), int(float(score))))
    if not found:
        return []
    tenants = yield from call(
        p.router, [Cmd(c, ("HGET", p.keys.registry(c), c)) for c, _ in found]
    )
    return [(c, t.decode() if t else None, n) for (c, n), t in zip(found, tenants)]


def _route(index_key: str) -> str:
    """A campaign-like routing value that lands in the same slot as index_key's tag."""
    return index_key[index_key.index("{") + 1:index_key.index("}")]


def _pairs(reply: Any) -> list[tuple[bytes, Any]]:
    if reply and isinstance(reply[0], (tuple, list)):
        return list(reply)
    return list(zip(reply[::2], reply[1::2]))


def expire_campaign(p: CountersCore, campaign: str, jobs: list[str], ttl: int) -> Plan:
    """Give every key of a finished campaign a retention TTL."""
    keys = [*p.keys.state_keys(campaign, [j for j in jobs if j != CAMPAIGN_SCOPE], []),
            p.keys.script_versions(campaign)]
    yield from call(p.router, [Cmd(campaign, ("HSET", p.keys.meta(campaign), "expiring", ttl)),
                               *(Cmd(campaign, ("EXPIRE", key, ttl)) for key in keys)])


def keep_campaign(p: CountersCore, campaign: str, jobs: list[str]) -> Plan:
    """Take the retention TTL off a campaign that runs again (a status after its COMPLETED)."""
    keys = [*p.keys.state_keys(campaign, [j for j in jobs if j != CAMPAIGN_SCOPE], []),
            p.keys.script_versions(campaign)]
    yield from call(p.router, [*(Cmd(campaign, ("PERSIST", key)) for key in keys),
                               Cmd(campaign, ("HDEL", p.keys.meta(campaign), "expiring"))])


def begin_repair(p: CountersCore, campaign: str, ms: int) -> Plan:
    """From now on (for `ms`), events applied to the campaign are also appended to its repair tail."""
    k = p.keys
    yield from call(p.router, [Cmd(campaign, ("DEL", k.repair_tail(campaign))),
                               Cmd(campaign, ("HSET", k.meta(campaign), "repairing", _now_ms() + ms))])


def end_repair(p: CountersCore, campaign: str) -> Plan:
    """Stop appending to the repair tail and drop it (a repair that gave up)."""
    k = p.keys
    yield from call(p.router, [Cmd(campaign, ("HDEL", k.meta(campaign), "repairing")),
                               Cmd(campaign, ("DEL", k.repair_tail(campaign)))])


def read_tail(p: CountersCore, campaign: str, after: str) -> Plan:
    """Repair-tail events after entry `after` ('0-0': all) as (events, fingerprints, last entry id or None)."""
    start = "-" if after == "0-0" else f"({after}"
    (entries,) = yield from call(p.router, [Cmd(campaign, ("XRANGE", p.keys.repair_tail(campaign), start, "+"))])
    return tail_events(campaign, entries)


def swap_in(p: CountersCore, shadow: CountersCore, campaign: str, jobs: list[str], days: list[str],
            last_tail: str) -> Plan:
    """Atomically replace a campaign's state with its shadow copy (one Lua call, one slot).

    Readers see the old state or the new one, never a mix. The live status
    and completion mark are kept when the shadow has none. False (nothing
    changed) when events reached the repair tail after `last_tail`.
    """
    live = p.keys.state_keys(campaign, jobs, days)
    copy = shadow.keys.state_keys(campaign, jobs, days)
    keys = [p.keys.repair_tail(campaign), *(k for pair in zip(copy, live) for k in pair)]
    (reply,) = yield from call(p.router, [Cmd(campaign, ("EVALSHA", SWAP.sha, len(keys), *keys, last_tail), SWAP)])
    if reply != 1:
        return False
    yield from call(p.router, [
        Cmd(campaign, ("ZREM", shadow.keys.dirty(campaign), campaign)),
        Cmd(campaign, ("HDEL", shadow.keys.registry(campaign), campaign)),
        Cmd(campaign, ("ZADD", p.keys.dirty(campaign), "NX", _now_ms(), campaign)),
    ])
    return True


def merge_tenant_days(p: CountersCore, shadow: CountersCore, tenant: str, campaign: str, days: list[str]) -> Plan:
    """Add the users a repair found to the tenant's day HyperLogLogs (a union: they only grow)."""
    cmds = []
    for day in days:
        live, copy = p.keys.tenant_day_users(tenant, day, campaign), shadow.keys.tenant_day_users(tenant, day, campaign)
        cmds += [Cmd(campaign, ("PFMERGE", live, live, copy)), Cmd(campaign, ("DEL", copy))]
    if cmds:
        yield from call(p.router, cmds)


def drop_shadow(shadow: CountersCore, campaign: str, jobs: list[str], days: list[str]) -> Plan:
    """Remove a shadow copy whole, its registry entry too (else the record script would see it closed)."""
    keys = shadow.keys.state_keys(campaign, jobs, days)
    yield from call(shadow.router, [Cmd(campaign, ("DEL", *keys)),
                                    Cmd(campaign, ("HDEL", shadow.keys.registry(campaign), campaign))])


def drop_campaign(p: CountersCore, campaign: str) -> Plan:
    """Delete every key of a campaign and its index entries (the `bench` command's cleanup).

    The campaign's keys share its hash tag, so one node holds them all and a
    SCAN of that node finds them, id marks and day HyperLogLogs included.
    """
    meta = yield from campaign_meta(p, campaign)
    keys, cursor = [], b"0"
    while True:
        (reply,) = yield from call(p.router, [Cmd(campaign, ("SCAN", cursor, "MATCH", p.keys.campaign(campaign) + "*",
                                                             "COUNT", 1000))])
        cursor, found = reply
        keys += found
        if cursor in (b"0", 0, "0"):
            break
    day_prefix = (p.keys.campaign(campaign) + "d:").encode()
    days = {k[len(day_prefix):].split(b":")[0].decode() for k in keys if k.startswith(day_prefix)}
    if meta.tenant is not None:
        keys += [p.keys.tenant_day_users(meta.tenant, day, campaign) for day in sorted(days)]
    cmds = [Cmd(campaign, ("DEL", *keys[i:i + 500])) for i in range(0, len(keys), 500)]
    cmds += [Cmd(campaign, ("HDEL", p.keys.registry(campaign), campaign)),
             Cmd(campaign, ("ZREM", p.keys.dirty(campaign), campaign)),
             Cmd(campaign, ("HDEL", p.keys.rejected(campaign), *(f"{campaign}\x1f{-code}" for code in REJECTION_NAMES)))]
    yield from call(p.router, cmds)
    return len(keys)


def registry(p: CountersCore) -> Plan:
    """campaign -> tenant for every campaign, from the (slot-split) registry."""
    keys = p.keys.all_index_keys("registry")
    replies = yield from call(p.router, [Cmd(_route(k) if p.router.cluster else None, ("HGETALL", k)) for k in keys])
    return {c.decode(): t.decode() for reply in replies for c, t in as_dict(reply).items()}


def registry_owner(p: CountersCore, campaign: str) -> Plan:
    """The tenant the registry binds a campaign to (it outlives the campaign's keys), or None."""
    (owner,) = yield from call(p.router, [Cmd(campaign, ("HGET", p.keys.registry(campaign), campaign))])
    return owner.decode() if owner is not None else None


def tenant_campaigns(p: CountersCore, tenant: str) -> Plan:
    """Campaigns bound to a tenant."""
    owners = yield from registry(p)
    return sorted(c for c, t in owners.items() if t == tenant)


def all_tenants(p: CountersCore) -> Plan:
    """Tenants with a campaign or a timezone setting: tenant -> timezone name (None: UTC)."""
    owners = yield from registry(p)
    (zones,) = yield from call(p.router, [Cmd(None, ("HGETALL", p.keys.tenants()))])
    tenants: dict[str, str | None] = dict.fromkeys(owners.values())
    for tenant, zone in as_dict(zones).items():
        tenants[tenant.decode()] = zone.decode()
    return tenants


def script_source(p: CountersCore, campaign: str) -> Plan:
    """The campaign's script JSON as stored (None without one)."""
    (raw,) = yield from call(p.router, [Cmd(campaign, ("GET", p.keys.script(campaign)))])
    return raw.decode() if raw is not None else None


def restore_campaign(p: CountersCore, campaign: str, tenant: str, script: str | None, closed: bool) -> Plan:
    """Write a campaign's binding (and script) back into a Redis that lost them.

    A closed campaign gets its registry entry only (events for it stay
    refused); an open one its script, or without one its owner, so events
    for it count again.
    """
    cmds = [Cmd(campaign, ("HSET", p.keys.registry(campaign), campaign, tenant))]
    if not closed and script is None:
        cmds.append(Cmd(campaign, ("HSET", p.keys.meta(campaign), "tenant", tenant)))
    yield from call(p.router, cmds)
    if not closed and script is not None:
        yield from p.plan_load_script(tenant, campaign, script, restore=True)


def restore_timezones(p: CountersCore, zones: dict[str, str]) -> Plan:
    """Write tenant timezones back into Redis."""
    if zones:
        yield from call(p.router, [Cmd(None, ("HSET", p.keys.tenants(), *(x for kv in sorted(zones.items())
                                                                          for x in kv)))])


def nightly_scheduled(p: CountersCore) -> Plan:
    """tenant -> the last local day (ISO string) whose night was scheduled."""
    (raw,) = yield from call(p.router, [Cmd(None, ("HGETALL", p.keys.nightly_scheduled()))])
    return {t.decode(): d.decode() for t, d in as_dict(raw).items()}


def _night(tenant: str, day_iso: str) -> str:
    return f"{tenant}/{day_iso}"


def _parse_night(member: bytes) -> tuple[str, str]:
    tenant, _, day_iso = member.decode().rpartition("/")
    return tenant, day_iso


def schedule_nights(p: CountersCore, nights: list[tuple[str, str]]) -> Plan:
    """Make nights pending (due at once; kept if already pending) and advance each tenant's schedule."""
    if not nights:
        return
    last: dict[str, str] = {}
    for tenant, day_iso in nights:
        last[tenant] = max(last.get(tenant, day_iso), day_iso)
    pending = [x for tenant, day_iso in nights for x in (0, _night(tenant, day_iso))]
    yield from call(p.router, [Cmd(None, ("ZADD", p.keys.nightly_pending(), "NX", *pending)),
                               Cmd(None, ("HSET", p.keys.nightly_scheduled(), *[x for t in last.items() for x in t]))])


def pending_nights(p: CountersCore, due_by: float | None = None) -> Plan:
    """[(tenant, day ISO, not-before epoch seconds, last outcome JSON or None)]: all pending nights,
    or only those whose next attempt may start by `due_by`."""
    top = "+inf" if due_by is None else due_by
    raw, outcomes = yield from call(p.router, [
        Cmd(None, ("ZRANGEBYSCORE", p.keys.nightly_pending(), "-inf", top, "WITHSCORES")),
        Cmd(None, ("HGETALL", p.keys.nightly_outcomes())),
    ])
    outcomes = as_dict(outcomes)
    return [(*_parse_night(member), float(score), outcomes[member].decode() if member in outcomes else None)
            for member, score in _pairs(raw)]


def night_pending(p: CountersCore, tenant: str, day_iso: str) -> Plan:
    """Whether a night is still pending."""
    (score,) = yield from call(p.router, [Cmd(None, ("ZSCORE", p.keys.nightly_pending(), _night(tenant, day_iso)))])
    return score is not None


def defer_night(p: CountersCore, tenant: str, day_iso: str, not_before: float) -> Plan:
    """Start no new attempt at a pending night before `not_before` (epoch seconds)."""
    yield from call(p.router, [Cmd(None, ("ZADD", p.keys.nightly_pending(), "XX", not_before,
                                          _night(tenant, day_iso)))])


def note_night(p: CountersCore, tenant: str, day_iso: str, outcome: str) -> Plan:
    """Record why an attempt did not complete a pending night (JSON), for `health`."""
    yield from call(p.router, [Cmd(None, ("HSET", p.keys.nightly_outcomes(), _night(tenant, day_iso), outcome))])


def complete_night(p: CountersCore, tenant: str, day_iso: str) -> Plan:
    """A night is done: no longer pending, its failed attempts forgotten. Returns whether it was pending."""
    removed, _ = yield from call(p.router, [
        Cmd(None, ("ZREM", p.keys.nightly_pending(), _night(tenant, day_iso))),
        Cmd(None, ("HDEL", p.keys.nightly_outcomes(), _night(tenant, day_iso))),
    ])
    return bool(removed)


def day_counts(p: CountersCore, campaigns: list[str], day: str) -> Plan:
    """[(campaign, ~users, ~sent, ~interacted, interactions)] of one local day, from the HLLs."""
    k = p.keys
    cmds = []
    for c in campaigns:
        cmds += [Cmd(c, ("PFCOUNT", k.day_users(c, day, kind))) for kind in "asi"]
        cmds.append(Cmd(c, ("HGET", k.counters(c), f"i:{day}")))
    replies = yield from call(p.router, cmds)
    return [(c, *replies[4 * i:4 * i + 3], int(replies[4 * i + 3] or 0)) for i, c in enumerate(campaigns)]


def window_users(p: CountersCore, campaigns: list[str], days: list[str]) -> Plan:
    """[(campaign, ~users, ~sent, ~interacted)] over several local days, from the union of their HLLs."""
    if not days or not campaigns:
        return [(c, 0, 0, 0) for c in campaigns]
    k = p.keys
    cmds = [Cmd(c, ("PFCOUNT", *(k.day_users(c, d, kind) for d in days))) for c in campaigns for kind in "asi"]
    replies = yield from call(p.router, cmds)
    return [(c, *(int(r) for r in replies[3 * i:3 * i + 3])) for i, c in enumerate(campaigns)]


def tenant_day_users(p: CountersCore, tenant: str, day: str, campaigns: list[str] | None = None) -> Plan:
    """Approximate distinct users of a tenant in one local day, across its campaigns
    (`campaigns`: the tenant's, when the caller has read them already).

    On Redis Cluster the parts live in several slots: they are copied (DUMP /
    RESTORE) next to each other and counted together, then dropped.
    """
    if campaigns is None:
        campaigns = yield from tenant_campaigns(p, tenant)
    parts = p.keys.tenant_day_parts(tenant, day, campaigns)
    if not p.router.cluster:
        (count,) = yield from call(p.router, [Cmd(None, ("PFCOUNT", *parts))])
        return int(count)
    dumps = yield from call(p.router, [Cmd(None, ("DUMP", key)) for key in parts])
    tag = f"{{cc-tday-{tenant}}}"
    temp = [f"{p.keys.prefix}tmp:{tag}:{day}:{i}" for i, d in enumerate(dumps) if d is not None]
    if not temp:
        return 0
    restore = [Cmd(None, ("RESTORE", key, 60_000, d, "REPLACE")) for key, d in zip(temp, [d for d in dumps if d is not None])]
    replies = yield from call(p.router, [*restore, Cmd(None, ("PFCOUNT", *temp)), Cmd(None, ("DEL", *temp))])
    return int(replies[-2])


def rejected_counts(p: CountersCore) -> Plan:
    """Rejected events: {"by_campaign" and "by_reason": refused by the record script (another
    tenant's, closed, too many nodes), "by_field": failed validation before reaching Redis}."""
    keys = p.keys.all_index_keys("rejected")
    replies = yield from call(p.router, [
        *(Cmd(_route(k) if p.router.cluster else None, ("HGETALL", k)) for k in keys),
        Cmd(None, ("HGETALL", p.keys.input_rejections())),
    ])
    by_campaign: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for reply in replies[:-1]:
        for campaign, reason, n in parse_rejections(as_dict(reply)):
            by_campaign[campaign] = by_campaign.get(campaign, 0) + n
            by_reason[reason] = by_reason.get(reason, 0) + n
    by_field = {f.decode(): int(n) for f, n in as_dict(replies[-1]).items()}
    return {"by_campaign": dict(sorted(by_campaign.items())), "by_reason": dict(sorted(by_reason.items())),
            "by_field": dict(sorted(by_field.items()))}


def caps_hit(p: CountersCore) -> Plan:
    """Campaigns that hit a cap: [(campaign, tenant, cap, events)], cap one of max_choices (events counted
    under a node's '(other)' choice), max_days (events left out of per-day counts), max_nodes (events refused)."""
    owners = yield from registry(p)
    campaigns = sorted(owners)
    fields = list(OVERFLOW_FIELDS.values())
    cmds = [Cmd(c, ("HMGET", p.keys.counters(c), *fields)) for c in campaigns]
    cmds += [Cmd(c, ("HGET", p.keys.rejected(c), f"{c}\x1f{-TOO_MANY_NODES_CODE}")) for c in campaigns]
    replies = yield from call(p.router, cmds)
    out: list[tuple[str, str, str, int]] = []
    for i, campaign in enumerate(campaigns):
        counts = dict(zip(OVERFLOW_FIELDS, replies[i]))
        counts["max_nodes"] = replies[len(campaigns) + i]
        out += [(campaign, owners[campaign], cap, int(n)) for cap, n in counts.items() if n is not None and int(n)]
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def server_info(p: CountersCore, sections: tuple[str, ...] = ("memory", "stats", "errorstats")) -> Plan:
    """INFO fields of every node (each primary on Redis Cluster): {"server" or "host:port": {field: text}}."""
    if p.router.cluster and p.router.address(None) is None:
        p.router.update((yield RefreshTopology()))
    replies = yield Batches({addr: [("INFO", s) for s in sections] for addr in p.router.nodes()})
    out: dict[str, dict[str, str]] = {}
    for addr, parts in sorted(replies.items(), key=lambda item: item[0] or ("", 0)):
        fields: dict[str, str] = {}
        for part in parts:
            if isinstance(part, Exception):
                raise part
            text = part.decode() if isinstance(part, bytes) else str(part)
            for line in text.splitlines():
                name, sep, value = line.partition(":")
                if sep and not line.startswith("#"):
                    fields[name] = value.strip()
        out["server" if addr is None else f"{addr[0]}:{addr[1]}"] = fields
    return out
