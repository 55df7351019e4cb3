"""The package's layout: dependencies point one way and no module imports another in a cycle.

Walks every module's imports (module level and inside functions) with `ast`,
so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import campaign_counters

ROOT = Path(campaign_counters.__file__).parent
PACKAGE = "campaign_counters"

# Each part may import the parts listed after it, never one before it.
LAYERS = ["cli", "grafana", "health", "nightly", "persist", "stores", "counters", "base"]
ALLOWED = {
    "cli": {"grafana", "health", "nightly", "persist", "stores", "counters", "base"},
    "grafana": {"health", "nightly", "persist", "stores", "counters", "base"},
    "health": {"nightly", "persist", "stores", "counters", "base"},
    "nightly": {"persist", "stores", "counters", "base"},
    "persist": {"stores", "counters", "base"},
    "stores": {"base"},
    "counters": {"base"},
    "base": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The layer of a module: its subpackage, or `base` for the shared top-level modules."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "root"  # the package's __init__ re-exports the public API; __main__ runs the CLI
    name = parts[1]
    return name if name in ALLOWED else "base"


def imports_of(path: Path) -> set[str]:
    """Modules of this package that `path` imports, resolved to module names."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (ROOT.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT.parent / candidate.replace(".", "/") / "__init__.py").exists() else target)
    found.discard(me)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_every_import_points_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        here = part_of(module)
        if here == "root":
            continue
        for target in targets:
            there = part_of(target)
            if there == "root":
                if here != "cli":  # the root imports counters: only the top may import it
                    wrong.append((module, target, "imports the package root"))
            elif there != here and there not in ALLOWED[here]:
                wrong.append((module, target, f"{here} -> {there}"))
    assert wrong == []


def test_no_module_imports_another_in_a_cycle():
    edges = graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1 and not _is_package_of(nxt, node):
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def _is_package_of(package: str, module: str) -> bool:
    """A package's __init__ importing its own modules (and they, siblings) is how packages work."""
    return module.startswith(package + ".")


def test_the_store_interface_imports_no_backend():
    assert not {t for t in imports_of(ROOT / "stores" / "base.py") if t.startswith(f"{PACKAGE}.stores.")}


def test_redis_keys_are_named_only_in_the_key_schema():
    """No module but keys.py spells the key prefix."""
    offenders = [p.name for p in ROOT.rglob("*.py") if p.name != "keys.py" and '"cc:v2' in p.read_text()]
    assert offenders == []


def test_the_layer_check_itself_sees_an_upward_import(tmp_path):
    """The walker resolves relative imports: a store importing persist would be caught."""
    fake = ROOT / "stores" / "_probe_upward.py"
    fake.write_text("from ..persist import snapshot\n")
    try:
        targets = imports_of(fake)
    finally:
        fake.unlink()
    assert f"{PACKAGE}.persist.snapshot" in targets
    assert "persist" not in ALLOWED["stores"]
