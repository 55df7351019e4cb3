"""One look at everything the service depends on (Redis, report store, queue), for `campaign-counters health`.

Besides "does it answer", health is not ok when numbers are at risk: Redis
may evict keys (any `maxmemory-policy` but `noeviction` drops idempotency
marks and per-user state, so counts go wrong silently), its memory is above
90% of `maxmemory`, or it has refused commands for lack of memory; Redis
lost its data (its epoch marker is not the one the report store remembers);
campaigns wait for `reconcile --repair`; a chat-service spool overflowed; a
job's worker died and nobody re-queued it; a tenant's night was not checked;
a campaign's events were refused for naming more nodes than a campaign may
have. A campaign that hit a cap which keeps every event counted, only
coarser (distinct choices per node, distinct local days), is a warning: one
line per campaign and cap, health stays ok.
"""

from __future__ import annotations

import time
from typing import Any

from .connection import redact
from .counters import Counters
from .counters import maintenance as m
from .counters.records import MAX_NODES
from .counters.transport import Cmd, as_dict, call
from .nightly.schedule import nights_health
from .persist import durable
from .persist.liveness import job_states
from .stores import ReportStore


def _safe(fn: Any) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - health reports every failure, whatever it is
        return False, f"{type(exc).__name__}: {redact(str(exc))}"


MEMORY_LIMIT = 0.9  # share of maxmemory above which writes are about to be refused


def _count(text: str | None, name: str = "count") -> int:
    """N from an INFO value like `count=N,...` (errorstats)."""
    for part in (text or "").split(","):
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return 0


def memory_health(infos: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Policy, used/max memory, evictions and OOM refusals per node; `ok` false when numbers are at risk."""
    nodes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, f in infos.items():
        used, limit = int(f.get("used_memory", 0)), int(f.get("maxmemory", 0))
        node = {
            "policy": f.get("maxmemory_policy"), "used_bytes": used, "max_bytes": limit,
            "used_percent": round(used / limit * 100, 1) if limit else None,
            "evicted_keys": int(f.get("evicted_keys", 0)), "oom_rejections": _count(f.get("errorstat_OOM")),
        }
        nodes[name] = node
        where = "" if len(infos) == 1 else f" on {name}"
        if node["policy"] != "noeviction":
            problems.append(f"maxmemory-policy is {node['policy']}{where}: Redis may evict keys and counts go "
                            "wrong silently; set it to noeviction")
        if limit and used > MEMORY_LIMIT * limit:
            problems.append(f"memory{where} is {node['used_percent']}% of maxmemory: writes will soon be "
                            "refused; raise maxmemory or let campaigns expire")
        if node["evicted_keys"]:
            problems.append(f"{node['evicted_keys']} keys were evicted{where}: run reconcile --repair on the "
                            "campaigns recorded meanwhile (CONFIG RESETSTAT clears this count)")
        if node["oom_rejections"]:
            problems.append(f"{node['oom_rejections']} commands were refused for lack of memory{where}: events "
                            "may be missing, run reconcile (CONFIG RESETSTAT clears this count)")
    out: dict[str, Any] = {"ok": not problems}
    if len(nodes) == 1:
        out.update(next(iter(nodes.values())))
    else:
        out["nodes"] = nodes
    if any(not n["max_bytes"] for n in nodes.values()):
        out["note"] = "no maxmemory set: Redis grows until the machine runs out of memory"
    out["problems"] = problems
    return out


def _age(ms: int | None) -> float | None:
    return round(time.time() - ms / 1000, 1) if ms else None


def redis_data(counters: Counters, store: ReportStore) -> dict[str, Any]:
    """Whether Redis still holds the data the store knows it had (its epoch marker)."""
    found, live = _safe(lambda: counters.run(counters.plan_read_epoch()))
    known = durable.remembered_epoch(store) or {}
    out: dict[str, Any] = {"epoch": live if found else None, "store_epoch": known.get("value")}
    if not found:
        out.update(ok=False, error=live)
    elif known and live != known.get("value"):
        out.update(ok=False, problem="Redis lost its data" if not live else "Redis was replaced or restored",
                   action="the scheduler restores scripts, campaign owners and timezones from the report store on "
                          "its next tick; or run any writing command now (e.g. `campaign-counters snapshot`)")
    else:
        out["ok"] = True
    if known.get("lost_at"):
        out["last_loss"] = {"at": known["lost_at"], "reason": known.get("reason")}
    return out


def reconcile_needed(store: ReportStore) -> dict[str, Any]:
    """Campaigns whose stored reports wait for `reconcile --repair` (after a Redis loss or a refused snapshot)."""
    found, flagged = _safe(lambda: durable.flags(store))
    if not found:
        return {"ok": False, "error": flagged}
    out: dict[str, Any] = {"ok": not flagged, "campaigns": {c: f["reason"] for c, f in sorted(flagged.items())}}
    if flagged:
        tenants = sorted({f["tenant"] for f in flagged.values()})
        out["action"] = "; ".join(f"campaign-counters reconcile --tenant {t} --history SRC --repair" for t in tenants)
    return out


def spool_health(counters: Counters) -> dict[str, Any]:
    """What chat-service clients report of their local spools: events waiting, and events lost to a full one."""
    keys = counters.keys
    found, raw = _safe(lambda: counters.run(call(counters.router, [
        Cmd(None, ("HGETALL", keys.spool_status())), Cmd(None, ("HGETALL", keys.spool_overflowed())),
        Cmd(None, ("HGETALL", keys.spool_oldest()))])))
    if not found:
        return {"ok": False, "error": raw}
    waiting = {k.decode(): int(v) for k, v in as_dict(raw[0]).items() if v.isdigit()}
    lost = {k.decode(): int(v) for k, v in as_dict(raw[1]).items() if v.isdigit()}
    since = [int(v) for k, v in as_dict(raw[2]).items() if v.isdigit() and k.decode() in waiting]
    out: dict[str, Any] = {"ok": not lost, "events": sum(waiting.values()), "clients": waiting,
                           "oldest_age_s": max(0, int(time.time()) - min(since)) if since else 0}
    if lost:
        out["overflowed"] = lost
        out["problem"] = ("a spool was full and events were lost (their ids are in the client's log): raise "
                          "its size or find why Redis did not take them; `reconcile --repair` restores the counts")
    return out


def caps_health(counters: Counters) -> dict[str, Any]:
    """One line per campaign and cap it hit; not ok when a cap refused events (max_nodes), else warnings."""
    found, hit = _safe(lambda: counters.run(m.caps_hit(counters)))
    if not found:
        return {"ok": False, "error": hit}
    settings = counters.settings
    limits = {"max_choices": settings.max_choices, "max_days": settings.max_days, "max_nodes": MAX_NODES}
    what = {
        "max_choices": "interactions counted under the choice '(other)' of a node with more distinct choices "
                       "(the campaign's totals are exact; only their split by choice is coarser)",
        "max_days": "events left out of per-day counts of local days beyond the limit (reports are exact; "
                    "the live 'today' overview misses them, the nightly overview recomputes them from history)",
        "max_nodes": "events refused for naming a node beyond the limit (load the campaign's script: "
                     "then only its nodes are accepted)",
    }
    warnings, problems, campaigns = [], [], []
    for campaign, tenant, cap, events in hit:
        line = f"campaign {campaign} (tenant {tenant}) hit {cap} = {limits[cap]}: {events} {what[cap]}"
        (problems if cap == "max_nodes" else warnings).append(line)
        campaigns.append({"campaign": campaign, "tenant": tenant, "cap": cap, "limit": limits[cap], "events": events})
    return {"ok": not problems, "hit": campaigns, "problems": problems, "warnings": warnings}


def health(counters: Counters, store: ReportStore | None, queue: Any | None,
           store_error: str | None = None) -> dict[str, Any]:
    """Redis, store and queue status, memory, pending snapshots and rejected events.

    `ok` only if all answer and no numbers are at risk; each part is reported
    even when another is down (`store_error`: why the store could not be opened).
    """
    out: dict[str, Any] = {}
    ok, info = _safe(lambda: counters.run(call(counters.router, [Cmd(None, ("INFO", "server"))]))[0])
    out["redis"] = {"ok": ok, "url": counters.target.redacted(), "cluster": counters.router.cluster}
    if ok:
        text = info.decode() if isinstance(info, bytes) else str(info)
        version = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("redis_version:")), None)
        out["redis"]["version"] = version
        found, infos = _safe(lambda: counters.run(m.server_info(counters)))
        out["memory"] = memory_health(infos) if found else {"ok": False, "error": infos}
        found, dirty = _safe(lambda: counters.run(m.dirty_campaigns(counters)))
        if found:
            oldest = min((since for _, _, since in dirty if since > 0), default=None)
            out["pending_snapshots"] = {"campaigns": len(dirty), "oldest_age_s": _age(oldest)}
        else:
            out["pending_snapshots"] = dirty
        found, rejected = _safe(lambda: counters.run(m.rejected_counts(counters)))
        if found:
            total = sum(rejected["by_reason"].values()) + sum(rejected["by_field"].values())
            rejected = {"total": total, **rejected}
        out["rejected_events"] = rejected
        out["spool"] = spool_health(counters)
        out["caps"] = caps_health(counters)
        found, nights = _safe(lambda: nights_health(counters))
        out["nightly"] = nights if found else {"ok": False, "error": nights}
    else:
        out["redis"]["error"] = info
    if store_error is not None:
        out["store"] = {"ok": False, "error": store_error}
    elif store is not None:
        ok, err = _safe(store.ping)
        out["store"] = {"ok": ok, "url": redact(store.url)}
        if not ok:
            out["store"]["error"] = err
        elif out["redis"]["ok"]:
            out["redis_data"] = redis_data(counters, store)
            out["reconcile_needed"] = reconcile_needed(store)
    if queue is not None:
        ok, counts = _safe(lambda: {  # counted without RQ's cleanup: health only looks, the tick acts
            "queued": len(queue), "failed": queue.failed_job_registry.get_job_count(cleanup=False),
            "scheduled": queue.scheduled_job_registry.get_job_count(cleanup=False),
            "started": queue.started_job_registry.get_job_count(cleanup=False)})
        out["queue"] = {"ok": ok, **(counts if ok else {"error": counts})}
        if ok:
            found, jobs = _safe(lambda: job_states(queue))
            out["jobs"] = jobs if found else {"ok": False, "error": jobs}
    out["ok"] = all(v.get("ok", True) for v in out.values() if isinstance(v, dict))
    return out
