"""The event contract (docs/events.md): parsing and validation in one place.

Validation happens before anything touches Redis so a rejected event changes
nothing; every rejection names the field and the reason.

Tenant ids are at most 50 characters and user ids at most 100: FPTChat's
report models declare `tenant_id = StringField(max_length=50)` and
`user_id = StringField(max_length=100)`, so a longer id is refused here, at
input, rather than written into a document those models cannot validate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ValidationError

TYPES = ("targeted", "sent", "interaction", "status")
ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# FPTChat's campaign statuses; any other is refused (and counted under `status` in health), so a report
# never shows a status nobody can act on. Add one here when FPTChat adds it.
STATUSES = ("NEW", "PREPARING", "WAITING", "RUNNING", "COMPLETED", "ERROR")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_ID = 64
MAX_TEXT = 256
MAX_TITLE = 1024
LIMITS = {"tenant": 50, "user": 100}  # FPTChat's models: tenant_id max_length=50, user_id max_length=100


def check_id(field: str, value: Any) -> str:
    """Tenant, campaign and job ids become parts of Redis keys: keep them tame.

    Like every id field, an integer is taken as its decimal text (`"job": 7` is job "7").
    """
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    limit = LIMITS.get(field, MAX_ID)
    if not ID_RE.fullmatch(value) or len(value) > limit:
        raise ValidationError(field, f"must be 1-{limit} characters of A-Z a-z 0-9 _ . -")
    return value


def check_text(field: str, value: Any, limit: int | None = None) -> str:
    """User ids, event ids, node ids and choices: free text, but no control characters.

    Control characters are reserved as separators inside Redis hash fields.
    An integer is taken as its decimal text, as for every id field.
    """
    limit = limit or LIMITS.get(field, MAX_TEXT)
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


@dataclass(slots=True)
class Event:
    """A validated event. Not frozen: frozen dataclasses cost ~1 µs more to build,
    which matters when millions are streamed; treat it as read-only."""

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


_TEXT_OK = re.compile(r"[^\x00-\x1f\x7f]{1,%d}" % MAX_TEXT).fullmatch
_ID_OK = ID_RE.fullmatch


# Per id field, the values found valid (within the field's limit), up to 4096 each.
_KNOWN_TENANTS: set[str] = set()
_KNOWN_CAMPAIGNS: set[str] = set()
_KNOWN_JOBS: set[str] = set()


def _id(field: str, value: Any, known: set[str]) -> str:
    """check_id with fast paths: tenant, campaign and job ids repeat in nearly every event."""
    if type(value) is str:
        if value in known:
            return value
        if len(value) <= LIMITS.get(field, MAX_ID) and _ID_OK(value):
            if len(known) >= 4096:
                known.clear()
            known.add(value)
            return value
    return check_id(field, value)


def _text(field: str, value: Any) -> str:
    """check_text with fast paths: printable strings (no control character) of a sane length."""
    if (type(value) is str and 0 < len(value) <= LIMITS.get(field, MAX_TEXT)
            and (value.isprintable() or _TEXT_OK(value))):
        return value
    return check_text(field, value)


def _ts(value: Any) -> int:
    if (type(value) is int or type(value) is float) and 0 <= value <= 1e11:
        return int(round(value * 1000))
    return check_ts(value)


def parse_event(data: Any) -> Event:
    """Validate one event object; raise ValidationError naming the field."""
    if type(data) is not dict and not isinstance(data, Mapping):  # isinstance(Mapping) is slow
        raise ValidationError("event", f"must be a JSON object, got {type(data).__name__}")
    get = data.get
    etype = get("type")
    if etype is None:
        raise ValidationError("type", "is required")
    if etype not in TYPES:
        raise ValidationError("type", f"must be one of {', '.join(TYPES)}, got {etype!r}")
    tenant, campaign = get("tenant"), get("campaign")
    if tenant is None:
        raise ValidationError("tenant", "is required")
    tenant = _id("tenant", tenant, _KNOWN_TENANTS)
    if campaign is None:
        raise ValidationError("campaign", "is required")
    campaign = _id("campaign", campaign, _KNOWN_CAMPAIGNS)
    job = get("job")
    if job is not None:
        job = _id("job", job, _KNOWN_JOBS)
    elif etype != "status":
        raise ValidationError("job", f"is required for {etype} events")
    user = None
    if etype != "status":
        user = get("user")
        if user is None:
            raise ValidationError("user", f"is required for {etype} events")
        user = _text("user", user)
    ts = get("ts")
    if ts is None:
        raise ValidationError("ts", "is required")
    ts_ms = _ts(ts)
    event_id = get("id")
    if event_id is not None:
        event_id = _text("id", event_id)
    # The interaction fields are read (and checked) on interactions only: on other types they are
    # ignored, so a field nothing uses can never cost the event that carries it.
    target = choice = node = title = status = None
    if etype == "interaction":
        target = get("target")
        if target is None:
            raise ValidationError("target", "is required for interaction events")
        target = _text("target", target)
        choice, node, title = get("choice"), get("node"), get("title")
        if choice is not None:
            choice = _text("choice", choice)
        if node is not None:
            node = _text("node", node)
        if title is not None:
            if not isinstance(title, str):
                raise ValidationError("title", f"must be a string, got {type(title).__name__}")
            if len(title) > MAX_TITLE:
                raise ValidationError("title", f"must be at most {MAX_TITLE} characters")
    elif etype == "status":
        status = get("status")
        if status is None:
            raise ValidationError("status", "is required for status events")
        if status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
    return Event(etype, tenant, campaign, ts_ms, job, user, event_id, target, choice, node, title, status)
