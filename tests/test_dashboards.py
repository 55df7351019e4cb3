"""The generated dashboards, executed: every panel query, run the way Grafana's Redis plugin runs it,
returns what `report` (and `overview`, `health`) give, on one Redis server and on a Redis Cluster.

A "tick" here is the production path: the scheduler's tick (tick_snapshots, tick_nightly) and an RQ
worker running what it enqueued.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import redis
from rq import Queue, SimpleWorker

from campaign_counters import Counters
from campaign_counters.counters import dashboard as d
from campaign_counters.counters import maintenance as m
from campaign_counters.counters.keys import ANALYSIS_FIGURES, CAMPAIGN_SCOPE
from campaign_counters.grafana.alerts import RULES, alert_rules
from campaign_counters.grafana.dashboards import campaign, operations, tenant_overview
from campaign_counters.health import health
from campaign_counters.nightly.dashboard import publish_tenants
from campaign_counters.nightly.history import JsonlHistory
from campaign_counters.nightly.overview import overviews, store_overviews, today_so_far
from campaign_counters.nightly.schedule import tick_nightly
from campaign_counters.persist import jobs
from campaign_counters.persist.dashboard import publish_nightly_run
from campaign_counters.persist.jobs import tick_snapshots
from campaign_counters.persist.snapshot import snapshot_campaign
from campaign_counters.stores import open_store
from cli_helpers import jsonl
from grafana_plugin import kept_fields, panel_queries, run, transformed, variable_values, with_variables
from scenarios import BRANCH_SCRIPT, OFFER_SCRIPT, T, ev, random_events

C, C2 = "camp-1", "camp-2"
UTC = timezone.utc
NOW = datetime(2023, 11, 15, 23, 0, tzinfo=UTC)  # the scenario's events fall on Nov 14 and 15 (UTC)
SCALARS = d.SCALAR_METRICS


@pytest.fixture(params=["single", "cluster"])
def deployment(request, redis_url, tmp_path, monkeypatch):
    """(counters, the plugin's Redis client, the queue's connection) on one server or a 3-node cluster.

    The RQ queue lives on the single server either way (RQ needs one); the worker's
    Redis and store come from its environment, as in production.
    """
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        url = request.getfixturevalue("cluster_url")
        plugin = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    else:
        url = redis_url
        plugin = redis.Redis.from_url(redis_url)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_REDIS_URL", url)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_STORE_URL", f"sqlite:///{tmp_path}/reports.db")
    monkeypatch.delenv("CAMPAIGN_COUNTERS_HISTORY", raising=False)
    jobs.job_context.cache_clear()
    counters = Counters(url)
    queue_conn = redis.Redis.from_url(redis_url)
    yield counters, plugin, queue_conn
    jobs.job_context.cache_clear()
    counters.close()
    plugin.close()
    queue_conn.close()


def tick(counters, queue_conn, now=None, work=True):
    """One scheduler tick, then (`work`) a worker runs the snapshot and nightly jobs it enqueued."""
    queue = Queue("cc-dashboards", connection=queue_conn)
    tick_snapshots(counters, queue)
    tick_nightly(counters, queue, now)
    if work:
        SimpleWorker([queue], connection=queue_conn).work(burst=True)


def scenario(counters):
    """Two campaigns of one tenant, two jobs each, with a status; returns the events."""
    counters.load_script(T, C, OFFER_SCRIPT)
    counters.load_script(T, C2, BRANCH_SCRIPT)
    events = random_events(OFFER_SCRIPT, 120, seed=3) + random_events(BRANCH_SCRIPT, 60, seed=4, campaign=C2)
    events.append({"type": "status", "tenant": T, "campaign": C, "ts": 1_700_050_000, "status": "RUNNING"})
    return events


def window() -> tuple[int, int]:
    """The dashboard's time range: the last hour."""
    now_ms = int(time.time() * 1000)
    return now_ms - 3_600_000, now_ms + 60_000


ANALYSIS = "analysis"  # expected_campaign_frame's answer for a panel of the stored analysis


def expected_campaign_frame(keys, campaign_id, job, report, key, frame):
    """What a campaign panel reading `key` must show, from `report`; None for the time series,
    ANALYSIS for the panels of the stored analysis (expected_analysis_frame)."""
    scope = keys.dashboard(campaign_id, job)
    if key.startswith(scope + ":analysis:"):
        return ANALYSIS
    if key == scope:
        out = {}
        for name in frame:
            if name == "published_at":
                out[name] = frame[name]  # when it was published: not a report figure
            else:
                want = report[name]
                out[name] = [float(want) if isinstance(want, (int, float)) else (want or "")]
        return out
    analytics, funnel = report["node_analytics"], report["funnel_data"]
    figures = {
        "reached": {n: [float(a["reached_count"])] for n, a in analytics.items()},
        "choices": {f"{n} / {c}": [float(k)] for n, a in analytics.items() for c, k in a["choices"].items()},
        "conversion": {s["node"]: [s["conversion_rate"]] for s in funnel},
        "drop_off": {s["node"]: [s["drop_off_rate"]] for s in funnel},
    }
    for figure, want in figures.items():
        if key == keys.dashboard_nodes(campaign_id, job, figure):
            return want
    assert key == keys.dashboard_series(campaign_id, job), f"a panel reads {key}: no expectation for it"
    return None


def test_campaign_panels_show_exactly_what_report_says(deployment):
    counters, plugin, queue_conn = deployment
    counters.record_many(scenario(counters))
    tick(counters, queue_conn)
    board = campaign()
    seen_fields, seen_keys = set(), set()
    for camp in (C, C2):
        jobs_ = variable_values(plugin, board["templating"]["list"][2], {"campaign": camp})
        assert jobs_ == ["job-1", "job-2"]
        for job in [CAMPAIGN_SCOPE, *jobs_]:  # the job variable's "All" is the campaign total
            report = counters.report(T, camp, None if job == CAMPAIGN_SCOPE else job)
            variables = {"tenant": T, "campaign": camp, "job": job}
            for panel, query in panel_queries(board):
                q = with_variables(query, variables)
                assert "$" not in q["keyName"] + q.get("field", ""), q
                frame = run(plugin, q, window())
                want = expected_campaign_frame(counters.keys, camp, None if job == "*" else job, report,
                                               q["keyName"], frame)
                seen_keys.add(q["keyName"].replace(f":{job}", ":J"))
                if want == ANALYSIS:  # none stored yet: the panels are empty
                    assert all(v in ([], [""]) for v in frame.values()), panel["title"]
                    continue
                if want is None:  # the time series: one point, this tick's figures
                    shown = transformed(panel, frame)
                    plotted = [f for f in kept_fields(panel) if f != "$time"]
                    assert {f: shown.get(f) for f in plotted} == {
                        f: None if report[f] is None else [float(report[f])] for f in plotted}, panel["title"]
                    assert len(shown["$time"]) == 1
                    continue
                assert frame == want, panel["title"]
                assert list(frame) == list(want), f"{panel['title']}: in report order"
                seen_fields.update(frame)
                if panel["type"] == "stat" and panel["options"]["reduceOptions"]["fields"] == "":
                    assert all(isinstance(v[0], float) for v in frame.values()), f"{panel['title']} hides text"
    assert set(SCALARS) | {"status", "updated_at"} <= seen_fields
    assert {f":J:{figure}" for figure in ("reached", "choices", "conversion", "drop_off", "series")} <= {
        k[k.index(":J"):] for k in seen_keys}


def test_template_variables_list_tenants_campaigns_and_jobs(deployment):
    counters, plugin, queue_conn = deployment
    counters.record_many(scenario(counters))
    tick(counters, queue_conn)
    tenant_var, campaign_var, job_var = campaign()["templating"]["list"]
    assert variable_values(plugin, tenant_var, {}) == [T]
    assert variable_values(plugin, campaign_var, {"tenant": T}) == [C, C2]
    assert variable_values(plugin, job_var, {"campaign": C}) == ["job-1", "job-2"]
    assert job_var["includeAll"] and job_var["allValue"] == CAMPAIGN_SCOPE
    assert tenant_overview()["templating"]["list"] == [tenant_var]


def test_time_series_get_one_point_per_tick_that_changed_the_figures(deployment, tmp_path):
    counters, plugin, queue_conn = deployment
    events = scenario(counters)
    half = len(events) // 2
    counters.record_many(events[:half])
    tick(counters, queue_conn)
    first = {job: counters.report(T, C, job) for job in (None, "job-1", "job-2")}
    counters.record_many(events[half:])
    tick(counters, queue_conn)
    second = {job: counters.report(T, C, job) for job in (None, "job-1", "job-2")}
    tick(counters, queue_conn)  # nothing changed: no snapshot, no point
    snapshot_campaign(counters, open_store(f"sqlite:///{tmp_path}/reports.db"), C)  # nor when snapshotted anyway
    series_panels = [(p, q) for p, q in panel_queries(campaign()) if p["type"] == "timeseries"]
    assert all(q["command"] == "xrange" for _, q in series_panels)
    assert len(series_panels) == 4
    for job in (None, "job-1", "job-2"):
        for panel, query in series_panels:
            q = with_variables(query, {"tenant": T, "campaign": C, "job": job or CAMPAIGN_SCOPE})
            shown = transformed(panel, run(plugin, q, window()))
            assert len(shown["$time"]) == 2, panel["title"]
            assert shown["$time"] == sorted(shown["$time"])
            for name in kept_fields(panel)[1:]:  # a figure missing at a tick is drawn as 0 by the plugin
                assert shown[name] == [float(first[job][name] or 0), float(second[job][name])], (job, name)


def test_tenant_overview_panels_show_the_overviews_today_and_the_nightly_check(deployment, tmp_path, monkeypatch):
    counters, plugin, queue_conn = deployment
    events = scenario(counters)
    counters.record_many(events)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_HISTORY", jsonl(tmp_path, events))
    tick(counters, queue_conn, NOW)  # snapshots, and the nightly job of Nov 14 (writes the daily overview)
    store = open_store(f"sqlite:///{tmp_path}/reports.db")
    history = JsonlHistory(jsonl(tmp_path, events))
    for period in ("weekly", "monthly"):  # what `campaign-counters overview --period ...` stores
        store_overviews(store, overviews(history, T, period, [date(2023, 11, 14)], UTC), counters)
    store_overviews(store, overviews(history, T, "daily", [date(2023, 11, 13)], UTC), counters)  # older: ignored
    tick(counters, queue_conn, NOW + timedelta(minutes=2))  # publishes the nightly check and today so far
    expected = {period: store.overview(T, period, day) for period, day in
                (("daily", "2023-11-14"), ("weekly", "2023-11-13"), ("monthly", "2023-11-01"))}
    today = today_so_far(counters, T, UTC, NOW + timedelta(minutes=2))
    assert today["total_target_users"] > 0
    check = store.reconcile_reports(T)[0]
    nightly = {"day": "2023-11-14", "checked": check["checked"], "drift": len(check["drift"]),
               "repaired": len(check["repaired"])}
    campaigns = {C: "RUNNING", C2: ""}
    keys = counters.keys
    for panel, query in panel_queries(tenant_overview()):
        q = with_variables(query, {"tenant": T})
        frame = run(plugin, q, window())
        key = q["keyName"]
        if key == keys.dashboard_nightly(T):
            source = nightly
        elif key == keys.dashboard_campaigns(T):
            source = campaigns
        else:
            period = next(p for p in (*d.PERIODS, d.TODAY) if key == keys.dashboard_overview(T, p))
            source = today if period == d.TODAY else expected[period]
        for name, values in frame.items():
            if name in ("published_at", "run_at"):
                assert values[0].startswith("20"), (panel["title"], name)
                continue
            want = source[name]
            assert values == [float(want) if isinstance(want, (int, float)) else want], (panel["title"], name)


def test_operations_panels_show_what_health_and_redis_say(deployment):
    counters, plugin, queue_conn = deployment
    counters.record_many(scenario(counters))
    bad = [{"type": "sent", "tenant": T, "campaign": C, "job": "j", "user": "u", "ts": -1}] * 3
    bad += [{"type": "sent", "tenant": "someone-else", "campaign": C, "job": "j", "user": "u", "ts": 1}] * 2
    counters.record_many(bad)
    spool = counters.keys.spool_status()
    plugin.hset(spool, mapping={"chat-1": 5, "chat-2": 7})
    looked = health(counters, None, None)
    dirty = counters.run(m.dirty_campaigns(counters))
    tick(counters, queue_conn, work=False)  # the figures of the tick, before its snapshots ran
    assert looked["pending_snapshots"]["campaigns"] == len(dirty) == 2
    keys = counters.keys
    info = [plugin.info("memory")] if not isinstance(plugin, redis.RedisCluster) else list(
        plugin.info("memory", target_nodes=redis.RedisCluster.PRIMARIES).values())
    limits = {i["maxmemory"] or i["total_system_memory"] for i in info}
    expected = {
        "pending_snapshots": 2, "rejected_total": looked["rejected_events"]["total"], "rejected_invalid": 3,
        "rejected_refused": 2, "spool_depth": 12,
        "nightly_overdue_tenants": 1, "drift_tenants": 0,  # no nightly check has run yet
    }
    assert looked["rejected_events"]["total"] == 5
    whole = run(plugin, {"command": "hgetall", "keyName": keys.dashboard_ops()}, window())
    for panel, query in panel_queries(operations()):
        frame = run(plugin, query, window())
        key = query["keyName"]
        if key == keys.dashboard_ops():
            for name, values in frame.items():
                if name in expected:
                    assert values == [float(expected[name])], name
                elif name == "memory_limit_bytes":
                    assert values[0] in limits
                elif name == "memory_used_pct":
                    assert 0 < values[0] < 100
                    assert values[0] == whole["memory_used_bytes"][0] / whole["memory_limit_bytes"][0] * 100
                elif name == "published_at":
                    assert values[0].startswith("20")
                else:
                    assert isinstance(values[0], float), (name, values)
        elif key == keys.dashboard_rejected():
            assert frame == {"invalid ts": [3.0], f"refused {C}": [2.0]}
        elif key == spool:
            assert frame == {"chat-1": [5.0], "chat-2": [7.0]}
        elif key == keys.dashboard_ops_series():
            shown = transformed(panel, frame)
            assert len(shown["$time"]) == 1
        else:
            assert key.startswith(keys.dashboard_nightly_all("")), key


def test_every_alert_rule_names_a_query_that_returns_a_number(deployment):
    counters, plugin, queue_conn = deployment
    counters.record_many(scenario(counters))
    tick(counters, queue_conn)
    rules = alert_rules()["groups"][0]["rules"]
    assert [r["uid"] for r in rules] == [r.uid for r in RULES]
    for rule in rules:
        query = rule["data"][0]["model"]
        frame = run(plugin, query, window())
        assert list(frame) == [query["field"]] and isinstance(frame[query["field"]][0], float), rule["title"]


def test_drift_and_overdue_alerts_see_the_nightly_check(deployment):
    counters, plugin, queue_conn = deployment
    counters.record_many(scenario(counters))
    counters.set_timezone(T, "Asia/Ho_Chi_Minh")
    hcm = ZoneInfo("Asia/Ho_Chi_Minh")
    by_field = {r.field: r for r in RULES}

    def alert_value(field):
        rule = next(r for r in alert_rules()["groups"][0]["rules"] if r["uid"] == by_field[field].uid)
        return run(plugin, rule["data"][0]["model"], window())[field][0]

    at = datetime(2026, 3, 10, 0, 30, tzinfo=hcm)  # 00:30 local: the check of Mar 9 is not due yet
    publish_nightly_run(counters, T, "2026-03-08", {"checked": 4, "drift": [], "repaired": []})
    publish_tenants(counters, {T: hcm}, at, every=0)
    assert alert_value("nightly_overdue_tenants") == 0 and alert_value("drift_tenants") == 0
    publish_tenants(counters, {T: hcm}, at + timedelta(hours=1), every=0)  # 01:30: overdue
    assert alert_value("nightly_overdue_tenants") == 1 > by_field["nightly_overdue_tenants"].above
    drift = [{"campaign": C, "job": None, "metric": "sent_users_count", "expected": 1, "actual": 2}]
    publish_nightly_run(counters, T, "2026-03-09", {"checked": 4, "drift": drift, "repaired": []})
    publish_nightly_run(counters, T, "2026-03-07", {"checked": 4, "drift": [], "repaired": []})  # late: ignored
    publish_tenants(counters, {T: hcm}, at + timedelta(hours=2), every=0)
    assert alert_value("nightly_overdue_tenants") == 0
    assert alert_value("drift_tenants") == 1 > by_field["drift_tenants"].above
    frame = run(plugin, {"command": "hgetall", "keyName": counters.keys.dashboard_nightly_all("drift")}, window())
    assert frame == {T: [1.0]}
    assert publish_tenants(counters, {T: hcm}, at + timedelta(hours=2, seconds=30)) is None  # once a minute


def expected_analysis_frame(analysis, figure, frame):
    """What a panel of the stored analysis must show, written from the stored document (its `analysis`)."""
    if figure == "summary":
        ct = analysis["completion_time"]
        source = {"computed_at": analysis["now"], "inactivity_window": float(analysis["inactivity_window"]),
                  "users": float(analysis["users"]), "heatmap_timezone": analysis["heatmap"]["timezone"],
                  **{f"completion_time_{k}": float(v) for k, v in ct.items()}}
        return {name: [frame[name][0] if name == "published_at" else source[name]] for name in frame}
    if figure == "heatmap":
        heat = analysis["heatmap"]
        return {"weekday": heat["weekdays"],
                **{f"{h:02d}": [float(day[h]) for day in heat["interactions"]] for h in range(24)}}
    rows = {
        "transitions": {f"{t['from']} → {t['to']}": t["users"] for t in analysis["transitions"]},
        "off_script": {f"{t['from']} → {t['to']}": t["users"] for t in analysis["transitions"] if not t["in_script"]},
        "drop_off": {f"{r['node']} / {s}": r[s] for r in analysis["drop_off"]
                     for s in ("went_on", "waiting", "dropped")},
        "choice_users": {f"{c['node']} / {c['choice']}": c["users"] for c in analysis["choices"]},
        "choice_clicks": {f"{c['node']} / {c['choice']}": c["clicks"] for c in analysis["choices"]},
        "time_per_node": {t["node"]: t["median"] for t in analysis["time_per_node"]},
    }[figure]
    return {label: [float(n)] for label, n in rows.items()}


def check_analysis_panels(counters, plugin, store, scopes):
    """Every analysis panel, for each (campaign, job) in `scopes`, shows exactly the stored analysis."""
    board = campaign()
    shown = set()
    for camp, job in scopes:
        analysis = store.campaign_report(T, camp, job)["analysis"]
        variables = {"tenant": T, "campaign": camp, "job": job or CAMPAIGN_SCOPE}
        prefix = counters.keys.dashboard(camp, job) + ":analysis:"
        for panel, query in panel_queries(board):
            q = with_variables(query, variables)
            if not q["keyName"].startswith(prefix):
                continue
            figure = q["keyName"][len(prefix):]
            frame = run(plugin, q, window())
            if figure == "heatmap":
                assert frame["$time"] == [1, 2, 3, 4, 5, 6, 7]  # whatever the dashboard's time range
                frame = transformed(panel, frame)
            want = expected_analysis_frame(analysis, figure, frame)
            assert frame == want, (camp, job, panel["title"])
            if want:
                shown.add(figure)
    assert shown == set(ANALYSIS_FIGURES)  # the scenario gives every panel something to show


def test_analysis_panels_show_exactly_the_stored_analysis(deployment, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from campaign_counters.cli import main

    counters, plugin, queue_conn = deployment
    events = scenario(counters)
    # a move with no edge in the script, so the off-script panel has something to show
    jump = [{"type": "sent", "tenant": T, "campaign": C, "job": "job-1", "user": "jumper", "ts": 1_700_000_050},
            {"type": "interaction", "tenant": T, "campaign": C, "job": "job-1", "user": "jumper",
             "ts": 1_700_000_090, "target": OFFER_SCRIPT["nodes"][-1]["id"], "choice": "skip"}]
    counters.record_many(events + jump)
    monkeypatch.setenv("CAMPAIGN_COUNTERS_HISTORY", jsonl(tmp_path, events + jump))
    tick(counters, queue_conn, NOW)  # snapshots, then the nightly check of Nov 14 stores (and publishes) analyses
    store = open_store(f"sqlite:///{tmp_path}/reports.db")
    nightly = {(c, j) for c in (C, C2) for j in (None, "job-1", "job-2")
               if (store.campaign_report(T, c, j) or {}).get("analysis")}
    assert {(C, None), (C, "job-1"), (C2, None)} <= nightly
    check_analysis_panels(counters, plugin, store, sorted(nightly, key=str))
    # later: more users, a snapshot (which leaves the analysis panels as they are), then `analyze --persist`
    before = store.campaign_report(T, C, None)["analysis"]
    counters.record_many([ev("sent", f"late-{i}", 1_700_100_000 + i, "job-2") for i in range(5)])
    tick(counters, queue_conn)
    check_analysis_panels(counters, plugin, store, [(C, None)])
    monkeypatch.setenv("CAMPAIGN_COUNTERS_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(main, ["analyze", "--tenant", T, "--campaign", C, "--persist", "--window", "3600"])
    assert res.exit_code == 0 and "stored 3 analysis" in res.stderr, res.output
    after = store.campaign_report(T, C, None)["analysis"]
    assert after["users"] == before["users"] + 5 and after["inactivity_window"] == 3600
    check_analysis_panels(counters, plugin, store, [(C, None), (C, "job-1"), (C, "job-2")])
