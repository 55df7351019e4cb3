"""The order every report's user counts must keep: completed <= interacted <= sent <= targeted.

Completed users interacted (with an end node), and every user counted is
targeted. `interacted <= sent` holds when the chat service records a `sent`
before any answer; a history with answers from users never sent breaks it
too, so each break names where it was seen (`history`, `live`, `snapshot`):
a break only live or in a snapshot is the counters' fault (and shows as drift
as well), one in the history is the data's.
"""

from __future__ import annotations

from typing import Any

CHAIN = ("completed_users_count", "interacted_users_count", "sent_users_count", "target_users_count")


def broken(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each link of the chain a report breaks, as {"rule": "a <= b", "values": [a, b]}."""
    if report is None:
        return []
    out = []
    for small, big in zip(CHAIN, CHAIN[1:]):
        a, b = report.get(small) or 0, report.get(big) or 0
        if a > b:
            out.append({"rule": f"{small} <= {big}", "values": [a, b]})
    return out
