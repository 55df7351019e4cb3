"""An independent, deliberately naive computation of docs/metrics.md.

Plain sets over the full event list: no incremental state, no Redis, no
code shared with the library (it even finds start and end nodes itself), so
agreement with the live counters means something.
"""

from __future__ import annotations

from collections import deque


def graph_facts(script):
    nodes = [n["id"] for n in script["nodes"]]
    types = {n["id"]: n.get("type") for n in script["nodes"]}
    edges = [(e["source"], e["target"], e.get("label")) for e in script.get("edges", [])]
    has_in = {t for _, t, _ in edges}
    has_out = {s for s, _, _ in edges}
    typed = [n for n in nodes if types[n] == "start"]
    start = typed[0] if typed else [n for n in nodes if n not in has_in][0]
    ends = {n for n in nodes if n not in has_out or types[n] == "end" or n in script.get("end_nodes", [])}
    succ = {n: [t for s, t, _ in edges if s == n] for n in nodes}
    order, seen, q = [], {start}, deque([start])
    while q:
        n = q.popleft()
        order.append(n)
        for t in succ[n]:
            if t not in seen:
                seen.add(t)
                q.append(t)
    order += [n for n in nodes if n not in seen]
    return nodes, start, ends, succ, edges, order


def resolve_node(ev, edges):
    if ev.get("node"):
        return ev["node"]
    into = {s for s, t, _ in edges if t == ev["target"]}
    if len(into) == 1:
        return next(iter(into))
    if ev.get("choice") is not None:
        labelled = {s for s, t, label in edges if t == ev["target"] and label == ev["choice"]}
        if len(labelled) == 1:
            return next(iter(labelled))
    return None


def dedupe(events):
    seen, out = set(), []
    for ev in events:
        key = (ev["tenant"], ev["campaign"], ev.get("id"))
        if ev.get("id") is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(ev)
    return out


def ms(ts):
    return int(round(ts * 1000))


def expected_report(events, script, job=None):
    """The metric part of a report for one campaign (job=None: all jobs)."""
    events = [e for e in dedupe(events) if e["type"] != "status"]
    if job is not None:
        events = [e for e in events if e["job"] == job]
    if script:
        nodes, start, ends, succ, edges, order = graph_facts(script)
    else:
        nodes, start, ends, succ, edges, order = [], None, set(), {}, [], []
    users = {e["user"] for e in events}
    sent = {e["user"] for e in events if e["type"] == "sent"}
    inter = [e for e in events if e["type"] == "interaction"]
    interacted = {e["user"] for e in inter}
    completed = {e["user"] for e in inter if e["target"] in ends}
    times = []
    for u in completed:
        fin = min(ms(e["ts"]) for e in inter if e["user"] == u and e["target"] in ends)
        sent_ts = [ms(e["ts"]) for e in events if e["user"] == u and e["type"] == "sent"]
        base = min(sent_ts) if sent_ts else min(ms(e["ts"]) for e in events if e["user"] == u)
        times.append(fin - base)
    reached = {}
    choices = {}
    for e in events:
        if e["type"] == "sent" and start is not None:
            reached.setdefault(start, set()).add(e["user"])
        if e["type"] == "interaction":
            reached.setdefault(e["target"], set()).add(e["user"])
            at = resolve_node(e, edges)
            if at is not None:
                reached.setdefault(at, set()).add(e["user"])
                if e.get("choice") is not None:
                    choices.setdefault(at, {}).setdefault(e["choice"], 0)
                    choices[at][e["choice"]] += 1
    analytics = {}
    for n in nodes + sorted(set(reached) | set(choices) - set(nodes)):
        analytics[n] = {"reached_count": len(reached.get(n, ())), "choices": dict(sorted(choices.get(n, {}).items()))}
    funnel = []
    start_count = len(reached.get(start, ())) if start else 0
    for n in order:
        r = reached.get(n, set())
        if n in ends or not r:
            drop = 0.0
        else:
            cont = {u for u in r if any(u in reached.get(s, ()) for s in succ[n])}
            drop = (len(r) - len(cont)) / len(r) * 100
        funnel.append({
            "node": n,
            "reached_count": len(r),
            "conversion_rate": len(r) / start_count * 100 if start_count else 0.0,
            "drop_off_rate": drop,
        })
    return {
        "target_users_count": len(users),
        "sent_users_count": len(sent),
        "interacted_users_count": len(interacted),
        "completed_users_count": len(completed),
        "total_interactions": len(inter),
        "interaction_rate": len(interacted) / len(sent) * 100 if sent else 0.0,
        "completion_rate": len(completed) / len(sent) * 100 if sent else 0.0,
        "avg_completion_time": (sum(times) / len(times) / 1000) if times else None,
        "node_analytics": analytics,
        "funnel_data": funnel,
    }


def expected_journey(events, script, job, user):
    _, _, ends, _, _, _ = graph_facts(script)
    mine = [e for e in dedupe(events) if e["type"] != "status" and e["job"] == job and e["user"] == user]
    inter = sorted((e for e in mine if e["type"] == "interaction"), key=lambda e: ms(e["ts"]))
    fins = [e for e in inter if e["target"] in ends]
    exit_node = completion = None
    if fins:
        first = min(fins, key=lambda e: (ms(e["ts"]), e["target"]))
        exit_node = first["target"]
        sent_ts = [ms(e["ts"]) for e in mine if e["type"] == "sent"]
        base = min(sent_ts) if sent_ts else min(ms(e["ts"]) for e in mine)
        completion = (ms(first["ts"]) - base) / 1000
    return {
        "journey_path": [{"node": e["target"], "choice": e.get("choice"), "ts": ms(e["ts"]) / 1000} for e in inter],
        "completed": bool(fins),
        "exit_node": exit_node,
        "completion_time": completion,
        "total_interactions": len(inter),
    }


def metrics_of(report):
    keys = expected_report([], None).keys()
    return {k: report[k] for k in keys}
