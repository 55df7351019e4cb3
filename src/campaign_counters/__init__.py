"""campaign-counters: realtime, exact campaign reports kept in Redis."""

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
__version__ = "0.1.0"
