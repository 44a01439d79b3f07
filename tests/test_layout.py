"""The package's layout: no import circles, no module importing one of a higher layer, a module
per stage named after it, a package per study kind. Imports are read from the source (every
``import`` statement, those inside functions too), so a circle that only lazy imports close is
found as well."""
from __future__ import annotations

import ast
import os

from study.frame.context import STAGE_NAMES
from study.frame.kinds import KINDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lower layers never import higher ones. Unlisted modules (errors, storage, retries, faults, the
# config and its loader) are the base, layer 0.
LAYERS = {
    "study.core": 1,  # pure maths
    "study.frame.kinds": 2, "study.frame.sweep": 2,  # what a study kind and a sweep are
    "study.data": 3, "study.annotate": 3, "study.train": 3, "study.embed": 3, "study.search": 3, "study.report": 3,
    "study.preflight": 3, "study.frame.context": 3, "study.frame.cluster": 3, "study.frame.tally": 3,
    "study.stages": 4, "study.kinds": 4, "study.frame.validate": 4,  # the stages and what they run
    "study.frame.runner": 5,  # runs the stages
    "study.api": 6, "study.cli": 6,
}


def layer(module: str) -> int:
    if module == "study":  # the package itself: its face is the Python API
        return LAYERS["study.api"]
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else 0


def import_graph() -> dict[str, set[str]]:
    """module -> the study modules it imports, from every import statement in its source."""
    paths = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "study")):
        for f in files:
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                paths[name.removesuffix(".__init__")] = os.path.join(folder, f)
    graph = {}
    for name, path in paths.items():
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("study"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("study")}
        graph[name] = {d for d in deps if d in paths and d not in (name, "study")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
            for m, deps in sorted(graph.items()) for d in sorted(deps) if layer(d) > layer(m)]


def test_the_checks_find_what_they_look_for():
    toy = {"study.core.a": {"study.core.b"}, "study.core.b": {"study.core.c"}, "study.core.c": {"study.core.a"},
           "study.core.d": {"study.stages.x"}, "study.stages.x": set()}
    assert circles(toy) == [["study.core.a", "study.core.b", "study.core.c"]]
    assert upward(toy) == ["study.core.d (layer 1) imports study.stages.x (layer 4)"]


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_no_module_imports_a_higher_layer():
    assert upward(import_graph()) == []


def test_a_module_per_stage_and_a_package_per_kind():
    for stage in STAGE_NAMES:
        assert os.path.isfile(os.path.join(ROOT, "study", "stages", f"{stage}.py")), stage
    for kind, module in KINDS.items():
        assert module == f"study.kinds.{kind}.kind", (kind, module)


def test_ray_through_its_public_apis_only():
    """No module imports a private Ray module (``ray._private``, ``ray.train.v2._internal``, ...)
    or reaches for a private attribute of Ray's (``ray._raylet``)."""
    private = []
    for folder, _, files in os.walk(os.path.join(ROOT, "study")):
        for f in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, f)
            for node in ast.walk(ast.parse(open(path).read())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ray":
                    names = [f"ray.{node.attr}"]
                private += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names
                            if n.split(".")[0] == "ray" and any(part.startswith("_") for part in n.split(".")[1:])]
    assert private == []
