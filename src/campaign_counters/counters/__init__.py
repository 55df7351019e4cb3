"""The Redis-first counter store: key schema, Lua scripts, sync and asyncio clients."""

from .client import AsyncCounters, Counters
from .core import RecordResult, Settings

__all__ = ["AsyncCounters", "Counters", "RecordResult", "Settings"]
