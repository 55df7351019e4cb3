"""FPTChat's NotificationHistory documents as events: the one mapping the live hook and the nightly check share.

The chat service's hooks turn the NotificationHistory document they just
wrote into events with `history_events` and fire them; the nightly history
source (`nightly.history.MongoHistory`) reads the same collection through
the same function. So a document means the same events live and at night,
and the nightly reconcile compares like with like.

A document may carry both flags (the first message, later answered: its
buttons were clicked): it is then a `sent` and an `interaction`. Each event's
id is the document's `_id` and the event type, so firing a document again
after each update applies every event once, and the nightly read of its
final state finds the same events.

A document is mapped field by field. The defaults follow FPTChat's model;
override any name with a JSON object in `CAMPAIGN_COUNTERS_HISTORY_MAPPING`
(for both sides at once) or with `history_mapping(overrides)`:

| mapping key | default field | becomes |
|---|---|---|
| `tenant` | `tenant_id` | `tenant` |
| `campaign` | `campaign_id` | `campaign` (an ObjectId as its 24-hex string) |
| `job` | `job_id` | `job` |
| `user` | `user_id` | `user` |
| `sent` | `first_message` | truthy: a `sent` event |
| `interaction` | `interaction_user` | truthy: an `interaction` event (as well); neither flag: a `targeted` one |
| `target` | `answer_target` | `target` |
| `choice` | `selected_action` | `choice` |
| `title` | `answer_title` | `title` |
| `node` | (none) | `node` |
| `time` | `created_at` | `ts` (a datetime, cut to the millisecond MongoDB keeps; naive is UTC) |
| `timestamp` | `timestamp` | `ts` when `time` holds no datetime (epoch seconds) |
| `id` | `_id` | `id` = `<_id>:<type>`: each event of a document counts once however often it is fired or read |
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any, Mapping, Protocol

from .errors import ValidationError
from .reports import epoch_ms

FieldNames = Mapping[str, str | None]
"""Mapping key (`tenant`, `time`, ...) -> the document field that holds it (None: not mapped)."""

DEFAULT_MAPPING: dict[str, str | None] = {
    "tenant": "tenant_id", "campaign": "campaign_id", "job": "job_id", "user": "user_id",
    "sent": "first_message", "interaction": "interaction_user", "target": "answer_target",
    "choice": "selected_action", "title": "answer_title", "node": None, "time": "created_at",
    "timestamp": "timestamp", "id": "_id",
}
ENV_MAPPING = "CAMPAIGN_COUNTERS_HISTORY_MAPPING"

_from_env: dict[str, dict[str, str | None]] = {}  # the environment's JSON text -> its mapping


class LiveCounters(Protocol):
    """What the hooks need of `AsyncCounters` (this module sits below the realtime package)."""

    def fire(self, event: Mapping[str, Any]) -> None: ...

    async def record_safe(self, event: Mapping[str, Any]) -> str: ...


def history_mapping(overrides: FieldNames | None = None) -> dict[str, str | None]:
    """Field names to read: the defaults, then CAMPAIGN_COUNTERS_HISTORY_MAPPING, then `overrides`.

    Raises ValidationError for text that is not a JSON object of names, or an unknown key.
    """
    env = os.environ.get(ENV_MAPPING) or ""
    base = _from_env.get(env)
    if base is None:
        base = _from_env[env] = _merge(DEFAULT_MAPPING, _parse_env(env), ENV_MAPPING)
    return _merge(base, overrides or {}, "mapping") if overrides else base


def _parse_env(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValidationError(ENV_MAPPING, 'must be a JSON object, e.g. {"time": "sent_at"}')
    return value


def _merge(base: FieldNames, overrides: Mapping[str, Any], field: str) -> dict[str, str | None]:
    unknown = set(overrides) - set(DEFAULT_MAPPING)
    if unknown:
        raise ValidationError(field, f"unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_MAPPING)}")
    if any(v is not None and not isinstance(v, str) for v in overrides.values()):
        raise ValidationError(field, "values must be field names (strings) or null")
    return {**base, **overrides}


def history_events(doc: Mapping[str, Any], mapping: FieldNames | None = None) -> list[dict[str, Any]]:
    """The events a NotificationHistory document stands for, as plain dicts (not yet validated).

    One or two: `sent` and/or `interaction` by the document's flags, else
    `targeted`. Never raises on an odd document: recording (or the nightly
    source) validates each event and rejects it with the field and the reason.
    """
    m = mapping or history_mapping()

    def get(key: str) -> Any:
        name = m.get(key)
        return doc.get(name) if name else None

    when = get("time")
    base: dict[str, Any] = {"tenant": get("tenant"), "campaign": get("campaign"), "job": get("job"),
                            "user": get("user"), "ts": epoch_ms(when) / 1000 if isinstance(when, datetime)
                            else get("timestamp")}
    for key in ("tenant", "campaign", "job", "user"):
        if base[key] is not None and not isinstance(base[key], (str, int)):
            base[key] = str(base[key])  # ObjectId and friends
    doc_id = get("id")
    kinds = [k for k in ("sent", "interaction") if get(k)] or ["targeted"]
    events = []
    for kind in kinds:
        event = {"type": kind, **base, "id": None if doc_id is None else f"{doc_id}:{kind}"}
        if kind == "interaction":
            event.update(target=get("target"), choice=get("choice"), title=get("title"), node=get("node"))
        events.append({k: v for k, v in event.items() if v is not None})
    return events


def fire_history(live: LiveCounters, doc: Mapping[str, Any], mapping: FieldNames | None = None) -> None:
    """Fire and forget the events of a NotificationHistory document just written: returns at once, never raises."""
    for event in history_events(doc, mapping):
        live.fire(event)


async def record_history(live: LiveCounters, doc: Mapping[str, Any], mapping: FieldNames | None = None) -> list[str]:
    """Record them with `record_safe` (bounded wait, never raises): the outcome of each event."""
    return [await live.record_safe(event) for event in history_events(doc, mapping)]


def status_event(tenant_id: str, campaign_id: Any, status: str, at: datetime | None = None,
                 job_id: str | None = None) -> dict[str, Any]:
    """A campaign (or job) status event, e.g. COMPLETED at the end of a campaign; `at` defaults to now."""
    ts = (epoch_ms(at) if at is not None else int(time.time() * 1000)) / 1000
    event: dict[str, Any] = {"type": "status", "tenant": tenant_id, "campaign": str(campaign_id),
                             "status": status, "ts": ts}
    if job_id is not None:
        event["job"] = job_id
    return event
