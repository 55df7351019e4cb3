"""The library's front door: clients as context managers, redis-py's names, a clear error for a wrong client."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import redis
import redis.asyncio

import campaign_counters
from campaign_counters import AsyncCounters, Counters, ValidationError
from scenarios import C, T, ev
from servers import wait_for


def connected(raw) -> int:
    return len(raw.client_list())


def back_to(raw, count: int) -> bool:
    """True once the server lists `count` clients again (a closed connection leaves the list a moment later)."""
    wait_for(lambda: connected(raw) == count, 10, f"{count} connected clients")
    return True


def test_version_is_the_installed_distributions():
    assert campaign_counters.__version__ == version("campaign-counters")


def test_with_counters_closes_its_connections(redis_url, raw):
    before = connected(raw)
    with Counters(redis_url) as c:
        assert c.record(ev("sent", "u1", 1)) == "applied"
        assert connected(raw) > before
    assert back_to(raw, before)
    with Counters(redis_url) as c:
        assert c.report(T, C)["sent_users_count"] == 1


async def test_async_with_and_aclose_like_redis_py(redis_url, raw):
    before = connected(raw)
    async with AsyncCounters(redis_url) as c:
        assert await c.record(ev("sent", "u1", 1)) == "applied"
        c.fire(ev("sent", "u2", 2))
    assert back_to(raw, before)  # what was fired was sent before the connections closed
    c = AsyncCounters(redis_url)
    assert (await c.report(T, C))["sent_users_count"] == 2
    await c.aclose()
    assert back_to(raw, before)


@pytest.mark.parametrize("make", [redis.Redis.from_url, redis.asyncio.Redis.from_url])
def test_a_client_that_decodes_responses_is_refused_clearly(redis_url, make):
    client = make(redis_url, decode_responses=True)
    cls = Counters if make is redis.Redis.from_url else AsyncCounters
    with pytest.raises(ValidationError) as info:
        cls(client=client)
    assert info.value.field == "client" and "decode_responses=False" in info.value.reason
