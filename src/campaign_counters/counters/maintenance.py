"""Plans the persistence jobs run against Redis: reading a campaign whole,
trimming what was persisted, settling change marks and expiring keys.

Kept here, beside the key schema they depend on, so `persist` never builds a
key name itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .keys import CAMPAIGN_SCOPE
from .core import CountersCore
from .records import parse_names
from .transport import Cmd, LuaScript, Plan, as_dict, call

SWAP = LuaScript.load("swap.lua")


@dataclass
class CampaignMeta:
    campaign: str
    tenant: str | None
    jobs: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    completed_at: int | None = None  # set while the campaign's latest status is COMPLETED
    expiring: bool = False  # its keys were given a retention TTL


def campaign_meta(p: CountersCore, campaign: str) -> Plan:
    raw, names = yield from call(p.router, [
        Cmd(campaign, ("HGETALL", p.keys.meta(campaign))),
        Cmd(campaign, ("HGETALL", p.keys.names(campaign))),
    ])
    raw = as_dict(raw)
    meta = CampaignMeta(campaign, raw[b"tenant"].decode() if b"tenant" in raw else None, names=parse_names(names))
    for f, v in raw.items():
        if f.startswith(b"j:"):
            meta.jobs[f[2:].decode()] = int(v)
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


def _next_sid(sid: str) -> str:
    ms, _, seq = sid.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def trim_journal(p: CountersCore, campaign: str, job: str, last_sid: str) -> Plan:
    """Drop journal entries up to and including `last_sid` (they are persisted)."""
    (removed,) = yield from call(
        p.router, [Cmd(campaign, ("XTRIM", p.keys.journal(campaign, job), "MINID", _next_sid(last_sid)))]
    )
    return removed


def pending_changes(p: CountersCore, campaign: str) -> Plan:
    (score,) = yield from call(p.router, [Cmd(campaign, ("ZSCORE", p.keys.dirty(campaign), campaign))])
    return int(float(score)) if score is not None else 0


def settle(p: CountersCore, campaign: str, seen: int) -> Plan:
    """Subtract the changes a snapshot covered; drop marks that reach zero.

    Changes recorded while the snapshot ran keep the mark positive, so they
    are picked up by the next tick.
    """
    key = p.keys.dirty(campaign)
    yield from call(p.router, [
        Cmd(campaign, ("ZINCRBY", key, -seen, campaign)),
        Cmd(campaign, ("ZREMRANGEBYSCORE", key, "-inf", 0)),
    ])


def dirty_campaigns(p: CountersCore) -> Plan:
    """[(campaign, tenant, pending changes)] over every slot of the index."""
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
    keys = p.keys.state_keys(campaign, [j for j in jobs if j != CAMPAIGN_SCOPE], [])
    yield from call(p.router, [Cmd(campaign, ("HSET", p.keys.meta(campaign), "expiring", ttl)),
                               *(Cmd(campaign, ("EXPIRE", key, ttl)) for key in keys)])


def keep_campaign(p: CountersCore, campaign: str, jobs: list[str]) -> Plan:
    """Take the retention TTL off a campaign that runs again (a status after its COMPLETED)."""
    keys = p.keys.state_keys(campaign, [j for j in jobs if j != CAMPAIGN_SCOPE], [])
    yield from call(p.router, [*(Cmd(campaign, ("PERSIST", key)) for key in keys),
                               Cmd(campaign, ("HDEL", p.keys.meta(campaign), "expiring"))])


def swap_in(p: CountersCore, shadow: CountersCore, campaign: str, jobs: list[str], days: list[str]) -> Plan:
    """Atomically replace a campaign's state with its shadow copy (one Lua call, one slot).

    Readers see the old state or the new one, never a mix. The live status
    and completion mark are kept when the shadow has none.
    """
    live = p.keys.state_keys(campaign, jobs, days)
    copy = shadow.keys.state_keys(campaign, jobs, days)
    keys = [k for pair in zip(copy, live) for k in pair]
    (reply,) = yield from call(p.router, [Cmd(campaign, ("EVALSHA", SWAP.sha, len(keys), *keys), SWAP)])
    yield from call(p.router, [
        Cmd(campaign, ("ZREM", shadow.keys.dirty(campaign), campaign)),
        Cmd(campaign, ("HDEL", shadow.keys.registry(campaign), campaign)),
        Cmd(campaign, ("ZINCRBY", p.keys.dirty(campaign), 1, campaign)),
    ])
    return reply


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
             Cmd(campaign, ("HDEL", p.keys.rejected(campaign), campaign))]
    yield from call(p.router, cmds)
    return len(keys)


def registry(p: CountersCore) -> Plan:
    """campaign -> tenant for every campaign, from the (slot-split) registry."""
    keys = p.keys.all_index_keys("registry")
    replies = yield from call(p.router, [Cmd(_route(k) if p.router.cluster else None, ("HGETALL", k)) for k in keys])
    return {c.decode(): t.decode() for reply in replies for c, t in as_dict(reply).items()}


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


def nightly_done(p: CountersCore) -> Plan:
    """tenant -> the last local day (ISO string) whose nightly job was enqueued."""
    (raw,) = yield from call(p.router, [Cmd(None, ("HGETALL", p.keys.nightly_done()))])
    return {t.decode(): d.decode() for t, d in as_dict(raw).items()}


def mark_nightly_done(p: CountersCore, tenant: str, day_iso: str) -> Plan:
    """Note that the nightly job of a tenant's local day was enqueued."""
    yield from call(p.router, [Cmd(None, ("HSET", p.keys.nightly_done(), tenant, day_iso))])


def day_counts(p: CountersCore, campaigns: list[str], day: str) -> Plan:
    """[(campaign, ~users, ~sent, ~interacted, interactions)] of one local day, from the HLLs."""
    k = p.keys
    cmds = []
    for c in campaigns:
        cmds += [Cmd(c, ("PFCOUNT", k.day_users(c, day, kind))) for kind in "asi"]
        cmds.append(Cmd(c, ("HGET", k.counters(c), f"i:{day}")))
    replies = yield from call(p.router, cmds)
    return [(c, *replies[4 * i:4 * i + 3], int(replies[4 * i + 3] or 0)) for i, c in enumerate(campaigns)]


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
    """Rejected events: {"by_campaign": rejected by the record script (another tenant's,
    closed, too many nodes), "by_field": failed validation in record_many/record_safe}."""
    keys = p.keys.all_index_keys("rejected")
    replies = yield from call(p.router, [
        *(Cmd(_route(k) if p.router.cluster else None, ("HGETALL", k)) for k in keys),
        Cmd(None, ("HGETALL", p.keys.input_rejections())),
    ])
    by_campaign = {c.decode(): int(n) for reply in replies[:-1] for c, n in as_dict(reply).items()}
    by_field = {f.decode(): int(n) for f, n in as_dict(replies[-1]).items()}
    return {"by_campaign": dict(sorted(by_campaign.items())), "by_field": dict(sorted(by_field.items()))}
