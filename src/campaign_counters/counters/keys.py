"""The Redis key schema: the one place that knows key names.

Every key of a campaign carries the hash tag ``{<campaign>}`` so one Lua call
can touch all of them atomically, on a single server or on Redis Cluster.
Indexes that span campaigns (the registry of campaigns and the set of
campaigns with unpersisted changes) are split per cluster slot, the slot of
the campaign they list, so the same Lua call can maintain them too; on a
single server there is one such key each.

The dashboards' read model (written by snapshots and the scheduler tick, read
by Grafana) follows the same rule: a campaign's dashboard keys carry its tag,
and the keys that span campaigns share the fixed tag `DASHBOARD_TAG`, so they
live in one slot and a tick writes them in one pipeline. Each Grafana panel
reads exactly one key.
"""

from __future__ import annotations

from functools import lru_cache

from redis.crc import key_slot

PREFIX = "cc:v2:"  # v2: ids in fingerprint buckets, journeys in user records, a change log, the epoch marker
CAMPAIGN_SCOPE = "*"  # not a valid job id, so it never clashes with a job
DASHBOARD_ROUTE = "cc-dash"  # routes commands to the slot of the dashboard keys that span campaigns
DASHBOARD_TAG = "{" + DASHBOARD_ROUTE + "}"
NODE_FIGURES = ("reached", "conversion", "drop_off", "choices")  # per-node dashboard hashes


def slot_of(campaign: str) -> int:
    return key_slot(f"{{{campaign}}}".encode())


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    """A short string per cluster slot that hashes to that slot.

    Built once (about 0.1 s) and only on Redis Cluster.
    """
    tags: list[str | None] = [None] * 16384
    missing = 16384
    i = 0
    while missing:
        candidate = format(i, "x")
        slot = key_slot(candidate.encode())
        if tags[slot] is None:
            tags[slot] = candidate
            missing -= 1
        i += 1
    return tuple(tags)  # type: ignore[arg-type]


class KeySchema:
    """Key names for one deployment; `cluster` decides how indexes are split."""

    def __init__(self, cluster: bool = False, prefix: str = PREFIX, namespace: str = "") -> None:
        self.cluster = cluster
        self.prefix = prefix
        # A namespace ("shadow:") gives a campaign a second, parallel set of keys
        # in the same slot: a repair builds the truth there, then swaps it in.
        self.namespace = namespace

    def shadow(self) -> "KeySchema":
        return KeySchema(self.cluster, self.prefix, "shadow:")

    def campaign(self, campaign: str) -> str:
        """Prefix of all keys of one campaign."""
        return f"{self.prefix}{self.namespace}{{{campaign}}}:"

    def meta(self, campaign: str) -> str:
        return self.campaign(campaign) + "m"

    def names(self, campaign: str) -> str:
        """Hash node index -> node id (counters and records use indexes)."""
        return self.campaign(campaign) + "names"

    def script(self, campaign: str) -> str:
        return self.campaign(campaign) + "script"

    def script_versions(self, campaign: str) -> str:
        """Hash of the scripts a campaign ran: `<loaded at, Unix ms>` -> sha, and `s:<sha>` -> script JSON."""
        return self.campaign(campaign) + "versions"

    def users(self, campaign: str) -> str:
        return self.campaign(campaign) + "u"

    def counters(self, campaign: str, job: str | None = None) -> str:
        return self.campaign(campaign) + "c:" + (job or CAMPAIGN_SCOPE)

    def ids(self, campaign: str) -> str:
        """Hash bucket -> fingerprints of the event ids remembered for de-duplication (see record.lua)."""
        return self.campaign(campaign) + "ids"

    def change_log(self, campaign: str) -> str:
        """String of user names (each followed by \\x1f) whose state changed since the last snapshot began."""
        return self.campaign(campaign) + "log"

    def frozen_log(self, campaign: str) -> str:
        """The change log a snapshot is persisting (kept until it finished)."""
        return self.campaign(campaign) + "log:s"

    def repair_tail(self, campaign: str) -> str:
        """Stream of events applied while a repair rebuilds the campaign beside its live keys."""
        return self.campaign(campaign) + "tail"

    def lease(self, campaign: str) -> str:
        """Who is snapshotting or repairing the campaign (a token with a short TTL)."""
        return self.campaign(campaign) + "lease"

    def day_users(self, campaign: str, day: str, kind: str) -> str:
        """HyperLogLog of users of one local day; kind is a(ny), s(ent) or i(nteracted)."""
        return self.campaign(campaign) + f"d:{day}:{kind}"

    def tenant_day_users(self, tenant: str, day: str, campaign: str | None = None) -> str:
        """HyperLogLog of a tenant's distinct users in one local day, across campaigns.

        Split per cluster slot (the slot of the campaign writing to it) so the
        record script can update it atomically; readers union the parts.
        """
        return self._indexed("tday", campaign) + f":{tenant}:{day}"

    def tenant_day_parts(self, tenant: str, day: str, campaigns: list[str]) -> list[str]:
        """The parts of a tenant-day HyperLogLog that these campaigns may have written."""
        if not self.cluster:
            return [self.tenant_day_users(tenant, day)]
        return sorted({self.tenant_day_users(tenant, day, c) for c in campaigns})

    def _indexed(self, name: str, campaign: str | None) -> str:
        if not self.cluster:
            return f"{self.prefix}{self.namespace}{name}"
        if campaign is None:
            raise ValueError("a campaign is needed to name a slot-split index")
        return f"{self.prefix}{self.namespace}{name}:{{{_slot_tags()[slot_of(campaign)]}}}"

    def epoch(self, campaign: str | None = None) -> str:
        """The epoch marker: set when the deployment's Redis state begins (or is restored).

        A missing marker means Redis lost its data. Split per cluster slot so
        the record script of any campaign can check it; a repair's shadow keys
        (another namespace) share the live marker.
        """
        return KeySchema(self.cluster, self.prefix)._indexed("epoch", campaign)

    def registry(self, campaign: str | None = None) -> str:
        """Hash campaign -> tenant."""
        return self._indexed("registry", campaign)

    def dirty(self, campaign: str | None = None) -> str:
        """Sorted set of campaigns with changes not yet persisted (score: changes not yet seen by a snapshot)."""
        return self._indexed("dirty", campaign)

    def rejected(self, campaign: str | None = None) -> str:
        """Hash `campaign\\x1fcode` -> events the record script rejected with that code."""
        return self._indexed("rejected", campaign)

    def input_rejections(self) -> str:
        """Hash field -> events rejected by validation before reaching a campaign's keys."""
        return f"{self.prefix}{self.namespace}rejected-input"

    def slot_index_key(self, name: str, slot: int) -> str:
        """The part of a slot-split index that lives in `slot` (Redis Cluster only)."""
        return f"{self.prefix}{self.namespace}{name}:{{{_slot_tags()[slot]}}}"

    def all_index_keys(self, name: str) -> list[str]:
        """Every key of a slot-split index, to read it whole."""
        if not self.cluster:
            return [f"{self.prefix}{self.namespace}{name}"]
        return [f"{self.prefix}{self.namespace}{name}:{{{tag}}}" for tag in _slot_tags()]

    def state_keys(self, campaign: str, jobs: list[str], days: list[str]) -> list[str]:
        """Every key holding a campaign's realtime state, meta and campaign counters first."""
        keys = [self.meta(campaign), self.counters(campaign), self.script(campaign), self.names(campaign),
                self.users(campaign), self.ids(campaign), self.change_log(campaign), self.frozen_log(campaign)]
        for job in jobs:
            keys.append(self.counters(campaign, job))
        for day in days:
            keys += [self.day_users(campaign, day, kind) for kind in "asi"]
        return keys

    def tenants(self) -> str:
        """Hash tenant -> IANA timezone."""
        return f"{self.prefix}tenants"

    def spool_status(self) -> str:
        """Hash client (host:pid) -> events waiting in its local spool (as the client last reported)."""
        return f"{self.prefix}spool"

    def spool_oldest(self) -> str:
        """Hash client (host:pid) -> Unix time the oldest event waiting in its local spool was spooled."""
        return f"{self.prefix}spool:oldest"

    def spool_overflowed(self) -> str:
        """Hash client (host:pid) -> events its local spool could not keep (full): lost."""
        return f"{self.prefix}spool:overflowed"

    def nightly_scheduled(self) -> str:
        """Hash tenant -> the last local day (ISO) whose night was scheduled (became pending)."""
        return f"{self.prefix}nightly"

    def nightly_pending(self) -> str:
        """Sorted set of nights not yet done, `<tenant>/<day ISO>`; score: epoch seconds before which
        no new attempt is enqueued."""
        return f"{self.prefix}nightly:pending"

    def nightly_outcomes(self) -> str:
        """Hash `<tenant>/<day ISO>` -> JSON of the last attempt that did not complete the night."""
        return f"{self.prefix}nightly:outcome"

    # -- the dashboards' read model -----------------------------------------------

    def dashboard(self, campaign: str, job: str | None = None) -> str:
        """Hash of a job's (or the campaign total's) scalar metrics and status, by metric name."""
        return self.campaign(campaign) + "dash:" + (job or CAMPAIGN_SCOPE)

    def dashboard_nodes(self, campaign: str, job: str | None, figure: str) -> str:
        """Hash node id -> one per-node figure (NODE_FIGURES); `choices` is "node / choice" -> count."""
        if figure not in NODE_FIGURES:
            raise ValueError(f"unknown node figure {figure!r}")
        return self.dashboard(campaign, job) + ":" + figure

    def dashboard_series(self, campaign: str, job: str | None = None) -> str:
        """Stream of a scope's scalar metrics, one entry per snapshot that changed them."""
        return self.dashboard(campaign, job) + ":series"

    def dashboard_jobs(self, campaign: str) -> str:
        """Set of a campaign's job ids, for the dashboards' job variable."""
        return self.campaign(campaign) + "dash-jobs"

    def _dashboard_index(self, name: str) -> str:
        return f"{self.prefix}{DASHBOARD_TAG}:{name}"

    def dashboard_tenants(self) -> str:
        """Set of tenants with a published campaign."""
        return self._dashboard_index("tenants")

    def dashboard_campaigns(self, tenant: str) -> str:
        """Hash campaign -> its latest status ("" without one), for the campaign variable."""
        return self._dashboard_index(f"campaigns:{tenant}")

    def dashboard_overview(self, tenant: str, period: str) -> str:
        """Hash of a tenant's latest overview figures of a period (daily, weekly, monthly, today)."""
        return self._dashboard_index(f"overview:{tenant}:{period}")

    def dashboard_nightly(self, tenant: str) -> str:
        """Hash of a tenant's latest nightly check: day, run time, drift."""
        return self._dashboard_index(f"nightly:{tenant}")

    def dashboard_nightly_all(self, figure: str) -> str:
        """Hash tenant -> one figure of its latest nightly check (day, run_at, drift)."""
        return self._dashboard_index(f"nightly-all:{figure}")

    def dashboard_ops(self) -> str:
        """Hash of the operational figures of the last scheduler tick."""
        return self._dashboard_index("ops")

    def dashboard_ops_series(self) -> str:
        """Stream of the operational figures, one entry per tick that changed them."""
        return self._dashboard_index("ops:series")

    def dashboard_rejected(self) -> str:
        """Hash reason -> rejected events ("invalid <field>", "refused <campaign>")."""
        return self._dashboard_index("rejected")
