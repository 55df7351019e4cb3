"""Scripts and event builders shared by the tests."""

from __future__ import annotations

import random

T, C = "tenant-a", "camp-1"

# start -> ask -(yes)-> send_offer -(ok)-> done ; ask -(no)-> bye ;
# send_offer is NOT an end node although its id contains "end".
OFFER_SCRIPT = {
    "nodes": [
        {"id": "start", "type": "start", "data": {"title": "Hello"}},
        {"id": "ask", "type": "question", "data": {"title": "Interested?"}},
        {"id": "send_offer", "type": "message", "data": {"title": "Offer"}},
        {"id": "done", "type": "message", "data": {"title": "Thanks"}},
        {"id": "bye", "type": "message", "data": {"title": "Bye"}},
    ],
    "edges": [
        {"source": "start", "target": "ask", "label": "go"},
        {"source": "ask", "target": "send_offer", "label": "yes"},
        {"source": "ask", "target": "bye", "label": "no"},
        {"source": "send_offer", "target": "done", "label": "ok"},
    ],
}

# An `end`-type node with outgoing edges, and a node reachable from two places
# (so its choice node can only be resolved by label or by the event's `node`).
BRANCH_SCRIPT = {
    "nodes": [
        {"id": "s", "type": "start"},
        {"id": "a", "type": "question"},
        {"id": "b", "type": "question"},
        {"id": "stop", "type": "end"},
        {"id": "more", "type": "message"},
        {"id": "shared", "type": "message"},
    ],
    "edges": [
        {"source": "s", "target": "a", "label": "x"},
        {"source": "s", "target": "b", "label": "y"},
        {"source": "a", "target": "shared", "label": "p"},
        {"source": "b", "target": "shared", "label": "q"},
        {"source": "a", "target": "stop", "label": "quit"},
        {"source": "stop", "target": "more", "label": "again"},
    ],
}


def ev(type_, user=None, ts=0.0, job="job-1", campaign=C, tenant=T, **extra):
    out = {"type": type_, "tenant": tenant, "campaign": campaign, "ts": ts, **extra}
    if type_ != "status" or job is not None:
        out["job"] = job
    if user is not None:
        out["user"] = user
    return out


def random_events(script, n_users, seed, jobs=("job-1", "job-2"), campaign=C, tenant=T, dup_rate=0.05,
                  with_ids=True, t0=1_700_000_000.0):
    """Users walking the script's edges with drop-off; some duplicates; shuffled a little."""
    rng = random.Random(seed)
    succ = {}
    for e in script["edges"]:
        succ.setdefault(e["source"], []).append(e)
    start = next(n["id"] for n in script["nodes"] if n.get("type") == "start")
    out = []
    n = 0
    for u in range(n_users):
        user = f"user-{u}"
        for job in rng.sample(list(jobs), k=rng.choice([1, 1, 1, 2])):
            ts = t0 + rng.randint(0, 86400)
            seq = [ev("targeted", user, ts, job, campaign, tenant)]
            if rng.random() < 0.9:
                ts += rng.randint(1, 30)
                seq.append(ev("sent", user, ts, job, campaign, tenant))
                node = start
                while succ.get(node) and rng.random() < 0.75:
                    edge = rng.choice(succ[node])
                    ts += rng.randint(1, 600) + rng.random()
                    extra = {"target": edge["target"], "choice": edge.get("label") or "next"}
                    if rng.random() < 0.3:
                        extra["node"] = node
                    seq.append(ev("interaction", user, round(ts, 3), job, campaign, tenant, **extra))
                    node = edge["target"]
            for e in seq:
                if with_ids:
                    n += 1
                    e["id"] = f"e{n}"
                out.append(e)
                if with_ids and rng.random() < dup_rate:
                    out.append(dict(e))
    # local disorder: swap neighbours now and then
    for i in range(len(out) - 1):
        if rng.random() < 0.2:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out
