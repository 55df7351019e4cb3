"""Each rejection rule of the event contract (docs/events.md): a reason naming the field, and no change in Redis."""

from __future__ import annotations

import pytest

from campaign_counters import NotFound, ScriptError, TenantMismatch, ValidationError
from scenarios import C, OFFER_SCRIPT, T, ev


@pytest.fixture
def servers(flavour, request):
    """Plain clients of every server the flavour writes to."""
    if flavour.startswith("cluster"):
        cluster = request.getfixturevalue("redis_cluster")
        return [cluster.client(p) for p in cluster.ports]
    return [request.getfixturevalue("raw")]


def dump(servers):
    """Every key with its type and value: 'nothing changed' means this is equal."""
    return {key: value for raw in servers for key, value in _dump(raw).items()}


def _dump(raw):
    out = {}
    for key in raw.scan_iter():
        if key.startswith(b"cc:v2:epoch"):
            continue  # one marker per cluster slot, never written by events: 16,384 keys to skip
        kind = raw.type(key)
        if kind == b"hash":
            val = raw.hgetall(key)
        elif kind == b"zset":
            val = raw.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            val = raw.xrange(key)
        else:
            val = raw.dump(key)
        out[key] = (kind, val)
    return out


GOOD = ev("interaction", "u1", 10, target="ask", choice="go", id="x1")

RULES = [
    ("event", ["not", "an", "object"]),
    ("type", {k: v for k, v in GOOD.items() if k != "type"}),
    ("type", {**GOOD, "type": "clicked"}),
    ("tenant", {k: v for k, v in GOOD.items() if k != "tenant"}),
    ("tenant", {**GOOD, "tenant": "bad tenant!"}),
    ("tenant", {**GOOD, "tenant": "t" * 65}),
    ("tenant", {**GOOD, "tenant": "t" * 51}),  # FPTChat's models: tenant_id max_length=50
    ("campaign", {k: v for k, v in GOOD.items() if k != "campaign"}),
    ("campaign", {**GOOD, "campaign": "c{1}"}),
    ("campaign", {**GOOD, "campaign": ""}),
    ("job", {k: v for k, v in GOOD.items() if k != "job"}),
    ("job", {**GOOD, "job": "job:1"}),
    ("user", {k: v for k, v in GOOD.items() if k != "user"}),
    ("user", {**GOOD, "user": ""}),
    ("user", {**GOOD, "user": "u" * 257}),
    ("user", {**GOOD, "user": "u" * 101}),  # FPTChat's models: user_id max_length=100
    ("user", {**GOOD, "user": "a\nb"}),
    ("user", {**GOOD, "user": ["list"]}),
    ("ts", {k: v for k, v in GOOD.items() if k != "ts"}),
    ("ts", {**GOOD, "ts": "yesterday"}),
    ("ts", {**GOOD, "ts": -1}),
    ("ts", {**GOOD, "ts": float("nan")}),
    ("ts", {**GOOD, "ts": float("inf")}),
    ("ts", {**GOOD, "ts": True}),
    ("id", {**GOOD, "id": ""}),
    ("target", {k: v for k, v in GOOD.items() if k != "target"}),
    ("target", {**GOOD, "target": "x\x00"}),
    ("choice", {**GOOD, "choice": "\x07"}),
    ("node", {**GOOD, "node": ""}),
    ("title", {**GOOD, "title": 5}),
    ("status", ev("status", ts=1, job=None)),
    ("status", ev("status", ts=1, job=None, status="done!")),
    ("status", ev("status", ts=1, job=None, status="BOGUS")),  # not one of FPTChat's statuses
    ("job", {**GOOD, "job": 1.5}),
]


@pytest.mark.parametrize("field,bad", RULES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(RULES)])
async def test_rejection_names_field_and_changes_nothing(api, servers, field, bad):
    await api.load_script(T, C, OFFER_SCRIPT)
    await api.record_many([ev("sent", "u1", 1)])
    before = dump(servers)
    res = await api.record_many([bad])
    assert (res.accepted, res.rejected) == (0, 1)
    assert res.rejections[0].field == field
    assert res.rejections[0].reason
    with pytest.raises(ValidationError) as info:
        await api.record(bad)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    after = dump(servers)
    counted = after.pop(b"cc:v2:rejected-input")  # the only change: the count that `health` shows
    assert counted == (b"hash", {field.encode(): b"1"})
    assert after == before


async def test_other_tenants_campaign_is_rejected_on_write_and_invisible_on_read(api, servers):
    await api.load_script(T, C, OFFER_SCRIPT)
    await api.record_many([ev("sent", "u1", 1)])
    report = await api.report(T, C)
    before = dump(servers)
    intruder = ev("sent", "u2", 2, tenant="tenant-b", id="intr")
    res = await api.record_many([intruder, ev("interaction", "u9", 3, tenant="tenant-b", target="ask")])
    assert res.rejected == 2 and res.accepted == 0
    assert {r.field for r in res.rejections} == {"campaign"}
    with pytest.raises(TenantMismatch):
        await api.record(intruder)
    with pytest.raises(TenantMismatch):
        await api.load_script("tenant-b", C, OFFER_SCRIPT)
    after = dump(servers)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert len(changed) == 1  # only the count of rejected events of the campaign, for `health`
    assert after[changed.pop()] == (b"hash", {C.encode() + b"\x1f1": b"3"})  # code 1: another tenant's
    with pytest.raises(NotFound):
        await api.report("tenant-b", C)
    with pytest.raises(NotFound):
        await api.journey("tenant-b", C, "job-1", "u1")
    after = await api.report(T, C)
    assert {k: v for k, v in after.items() if k != "updated_at"} == {k: v for k, v in report.items() if k != "updated_at"}
    # the rejected event's id was not consumed: the rightful tenant can still use it
    res = await api.record_many([ev("sent", "u2", 2, id="intr")])
    assert res.accepted == 1


async def test_first_event_binds_a_new_campaign_to_its_tenant(api):
    await api.record_many([ev("sent", "u1", 1, tenant="tenant-b", campaign="fresh")])
    with pytest.raises(TenantMismatch):
        await api.record(ev("sent", "u1", 1, tenant=T, campaign="fresh"))
    assert (await api.report("tenant-b", "fresh"))["sent_users_count"] == 1


async def test_ids_on_reads_are_validated(api):
    with pytest.raises(ValidationError) as info:
        await api.report("bad tenant", C)
    assert info.value.field == "tenant"
    with pytest.raises(ValidationError) as info:
        await api.report(T, C, "*")
    assert info.value.field == "job"


async def test_ids_at_the_length_limits_of_fptchats_models_are_accepted(api):
    tenant, user = "t" * 50, "u" * 100
    res = await api.record_many([ev("sent", user, 1, tenant=tenant, campaign="c-limits"),
                                 ev("sent", user + "u", 1, tenant=tenant, campaign="c-limits"),
                                 ev("sent", "u1", 1, tenant=tenant + "t", campaign="c-limits")])
    assert res.accepted == 1
    assert [(r.field, r.reason) for r in res.rejections] == [
        ("user", "must be at most 100 characters"),
        ("tenant", "must be 1-50 characters of A-Z a-z 0-9 _ . -"),
    ]
    assert (await api.report(tenant, "c-limits"))["sent_users_count"] == 1


async def test_integer_ids_are_their_decimal_text_in_every_id_field(api):
    res = await api.record_many([{"type": "sent", "tenant": T, "campaign": 42, "job": 7, "user": 123, "ts": 1,
                                  "id": 9},
                                 ev("sent", "123", 2, job="7", campaign="42", id="9")])
    assert (res.accepted, res.duplicates, res.rejected) == (1, 1, 0)  # the same event id, the same user
    assert (await api.report(T, "42", "7"))["sent_users_count"] == 1


async def test_an_event_naming_a_node_outside_the_loaded_script_is_refused(api):
    await api.load_script(T, C, OFFER_SCRIPT)
    res = await api.record_many([ev("interaction", "u1", 10, target="nowhere", choice="go"),
                                 ev("interaction", "u1", 11, target="ask", choice="go", node="phantom"),
                                 ev("interaction", "u1", 12, target="ask", choice="go")])
    assert res.accepted == 1 and [r.field for r in res.rejections] == ["target", "target"]
    assert all("not a node of the campaign's script" in r.reason for r in res.rejections)
    report = await api.report(T, C)
    assert set(report["node_analytics"]) == {n["id"] for n in OFFER_SCRIPT["nodes"]}  # no phantom node
    assert report["total_interactions"] == 1


async def test_a_script_without_an_end_node_is_refused(api):
    cycle = {"nodes": [{"id": "a", "type": "start"}, {"id": "b"}],
             "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}
    with pytest.raises(ScriptError) as info:
        await api.load_script(T, C, cycle)
    assert info.value.field == "end_nodes" and "no end node" in info.value.reason
    with pytest.raises(NotFound):
        await api.report(T, C)  # nothing was stored
    listed = {**cycle, "end_nodes": ["b"]}  # naming the end node makes it loadable
    assert (await api.load_script(T, C, listed)).end_nodes == frozenset({"b"})
