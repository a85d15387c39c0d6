"""The floor plan, checked: data flows request -> probe -> policy -> executor -> ledger, and imports
only go down the floors  probes < policies < router < eval < CLI (``triage.router.cli``), with no circles.

Every ``import`` counts, module level or inside a function (a deferred import is still a
dependency). The package root ``triage`` (the public API, re-exporting ``Router`` and friends) and
``python -m triage`` sit on top of everything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"triage": "triage", "probes": "triage.probes", "policies": "triage.policies",
           "router": "triage.router", "eval": "triage.eval"}
# The token router (token-level routing over a local pair) lives on the probes floor: it reads the
# probes' ONNX helpers; the local LM runtime (triage.lm) is a shared piece below both.
FLOORS = {"triage.probes": 1, "triage.token_router": 1, "triage.policies": 2, "triage.router": 3, "triage.eval": 4}



def floor(module: str) -> int:
    if module in ("triage", "triage.__main__"):
        return 6
    if module == "triage.router.cli" or module.startswith("triage.router.cli."):
        return 5
    top = ".".join(module.split(".")[:2])
    return FLOORS.get(top, 0)  # anything else under triage. is the shared bottom floor


def module_name(path: Path) -> str:
    folder = path.relative_to(REPO).parts[0]
    parts = [FOLDERS[folder], *path.relative_to(REPO / folder).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_edges() -> dict[str, set[str]]:
    """module -> the project modules it imports (absolute imports; the code uses no relative ones)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            source = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                targets: list[str] = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets = [node.module]
                elif isinstance(node, ast.ImportFrom):
                    raise AssertionError(f"{source}: relative import; use absolute imports")
                for t in targets:
                    if t.split(".")[0] in ("router", "probes", "policies", "eval"):
                        raise AssertionError(f"{source} imports {t!r}: everything is imported as triage.*")
                    if t == "triage" or t.startswith("triage."):
                        edges[source].add(t)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, t) for m, ts in edges.items() for t in ts if floor(t) > floor(m)}


def test_no_import_circles() -> None:
    assert circles(import_edges()) == []


def test_no_upward_imports() -> None:
    up = sorted(upward(import_edges()))
    assert up == [], "imports that go up a floor (move the shared piece below instead):\n" + "\n".join(
        f"  {m} -> {t}" for m, t in up)


def test_the_checker_sees_an_upward_edge_and_a_circle() -> None:
    edges = {"triage.probes.a": {"triage.router.b"}, "triage.router.b": {"triage.router.c"},
             "triage.router.c": {"triage.router.b"}, "triage.errors": {"triage.probes.a"}}
    assert upward(edges) == {("triage.probes.a", "triage.router.b"), ("triage.errors", "triage.probes.a")}
    assert circles(edges) == [["triage.router.b", "triage.router.c"]]
