"""One look at everything the service depends on (Redis, report store, queue), for `campaign-counters health`."""

from __future__ import annotations

from typing import Any

from .connection import redact
from .counters import Counters
from .counters import maintenance as m
from .counters.transport import Cmd, call
from .stores import ReportStore


def _safe(fn: Any) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - health reports every failure, whatever it is
        return False, f"{type(exc).__name__}: {redact(str(exc))}"


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
        out["pending_snapshots"] = {"campaigns": len(dirty), "changes": sum(n for _, _, n in dirty)} if found else dirty
        found, rejected = _safe(lambda: counters.run(m.rejected_counts(counters)))
        if found:
            total = sum(rejected["by_campaign"].values()) + sum(rejected["by_field"].values())
            rejected = {"total": total, **rejected}
        out["rejected_events"] = rejected
    else:
        out["redis"]["error"] = info
    if store is not None:
        ok, err = _safe(store.ping)
        out["store"] = {"ok": ok, "url": redact(store.url)}
        if not ok:
            out["store"]["error"] = err
    if queue is not None:
        ok, counts = _safe(lambda: {"queued": len(queue), "failed": len(queue.failed_job_registry),
                                    "scheduled": len(queue.scheduled_job_registry),
                                    "started": len(queue.started_job_registry)})
        out["queue"] = {"ok": ok, **(counts if ok else {"error": counts})}
    out["ok"] = all(v.get("ok", True) for v in out.values() if isinstance(v, dict))
    return out
