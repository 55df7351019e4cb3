"""The campaign flow graph (docs/scripts.md) and a bounded cache of parsed graphs.

The graph decides what counts as completion and where a choice was made, so it
is parsed strictly: a malformed script is rejected with the offending field.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .errors import ScriptError
from .events import check_text

SEP = "\x1f"


@dataclass(frozen=True)
class FlowGraph:
    nodes: tuple[str, ...]
    types: dict[str, str]
    titles: dict[str, str]
    edges: tuple[tuple[str, str, str | None], ...]
    start: str | None
    end_nodes: frozenset[str]
    flow_sequence: tuple[str, ...]
    successors: dict[str, tuple[str, ...]]
    predecessors: dict[str, tuple[str, ...]]
    sha: str = field(default="", compare=False)
    raw: str = field(default="", compare=False, repr=False)

    def is_end(self, node: str) -> bool:
        return node in self.end_nodes

    def choice_node(self, target: str, choice: str | None, node: str | None = None) -> str | None:
        """Where a choice leading to `target` was made (docs/metrics.md)."""
        if node:
            return node
        preds = self.predecessors.get(target, ())
        if len(preds) == 1:
            return preds[0]
        if choice is not None:
            labelled = {s for s, t, label in self.edges if t == target and label == choice}
            if len(labelled) == 1:
                return next(iter(labelled))
        return None

    def unique_predecessor(self) -> dict[str, str]:
        return {t: p[0] for t, p in self.predecessors.items() if len(p) == 1}

    def unique_labelled_source(self) -> dict[str, str]:
        sources: dict[str, set[str]] = {}
        for s, t, label in self.edges:
            if label is not None:
                sources.setdefault(t + SEP + label, set()).add(s)
        return {k: next(iter(v)) for k, v in sources.items() if len(v) == 1}


def _obj(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ScriptError(where, f"must be an object, got {type(value).__name__}")
    return value


def parse_script(data: Any) -> FlowGraph:
    """Parse FPTChat's `script_content` shape into a FlowGraph."""
    if isinstance(data, (str, bytes)):
        raw = data if isinstance(data, str) else data.decode()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ScriptError("script", f"is not valid JSON: {exc}") from None
    data = _obj(data, "script")
    nodes_in = data.get("nodes")
    if not isinstance(nodes_in, list) or not nodes_in:
        raise ScriptError("nodes", "must be a non-empty list")
    nodes: list[str] = []
    types: dict[str, str] = {}
    titles: dict[str, str] = {}
    for i, node in enumerate(nodes_in):
        node = _obj(node, f"nodes[{i}]")
        if node.get("id") is None:
            raise ScriptError(f"nodes[{i}].id", "is required")
        nid = check_text(f"nodes[{i}].id", node["id"])
        if nid in types:
            raise ScriptError(f"nodes[{i}].id", f"duplicate node id {nid!r}")
        ntype = node.get("type") or ""
        if not isinstance(ntype, str):
            raise ScriptError(f"nodes[{i}].type", "must be a string")
        nodes.append(nid)
        types[nid] = ntype
        ndata = node.get("data") or {}
        title = ndata.get("title") if isinstance(ndata, dict) else None
        titles[nid] = title if isinstance(title, str) else ""
    edges_in = data.get("edges", [])
    if not isinstance(edges_in, list):
        raise ScriptError("edges", "must be a list")
    edges: list[tuple[str, str, str | None]] = []
    for i, edge in enumerate(edges_in):
        edge = _obj(edge, f"edges[{i}]")
        ends = []
        for end in ("source", "target"):
            if edge.get(end) is None:
                raise ScriptError(f"edges[{i}].{end}", "is required")
            value = check_text(f"edges[{i}].{end}", edge[end])
            if value not in types:
                raise ScriptError(f"edges[{i}].{end}", f"unknown node {value!r}")
            ends.append(value)
        label = edge.get("label")
        if label is not None:
            label = check_text(f"edges[{i}].label", label)
        edges.append((ends[0], ends[1], label))
    listed_ends = data.get("end_nodes") or []
    if not isinstance(listed_ends, list):
        raise ScriptError("end_nodes", "must be a list")
    for i, nid in enumerate(listed_ends):
        if nid not in types:
            raise ScriptError(f"end_nodes[{i}]", f"unknown node {nid!r}")

    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for s, t, _ in edges:
        if t not in succ[s]:
            succ[s].append(t)
        if s not in pred[t]:
            pred[t].append(s)
    typed_start = [n for n in nodes if types[n] == "start"]
    if len(typed_start) > 1:
        raise ScriptError("nodes", f"more than one node of type 'start': {typed_start}")
    if typed_start:
        start: str | None = typed_start[0]
    else:
        roots = [n for n in nodes if not pred[n]]
        start = roots[0] if len(roots) == 1 else None
        if start is None:
            raise ScriptError("nodes", "no start node: add a node of type 'start' or leave exactly one node without incoming edges")
    end_nodes = frozenset(
        n for n in nodes if not succ[n] or types[n] == "end" or n in listed_ends
    )
    seen = {start}
    order: list[str] = []
    queue = deque([start])
    while queue:
        n = queue.popleft()
        order.append(n)
        for t in succ[n]:
            if t not in seen:
                seen.add(t)
                queue.append(t)
    order.extend(n for n in nodes if n not in seen)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return FlowGraph(
        nodes=tuple(nodes),
        types=types,
        titles=titles,
        edges=tuple(edges),
        start=start,
        end_nodes=end_nodes,
        flow_sequence=tuple(order),
        successors={n: tuple(v) for n, v in succ.items()},
        predecessors={n: tuple(v) for n, v in pred.items()},
        sha=hashlib.sha1(canonical.encode()).hexdigest(),
        raw=canonical,
    )


def check_completable(graph: FlowGraph) -> FlowGraph:
    """The graph, once some node ends the flow; ScriptError otherwise (completions could never count)."""
    if not graph.end_nodes:
        raise ScriptError("end_nodes", "the script has no end node (every node has an outgoing edge, e.g. a "
                                       "cycle), so no user could ever complete it: add a node without outgoing "
                                       "edges or of type 'end', or list one in end_nodes")
    return graph


class ScriptCache:
    """Bounded LRU of parsed graphs with a TTL.

    Entries are keyed by campaign and checked against the script's sha, which
    readers get for free with the campaign's metadata, so a reload in another
    process is noticed on the next read even before the TTL runs out.
    """

    def __init__(self, maxsize: int = 1024, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, FlowGraph]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, sha: str | None = None) -> FlowGraph | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            stored_at, graph = item
            if self._clock() - stored_at > self.ttl or (sha is not None and graph.sha != sha):
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return graph

    def put(self, key: Hashable, graph: FlowGraph) -> None:
        with self._lock:
            self._data[key] = (self._clock(), graph)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def invalidate(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)
