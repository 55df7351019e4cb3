"""Two runs (jobs) side by side, and whether their rates differ by more than noise.

Pure functions over two reports of the same shape (`reports.build_report`),
standard library only. Every metric of a report is set side by side with its
absolute and relative difference (B - A, and (B - A) / A). The interaction
and completion rates, being proportions of sent users, also get a
two-proportion test:

- p-value: the two-sided z-test with the pooled proportion
  (z = (pB - pA) / sqrt(p(1 - p)(1/nA + 1/nB)), p = (xA + xB) / (nA + nB));
- 95% interval of pB - pA: Newcombe's hybrid score interval (his method 10,
  built from the two Wilson score intervals), which stays inside [-1, 1] and
  is not degenerate at 0% or 100% as the plain Wald interval is.

Both assume independent samples: a user sent in both jobs counts in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .reports import METRICS

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALPHA = 0.05
TESTED = {"interaction_rate": "interacted_users_count", "completion_rate": "completed_users_count"}
TRIALS = "sent_users_count"


@dataclass(frozen=True)
class ProportionTest:
    """A two-proportion test of B against A: difference, its 95% interval, p-value (proportions in 0..1)."""

    successes_a: int
    trials_a: int
    successes_b: int
    trials_b: int
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None

    @property
    def significant(self) -> bool | None:
        """Whether the difference is significant at 95% (None when a side has no trials)."""
        return None if self.p_value is None else self.p_value < ALPHA


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (trials > 0)."""
    p = successes / trials
    zz = z * z
    centre = (p + zz / (2 * trials)) / (1 + zz / trials)
    half = z / (1 + zz / trials) * math.sqrt(p * (1 - p) / trials + zz / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> ProportionTest:
    """Test pB - pA: pooled two-sided z-test p-value and Newcombe's 95% interval (None without trials)."""
    if trials_a <= 0 or trials_b <= 0:
        return ProportionTest(successes_a, trials_a, successes_b, trials_b, None, None, None, None)
    pa, pb = successes_a / trials_a, successes_b / trials_b
    diff = pb - pa
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    p_value = 1.0 if se0 == 0 else math.erfc(abs(diff) / se0 / math.sqrt(2))
    la, ua = wilson(successes_a, trials_a)
    lb, ub = wilson(successes_b, trials_b)
    low = diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return ProportionTest(successes_a, trials_a, successes_b, trials_b, diff, low, high, min(1.0, p_value))


def metric_values(report: dict[str, Any]) -> dict[str, Any]:
    """Every metric of a report as a flat {dotted name: number or None} (nodes by id)."""
    out: dict[str, Any] = {}
    for key in METRICS:
        value = report.get(key)
        if key == "node_analytics":
            for node, facts in (value or {}).items():
                out[f"node_analytics.{node}.reached_count"] = facts.get("reached_count")
                for choice, n in facts.get("choices", {}).items():
                    out[f"node_analytics.{node}.choices.{choice}"] = n
        elif key == "funnel_data":
            for step in value or []:
                for name in ("reached_count", "conversion_rate", "drop_off_rate"):
                    out[f"funnel_data.{step['node']}.{name}"] = step.get(name)
        else:
            out[key] = value
    return out


def _row(metric: str, a: Any, b: Any) -> dict[str, Any]:
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    diff = b - a if numbers else None
    relative = diff / a if numbers and a else None
    return {"metric": metric, "a": a, "b": b, "difference": diff, "relative_difference": relative}


def _test_row(name: str, report_a: dict[str, Any], report_b: dict[str, Any]) -> dict[str, Any]:
    t = two_proportions(report_a.get(TESTED[name]) or 0, report_a.get(TRIALS) or 0,
                        report_b.get(TESTED[name]) or 0, report_b.get(TRIALS) or 0)

    def pp(x: float | None) -> float | None:
        return None if x is None else x * 100

    return {"metric": name, "a": {"successes": t.successes_a, "trials": t.trials_a},
            "b": {"successes": t.successes_b, "trials": t.trials_b},
            "difference": pp(t.difference), "ci95_low": pp(t.ci_low), "ci95_high": pp(t.ci_high),
            "p_value": t.p_value, "significant": t.significant}


def compare_reports(report_a: dict[str, Any], report_b: dict[str, Any]) -> dict[str, Any]:
    """Two reports side by side: `metrics` rows (a, b, difference, relative_difference) over the union
    of both reports' metrics, and `tests` of the interaction and completion rates (percentage points)."""
    va, vb = metric_values(report_a), metric_values(report_b)
    names = list(dict.fromkeys([*va, *vb]))
    rows = []
    for name in names:
        a = va.get(name, 0 if name not in va and isinstance(vb.get(name), (int, float)) else None)
        b = vb.get(name, 0 if name not in vb and isinstance(va.get(name), (int, float)) else None)
        rows.append(_row(name, a, b))
    return {
        "tenant": report_a.get("tenant"), "campaign": report_a.get("campaign"),
        "job_a": report_a.get("job"), "job_b": report_b.get("job"),
        "metrics": rows,
        "tests": [_test_row(name, report_a, report_b) for name in TESTED],
    }
