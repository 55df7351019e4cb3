"""What Redis cannot afford to lose, kept in the report store, and the check every writer runs.

Redis restarted without its data (persistence off, a replaced node, a
restore from an old backup) comes back without campaign scripts (events
would no longer count completions), without the campaign -> tenant binding
(another tenant could claim a campaign) and without tenant timezones. So
the report store keeps a durable copy of those, written by snapshots and by
the commands that set them (`state` kinds: `owner` per campaign with its
latest script, `script` per campaign and script version, `timezone` per
tenant, `epoch`), and Redis holds an epoch marker (`keys.epoch`).

`check_redis` runs before anything with a report store writes (every
command, the scheduler's tick, the workers' jobs):

- Redis and the store hold the same epoch: nothing to do.
- Neither holds one: a new deployment; an epoch begins and is remembered.
- Only Redis holds one: the store is new; the epoch is remembered.
- Redis holds none, or another one: Redis lost its data or was replaced.
  The durable copies are written back (`restore`), then a new epoch begins,
  and every campaign that was live is flagged (`flag` state): its counters
  restarted from zero, so snapshots refuse to overwrite its stored reports
  until `reconcile --repair` rebuilds it from the history (which clears the
  flag). `health` reports all of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..counters import Counters
from ..counters import maintenance as m
from ..counters.core import new_epoch
from ..errors import TenantMismatch
from ..reports import iso_ms
from ..stores import ReportStore

log = logging.getLogger(__name__)

OWNER, SCRIPT, TIMEZONE, EPOCH, FLAG = "owner", "script", "timezone", "epoch", "flag"
CURRENT = "current"
REDIS_LOST = "redis-lost"


@dataclass
class RedisCheck:
    """What `check_redis` found and did."""

    epoch: str
    restored: bool = False
    reason: str = ""
    flagged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "restored": self.restored, "reason": self.reason or None,
                "flagged": self.flagged}


def _now() -> str:
    return iso_ms(int(time.time() * 1000)) or ""


def remembered_epoch(store: ReportStore) -> dict[str, Any] | None:
    """The epoch document the store holds (value, since, and the last loss), or None."""
    return store.state(EPOCH, CURRENT)


def check_redis(counters: Counters, store: ReportStore) -> RedisCheck:
    """Compare Redis's epoch marker with the store's; restore Redis when it lost its data (see module doc)."""
    live = counters.run(counters.plan_read_epoch())
    known = remembered_epoch(store)
    if known and live == known["value"]:
        counters.epoch = live
        return RedisCheck(live)
    if not known:
        if not live:
            live = counters.initialize()
        store.put_state(EPOCH, CURRENT, {"value": live, "since": _now()})
        counters.epoch = live
        return RedisCheck(live)
    reason = (f"Redis holds another epoch marker ({live}, the report store remembers {known['value']}): "
              "it was replaced or restored from an older copy" if live else
              "Redis holds no epoch marker: it restarted without its data")
    return restore(counters, store, reason, known)


def restore(counters: Counters, store: ReportStore, reason: str, known: dict[str, Any] | None = None) -> RedisCheck:
    """Write the durable copies back into Redis, begin a new epoch, flag the live campaigns."""
    log.error("%s; restoring scripts, campaign owners and timezones from the report store", reason)
    owners = store.states(OWNER)
    zones = store.states(TIMEZONE)
    scripts = store.states(SCRIPT)
    flagged = []
    for campaign, owner in sorted(owners.items()):
        closed = bool(owner.get("closed"))
        raw = scripts.get(f"{campaign}:{owner.get('script_sha')}", {}).get("raw")
        counters.run(m.restore_campaign(counters, campaign, owner["tenant"], raw, closed))
        if not closed:
            flagged.append(campaign)
            flag(store, campaign, owner["tenant"], REDIS_LOST, reason)
    counters.run(m.restore_timezones(counters, {t: z["tz"] for t, z in zones.items()}))
    epoch = new_epoch()
    counters.run(counters.plan_set_epoch(epoch))
    counters.epoch = epoch
    store.put_state(EPOCH, CURRENT, {"value": epoch, "since": _now(), "previous": (known or {}).get("value"),
                                     "lost_at": _now(), "reason": reason, "flagged": len(flagged)})
    return RedisCheck(epoch, True, reason, flagged)


def remember_campaign(counters: Counters, store: ReportStore, meta: m.CampaignMeta,
                      expiring: bool | None = None) -> None:
    """Keep the campaign's owner and current script (each version once) in the store."""
    current = store.state(OWNER, meta.campaign) or {}
    wanted = {"tenant": meta.tenant, "script_sha": meta.script_sha,
              "closed": current.get("closed", False) if expiring is None else expiring}
    if meta.script_sha and store.state(SCRIPT, f"{meta.campaign}:{meta.script_sha}") is None:
        raw = counters.run(m.script_source(counters, meta.campaign))
        if raw is not None:
            store.put_state(SCRIPT, f"{meta.campaign}:{meta.script_sha}",
                            {"campaign": meta.campaign, "tenant": meta.tenant, "raw": raw, "saved_at": _now()})
    if {k: current.get(k) for k in wanted} != wanted:
        store.put_state(OWNER, meta.campaign, {**wanted, "saved_at": _now()})


def remember_timezone(store: ReportStore, tenant: str, tz: str) -> None:
    """Keep a tenant's timezone in the store."""
    store.put_state(TIMEZONE, tenant, {"tz": tz, "saved_at": _now()})


def remember_timezones(counters: Counters, store: ReportStore) -> None:
    """Copy every tenant timezone set in Redis into the store (the scheduler does it each tick)."""
    zones = counters.run(m.all_tenants(counters))
    known = store.states(TIMEZONE)
    for tenant, tz in zones.items():
        if tz and known.get(tenant, {}).get("tz") != tz:
            remember_timezone(store, tenant, tz)


def owner_of(store: ReportStore, campaign: str) -> str | None:
    """The tenant the store knows as the campaign's owner."""
    return (store.state(OWNER, campaign) or {}).get("tenant")


def owners(counters: Counters, store: ReportStore | None, campaign: str) -> set[str]:
    """Every tenant Redis (live keys, registry) or the store binds the campaign to (empty: none)."""
    live = counters.run(m.campaign_meta(counters, campaign)).tenant
    bound = counters.run(m.registry_owner(counters, campaign))
    stored = owner_of(store, campaign) if store is not None else None
    return {t for t in (live, bound, stored) if t is not None}


def check_owner(counters: Counters, store: ReportStore | None, tenant: str, campaign: str) -> None:
    """Raise TenantMismatch when Redis or the store binds the campaign to another tenant.

    The store's binding outlives the campaign's keys and a Redis that lost
    its data, so a closed campaign cannot be claimed by writing to it anew.
    """
    if owners(counters, store, campaign) - {tenant}:
        raise TenantMismatch(campaign)


def flag(store: ReportStore, campaign: str, tenant: str, kind: str, reason: str) -> None:
    """Mark a campaign as needing `reconcile --repair` (snapshots refuse it meanwhile)."""
    store.put_state(FLAG, campaign, {"tenant": tenant, "kind": kind, "reason": reason, "since": _now()})


def flag_of(store: ReportStore, campaign: str) -> dict[str, Any] | None:
    """Why a campaign is flagged for reconcile, or None."""
    return store.state(FLAG, campaign)


def flags(store: ReportStore) -> dict[str, dict[str, Any]]:
    """Campaigns flagged for reconcile: campaign -> {tenant, kind, reason, since}."""
    return store.states(FLAG)


def clear_flag(store: ReportStore, campaign: str) -> None:
    """A reconcile found the campaign exact, or repaired it."""
    store.delete_state(FLAG, campaign)
