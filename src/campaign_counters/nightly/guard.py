"""A recompute may replace numbers only when it loses none of them: the check behind `--force`.

A history that lacks a campaign (wrong file, collection or field mapping),
covers only part of its life, or cannot be decoded recomputes to smaller
numbers than Redis or the report store already hold. Writing them (a repair,
an overview) would wipe real data, so every such write is compared first:
when a count would shrink, `Refused` is raised before anything is written.
Counts only: users and interactions can only grow as events arrive, while
rates and times may legitimately move either way.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import Refused

Loss = tuple[str, str, float, float]
"""(where, metric, now, after): a number a write would shrink."""


def losses(truth: Mapping[str, Any], current: Mapping[str, Any] | None, metrics: Iterable[str],
           where: str) -> list[Loss]:
    """The `metrics` that `truth` would shrink compared with `current` (absent counts are 0)."""
    if current is None:
        return []
    out = []
    for metric in metrics:
        now, after = current.get(metric) or 0, truth.get(metric) or 0
        if after < now:
            out.append((where, metric, now, after))
    return out


def refuse(subject: str, found: list[Loss], empty: bool, **ids: str | None) -> None:
    """Raise `Refused` naming `subject` and what would shrink; `empty`: the history had no events for it."""
    if not found:
        return
    shown = "; ".join(f"{metric} {now:g} -> {after:g} ({where})" for where, metric, now, after in found[:6])
    more = f" and {len(found) - 6} more" if len(found) > 6 else ""
    why = (f"the history has no events for {subject}, which has live or stored data"
           if empty else f"the history would shrink {subject}")
    raise Refused("history", f"{why}: {shown}{more}. Check the history source (file, collection, field "
                             "mapping); nothing was written", losses=found, **ids)
