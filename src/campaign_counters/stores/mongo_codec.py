"""BSON types of report documents: the one place that turns the store's plain values into what FPTChat's models read.

The store interface speaks plain Python, as SQLite stores it (ids as
strings, instants as ISO text, journey step times as epoch seconds).
FPTChat's umongo models expect BSON types, so `MongoStore` encodes every
document (and every query key) on the way in and decodes on the way out;
no other code knows these types:

- campaign ids: a 24-character lower-case hex string is an `ObjectId`
  (what `str(ObjectId)` gives, so it reads back as the same string); any
  other id stays a string;
- instants (`snapshot_at`, `updated_at`, `created_at`, `computed_at`): BSON
  dates, read back as ISO text in UTC with milliseconds (`...T12:00:00.000Z`);
- journey step `ts` (epoch seconds): BSON dates to the millisecond; every
  other step key is kept as it is;
- overviews: `report_date` (a local date) is the aware instant its period
  starts at in the document's `timezone` (UTC when there is none),
  `window_start` / `window_end` are dates read back in that timezone.

Decoding leaves plain values alone, so a document written before these
types existed still decodes; `MongoStore` migrates such documents once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

from bson import ObjectId

from ..reports import EPOCH, epoch_ms, iso_ms

MS = timedelta(milliseconds=1)
HEX = frozenset("0123456789abcdef")


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _tz(doc: Mapping[str, Any]) -> ZoneInfo:
    return ZoneInfo(doc.get("timezone") or "UTC")


@dataclass(frozen=True)
class Conversion:
    """How one field is written (`encode`) and read back (`decode`); both see the whole document.

    `legacy` holds query conditions matching the plain value that documents
    of older versions hold, by path below the field ("" for the field itself).
    """

    encode: Callable[[Any, Mapping[str, Any]], Any]
    decode: Callable[[Any, Mapping[str, Any]], Any]
    legacy: tuple[tuple[str, dict[str, Any]], ...] = (("", {"$type": "string"}),)


def _campaign_in(value: Any, doc: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and len(value) == 24 and HEX.issuperset(value):
        return ObjectId(value)
    return value


def _campaign_out(value: Any, doc: Mapping[str, Any]) -> Any:
    return str(value) if isinstance(value, ObjectId) else value


def _instant_in(value: Any, doc: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return EPOCH + epoch_ms(datetime.fromisoformat(value)) * MS
    return value


def _instant_out(value: Any, doc: Mapping[str, Any]) -> Any:
    return iso_ms(epoch_ms(value)) if isinstance(value, datetime) else value


def _seconds_in(value: Any, doc: Mapping[str, Any]) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return EPOCH + round(value * 1000) * MS
    return value


def _seconds_out(value: Any, doc: Mapping[str, Any]) -> Any:
    return epoch_ms(value) / 1000 if isinstance(value, datetime) else value


def _local_day_in(value: Any, doc: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return datetime.combine(date.fromisoformat(value), time(), _tz(doc)).astimezone(timezone.utc)
    return value


def _local_day_out(value: Any, doc: Mapping[str, Any]) -> Any:
    return _aware(value).astimezone(_tz(doc)).date().isoformat() if isinstance(value, datetime) else value


def _local_instant_out(value: Any, doc: Mapping[str, Any]) -> Any:
    return _aware(value).astimezone(_tz(doc)).isoformat() if isinstance(value, datetime) else value


CAMPAIGN_ID = Conversion(_campaign_in, _campaign_out, (("", {"$regex": "^[0-9a-f]{24}$"}),))
INSTANT = Conversion(_instant_in, _instant_out)
EPOCH_SECONDS = Conversion(_seconds_in, _seconds_out, (("", {"$type": "number"}),))
LOCAL_DAY = Conversion(_local_day_in, _local_day_out)
LOCAL_INSTANT = Conversion(_instant_in, _local_instant_out)


def each(inner: Conversion) -> Conversion:
    """Every item of a list converted by `inner`."""
    return Conversion(
        lambda v, doc: [inner.encode(x, doc) for x in v] if isinstance(v, list) else v,
        lambda v, doc: [inner.decode(x, doc) for x in v] if isinstance(v, list) else v,
        inner.legacy,  # a query on a list matches any of its items
    )


def embedded(**conversions: Conversion) -> Conversion:
    """An embedded document whose named fields are converted; its other keys are kept."""
    schema = Schema(conversions)
    return Conversion(
        lambda v, doc: schema.encode(v, doc) if isinstance(v, dict) else v,
        lambda v, doc: schema.decode(v, doc) if isinstance(v, dict) else v,
        schema.legacy_paths(),
    )


@dataclass(frozen=True)
class Schema:
    """The typed fields of one collection; fields not named pass through unchanged."""

    conversions: Mapping[str, Conversion]

    def encode(self, doc: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The document (or query key) as stored: plain values -> BSON types."""
        ctx = doc if context is None else context
        return {k: (self.conversions[k].encode(v, ctx) if k in self.conversions and v is not None else v)
                for k, v in doc.items()}

    def decode(self, doc: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A stored document as the store interface returns it: BSON types -> plain values."""
        ctx = doc if context is None else context
        return {k: (self.conversions[k].decode(v, ctx) if k in self.conversions and v is not None else v)
                for k, v in doc.items()}

    def legacy_paths(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """(dotted path, condition) of every typed value as an older version stored it."""
        return tuple((f"{name}.{sub}" if sub else name, cond)
                     for name, conv in self.conversions.items() for sub, cond in conv.legacy)

    def legacy_filter(self) -> dict[str, Any]:
        """A query matching the documents that still hold a plain value where a typed one belongs."""
        return {"$or": [{path: cond} for path, cond in self.legacy_paths()]}


CAMPAIGN_REPORTS = Schema({"campaign_id": CAMPAIGN_ID, "snapshot_at": INSTANT, "updated_at": INSTANT})
USER_JOURNEYS = Schema({"campaign_id": CAMPAIGN_ID, "snapshot_at": INSTANT,
                        "journey_path": each(embedded(ts=EPOCH_SECONDS))})
OVERVIEWS = Schema({"report_date": LOCAL_DAY, "window_start": LOCAL_INSTANT, "window_end": LOCAL_INSTANT,
                    "computed_at": INSTANT})
RECONCILES = Schema({"created_at": INSTANT, "campaigns": each(CAMPAIGN_ID), "repaired": each(CAMPAIGN_ID),
                     "drift": each(embedded(campaign=CAMPAIGN_ID)), "invariants": each(embedded(campaign=CAMPAIGN_ID))})
