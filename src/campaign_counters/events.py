"""The event contract (DESIGN 3.1): parsing and validation in one place.

Validation happens before anything touches Redis so a rejected event changes
nothing; every rejection names the field and the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ValidationError

TYPES = ("targeted", "sent", "interaction", "status")
ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
STATUS_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_TEXT = 256
MAX_TITLE = 1024


def check_id(field: str, value: Any) -> str:
    """Tenant, campaign and job ids become parts of Redis keys: keep them tame."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not ID_RE.fullmatch(value):
        raise ValidationError(field, "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return value


def check_text(field: str, value: Any, limit: int = MAX_TEXT) -> str:
    """User ids, node ids and choices: free text, but no control characters.

    Control characters are reserved as separators inside Redis hash fields.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    value = str(value)
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")
    if _CONTROL.search(value):
        raise ValidationError(field, "must not contain control characters")
    return value


def check_ts(value: Any) -> int:
    """Return the timestamp in integer milliseconds.

    Milliseconds keep every sum exact inside Redis (integers, not floats)
    while being finer than anything a chat service logs.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("ts", "must be a number of seconds since the epoch")
    if not math.isfinite(value):
        raise ValidationError("ts", "must be finite")
    if value < 0:
        raise ValidationError("ts", "must be >= 0")
    if value > 1e11:
        raise ValidationError("ts", "must be in seconds, not milliseconds")
    return int(round(value * 1000))


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    tenant: str
    campaign: str
    ts_ms: int
    job: str | None = None
    user: str | None = None
    id: str | None = None
    target: str | None = None
    choice: str | None = None
    node: str | None = None
    title: str | None = None
    status: str | None = None

    @property
    def ts(self) -> float:
        return self.ts_ms / 1000

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "tenant": self.tenant, "campaign": self.campaign}
        for name in ("job", "user", "id", "target", "choice", "node", "title", "status"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["ts"] = self.ts
        return out


def parse_event(data: Any) -> Event:
    """Validate one event object; raise ValidationError naming the field."""
    if not isinstance(data, Mapping):
        raise ValidationError("event", f"must be a JSON object, got {type(data).__name__}")
    etype = data.get("type")
    if etype is None:
        raise ValidationError("type", "is required")
    if etype not in TYPES:
        raise ValidationError("type", f"must be one of {', '.join(TYPES)}, got {etype!r}")
    fields: dict[str, Any] = {"type": etype}
    for name in ("tenant", "campaign"):
        if data.get(name) is None:
            raise ValidationError(name, "is required")
        fields[name] = check_id(name, data[name])
    job = data.get("job")
    if job is None:
        if etype != "status":
            raise ValidationError("job", f"is required for {etype} events")
    else:
        fields["job"] = check_id("job", job)
    if etype != "status":
        if data.get("user") is None:
            raise ValidationError("user", f"is required for {etype} events")
        fields["user"] = check_text("user", data["user"])
    if "ts" not in data or data["ts"] is None:
        raise ValidationError("ts", "is required")
    fields["ts_ms"] = check_ts(data["ts"])
    if data.get("id") is not None:
        fields["id"] = check_text("id", data["id"])
    if etype == "interaction":
        if data.get("target") is None:
            raise ValidationError("target", "is required for interaction events")
        fields["target"] = check_text("target", data["target"])
        for name in ("choice", "node"):
            if data.get(name) is not None:
                fields[name] = check_text(name, data[name])
        if data.get("title") is not None:
            title = data["title"]
            if not isinstance(title, str):
                raise ValidationError("title", f"must be a string, got {type(title).__name__}")
            if len(title) > MAX_TITLE:
                raise ValidationError("title", f"must be at most {MAX_TITLE} characters")
            fields["title"] = title
    if etype == "status":
        status = data.get("status")
        if status is None:
            raise ValidationError("status", "is required for status events")
        if not isinstance(status, str) or not STATUS_RE.fullmatch(status):
            raise ValidationError("status", "must be an upper-case word like RUNNING or COMPLETED")
        fields["status"] = status
    return Event(**fields)
