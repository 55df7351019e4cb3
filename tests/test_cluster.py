"""Redis Cluster specifics: routing by slot, slot-split indexes, MOVED after a migration."""

from __future__ import annotations

import mongomock_ng
import pytest
import redis
from redis.crc import key_slot

from campaign_counters import Counters
from campaign_counters.counters import maintenance as m
from campaign_counters.counters.keys import KeySchema
from campaign_counters.stores.mongo import MongoStore
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.persist.views import stored_report
from oracle import expected_report, metrics_of
from scenarios import OFFER_SCRIPT, T, random_events


def test_campaigns_on_every_node_in_one_call(cluster_url, redis_cluster):
    c = Counters(cluster_url)
    campaigns = [f"camp-{i}" for i in range(12)]
    nodes = {redis_cluster.node_of_slot(key_slot(f"{{{x}}}".encode())) for x in campaigns}
    assert len(nodes) == 3
    events = []
    for x in campaigns:
        c.load_script(T, x, OFFER_SCRIPT)
        events += random_events(OFFER_SCRIPT, 20, seed=len(x), campaign=x)
    res = c.record_many(events)
    assert res.failed == 0 and res.rejected == 0
    for x in campaigns:
        mine = [e for e in events if e["campaign"] == x]
        assert metrics_of(c.report(T, x)) == expected_report(mine, OFFER_SCRIPT)
    assert sorted(camp for camp, _, _ in c.run(m.dirty_campaigns(c))) == sorted(campaigns)


def test_slot_split_indexes_share_the_campaign_slot():
    keys = KeySchema(cluster=True)
    for campaign in ("a", "camp-1", "64f1c0ffee0123456789abcd", "x.y-z_9"):
        slot = key_slot(keys.meta(campaign).encode())
        assert key_slot(keys.dirty(campaign).encode()) == slot
        assert key_slot(keys.registry(campaign).encode()) == slot
        assert key_slot(keys.day_users(campaign, "20260101", "a").encode()) == slot
    assert len(keys.all_index_keys("dirty")) == 16384


def test_snapshot_on_the_cluster(cluster_url):
    c = Counters(cluster_url)
    c.load_script(T, "cl-snap", OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 50, seed=3, campaign="cl-snap")
    c.record_many(events)
    store = MongoStore("mongodb://mock/cc", client=mongomock_ng.MongoClient())
    snapshot_campaign(c, store, "cl-snap", batch=40)
    assert stored_report(store, T, "cl-snap", None) == c.report(T, "cl-snap")
    assert c.run(m.dirty_campaigns(c)) == []


def test_a_dropped_campaign_leaves_no_key_on_any_node(cluster_url, redis_cluster):
    c = Counters(cluster_url)
    for x in ("keep-me", "drop-me"):
        c.load_script(T, x, OFFER_SCRIPT)
        c.record_many(random_events(OFFER_SCRIPT, 20, seed=2, campaign=x))
    c.record_many([{"type": "sent", "tenant": "other", "campaign": "drop-me", "job": "j", "user": "u", "ts": 1}])
    assert c.run(m.rejected_counts(c))["by_campaign"] == {"drop-me": 1}
    assert c.run(m.drop_campaign(c, "drop-me")) > 0
    keys = [k for p in redis_cluster.ports for k in redis_cluster.client(p).scan_iter()]
    assert not [k for k in keys if b"drop-me" in k]
    assert c.run(m.registry(c)) == {"keep-me": T}
    assert c.run(m.rejected_counts(c))["by_campaign"] == {}
    assert [x for x, _, _ in c.run(m.dirty_campaigns(c))] == ["keep-me"]
    assert key_slot(c.keys.meta("drop-me").encode()) != key_slot(c.keys.meta("keep-me").encode())
    part = c.keys.tenant_day_users(T, "", "keep-me").encode()  # the tenant-day parts of keep-me's slot remain
    assert {k[:len(part)] for k in keys if b"tday" in k} == {part}


def _migrate(cluster, slot: int, source: int, target: int) -> None:
    src, dst = cluster.client(source), cluster.client(target)
    src_id = src.execute_command("CLUSTER", "MYID").decode()
    dst_id = dst.execute_command("CLUSTER", "MYID").decode()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while True:
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for port in cluster.ports:
        cluster.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def test_client_follows_a_slot_migration(cluster_url, redis_cluster):
    c = Counters(cluster_url)
    campaign = "moving"
    c.load_script(T, campaign, OFFER_SCRIPT)
    first = random_events(OFFER_SCRIPT, 20, seed=5, campaign=campaign)
    c.record_many(first)
    slot = key_slot(f"{{{campaign}}}".encode())
    source = redis_cluster.node_of_slot(slot)
    target = next(p for p in redis_cluster.ports if p != source)
    _migrate(redis_cluster, slot, source, target)
    assert redis_cluster.node_of_slot(slot) == target
    later = [dict(e, id=f"late-{i}") for i, e in enumerate(random_events(OFFER_SCRIPT, 10, seed=6, campaign=campaign))]
    res = c.record_many(later)  # the client still maps the slot to the old node: MOVED, refresh, retry
    assert res.failed == 0 and res.accepted > 0
    assert metrics_of(c.report(T, campaign)) == expected_report(first + later, OFFER_SCRIPT)
    assert redis.Redis(port=target).exists(f"cc:v2:{{{campaign}}}:m")


def test_tenant_day_users_are_counted_across_slots(cluster_url, redis_cluster):
    c = Counters(cluster_url)
    campaigns = [f"tday-{i}" for i in range(9)]
    assert len({redis_cluster.node_of_slot(key_slot(f"{{{x}}}".encode())) for x in campaigns}) == 3
    ts = 1_767_225_600  # 2026-01-01 00:00 UTC
    events = [{"type": "sent", "tenant": T, "campaign": x, "job": "j", "user": f"u{u}", "ts": ts + 60}
              for x in campaigns for u in range(500)]
    events += [{"type": "sent", "tenant": "other", "campaign": "tday-other", "job": "j", "user": f"z{u}", "ts": ts}
               for u in range(300)]
    assert c.record_many(events).accepted == len(events)
    assert c.run(m.tenant_day_users(c, T, "20260101")) == pytest.approx(500, rel=0.03)
    assert c.run(m.tenant_day_users(c, "other", "20260101")) == pytest.approx(300, rel=0.03)
    for port in redis_cluster.ports:
        assert not list(redis_cluster.client(port).scan_iter("cc:v2:tmp:*"))
