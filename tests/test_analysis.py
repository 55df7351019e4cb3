"""Journey analysis: live (scan of user records) == nightly recompute == persisted == a naive oracle."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from campaign_counters import Counters
from campaign_counters.events import parse_event
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.recompute import CampaignTruth
from campaign_counters.nightly.reconcile import reconcile
from campaign_counters.persist.analysis import live_analyses, live_analysis, persist_analysis
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.stores import open_store
from cli_helpers import jsonl
from oracle import dedupe, graph_facts, ms, resolve_node
from scenarios import BRANCH_SCRIPT, OFFER_SCRIPT, ev, random_events

T, C = "tenant-a", "camp-1"
BERLIN = ZoneInfo("Europe/Berlin")
DAY = 86400
HALF_BUCKET = 2 ** (1 / 32) - 1  # the histogram's stated bound, derived here from its definition


def scenario(script):
    """Two jobs, duplicates, local disorder, over the Saturday and Sunday Berlin's clocks go back (2026-10-25);
    one user answers without being sent, one jumps where no edge leads."""
    t0 = datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN).timestamp()
    events = random_events(script, 150, seed=17, t0=t0)
    events.append(ev("interaction", "late", t0 + 1000, "job-2", target=script["edges"][0]["target"], choice="x",
                     id="late-1"))
    # a move the script has no edge for: from the start straight to its last node
    events += [ev("sent", "jumper", t0 + 50, "job-1", id="jump-s"),
               ev("interaction", "jumper", t0 + 90, "job-1", target=script["nodes"][-1]["id"], choice="skip",
                  id="jump-i")]
    return events


def naive(events, script, job, now_ms, window_s, tz):
    """The analysis, computed from the event list with plain loops and sets."""
    nodes, start, ends, succ, edges, order = graph_facts(script)
    evs = [e for e in dedupe(events) if e["type"] != "status" and (job is None or e["job"] == job)]
    arrival = {id(e): i for i, e in enumerate(evs)}
    users = sorted({e["user"] for e in evs})
    pairs, went, waiting, dropped = {}, {}, {}, {}
    completions, durations, clicks, choosers = [], {}, {}, {}
    heat = [[0] * 24 for _ in range(7)]
    edge_set = {(s, t) for s, t, _ in edges}
    for u in users:
        mine = [e for e in evs if e["user"] == u]
        reached, my_pairs, my_choices = set(), set(), set()
        for j in sorted({e["job"] for e in mine}):
            visit = [e for e in mine if e["job"] == j]
            sent = [ms(e["ts"]) for e in visit if e["type"] == "sent"]
            inter = sorted((e for e in visit if e["type"] == "interaction"),
                           key=lambda e: (ms(e["ts"]), arrival[id(e)]))
            path = [(ms(e["ts"]), 1, e["target"]) for e in inter]
            if sent:
                path = sorted(path + [(min(sent), 0, start)])
                reached.add(start)
            for (t0, _, a), (t1, _, b) in zip(path, path[1:]):
                my_pairs.add((a, b))
                durations.setdefault(a, []).append(t1 - t0)
            for e in inter:
                reached.add(e["target"])
                at = resolve_node(e, edges)
                if at:
                    reached.add(at)
                local = datetime.fromtimestamp(ms(e["ts"]) / 1000, tz)
                heat[local.weekday()][local.hour] += 1
                at = resolve_node({k: v for k, v in e.items() if k != "node"}, edges)
                if at and e.get("choice") is not None:
                    clicks[(at, e["choice"])] = clicks.get((at, e["choice"]), 0) + 1
                    my_choices.add((at, e["choice"]))
        for p in my_pairs:
            pairs[p] = pairs.get(p, 0) + 1
        for c in my_choices:
            choosers[c] = choosers.get(c, 0) + 1
        fins = [ms(e["ts"]) for e in mine if e["type"] == "interaction" and e["target"] in ends]
        if fins:
            sent = [ms(e["ts"]) for e in mine if e["type"] == "sent"]
            completions.append(min(fins) - (min(sent) if sent else min(ms(e["ts"]) for e in mine)))
        last = 0  # per job: its earliest event, earliest sent, every interaction; the latest of all jobs
        for j in {e["job"] for e in mine}:
            visit = [ms(e["ts"]) for e in mine if e["job"] == j]
            sent = [ms(e["ts"]) for e in mine if e["job"] == j and e["type"] == "sent"]
            inter = [ms(e["ts"]) for e in mine if e["job"] == j and e["type"] == "interaction"]
            last = max(last, min(visit), *sent[:1] and [min(sent)], *inter)
        for n in reached - ends:
            if any(s in reached for s in succ.get(n, [])):
                went[n] = went.get(n, 0) + 1
            elif now_ms - last < window_s * 1000:
                waiting[n] = waiting.get(n, 0) + 1
            else:
                dropped[n] = dropped.get(n, 0) + 1
    return {"users": len(users), "pairs": pairs, "edges": edge_set, "went": went, "waiting": waiting,
            "dropped": dropped, "completions": completions, "durations": durations, "clicks": clicks,
            "choosers": choosers, "heat": heat}


def nearest_rank(values, q):
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s))) - 1]


def check(result, want):
    assert result["users"] == want["users"]
    assert {(t["from"], t["to"]): t["users"] for t in result["transitions"]} == want["pairs"]
    assert all(t["in_script"] == ((t["from"], t["to"]) in want["edges"]) for t in result["transitions"])
    states = {d["node"]: (d["went_on"], d["waiting"], d["dropped"]) for d in result["drop_off"]}
    nodes = set(want["went"]) | set(want["waiting"]) | set(want["dropped"])
    assert states == {n: (want["went"].get(n, 0), want["waiting"].get(n, 0), want["dropped"].get(n, 0))
                      for n in nodes}
    ct = result["completion_time"]
    assert ct["completed"] == len(want["completions"])
    assert ct["mean"] == pytest.approx(sum(want["completions"]) / len(want["completions"]) / 1000)
    assert ct["max_relative_error"] == pytest.approx(HALF_BUCKET)
    for q, key in ((0.5, "median"), (0.9, "p90")):
        exact = nearest_rank(want["completions"], q) / 1000
        assert abs(ct[key] / exact - 1) <= HALF_BUCKET + 1e-12, key
    per_node = {t["node"]: t for t in result["time_per_node"]}
    assert set(per_node) == set(want["durations"])
    for node, values in want["durations"].items():
        assert per_node[node]["visits"] == len(values)
        exact = nearest_rank(values, 0.5) / 1000
        assert per_node[node]["median"] == 0.0 if exact == 0 else abs(per_node[node]["median"] / exact - 1) <= \
            HALF_BUCKET + 1e-12
    assert {(c["node"], c["choice"]): (c["clicks"], c["users"]) for c in result["choices"]} == \
        {k: (n, want["choosers"][k]) for k, n in want["clicks"].items()}
    assert result["heatmap"]["interactions"] == want["heat"]


@pytest.fixture(params=["single", "cluster"])
def counters(request):
    url = request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url")
    c = Counters(url)
    yield c
    c.close()


@pytest.mark.parametrize("script", [OFFER_SCRIPT, BRANCH_SCRIPT], ids=["offer", "branch"])
def test_live_analysis_matches_the_oracle_and_the_recompute(counters, script):
    counters.set_timezone(T, "Europe/Berlin")
    counters.load_script(T, C, script)
    events = scenario(script)
    counters.record_many(events)
    # half a day after the last event: users idle for under 24 h are waiting, the others dropped
    now_ms = int(datetime(2026, 10, 25, 20, 0, tzinfo=BERLIN).timestamp() * 1000)
    results = live_analyses(counters, T, C, now_ms=now_ms, page=37)  # many small pages
    truth = CampaignTruth(T, C, counters.run(counters.plan_graph(T, C)))
    for e in events:
        truth.add(parse_event(e))
    for result in results:
        want = naive(events, script, result["job"], now_ms, DAY, BERLIN)
        check(result, want)
        assert want["waiting"] and want["dropped"]
        recomputed = truth.analysis(result["job"], now_ms, DAY * 1000, BERLIN)
        assert {k: result[k] for k in recomputed} == recomputed
    assert [r["job"] for r in results] == [None, "job-1", "job-2"]
    off_script = [(t["from"], t["to"]) for t in results[0]["transitions"] if not t["in_script"]]
    assert ("start" if script is OFFER_SCRIPT else "s", script["nodes"][-1]["id"]) in off_script


def test_dst_hours_go_to_the_local_hour_they_happened_in(counters):
    counters.set_timezone(T, "Europe/Berlin")
    counters.load_script(T, C, OFFER_SCRIPT)
    # 00:30 UTC and 01:30 UTC on 2026-10-25 are both 02:30 in Berlin (CEST, then CET)
    first, second = datetime(2026, 10, 25, 0, 30, tzinfo=ZoneInfo("UTC")), datetime(2026, 10, 25, 1, 30,
                                                                                      tzinfo=ZoneInfo("UTC"))
    counters.record_many([ev("sent", "u", first.timestamp() - 60, "j"),
                          ev("interaction", "u", first.timestamp(), "j", target="ask", choice="go"),
                          ev("interaction", "u", second.timestamp(), "j", target="bye", choice="no")])
    heat = live_analysis(counters, T, C, "j")["heatmap"]
    assert heat["timezone"] == "Europe/Berlin"
    assert heat["interactions"][6][2] == 2 and sum(map(sum, heat["interactions"])) == 2  # Sunday, 02:00-03:00


def test_analysis_persisted_kept_by_snapshots_and_checked_by_reconcile(redis_url, tmp_path):
    counters = Counters(redis_url)
    counters.load_script(T, C, OFFER_SCRIPT)
    events = scenario(OFFER_SCRIPT)
    counters.record_many(events)
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    snapshot_campaign(counters, store, C)
    results = live_analyses(counters, T, C)
    assert persist_analysis(store, results) == 3
    counters.record(ev("sent", "newcomer", 1_800_000_000, "job-1"))
    snapshot_campaign(counters, store, C)  # a later snapshot keeps the stored analysis
    for r in results:
        stored = store.campaign_report(T, C, r["job"])
        assert stored["analysis"] == {k: v for k, v in r.items() if k not in ("tenant", "campaign", "job")}
    history = JsonlHistory(jsonl(tmp_path, events + [ev("sent", "newcomer", 1_800_000_000, "job-1")]))
    assert reconcile(counters, store, history, T).drift == []
    # a lost interaction shows as analysis drift too (transitions, choices, heatmap), not only as counts
    lost = JsonlHistory(jsonl(tmp_path, events + [ev("sent", "newcomer", 1_800_000_000, "job-1"),
                                                  ev("interaction", "newcomer", 1_800_000_100, "job-1",
                                                     target="ask", choice="go")], name="more.jsonl"))
    drift = {(d["job"], d["metric"]) for d in reconcile(counters, store, lost, T).drift}
    assert {(None, "analysis.transitions.start>ask"), ("job-1", "analysis.choices.start.go.users")} <= drift
    counters.close()
    store.close()


def test_analyze_command_json_table_csv_and_persist(cli, script_file, tmp_path):
    events = scenario(OFFER_SCRIPT)
    assert cli("script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
    assert cli("record", jsonl(tmp_path, events)).exit_code == 0
    args = ("analyze", "--tenant", T, "--campaign", C, "--job", "job-1")
    out = json.loads(cli(*args).stdout)
    assert out["job"] == "job-1" and out["inactivity_window"] == DAY and out["heatmap"]["timezone"] == "UTC"
    want = naive(events, OFFER_SCRIPT, "job-1", 0, DAY, ZoneInfo("UTC"))
    assert {(t["from"], t["to"]): t["users"] for t in out["transitions"]} == want["pairs"]
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    assert sum(1 for r in rows if r["section"] == "heatmap") == 7 * 24
    assert {(r["from"], r["to"]): int(r["users"]) for r in rows if r["section"] == "transitions"} == want["pairs"]
    table = cli(*args, "--format", "table").stdout
    assert "transitions:" in table and "heatmap:" in table and "drop_off:" in table
    res = cli(*args, "--persist")
    assert res.exit_code == 0 and "stored 0 analysis" in res.stderr  # never snapshotted: nothing to attach to
    assert cli("snapshot").exit_code == 0
    res = cli(*args, "--persist", "--window", "3600")
    assert res.exit_code == 0 and "stored 3 analysis" in res.stderr
    stored = json.loads(cli("report", "--tenant", T, "--campaign", C, "--job", "job-1", "--from-store").stdout)
    assert stored["analysis"]["inactivity_window"] == 3600
    assert stored["analysis"]["transitions"] == json.loads(res.stdout)["transitions"]
    res = cli("analyze", "--tenant", T, "--campaign", C, "--job", "nope")
    assert res.exit_code == 4 and "Traceback" not in res.stderr
    res = cli("analyze", "--tenant", "other", "--campaign", C)
    assert res.exit_code == 4
    assert cli("analyze", "--tenant", T, "--campaign", C, "--window", "0").exit_code == 2


def test_a_scan_yields_each_user_once_while_the_campaign_grows_and_shrinks(redis_url, raw):
    from campaign_counters.persist.analysis import user_visits

    counters = Counters(redis_url)
    counters.load_script(T, C, OFFER_SCRIPT)
    counters.record_many([ev("sent", f"u{i}", 1_760_000_000 + i, "job-1") for i in range(3000)])
    seen = []
    (users_key,) = raw.keys(f"*{{{C}}}*:u")
    for n, (user, visits) in enumerate(user_visits(counters, C, page=50)):
        seen.append(user)
        if n == 100:  # the hash grows (rehashing) under the scan...
            counters.record_many([ev("sent", f"v{i}", 1_760_010_000 + i, "job-1") for i in range(20_000)])
        if n == 2000:  # ...and shrinks
            raw.hdel(users_key, *[f"v{i}" for i in range(19_000)])
    assert len(seen) == len(set(seen))
    assert {f"u{i}" for i in range(3000)} <= set(seen)  # every user there from start to end is seen
    counters.close()
