"""One look at everything the service depends on (Redis, report store, queue), for `campaign-counters health`."""

from __future__ import annotations

import json
import time
from typing import Any

from .connection import redact
from .counters import Counters
from .counters import maintenance as m
from .counters.transport import Cmd, as_dict, call
from .persist import durable
from .stores import ReportStore


def _safe(fn: Any) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - health reports every failure, whatever it is
        return False, f"{type(exc).__name__}: {redact(str(exc))}"


def _age(ms: int | None) -> float | None:
    return round(time.time() - ms / 1000, 1) if ms else None


def _redis_data(counters: Counters, store: ReportStore) -> dict[str, Any]:
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


def _flags(store: ReportStore) -> dict[str, Any]:
    """Campaigns whose stored reports wait for `reconcile --repair` (after a Redis loss or a refused snapshot)."""
    found, flagged = _safe(lambda: durable.flags(store))
    if not found:
        return {"ok": False, "error": flagged}
    out: dict[str, Any] = {"ok": not flagged, "campaigns": {c: f["reason"] for c, f in sorted(flagged.items())}}
    if flagged:
        tenants = sorted({f["tenant"] for f in flagged.values()})
        out["action"] = "; ".join(f"campaign-counters reconcile --tenant {t} --history SRC --repair" for t in tenants)
    return out


def _spool(counters: Counters) -> dict[str, Any]:
    """What chat-service clients report of their local spools (events waiting, overflowed)."""
    found, raw = _safe(lambda: counters.run(call(counters.router, [Cmd(None, ("HGETALL", counters.keys.spool_status()))]))[0])
    if not found:
        return {"ok": False, "error": raw}
    clients = {k.decode(): json.loads(v) for k, v in as_dict(raw).items()}
    return {"ok": not any(c.get("overflowed") for c in clients.values()),
            "events": sum(c.get("events", 0) for c in clients.values()), "clients": clients}


def health(counters: Counters, store: ReportStore | None, queue: Any | None) -> dict[str, Any]:
    """Redis, store and queue status, pending snapshots and rejected events; `ok` only if all answer."""
    out: dict[str, Any] = {}
    ok, info = _safe(lambda: counters.run(call(counters.router, [Cmd(None, ("INFO", "server"))]))[0])
    out["redis"] = {"ok": ok, "url": counters.target.redacted(), "cluster": counters.router.cluster}
    if ok:
        text = info.decode() if isinstance(info, bytes) else str(info)
        version = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("redis_version:")), None)
        out["redis"]["version"] = version
        found, dirty = _safe(lambda: counters.run(m.dirty_campaigns(counters)))
        if found:
            oldest = min((since for _, _, since in dirty if since > 0), default=None)
            out["pending_snapshots"] = {"campaigns": len(dirty), "oldest_age_s": _age(oldest)}
        else:
            out["pending_snapshots"] = dirty
        out["spool"] = _spool(counters)
        found, rejected = _safe(lambda: counters.run(m.rejected_counts(counters)))
        if found:
            total = sum(rejected["by_reason"].values()) + sum(rejected["by_field"].values())
            rejected = {"total": total, **rejected}
        out["rejected_events"] = rejected
    else:
        out["redis"]["error"] = info
    if store is not None:
        ok, err = _safe(store.ping)
        out["store"] = {"ok": ok, "url": redact(store.url)}
        if not ok:
            out["store"]["error"] = err
        elif out["redis"]["ok"]:
            out["redis_data"] = _redis_data(counters, store)
            out["reconcile_needed"] = _flags(store)
    if queue is not None:
        ok, counts = _safe(lambda: {"queued": len(queue), "failed": len(queue.failed_job_registry),
                                    "scheduled": len(queue.scheduled_job_registry),
                                    "started": len(queue.started_job_registry)})
        out["queue"] = {"ok": ok, **(counts if ok else {"error": counts})}
    out["ok"] = all(v.get("ok", True) for v in out.values() if isinstance(v, dict))
    return out
