"""Nightly correctness check: recompute from history, compare, record the drift, repair.

Truth is `recompute.CampaignTruth` over the campaign's whole history (the
realtime counters are cumulative, so a campaign is checked whole; `--date`
picks the campaigns that had events that day). A repair replays the history
through the realtime script into the campaign's shadow keys and swaps them in
with one atomic call, then re-snapshots, so readers never see half a repair.

Before repairing, every drifting campaign is checked against what Redis and
the store hold (`guard`): a history that would shrink a user count or the
interactions of any job, or that has no events for the campaign at all,
refuses the repair for all campaigns (nothing written) unless forced. The
result keeps the drift found before repairing; what is left afterwards is
`after_repair`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from ..counters import Counters
from ..counters import maintenance as m
from ..errors import NotFound, RepairRefused, TenantMismatch
from ..analysis import DEFAULT_WINDOW_S, analysis_values
from ..persist import durable
from ..persist.analysis import campaign_versions, live_analyses
from ..persist.snapshot import Lease, report_from_doc, snapshot_campaign
from ..reports import METRICS, iso_ms
from ..script import FlowGraph
from ..stores import ReportStore
from . import guard, invariants
from .history import HistorySource, Progress
from .recompute import CampaignTruth, window

log = logging.getLogger(__name__)


@dataclass
class ReconcileResult:
    tenant: str
    checked: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)
    after_repair: list[dict[str, Any]] | None = None  # drift left after repairing (None: no repair asked)
    invariants: list[dict[str, Any]] = field(default_factory=list)  # count orders broken, and where
    analyses: list[dict[str, Any]] = field(default_factory=list)  # the live analyses checked (not in output)

    @property
    def remaining(self) -> list[dict[str, Any]]:
        """The drift still there: after the repair when one was asked, else the drift found."""
        return self.drift if self.after_repair is None else self.after_repair

    def output(self) -> dict[str, Any]:
        return {"checked": self.checked, "drift": self.drift, "repaired": self.repaired,
                "after_repair": self.after_repair, "invariants": self.invariants}


def flatten_metrics(report: dict[str, Any] | None) -> dict[str, Any]:
    """Leaf values of the metric part of a report, keyed by dotted path."""
    out: dict[str, Any] = {}
    if report is None:
        return out

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            for item in value:
                walk(f"{prefix}.{item['node']}", {k: v for k, v in item.items() if k != "node"})
        else:
            out[prefix] = value

    for key in METRICS:
        walk(key, report.get(key))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def compare(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(metric, expected, actual) for every leaf that differs; absent counts as 0."""
    return compare_values(flatten_metrics(expected), flatten_metrics(actual))


def compare_values(e: dict[str, Any], a: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, expected, actual) for every flat value that differs; absent counts as 0."""
    diffs = []
    for key in sorted(set(e) | set(a)):
        ev, av = e.get(key), a.get(key)
        if ev is None and key not in e:
            ev = 0 if isinstance(av, (int, float)) and not key.endswith("_time") else None
        if av is None and key not in a:
            av = 0 if isinstance(ev, (int, float)) and not key.endswith("_time") else None
        if not _same(ev, av):
            diffs.append((key, ev, av))
    return diffs


USER_COUNTS = ("target_users_count", "sent_users_count", "interacted_users_count", "completed_users_count",
               "total_interactions")


def _live(counters: Counters, tenant: str, campaign: str, job: str | None) -> dict[str, Any] | None:
    try:
        return counters.report(tenant, campaign, job)
    except NotFound:
        return None


def _refuse_unknown(counters: Counters, store: ReportStore | None, tenant: str, truths: dict[str, CampaignTruth],
                    named: set[str]) -> None:
    """NotFound when a campaign named by the caller has no events in the history, no live data, nothing stored."""
    unknown = sorted(c for c in named if not truths[c].has_events and _live(counters, tenant, c, None) is None
                     and (store is None or not store.campaign_reports(tenant, c)))
    if unknown:
        raise NotFound(f"campaign {unknown[0]!r} of tenant {tenant!r} has no data: no events in the history, "
                       "nothing live, nothing stored" + (f" (nor {', '.join(map(repr, unknown[1:]))})"
                                                         if unknown[1:] else ""))


def _live_jobs(counters: Counters, tenant: str, campaign: str) -> set[str]:
    """Jobs with live keys, when the campaign is this tenant's."""
    meta = counters.run(m.campaign_meta(counters, campaign))
    return set(meta.jobs) if meta.tenant == tenant else set()


def _live_campaigns(counters: Counters, tenant: str) -> set[str]:
    """The tenant's campaigns that still have live keys (closed ones have none)."""
    found = set()
    for campaign in counters.run(m.tenant_campaigns(counters, tenant)):
        if counters.run(m.campaign_meta(counters, campaign)).tenant == tenant:
            found.add(campaign)
    return found


def reconcile(
    counters: Counters,
    store: ReportStore | None,
    history: HistorySource,
    tenant: str,
    *,
    day: date | None = None,
    until: date | None = None,
    campaigns: set[str] | None = None,
    tz: ZoneInfo | None = None,
    repair: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    read_progress: Progress | None = None,
    record: bool = True,
    approximation: list[dict[str, Any]] | None = None,
    analysis: bool = True,
) -> ReconcileResult:
    """Check (and optionally repair) a tenant's campaigns against their history.

    With `day` (to `until`, for a backfill), the campaigns that had events
    in those local days; else every campaign of the tenant in the history or
    with live keys. Every job known to the history, Redis or the store is
    checked. `progress` hears each campaign checked, `read_progress` how far
    the history has been read. Raises `Refused` (nothing written) when a
    repair would shrink a campaign's counts, unless `force`; TenantMismatch
    (nothing written, `force` or not) when a repair names a campaign that
    Redis or the store binds to another tenant; `NotFound` when a campaign
    named in `campaigns` has no events, live data or stored report. Every
    report checked (history, live, snapshot) is also checked for the order
    of `invariants.CHAIN`; `approximation` (the measured error of the live
    HyperLogLogs, see `approximation.measure`) is recorded with the result.
    With `analysis`, each campaign's journey analysis (`persist.analysis`,
    one scan of its users) is checked too, at one instant for both sides.
    """
    tz = tz or counters.run(counters.plan_timezone(tenant))
    named: set[str] = set()
    if campaigns is None:
        start_ms = end_ms = None
        if day is not None:
            start_ms = int(window("daily", day, tz)[1].timestamp() * 1000)
            end_ms = int(window("daily", until or day, tz)[2].timestamp() * 1000)
        campaigns = {ev.campaign for ev in history.events(tenant, None, start_ms, end_ms, progress=read_progress)}
        if day is None:
            campaigns |= _live_campaigns(counters, tenant)
    else:
        named = set(campaigns)
    foreign = sorted(c for c in campaigns if durable.owners(counters, store, c) - {tenant})
    if foreign and repair:
        raise TenantMismatch(foreign[0])  # before anything is written, for every campaign
    truths = _truths(counters, history, tenant, campaigns, read_progress)
    if record and named:
        _refuse_unknown(counters, store, tenant, truths, named)
    result = ReconcileResult(tenant, campaigns=sorted(truths))
    drifted: set[str] = set()
    losses: dict[str, list[guard.Loss]] = {}
    for campaign, truth in sorted(truths.items()):
        if progress:
            progress(campaign)
        stored = {d.get("job_id"): report_from_doc(d) for d in store.campaign_reports(tenant, campaign)} \
            if store is not None else {}
        jobs = set(truth.jobs) | _live_jobs(counters, tenant, campaign) | {j for j in stored if j is not None}
        if analysis:
            live_found, found = _analysis_drift(counters, tenant, campaign, truth, sorted(jobs))
            result.analyses += live_found
            for job, want, got in found:
                result.drift.append({"campaign": campaign, "job": job, "metric": "analysis." + want[0],
                                     "expected": want[1], "actual": got, "source": "live"})
                drifted.add(campaign)
        for job in [None, *sorted(jobs)]:
            expected = truth.report(job)
            result.checked += 1
            where = f"job {job}" if job else "campaign total"
            live = _live(counters, tenant, campaign, job)
            for source, seen in (("history", expected), ("live", live), ("snapshot", stored.get(job))):
                result.invariants += [{"campaign": campaign, "job": job, "source": source, **b}
                                      for b in invariants.broken(seen)]
            for source, actual in (("live", live), ("snapshot", stored.get(job))):
                if source == "snapshot" and actual is None:
                    continue
                for metric, want, got in compare(expected, actual):
                    result.drift.append({"campaign": campaign, "job": job, "metric": metric,
                                         "expected": want, "actual": got, "source": source})
                    drifted.add(campaign)
                losses.setdefault(campaign, []).extend(guard.losses(expected, actual, USER_COUNTS,
                                                                    f"{where}, {source}"))
    if store is not None:
        for campaign in sorted(set(truths) - drifted - set(foreign)):
            durable.clear_flag(store, campaign)  # exact: a Redis-loss or shrink flag no longer applies
    if repair and not force:
        for campaign in sorted(drifted):
            guard.refuse(f"campaign {campaign!r} of tenant {tenant!r}", losses.get(campaign, []),
                         empty=not truths[campaign].has_events, tenant=tenant, campaign=campaign)
    if repair:
        for campaign in sorted(drifted):
            if repair_campaign(counters, store, history, tenant, campaign):
                result.repaired.append(campaign)
        if drifted:
            again = reconcile(counters, store, history, tenant, campaigns=drifted, tz=tz, record=False)
            result.after_repair = again.drift
        else:
            result.after_repair = []
    if store is not None and record:
        store.insert_reconcile({
            "tenant_id": tenant, "created_at": iso_ms(int(time.time() * 1000)),
            "date": day.isoformat() if day else None, "until": until.isoformat() if until else None,
            "timezone": str(tz), "campaigns": result.campaigns,
            **result.output(),
            **({"approximation": approximation} if approximation is not None else {}),
        })
    return result


def _analysis_drift(counters: Counters, tenant: str, campaign: str, truth: CampaignTruth, jobs: list[str]
                    ) -> tuple[list[dict[str, Any]], list[tuple[str | None, tuple[str, Any], Any]]]:
    """The live analyses, and (job, (name, expected), actual) for each value where they and the history
    differ (both at one instant, in the tenant's timezone as the live analysis)."""
    now_ms = int(time.time() * 1000)
    tz = counters.run(counters.plan_timezone(tenant))
    try:
        live_jobs = set(counters.run(m.campaign_meta(counters, campaign)).jobs)
        scopes = [None, *(j for j in jobs if j in live_jobs)]
        live = {a["job"]: a for a in live_analyses(counters, tenant, campaign, scopes, now_ms=now_ms)}
    except NotFound:
        live = {}
    found = []
    for job in [None, *jobs]:
        expected = truth.analysis(job, now_ms, DEFAULT_WINDOW_S * 1000, tz)
        for name, want, got in compare_values(analysis_values(expected), analysis_values(live.get(job))):
            found.append((job, (name, want), got))
    return list(live.values()), found


def _truths(counters: Counters, history: HistorySource, tenant: str, campaigns: set[str],
            read_progress: Progress | None = None) -> dict[str, CampaignTruth]:
    if not campaigns:
        return {}
    truths: dict[str, CampaignTruth] = {}
    for campaign in campaigns:
        try:
            graph = counters.run(counters.plan_graph(tenant, campaign))
        except NotFound:
            graph = None  # nothing live (or another tenant's): everything will show as drift
        truths[campaign] = CampaignTruth(tenant, campaign, graph, campaign_versions(counters, campaign))
    for ev in history.events(tenant, set(campaigns), progress=read_progress):
        truths[ev.campaign].add(ev)
    return truths


REPAIR_ROUNDS = 5  # tail replays before a repair gives up on a campaign that never stops changing
REPAIR_WINDOW_MS = 30 * 60 * 1000  # how long events are tailed for a repair that dies
LEASE_WAIT_S = 120.0  # how long a repair waits for a running snapshot of the campaign


def repair_campaign(counters: Counters, store: ReportStore | None, history: HistorySource,
                    tenant: str, campaign: str) -> bool:
    """Rebuild a campaign from its history beside the live keys, swap it in, re-snapshot.

    Events recorded while the rebuild runs are applied to the live state and,
    from the repair tail, to the rebuilt one (de-duplicated by id), so the
    swapped-in state misses none of them; the swap happens only when the
    tail holds nothing the rebuilt state lacks. The campaign's lease keeps
    snapshots away from the swap and the re-snapshot. Raises TenantMismatch
    for another tenant's campaign (live, closed, or known to the store),
    RepairRefused when events keep arriving faster than the tail is applied.
    """
    durable.check_owner(counters, store, tenant, campaign)
    live = counters.run(m.campaign_meta(counters, campaign))
    counters.run(counters.plan_timezone(tenant))
    try:
        graph = counters.run(counters.plan_graph(tenant, campaign))
    except NotFound:
        graph = None
    shadow = counters.shadow()
    counters.run(m.begin_repair(counters, campaign, REPAIR_WINDOW_MS))
    jobs: set[str] = set(live.jobs)
    days: set[str] = set(live.days)
    try:
        counters.run(m.drop_shadow(shadow, campaign, sorted(jobs), sorted(days)))
        count = 0
        for script, start_ms, end_ms in _script_windows(counters, campaign, graph):
            if script is not None:
                shadow.run(shadow.plan_load_script(tenant, campaign, script, record_version=False))
            for chunk in _chunks(history.events(tenant, {campaign}, start_ms, end_ms), 50_000):
                shadow.record_many(chunk)
                count += len(chunk)
        lease = Lease(counters, campaign)
        deadline = time.monotonic() + LEASE_WAIT_S
        while not lease.take():
            if time.monotonic() > deadline:
                raise RepairRefused(campaign, f"a snapshot of it held its lease for over {LEASE_WAIT_S:.0f} s")
            time.sleep(0.2)
        try:
            last = "0-0"
            for _ in range(REPAIR_ROUNDS):
                events, fps, tail_last = counters.run(m.read_tail(counters, campaign, last))
                if events:
                    shadow.run(shadow.plan_record_many(events, dict(enumerate(fps))))
                    last = tail_last or last
                shadow_meta = counters.run(m.campaign_meta(shadow, campaign))
                jobs |= set(shadow_meta.jobs)
                days |= set(shadow_meta.days)
                if counters.run(m.swap_in(counters, shadow, campaign, sorted(jobs), sorted(days), last)):
                    break
            else:
                raise RepairRefused(campaign, f"events kept arriving while {REPAIR_ROUNDS} rounds of the repair "
                                              "tail were applied; try again when the campaign is quieter")
            counters.run(m.merge_tenant_days(counters, shadow, tenant, campaign, sorted(days)))
            log.info("repaired %s/%s from %d history events", tenant, campaign, count)
            if store is not None:
                store.delete_journeys(tenant, campaign)
                durable.clear_flag(store, campaign)
                snapshot_campaign(counters, store, campaign, lease=lease)
        finally:
            lease.release()
    finally:
        counters.run(m.end_repair(counters, campaign))
        counters.run(m.drop_shadow(shadow, campaign, sorted(jobs), sorted(days)))
    return True


def _script_windows(counters: Counters, campaign: str, graph: FlowGraph | None
                    ) -> list[tuple[FlowGraph | None, int | None, int | None]]:
    """(script, from, until) to replay a campaign's history with: each version over the events of its time
    (as the recompute reads them), the current script over everything when no versions are known."""
    versions = campaign_versions(counters, campaign)
    if len(versions) < 2:
        return [(graph, None, None)]
    bounds = [None, *(v.loaded_at_ms for v in versions[1:]), None]
    return [(v.graph, bounds[i], bounds[i + 1]) for i, v in enumerate(versions)]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
