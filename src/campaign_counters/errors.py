"""One exception hierarchy so callers can catch everything of ours with one clause."""

from __future__ import annotations


class CampaignCountersError(Exception):
    """Root of every error raised by campaign-counters."""


class ValidationError(CampaignCountersError, ValueError):
    """Input broke a contract; nothing was changed.

    Carries the offending field so a caller (or the CLI) can point at it
    without parsing the message.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Refused(ValidationError):
    """A write that would lose numbers was refused; nothing was written (`force` overrides).

    `losses` lists what would shrink: (where, metric, now, after) tuples.
    """

    def __init__(self, field: str, reason: str, *, tenant: str | None = None, campaign: str | None = None,
                 losses: list[tuple[str, str, float, float]] | None = None) -> None:
        self.tenant = tenant
        self.campaign = campaign
        self.losses = losses or []
        super().__init__(field, reason)


class ScriptError(ValidationError):
    """A campaign script (flow graph) is malformed."""


class TenantMismatch(CampaignCountersError):
    """The campaign is bound to another tenant."""

    def __init__(self, campaign: str) -> None:
        self.campaign = campaign
        super().__init__(f"campaign: {campaign!r} belongs to another tenant")


class NotFound(CampaignCountersError, LookupError):
    """Nothing to report; also what another tenant's campaign looks like."""


class BackendError(CampaignCountersError):
    """Redis (or a report store) failed or is unreachable."""


class SnapshotRefused(Refused):
    """A snapshot would have moved stored reports backwards; nothing was overwritten (no `force`)."""

    def __init__(self, campaign: str, reason: str) -> None:
        super().__init__("campaign", f"snapshot of {campaign!r} refused: {reason}", campaign=campaign)


class RepairRefused(Refused):
    """A repair did not swap its rebuilt state in; the live state is as it was (no `force`)."""

    def __init__(self, campaign: str, reason: str) -> None:
        super().__init__("campaign", f"repair of {campaign!r} refused: {reason}", campaign=campaign)
