"""Run comparison: every metric side by side, and a two-proportion test that tells a difference from noise."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from statistics import NormalDist

import pytest

from campaign_counters.comparison import two_proportions
from oracle import expected_report
from scenarios import C, OFFER_SCRIPT, T, ev

# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Statistics in Medicine 17:873-890, table II, method 10 (score interval from Wilson's): pB, pA, low, high.
NEWCOMBE = [
    ((56, 70), (48, 80), 0.0524, 0.3339),
    ((9, 10), (3, 10), 0.1705, 0.8090),
    ((5, 56), (0, 29), -0.0381, 0.1926),
    ((0, 10), (0, 20), -0.1611, 0.2775),
    ((0, 10), (0, 10), -0.2775, 0.2775),
]


@pytest.mark.parametrize("b,a,low,high", NEWCOMBE)
def test_interval_matches_newcombes_published_values(b, a, low, high):
    t = two_proportions(a[0], a[1], b[0], b[1])
    assert t.difference == pytest.approx(b[0] / b[1] - a[0] / a[1])
    assert round(t.ci_low, 4) == low and round(t.ci_high, 4) == high


def pooled_z_p_value(xa, na, xb, nb):
    """The textbook pooled z-test, through statistics.NormalDist (not math.erfc as the package)."""
    p = (xa + xb) / (na + nb)
    se = math.sqrt(p * (1 - p) * (1 / na + 1 / nb))
    if se == 0:
        return 1.0
    z = abs(xb / nb - xa / na) / se
    return 2 * (1 - NormalDist().cdf(z))


@pytest.mark.parametrize("xa,na,xb,nb", [(48, 80, 56, 70), (120, 1000, 150, 1000), (0, 5, 5, 5), (7, 9, 7, 9)])
def test_p_value_is_the_pooled_z_test(xa, na, xb, nb):
    assert two_proportions(xa, na, xb, nb).p_value == pytest.approx(pooled_z_p_value(xa, na, xb, nb), abs=1e-12)


def test_no_trials_means_no_test():
    t = two_proportions(0, 0, 3, 10)
    assert (t.difference, t.ci_low, t.ci_high, t.p_value, t.significant) == (None,) * 5


def run_events(job, users, p_interact, p_complete, rng, prefix):
    """Users sent the first message; some answer `ask`, some of those finish; duplicates and disorder."""
    out = []
    for u in range(users):
        user = f"{prefix}{u}"
        t0 = 1_760_000_000 + rng.randint(0, 3600)
        seq = [ev("targeted", user, t0, job, id=f"{job}-{u}-t"), ev("sent", user, t0 + 1, job, id=f"{job}-{u}-s")]
        if rng.random() < p_interact:
            seq.append(ev("interaction", user, t0 + 30, job, target="ask", choice="go", id=f"{job}-{u}-a"))
            if rng.random() < p_complete:
                seq.append(ev("interaction", user, t0 + 60, job, target="bye", choice="no", id=f"{job}-{u}-b"))
        out += seq
        if rng.random() < 0.1:
            out.append(dict(seq[-1]))  # a duplicate
    rng.shuffle(out)
    return out


def known_difference():
    rng = random.Random(7)
    return run_events("run-a", 300, 0.30, 0.5, rng, "a") + run_events("run-b", 300, 0.55, 0.5, rng, "b")


def no_difference():
    rng = random.Random(11)
    return run_events("run-a", 300, 0.40, 0.5, rng, "a") + run_events("run-b", 300, 0.40, 0.5, rng, "b")


def expected_rows(events):
    """The side-by-side rows computed from the oracle's two reports, with no code of the package."""
    ra, rb = expected_report(events, OFFER_SCRIPT, "run-a"), expected_report(events, OFFER_SCRIPT, "run-b")

    def flat(r):
        out = {k: r[k] for k in ("target_users_count", "sent_users_count", "interacted_users_count",
                                 "completed_users_count", "total_interactions", "interaction_rate", "completion_rate",
                                 "avg_completion_time")}
        for node, facts in r["node_analytics"].items():
            out[f"node_analytics.{node}.reached_count"] = facts["reached_count"]
            for choice, n in facts["choices"].items():
                out[f"node_analytics.{node}.choices.{choice}"] = n
        for step in r["funnel_data"]:
            for k in ("reached_count", "conversion_rate", "drop_off_rate"):
                out[f"funnel_data.{step['node']}.{k}"] = step[k]
        return out

    fa, fb = flat(ra), flat(rb)
    rows = {}
    for name in set(fa) | set(fb):
        a, b = fa.get(name, 0), fb.get(name, 0)
        diff = b - a if a is not None and b is not None else None
        rows[name] = (a, b, diff, diff / a if diff is not None and a else None)
    return ra, rb, rows


def check(result, events):
    ra, rb, rows = expected_rows(events)
    got = {r["metric"]: (r["a"], r["b"], r["difference"], r["relative_difference"]) for r in result["metrics"]}
    assert set(got) == set(rows)
    for name, want in rows.items():
        assert got[name] == pytest.approx(want, abs=1e-9), name
    tests = {t["metric"]: t for t in result["tests"]}
    for metric, users in (("interaction_rate", "interacted_users_count"), ("completion_rate", "completed_users_count")):
        t = tests[metric]
        xa, na, xb, nb = ra[users], ra["sent_users_count"], rb[users], rb["sent_users_count"]
        assert (t["a"], t["b"]) == ({"successes": xa, "trials": na}, {"successes": xb, "trials": nb})
        assert t["difference"] == pytest.approx((xb / nb - xa / na) * 100)
        assert t["p_value"] == pytest.approx(pooled_z_p_value(xa, na, xb, nb), abs=1e-12)
        assert t["ci95_low"] < t["difference"] < t["ci95_high"]
    return tests


async def test_a_real_difference_is_significant(api):
    await api.load_script(T, C, OFFER_SCRIPT)
    events = known_difference()
    await api.record_many(events)
    tests = check(await api.compare(T, C, "run-a", "run-b"), events)
    t = tests["interaction_rate"]
    assert t["significant"] is True and t["p_value"] < 1e-6 and t["ci95_low"] > 0


async def test_no_difference_is_not_rejected(api):
    await api.load_script(T, C, OFFER_SCRIPT)
    events = no_difference()
    await api.record_many(events)
    tests = check(await api.compare(T, C, "run-a", "run-b"), events)
    for t in tests.values():
        assert t["significant"] is False and t["p_value"] > 0.05 and t["ci95_low"] < 0 < t["ci95_high"]


def test_compare_command_json_table_csv_and_from_store(cli, script_file, tmp_path):
    events = known_difference()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert cli("script", "load", "--tenant", T, "--campaign", C, script_file).exit_code == 0
    assert cli("record", str(path)).exit_code == 0
    args = ("compare", "--tenant", T, "--campaign", C, "--job", "run-a", "--job", "run-b")
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    live = json.loads(res.stdout)
    check(live, events)
    assert (live["job_a"], live["job_b"]) == ("run-a", "run-b")
    assert cli("snapshot").exit_code == 0
    assert json.loads(cli(*args, "--from-store").stdout)["tests"] == live["tests"]
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    by_metric = {r["metric"]: r for r in rows if not r["test"]}
    tested = {r["metric"]: r for r in rows[:2]}
    _, _, want = expected_rows(events)
    assert len(rows) == len(want) + 2  # two tests, then every metric
    assert int(by_metric["sent_users_count"]["b"]) == want["sent_users_count"][1]
    assert tested["interaction_rate"]["test"] == "two_proportions"  # the test rows come first
    assert tested["interaction_rate"]["significant"] == "True"
    assert float(tested["interaction_rate"]["p_value"]) == pytest.approx(live["tests"][0]["p_value"])
    table = cli(*args, "--format", "table").stdout
    assert "metrics:" in table and "tests:" in table and "interaction_rate" in table


def test_compare_needs_two_different_jobs(cli, script_file):
    cli("script", "load", "--tenant", T, "--campaign", C, script_file)
    res = cli("compare", "--tenant", T, "--campaign", C, "--job", "run-a", "--job", "run-a")
    assert res.exit_code == 2 and "job:" in res.stderr and "Traceback" not in res.stderr
    res = cli("compare", "--tenant", T, "--campaign", C, "--job", "run-a", "--job", "nope")
    assert res.exit_code == 4 and "Traceback" not in res.stderr
