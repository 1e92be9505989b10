"""The import graph of src/cifarlab, read from the source: no cycle, no arrow pointing up,
no private name used across packages.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a
lazy import is still an arrow). ``from pkg import name`` points at ``pkg.name`` when that
is a module, else at the module that a package's lazy ``_API`` table names for it, else at
``pkg`` itself. Strings given to ``importlib.import_module`` are not read (the CLI's command
list, the lazy tables' own lookups).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cifarlab

ROOT = Path(cifarlab.__file__).resolve().parent

# package -> layer. An arrow from one package to another must go to a lower number; two
# different packages on the same layer know nothing of each other. The package root holds
# only __version__ and a lazy name table, so it sits at the bottom.
LAYERS = {
    "cifarlab": 0, "errors": 0, "words": 0, "shipped": 0, "lazy": 0,  # root, errors, write-ups in words, shipped files
    "atomic": 1,                                      # atomic file writes (their errors in one line)
    "sqldb": 2,                                       # SQLite or PostgreSQL for the registry and claims
    "models": 2, "data": 2, "explain": 2,             # models | data | Grad-CAM on any model
    "zoo": 3, "calibration": 3, "modelcard": 3,       # models' facts | calibration arithmetic | model cards
    "inference": 4,                                   # checkpoints, predict, batch prediction, export
    "runlog": 5, "results": 5,                        # the run registry | measured numbers (results/*.csv)
    "training": 6,                                    # config, plan, loop, evaluate, calibrate
    "resolve": 7, "corruptions": 7,                   # model names (shipped, runs, files) | robustness
    "studies": 8, "catalog": 8,                       # many runs, the catalogue of trained runs
    "web": 9, "desktop": 9,                           # faces over a Predictor
    "cli": 10,                                        # the command line, which launches the faces
    "__main__": 11,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(ROOT.rglob("*.py"))}


def _lazy_table(tree: ast.Module, package: str) -> dict[str, str]:
    """A package __init__'s ``_API = {name: module}`` table, module names made absolute."""
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_API" for t in targets):
                table = ast.literal_eval(node.value)
                return {k: v if v.startswith("cifarlab") else f"{package}.{v}" for k, v in table.items()}
    return {}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


class Graph:
    def __init__(self, sources: dict[str, tuple[Path, ast.Module]] | None = None):
        self.sources = _sources() if sources is None else sources
        self.lazy = {m: _lazy_table(t, m) for m, (p, t) in self.sources.items() if p.name == "__init__.py"}
        self.edges: dict[str, set[str]] = {m: set() for m in self.sources}
        self.private: list[str] = []
        for module, (path, tree) in self.sources.items():
            self._read(module, path, tree)

    def _base(self, module: str, path: Path, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def _target(self, base: str, name: str) -> str | None:
        if f"{base}.{name}" in self.sources:
            return f"{base}.{name}"
        if name in self.lazy.get(base, {}):
            return self.lazy[base][name]
        return base if base in self.sources else None

    def _read(self, module: str, path: Path, tree: ast.Module) -> None:
        bound: dict[str, str] = {}  # local name -> cifarlab module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in self.sources:
                        self.edges[module].add(alias.name)
                        if alias.asname:
                            bound[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = self._base(module, path, node)
                if not base or not base.startswith("cifarlab"):
                    continue
                for alias in node.names:
                    target = self._target(base, alias.name)
                    if target is None:
                        continue
                    self.edges[module].add(target)
                    if f"{base}.{alias.name}" in self.sources:
                        bound[alias.asname or alias.name] = target
                    elif _is_private(alias.name) and _package(base) != _package(module):
                        self.private.append(f"{module}: from {base} import {alias.name}")
        self.edges[module].discard(module)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and _is_private(node.attr)
                    and _package(bound[node.value.id]) != _package(module)):
                self.private.append(f"{module}: {bound[node.value.id]}.{node.attr}")

    def upward(self) -> list[str]:
        bad = []
        for a, targets in sorted(self.edges.items()):
            for b in sorted(targets):
                pa, pb = _package(a), _package(b)
                if pa != pb and pa in LAYERS and pb in LAYERS and LAYERS[pb] >= LAYERS[pa]:
                    bad.append(f"{a} (layer {LAYERS[pa]}) -> {b} (layer {LAYERS[pb]})")
        return bad

    def reachable(self, start: str) -> set[str]:
        """Every module ``start`` imports, directly or through others."""
        seen, todo = set(), [start]
        while todo:
            for w in self.edges.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (Tarjan)."""
        index, low, stack, on, out = {}, {}, [], set(), []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(self.edges[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))

        for v in sorted(self.edges):
            if v not in index:
                visit(v)
        return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


GRAPH = Graph()


def test_the_graph_is_read():
    # guards the other tests against an empty or mis-resolved graph
    assert len(GRAPH.sources) > 50
    assert "cifarlab.training.config" in GRAPH.edges["cifarlab.training.api"]
    assert "cifarlab.errors" in GRAPH.edges["cifarlab.data.load"]


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in GRAPH.sources} - set(LAYERS))
    assert not missing, f"packages without a layer in LAYERS: {missing}"


def test_no_import_cycle():
    cycles = GRAPH.cycles()
    assert not cycles, "import cycles (modules that import each other, directly or not):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles)


def test_arrows_point_down():
    bad = GRAPH.upward()
    assert not bad, "imports that point up or sideways (see LAYERS):\n" + "\n".join("  " + b for b in bad)


# the packages that only use trained models: they reach no module of cifarlab.training
INFERENCE_ONLY = ("web", "desktop", "catalog")


def test_the_faces_import_only_inference():
    bad = sorted(f"{m} -> {w}" for m in GRAPH.sources if _package(m) in INFERENCE_ONLY
                 for w in GRAPH.reachable(m) if _package(w) == "training")
    assert not bad, "the web page, the desktop app and the catalogue must not reach cifarlab.training:\n" + \
        "\n".join("  " + b for b in bad[:20])
    reached = {_package(w) for m in GRAPH.sources if _package(m) in INFERENCE_ONLY for w in GRAPH.reachable(m)}
    assert "inference" in reached  # the check reads real arrows


def test_no_private_name_across_packages():
    bad = sorted(set(GRAPH.private))
    assert not bad, "private names used from another package:\n" + "\n".join("  " + b for b in bad)


def test_the_checks_catch_what_they_should():
    # a cycle, an upward arrow and two private names, planted in a small made-up package
    code = {
        "cifarlab.data.a": ("a.py", "from cifarlab.training.b import _helper\n"),
        "cifarlab.training.b": ("b.py", "def f():\n    from ..data import a\n    return a._x\n"),
    }
    g = Graph({m: (ROOT / "data" / p if m.startswith("cifarlab.data") else ROOT / "engine" / p, ast.parse(c))
               for m, (p, c) in code.items()})
    assert g.cycles() == [["cifarlab.data.a", "cifarlab.training.b"]]
    assert g.upward() == [f"cifarlab.data.a (layer {LAYERS['data']}) -> cifarlab.training.b (layer {LAYERS['training']})"]
    assert "cifarlab.training.b" in g.reachable("cifarlab.data.a") and "cifarlab.data.a" in g.reachable("cifarlab.data.a")
    assert sorted(g.private) == ["cifarlab.data.a: from cifarlab.training.b import _helper",
                                 "cifarlab.training.b: cifarlab.data.a._x"]
