"""campaign-counters: realtime, exact campaign reports kept in Redis."""

from importlib.metadata import PackageNotFoundError, version as _version

from .counters import AsyncCounters, Counters, RecordResult, Settings
from .errors import (
    BackendError,
    CampaignCountersError,
    NotFound,
    ScriptError,
    TenantMismatch,
    ValidationError,
)
from .events import Event, parse_event
from .script import FlowGraph, parse_script

__all__ = [
    "AsyncCounters", "BackendError", "CampaignCountersError", "Counters", "Event", "FlowGraph",
    "NotFound", "RecordResult", "ScriptError", "Settings", "TenantMismatch", "ValidationError",
    "parse_event", "parse_script",
]
try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = _version("campaign-counters")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
