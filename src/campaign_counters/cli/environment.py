"""Every CAMPAIGN_COUNTERS_* variable the package reads, checked once before a command runs.

A bad value stops the command with one line naming the variable and why
(exit status 2), instead of a traceback, or a silent default, deep inside
the command that first reads it.
"""

from __future__ import annotations

import os

from ..config import (
    ENV_DASHBOARD_DAYS, ENV_HOME, ENV_QUEUE, ENV_REDIS, ENV_REPAIR, ENV_RETENTION, ENV_STORE, dashboard_history,
    repair_at_night, retention_from_env,
)
from ..connection import ENV_MAXMEMORY, maxmemory, parse_redis_url
from ..counters.spool import ENV_SPOOL_DIR
from ..errors import ValidationError
from ..fptchat import ENV_MAPPING, history_mapping
from ..nightly.schedule import ENV_HISTORY
from ..stores import check_store_url

CHECKED = (ENV_REDIS, ENV_STORE, ENV_QUEUE, ENV_HOME, ENV_RETENTION, ENV_HISTORY, ENV_MAPPING, ENV_REPAIR,
           ENV_MAXMEMORY, ENV_DASHBOARD_DAYS, "CAMPAIGN_COUNTERS_DASHBOARD_ENTRIES", ENV_SPOOL_DIR)


def check_environment() -> None:
    """Raise ValidationError naming the first CAMPAIGN_COUNTERS_* variable whose value is unusable."""
    env = os.environ
    for name in (ENV_REDIS, ENV_QUEUE):
        if env.get(name):
            _as(name, parse_redis_url, env[name])
    if env.get(ENV_STORE):
        check_store_url(env[ENV_STORE], field=ENV_STORE)
    for name in (ENV_HOME, ENV_SPOOL_DIR):
        if env.get(name) and os.path.isfile(env[name]):
            raise ValidationError(name, f"{env[name]!r} is a file, not a directory")
    if env.get(ENV_HISTORY, "").startswith(("mongodb://", "mongodb+srv://")):
        check_store_url(env[ENV_HISTORY], field=ENV_HISTORY)
    retention_from_env()
    repair_at_night()
    dashboard_history()
    if env.get(ENV_MAXMEMORY):
        maxmemory()
    history_mapping()


def _as(name: str, check, value: str) -> None:
    """Run a check written for an option, naming the variable instead of the option."""
    try:
        check(value)
    except ValidationError as exc:
        raise ValidationError(name, exc.reason) from None
