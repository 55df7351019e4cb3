"""Tenant timezones: an IANA name, or UTC when a tenant has none (one rule, used everywhere)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationError

UTC = ZoneInfo("UTC")


def zone_or_utc(name: str | bytes | None) -> ZoneInfo:
    """The zone of a stored setting: UTC when unset or no longer known to this machine."""
    if isinstance(name, bytes):
        name = name.decode()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_zone(name: str, field: str = "tz") -> ZoneInfo:
    """A zone given as input; ValidationError naming `field` when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field, f"unknown timezone {name!r}") from None
