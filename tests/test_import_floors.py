"""The floor plan, checked: data flows request -> probe -> policy -> executor -> ledger, and imports
only go down the floors  probes < policies < router < eval < CLI (``router.cli``), with no circles.

Every ``import`` counts, module level or inside a function (a deferred import is still a
dependency). ``KNOWN_UPWARD`` lists the upward edges that predate this check; they are to be moved
below (a bottom package of shared pieces is the plan), so the list may only shrink: a new upward
edge or any circle fails, and so does an entry that no longer exists (delete it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("probes", "policies", "router", "eval")

KNOWN_UPWARD = {
    ("policies.calibrate", "eval.replay.matrix"),
    ("policies.calibrate", "router.core.messages"),
    ("policies.calibrate", "router.core.probing"),
    ("policies.calibrate", "router.errors"),
    ("policies.decide", "router.errors"),
    ("policies.loader", "router.errors"),
    ("probes.default", "eval.importers"),
    ("probes.default", "eval.replay"),
    ("probes.default", "router.settings"),
    ("probes.features.cache", "router.settings"),
    ("probes.features.difficulty_aux_build", "router.settings"),
    ("probes.labels", "eval.replay.matrix"),
    ("probes.lm.runtime", "router.settings"),
    ("probes.lm.specs", "router.settings"),
    ("probes.token_router.head", "router.settings"),
    ("probes.token_router.labels", "router.settings"),
    ("probes.training", "eval.replay.matrix"),
    ("probes.training", "eval.routers.base"),
    ("router.__main__", "router.cli.main"),
    ("router.ledger.export", "eval.replay.io"),
    ("router.ledger.export", "eval.replay.schema"),
    ("router.ledger.report", "eval.metrics.summary"),
}


def floor(module: str) -> int:
    if module == "router.cli" or module.startswith("router.cli."):
        return 5
    return {"probes": 1, "policies": 2, "router": 3, "eval": 4}[module.split(".")[0]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_edges() -> dict[str, set[str]]:
    """module -> the project modules it imports (absolute imports; the code uses no relative ones)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                targets: list[str] = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets = [node.module]
                    assert node.level == 0
                elif isinstance(node, ast.ImportFrom):
                    raise AssertionError(f"{source}: relative import; use absolute imports")
                edges[source].update(t for t in targets if t.split(".")[0] in PACKAGES)
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


def test_no_new_upward_imports() -> None:
    new = sorted(upward(import_edges()) - KNOWN_UPWARD)
    assert new == [], "imports that go up a floor (move the shared piece below instead):\n" + "\n".join(
        f"  {m} -> {t}" for m, t in new)


def test_the_known_upward_list_only_shrinks() -> None:
    gone = sorted(KNOWN_UPWARD - upward(import_edges()))
    assert gone == [], "fixed upward imports: delete them from KNOWN_UPWARD:\n" + "\n".join(
        f"  {m} -> {t}" for m, t in gone)


def test_the_checker_sees_an_upward_edge_and_a_circle() -> None:
    edges = {"probes.a": {"router.b"}, "router.b": {"router.c"}, "router.c": {"router.b"}}
    assert upward(edges) == {("probes.a", "router.b")}
    assert circles(edges) == [["router.b", "router.c"]]
