"""What the million-user design must keep exact: de-duplication, caps, journeys.

Event ids are remembered in per-campaign fingerprint buckets instead of a key
per event; these tests replay, restart and wait out the id TTL and expect the
numbers of tests/oracle.py exactly. The fingerprint and bucket address are
recomputed here from their documented definition (docs/scale.md), not taken
from the package. Caps are hit on purpose and must show in the report and in
`health`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import signal
import time

import pytest

from campaign_counters import Counters
from campaign_counters.counters import Settings
from campaign_counters.health import health
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.persist.views import stored_journey
from campaign_counters.stores import open_store
from cli_helpers import jsonl
from oracle import dedupe, expected_journey, expected_report, metrics_of
from scenarios import BRANCH_SCRIPT, C, OFFER_SCRIPT, T, ev, random_events
from servers import RedisServer

ENTRY = 13  # bytes per remembered id: 9 of fingerprint, 4 of arrival second


def fingerprint(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=9).digest()


def reports_match(counters, events, script=OFFER_SCRIPT, campaign=C, jobs=(None, "job-1", "job-2")):
    for job in jobs:
        assert metrics_of(counters.report(T, campaign, job)) == expected_report(events, script, job), job


@pytest.fixture
def counters(redis_url):
    c = Counters(redis_url)
    yield c
    c.close()


# -- de-duplication --------------------------------------------------------------


async def test_replays_whole_shuffled_and_in_pieces_apply_nothing_twice(api):
    await api.load_script(T, C, OFFER_SCRIPT)
    events = random_events(OFFER_SCRIPT, 150, seed=31)
    unique = len(dedupe(events))
    res = await api.record_many(events)
    assert (res.accepted, res.duplicates, res.rejected) == (unique, len(events) - unique, 0)
    want = {job: expected_report(events, OFFER_SCRIPT, job) for job in (None, "job-1", "job-2")}
    shuffled = list(events)
    random.Random(5).shuffle(shuffled)
    again = await api.record_many(events)
    assert (again.accepted, again.duplicates) == (0, len(events))
    again = await api.record_many(shuffled)
    assert (again.accepted, again.duplicates) == (0, len(events))
    for i in range(0, len(shuffled), 97):  # pieces, each in its own calls
        piece = await api.record_many(shuffled[i:i + 97])
        assert piece.accepted == 0
    for e in shuffled[:40]:  # one event per call, as the chat service sends them
        assert await api.record(e) == "duplicate"
    for job, expected in want.items():
        assert metrics_of(await api.report(T, C, job)) == expected


def test_the_same_file_recorded_twice_counts_once(cli, script_file, tmp_path):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    events = random_events(OFFER_SCRIPT, 80, seed=32)
    path = jsonl(tmp_path, events)
    unique = len(dedupe(events))
    first = json.loads(cli("record", path).stdout)
    assert first == {"accepted": unique, "duplicates": len(events) - unique, "rejected": 0}
    second = json.loads(cli("record", path).stdout)
    assert second == {"accepted": 0, "duplicates": len(events), "rejected": 0}
    live = json.loads(cli("report", "--tenant", T, "--campaign", C).stdout)
    assert metrics_of(live) == expected_report(events, OFFER_SCRIPT)


def test_a_new_client_remembers_what_an_earlier_one_applied(redis_url):
    events = random_events(OFFER_SCRIPT, 100, seed=33)
    with Counters(redis_url) as first:
        first.load_script(T, C, OFFER_SCRIPT)
        first.record_many(events[:200])
    with Counters(redis_url) as second:
        res = second.record_many(events)
        assert res.accepted == len(dedupe(events)) - len(dedupe(events[:200]))
        reports_match(second, events)


def test_ids_survive_a_redis_restart_with_aof():
    """Redis killed (SIGKILL, by its PID) and started again on its append-only file."""
    events = random_events(OFFER_SCRIPT, 120, seed=34)
    half = len(events) // 2
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        server.start()
        with Counters(server.url) as c:
            c.load_script(T, C, OFFER_SCRIPT)
            assert c.record_many(events[:half]).accepted == len(dedupe(events[:half]))
        server.kill(signal.SIGKILL)
        server.start()
        with Counters(server.url) as c:
            res = c.record_many(events)
            assert res.accepted == len(dedupe(events)) - len(dedupe(events[:half]))
            assert res.duplicates == len(events) - res.accepted
            reports_match(c, events)
    finally:
        server.stop()


def _record_in_second(c: Counters, event: dict, second: int, into: float = 0.05) -> tuple[str, bool]:
    """Record `into` seconds into clock second `second`; (outcome, whether the call stayed in that second).

    The call stamps the client's clock when it is built, between the two readings.
    """
    time.sleep(max(0.0, second + into - time.time()))
    before = time.time()
    outcome = c.record(event)
    return outcome, math.floor(before) == math.floor(time.time()) == second


def test_an_id_is_remembered_id_ttl_seconds_then_applies_again(redis_url):
    """id_ttl = 2: an id that arrived in second s is a duplicate up to second s + 2, applied again from s + 3.

    It arrives late in its second, so at s + 2 less than id_ttl has passed: still a duplicate.
    """
    with Counters(redis_url, settings=Settings(id_ttl=2)) as c:
        c.load_script(T, C, OFFER_SCRIPT)
        c.record(ev("sent", "u1", 1, id="s1"))
        for attempt in range(5):  # a loaded machine may take the call past its second: a new id, a new try
            click = ev("interaction", "u1", 2, target="ask", choice="go", id=f"click-{attempt}")
            s = math.floor(time.time()) + 1
            outcome, in_time = _record_in_second(c, click, s, into=0.6)
            assert outcome == "applied"
            if in_time:
                break
        else:
            pytest.fail("no call stayed within its second in 5 tries: machine too slow")
        clicks = attempt + 1
        assert c.record(click) == "duplicate"
        for later in (1, 2):
            assert _record_in_second(c, click, s + later) == ("duplicate", True)
        assert c.report(T, C)["total_interactions"] == clicks
        assert _record_in_second(c, click, s + 3) == ("applied", True)  # forgotten: counted a second time
        assert c.record(click) == "duplicate"  # and remembered again from now
        assert c.report(T, C)["total_interactions"] == clicks + 1
        assert c.record(ev("sent", "u1", 1, id="s1")) == "applied"  # the first sent's id expired too
        assert c.report(T, C)["sent_users_count"] == 1  # a user is still counted once


async def test_two_campaigns_with_the_same_id_strings_both_apply(api):
    base = random_events(OFFER_SCRIPT, 60, seed=35)
    other = [dict(e, campaign="camp-2") for e in base]
    foreign = [dict(e, campaign="camp-3", tenant="tenant-b") for e in base]
    for tenant, campaign in ((T, C), (T, "camp-2"), ("tenant-b", "camp-3")):
        await api.load_script(tenant, campaign, OFFER_SCRIPT)
    unique = len(dedupe(base))
    for batch in (base, other, foreign):
        res = await api.record_many(batch)
        assert (res.accepted, res.duplicates) == (unique, len(base) - unique)
    for tenant, campaign, batch in ((T, C, base), (T, "camp-2", other), ("tenant-b", "camp-3", foreign)):
        assert metrics_of(await api.report(tenant, campaign)) == expected_report(batch, OFFER_SCRIPT)


def test_fifty_thousand_ids_split_buckets_and_replay_as_duplicates(counters, raw):
    """Each of 50,000 ids sits once, whole, in the bucket its fingerprint addresses; replays change nothing."""
    n = 50_000
    events = [ev("targeted", f"u{i % 5000}", 1_700_000_000 + i, id=f"evt-{i}") for i in range(n)]
    counters.load_script(T, C, OFFER_SCRIPT)
    assert counters.record_many(events).accepted == n
    before = counters.report(T, C)
    assert before["target_users_count"] == 5000
    buckets = {int(k): v for k, v in raw.hgetall(f"cc:v2:{{{C}}}:ids").items()}
    level = int(raw.hget(f"cc:v2:{{{C}}}:m", "ids:L"))
    split = int(raw.hget(f"cc:v2:{{{C}}}:m", "ids:p"))
    assert level > 4 and max(buckets) < 2 ** level + split  # grown from 16 buckets by splits (empty ones absent)
    assert len(buckets) > 0.99 * (2 ** level + split)
    assert sum(len(v) for v in buckets.values()) == ENTRY * n
    sizes = sorted(len(v) // ENTRY for v in buckets.values())
    assert sizes[len(sizes) // 2] <= 16  # most buckets hold at most SPLIT_AT entries
    for i in range(n):
        fp = fingerprint(f"evt-{i}")
        a = int.from_bytes(fp[5:9], "big")
        k = a % 2 ** level
        if k < split:
            k = a % 2 ** (level + 1)
        held = buckets[k]
        at = held.find(fp)
        assert at >= 0 and at % ENTRY == 0, i
        assert held.find(fp, at + 1) < 0
    shuffled = list(events)
    random.Random(6).shuffle(shuffled)
    again = counters.record_many(shuffled)
    assert (again.accepted, again.duplicates) == (0, n)
    assert metrics_of(counters.report(T, C)) == metrics_of(before)
    assert sum(len(v) for v in raw.hgetall(f"cc:v2:{{{C}}}:ids").values()) == ENTRY * n


def test_a_split_at_a_high_level_routes_by_the_right_bit(counters, raw):
    """At level 16 a split routes by bit 16 of the bucket number (its third byte): ids sharing their low 16
    bits fill one bucket at the pointer; past 16 entries it splits, each id lands where a lookup addresses
    it, and a replay of all of them is all duplicates."""
    counters.load_script(T, C, OFFER_SCRIPT)
    groups: dict[int, list[str]] = {}
    i = 0
    while True:  # ids whose fingerprints share their low 16 bits, half of them with bit 16 set
        eid = f"evt-{i}"
        a = int.from_bytes(fingerprint(eid)[5:9], "big")
        group = groups.setdefault(a % 2 ** 16, [])
        group.append(eid)
        if len(group) == 18 and 3 <= sum((int.from_bytes(fingerprint(x)[5:9], "big") >> 16) & 1
                                         for x in group) <= 15:
            break
        i += 1
    k, ids = a % 2 ** 16, group
    raw.hset(f"cc:v2:{{{C}}}:m", mapping={"ids:L": 16, "ids:p": k})  # the pointer at their bucket
    events = [ev("targeted", f"u{j}", 1_700_000_000 + j, id=eid) for j, eid in enumerate(ids)]
    assert counters.record_many(events).accepted == len(ids)
    assert int(raw.hget(f"cc:v2:{{{C}}}:m", "ids:p")) == k + 1  # split once
    buckets = {int(f): v for f, v in raw.hgetall(f"cc:v2:{{{C}}}:ids").items()}
    assert set(buckets) == {k, k + 2 ** 16}
    for eid in ids:
        a = int.from_bytes(fingerprint(eid)[5:9], "big")
        held = buckets[a % 2 ** 17]  # below the pointer: addressed one level up
        at = held.find(fingerprint(eid))
        assert at >= 0 and at % ENTRY == 0, eid
    again = counters.record_many(events)
    assert (again.accepted, again.duplicates) == (0, len(ids))
    assert counters.report(T, C)["target_users_count"] == len(ids)


# -- caps ----------------------------------------------------------------------


def caps_of(counters):
    return health(counters, None, None)["caps"]


def test_choices_beyond_max_choices_are_counted_as_other(counters):
    counters.load_script(T, C, OFFER_SCRIPT)
    events = [ev("sent", "u1", 1)]
    events += [ev("interaction", "u1", 10 + i, target="send_offer", node="ask", choice=f"c{i:03d}") for i in range(300)]
    events += [ev("interaction", "u2", 5, target="send_offer", node="ask", choice="c010"),  # a known choice
               ev("interaction", "u2", 6, target="done", choice="ok")]  # another node: its own cap
    res = counters.record_many(events)
    assert (res.accepted, res.rejected) == (len(events), 0)
    rep = counters.report(T, C)
    want = expected_report(events, OFFER_SCRIPT)
    kept = {f"c{i:03d}": want["node_analytics"]["ask"]["choices"][f"c{i:03d}"] for i in range(256)}
    assert rep["node_analytics"]["ask"]["choices"] == {**kept, "(other)": 44}
    assert kept["c010"] == 2
    assert rep["node_analytics"]["send_offer"]["choices"] == {"ok": 1}
    assert {k: v for k, v in metrics_of(rep).items() if k != "node_analytics"} == \
        {k: v for k, v in want.items() if k != "node_analytics"}
    journey = counters.journey(T, C, "job-1", "u1")
    assert journey["journey_path"][-1]["choice"] == "c299"  # journeys keep the real choice
    caps = caps_of(counters)
    assert caps["ok"] is True and caps["problems"] == []
    assert caps["hit"] == [{"campaign": C, "tenant": T, "cap": "max_choices", "limit": 256, "events": 44}]
    assert caps["warnings"][0].startswith(f"campaign {C} (tenant {T}) hit max_choices = 256: 44 interactions")
    counters.record(ev("interaction", "u3", 7, target="send_offer", node="ask", choice="c300"))
    assert counters.report(T, C)["node_analytics"]["ask"]["choices"]["(other)"] == 45
    assert caps_of(counters)["hit"][0]["events"] == 45


def test_days_beyond_max_days_keep_reports_exact_and_skip_day_counts(counters):
    from campaign_counters.counters import maintenance as m

    counters.load_script(T, C, OFFER_SCRIPT)
    day0 = 1_700_006_400  # 2023-11-15 00:00 UTC
    events = [ev("sent", f"u{d}", day0 + d * 86400 + 3600) for d in range(410)]
    events += [ev("interaction", f"u{d}", day0 + d * 86400 + 3700, target="ask", choice="go") for d in (0, 405)]
    res = counters.record_many(events)
    assert (res.accepted, res.rejected) == (len(events), 0)
    reports_match(counters, events, jobs=(None, "job-1"))

    def day(d):
        return time.strftime("%Y%m%d", time.gmtime(day0 + d * 86400))

    (_, users, sent, interacted, clicks), = counters.run(m.day_counts(counters, [C], day(0)))
    assert (users, sent, interacted, clicks) == (1, 1, 1, 1)
    (_, users, sent, interacted, clicks), = counters.run(m.day_counts(counters, [C], day(405)))
    assert (users, sent, interacted, clicks) == (0, 0, 0, 0)  # beyond the 400th distinct day
    caps = caps_of(counters)
    assert caps["ok"] is True
    assert caps["hit"] == [{"campaign": C, "tenant": T, "cap": "max_days", "limit": 400, "events": 11}]
    assert caps["warnings"][0].startswith(f"campaign {C} (tenant {T}) hit max_days = 400: 11 events")


def test_nodes_beyond_the_limit_are_refused_and_make_health_not_ok(counters, cli):
    """Without a script a campaign learns its nodes from events, at most 4096."""
    events = [ev("interaction", f"u{i % 50}", 100 + i, target=f"n{i:04d}") for i in range(4096)]
    assert counters.record_many(events).accepted == 4096
    late = counters.record_many([ev("interaction", "u1", 9000, target="n4096"),
                                 ev("interaction", "u1", 9001, target="n0007")])  # a known node still counts
    assert (late.accepted, late.rejected) == (1, 1)
    refusal = late.rejections[0]
    assert (refusal.index, refusal.field, refusal.code) == (0, "target", -2)
    rep = counters.report(T, C)
    assert len(rep["node_analytics"]) == 4096 and rep["total_interactions"] == 4097
    caps = caps_of(counters)
    assert caps["ok"] is False
    assert caps["hit"] == [{"campaign": C, "tenant": T, "cap": "max_nodes", "limit": 4096, "events": 1}]
    assert caps["problems"][0].startswith(f"campaign {C} (tenant {T}) hit max_nodes = 4096: 1 events refused")
    res = cli("health")
    assert res.exit_code == 1 and json.loads(res.stdout)["caps"]["ok"] is False


@pytest.mark.parametrize("etype", ["targeted", "sent", "interaction", "status"])
def test_title_length_on_every_event_type(counters, etype):
    """A title is validated on interactions (at most 1,024 characters) and ignored on other types."""
    counters.load_script(T, C, OFFER_SCRIPT)
    extra = {"interaction": {"target": "ask", "choice": "go"}, "status": {"status": "RUNNING"}}.get(etype, {})
    user, job = (None, None) if etype == "status" else ("u1", "job-1")
    longest, too_long = "t" * 1024, "t" * 1025
    ok = counters.record_many([ev(etype, user, 1, job=job, title=longest, **extra)])
    assert (ok.accepted, ok.rejected) == (1, 0)
    res = counters.record_many([ev(etype, user, 2, job=job, title=too_long, **extra),
                                ev(etype, user, 3, job=job, title=7, **extra)])
    if etype == "interaction":
        assert res.rejected == 2 and [(r.field, r.code) for r in res.rejections] == [("title", None)] * 2
        assert counters.report(T, C)["total_interactions"] == 1
        assert health(counters, None, None)["rejected_events"]["by_field"] == {"title": 2}
    else:  # not read, not stored, not spooled
        assert (res.accepted, res.rejected) == (2, 0)


# -- journeys --------------------------------------------------------------------


@pytest.mark.parametrize("script", [OFFER_SCRIPT, BRANCH_SCRIPT], ids=["offer", "branch"])
def test_every_journey_equals_the_oracle_live_and_from_the_store(counters, tmp_path, script):
    counters.load_script(T, C, script)
    events = random_events(script, 150, seed=36)
    counters.record_many(events[:300])
    for e in events[300:420]:
        counters.record(e)
    counters.record_many(events[420:])
    pairs = sorted({(e["job"], e["user"]) for e in events})
    want = {p: expected_journey(events, script, *p) for p in pairs}
    for p in pairs:
        got = counters.journey(T, C, *p)
        assert {k: got[k] for k in want[p]} == want[p], p
    store = open_store(f"sqlite:///{tmp_path}/reports.db")
    try:
        assert snapshot_campaign(counters, store, C).journeys == len(pairs)
        for p in pairs:
            stored = stored_journey(store, T, C, *p)
            assert {k: stored[k] for k in want[p]} == want[p], p
            live = counters.journey(T, C, *p)  # unchanged by the snapshot
            assert {k: live[k] for k in want[p]} == want[p], p
    finally:
        store.close()
