"""Sample data for `campaign-counters demo`: a script and a seeded crowd of users.

Event ids are derived from the seed and user, so running the demo twice
records nothing new: the demo also shows idempotency.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from typing import Any, Iterator

TENANT = "demo"
CAMPAIGN = "demo-campaign"
JOBS = ("run-1", "run-2")
T0 = 1_764_000_000  # a fixed start, so reports are reproducible


def demo_script() -> dict[str, Any]:
    return json.loads(resources.files("campaign_counters").joinpath("data/demo_script.json").read_text())


def demo_events(users: int, seed: int, tenant: str = TENANT, campaign: str = CAMPAIGN) -> Iterator[dict[str, Any]]:
    """Targeted, sent, then a walk along the script's edges with drop-off."""
    script = demo_script()
    rng = random.Random(seed)
    edges: dict[str, list[dict[str, Any]]] = {}
    for e in script["edges"]:
        edges.setdefault(e["source"], []).append(e)
    start = next(n["id"] for n in script["nodes"] if n.get("type") == "start")
    for u in range(users):
        user = f"user-{u:05d}"
        jobs = JOBS if rng.random() < 0.1 else (rng.choice(JOBS),)
        for job in jobs:
            base = {"tenant": tenant, "campaign": campaign, "job": job, "user": user}
            ts = T0 + rng.randint(0, 6 * 3600) + (86400 if job == "run-2" else 0)
            seq = [{**base, "type": "targeted", "ts": ts}]
            if rng.random() < 0.92:
                ts += rng.randint(1, 60)
                seq.append({**base, "type": "sent", "ts": ts})
                node = start
                while edges.get(node) and rng.random() < 0.8:
                    edge = rng.choice(edges[node])
                    ts += rng.randint(5, 900) + round(rng.random(), 3)
                    seq.append({**base, "type": "interaction", "ts": ts, "target": edge["target"],
                                "choice": edge.get("label"), "node": node})
                    node = edge["target"]
            if len(seq) > 2 and rng.random() < 0.1:
                seq[-1], seq[-2] = seq[-2], seq[-1]  # arrives out of order
            for i, ev in enumerate(seq):
                ev["id"] = f"demo-{seed}-{user}-{job}-{i}"
                yield ev
                if rng.random() < 0.03:
                    yield dict(ev)  # the chat service sent it twice
